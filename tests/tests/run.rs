//! `executor run` of an image in a real `docker-registry`: pulled when missing, run
//! on runc and the embedded runtime, artifacts and status collected; then the pull
//! policies against a registry that is gone.

use integration_tests::{
    Compression, ImageSpec, ManifestFormat, RUNNER_CONTEXT, Registry, busybox_layer, executor_bin,
    push_layout, write_image,
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
    let registry = Registry::start().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("executor-run-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let mut spec = ImageSpec::host(vec![busybox_layer(Compression::Gzip).unwrap()]);
    spec.config["Cmd"] = serde_json::json!(["/bin/sh", "-c", SCRIPT]);
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
        let d = self.dir.path();
        Command::new(executor_bin().unwrap())
            .env_remove("EXECUTOR_ROOT")
            .arg("--root")
            .arg(self.root())
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
