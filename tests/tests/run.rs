//! `executor run` of an image in a real `docker-registry`: pulled when missing, run
//! on runc and the embedded runtime, artifacts and status collected; then the pull
//! policies against a registry that is gone.

use integration_tests::{
    Compression, Entry, ImageSpec, LayerSpec, ManifestFormat, RUNNER_CONTEXT, Registry,
    busybox_layer, executor_bin, push_layout, write_image,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The runner: prints its context (only shell builtins: the image has busybox's `sh`
/// and nothing else on PATH), writes an artifact and a status, exits 3.
const SCRIPT: &str = "while read -r line; do echo \"$line\"; done < \"$RUNNER_CONTEXT_PATH\"; \
    echo 42 > /out/answer; echo '{\"phase\":\"done\"}' > \"$RUNNER_STATUS_PATH\"; exit 3";

struct Fixture {
    registry: Registry,
    dir: tempfile::TempDir,
    image: String,
}

fn fixture() -> Fixture {
    fixture_of(vec![busybox_layer(Compression::Gzip).unwrap()], SCRIPT)
}

/// A registry holding `runners/test:v1`: `layers`, running `sh -c script`.
fn fixture_of(layers: Vec<LayerSpec>, script: &str) -> Fixture {
    let registry = Registry::start().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("executor-run-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let mut spec = ImageSpec::host(layers);
    spec.config["Cmd"] = serde_json::json!(["/bin/sh", "-c", script]);
    let layout = dir.path().join("layout");
    write_image(&layout, "v1", &spec).unwrap();
    push_layout(
        &layout,
        "v1",
        &registry,
        "runners/test:v1",
        ManifestFormat::Oci,
        None,
    )
    .unwrap();
    std::fs::write(dir.path().join("context.yaml"), RUNNER_CONTEXT).unwrap();
    std::fs::write(dir.path().join("args.yaml"), "workflow: {}\n").unwrap();
    let image = format!("{}/runners/test:v1", registry.addr());
    Fixture {
        registry,
        dir,
        image,
    }
}

impl Fixture {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn run(&self, runtime: &str, extra: &[&str]) -> Output {
        self.run_in(&self.root(), &[], runtime, extra)
    }

    /// `executor [global] run ...` with its own `--root` and the default log filter.
    fn run_in(&self, root: &Path, global: &[&str], runtime: &str, extra: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new(executor_bin().unwrap())
            .env_remove("EXECUTOR_ROOT")
            .env_remove("EXECUTOR_LOG")
            .env_remove("RUST_LOG")
            .arg("--root")
            .arg(root)
            .args(global)
            .args(["run", &self.image, "--runtime", runtime])
            .args(["--insecure-registry", self.registry.addr()])
            .arg("--context")
            .arg(d.join("context.yaml"))
            .arg("--args")
            .arg(d.join("args.yaml"))
            .args(extra)
            .output()
            .unwrap()
    }
}

fn runs_left(root: &Path) -> usize {
    std::fs::read_dir(root.join("runs")).map_or(0, |d| d.count())
}

fn pulls_runs_and_reports(runtime: &str) {
    let fx = fixture();
    let out = fx.dir.path().join("artifacts");
    let outcome = fx.dir.path().join("outcome.json");
    let output = fx.run(
        runtime,
        &[
            "--output-dir",
            out.to_str().unwrap(),
            "--status-reporter",
            &format!("file:{}", outcome.display()),
        ],
    );
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("dryRun: true"), "{stdout}");
    assert_eq!(std::fs::read_to_string(out.join("answer")).unwrap(), "42\n");
    let outcome: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&outcome).unwrap()).unwrap();
    assert_eq!(outcome["exitCode"], 3);
    assert_eq!(outcome["succeeded"], false);
    assert_eq!(outcome["runnerStatus"]["phase"], "done");
    assert_eq!(runs_left(&fx.root()), 0);
}

#[test]
fn registry_image_on_runc() {
    pulls_runs_and_reports("runc");
}

#[test]
fn registry_image_on_the_embedded_runtime() {
    pulls_runs_and_reports("embedded");
}

#[test]
fn pull_policies_with_the_registry_gone() {
    let mut fx = fixture();
    let output = fx.run("runc", &[]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    fx.registry.stop();
    // The image is stored: `missing` and `never` run it without the registry.
    for policy in ["missing", "never"] {
        let output = fx.run("runc", &["--pull", policy]);
        assert_eq!(output.status.code(), Some(3), "--pull {policy}: {output:?}");
    }
    // `always` must reach the registry: the executor fails (125) naming the image.
    let output = fx.run("runc", &["--pull", "always"]);
    assert_eq!(output.status.code(), Some(125), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("runners/test:v1"), "{stderr}");
    assert_eq!(runs_left(&fx.root()), 0);
}

/// What the runner of the log tests writes to stderr first.
const RUNNER_SAYS: &str = "runner-output-begins";

/// An image of three layers (busybox and two small ones), so five blobs with the
/// manifest and config: what a per-blob or per-layer log line would show.
fn three_layer_fixture() -> Fixture {
    let small = |name: &str| LayerSpec {
        entries: vec![Entry::file(&format!("etc/{name}"), name.as_bytes())],
        compression: Compression::Gzip,
    };
    fixture_of(
        vec![
            busybox_layer(Compression::Gzip).unwrap(),
            small("one"),
            small("two"),
        ],
        &format!("echo {RUNNER_SAYS} >&2; exit 0"),
    )
}

/// The JSON events of a `--log-format json` stderr, the runner's lines skipped.
fn json_events(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e.get("fields").is_some())
        .collect()
}

fn messages(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["fields"]["message"].as_str().map(str::to_owned))
        .collect()
}

/// The stage events at info, in every format; see the README's "Logs".
const STAGES: [&str; 4] = [
    "pulled",
    "bundle prepared",
    "container started",
    "run finished",
];

#[test]
fn default_text_log_is_one_line_per_stage() {
    let fx = three_layer_fixture();
    let output = fx.run_in(&fx.root(), &[], "runc", &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let runner_at = lines
        .iter()
        .position(|l| l.contains(RUNNER_SAYS))
        .unwrap_or_else(|| panic!("no runner output: {stderr}"));
    let before = &lines[..runner_at];
    assert!(
        before.len() <= 4,
        "{} executor lines before the runner's output:\n{stderr}",
        before.len()
    );
    for stage in ["pulled", "bundle prepared", "container started"] {
        assert!(
            before.iter().any(|l| l.contains(stage)),
            "no {stage:?}: {stderr}"
        );
    }
    assert!(
        lines[runner_at..]
            .iter()
            .any(|l| l.contains("run finished")),
        "{stderr}"
    );
    for detail in ["fetched blob", "unpacked layer", "blob=", "layer="] {
        assert!(
            !stderr.contains(detail),
            "{detail:?} at the default level: {stderr}"
        );
    }
    // Not a terminal: no colours, no progress bars.
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "{stderr:?}"
    );
    // Nothing else: the four stages and the runner's one line.
    assert_eq!(lines.len(), STAGES.len() + 1, "{stderr}");
}

#[test]
fn json_log_has_every_stage_and_by_default_every_blob_and_layer() {
    let fx = three_layer_fixture();
    // Fresh roots, so that every blob is fetched and every layer unpacked.
    let scratch = tempfile::tempdir_in("/dev/shm").unwrap();
    let default_root = scratch.path().join("default");
    let output = fx.run_in(&default_root, &["--log-format", "json"], "runc", &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let events = json_events(&stderr);
    let said = messages(&events);
    for stage in STAGES {
        assert!(said.iter().any(|m| m == stage), "no {stage:?}: {stderr}");
    }
    let fetched = said.iter().filter(|m| *m == "fetched blob").count();
    let unpacked = said.iter().filter(|m| *m == "unpacked layer").count();
    // Three layers and the config; the manifest is stored without a transfer.
    assert_eq!(fetched, 4, "{stderr}");
    assert_eq!(unpacked, 3, "{stderr}");
    let blob = events
        .iter()
        .find(|e| e["fields"]["message"] == "fetched blob")
        .unwrap();
    assert!(
        blob["fields"]["blob"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{blob}"
    );
    assert!(blob["fields"]["size"].as_u64().unwrap() > 0, "{blob}");

    // At an explicit `info`, JSON keeps the stages and drops the per-blob detail.
    let info_root = scratch.path().join("info");
    let output = fx.run_in(
        &info_root,
        &["--log-format", "json", "--log-level", "info"],
        "runc",
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = messages(&json_events(&stderr));
    for stage in STAGES {
        assert!(said.iter().any(|m| m == stage), "no {stage:?}: {stderr}");
    }
    assert!(
        !said
            .iter()
            .any(|m| m == "fetched blob" || m == "unpacked layer"),
        "{stderr}"
    );
}
