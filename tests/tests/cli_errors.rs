//! Black-box QA of the `executor` command line against the project's standard for bad
//! input: every case exits 125 with exactly one line on stderr (at `--log-level error`)
//! naming what was wrong, and leaves nothing under the root: no run directory (which
//! also holds the runtime's state, so no container), no temp files, no mounts, and a
//! store whose blobs all hash to their names.

use integration_tests::{
    Compression, ImageSpec, ManifestFormat, RUNNER_CONTEXT, Registry, busybox_layer, executor_bin,
    push_layout, verify_store, write_image,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Input files, an OCI layout (`v1`: busybox running `true`; `hostile`: a layer with
/// `../` entries), three broken copies of it (`tampered-layout`, `truncated-index`,
/// `missing-blob`), and a registry holding `runners/test:v1` and a tampered `runners/bad:v1`.
struct Fixture {
    registry: Registry,
    dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let registry = Registry::start().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("executor-cli-errors-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let mut spec = ImageSpec::host(vec![busybox_layer(Compression::Gzip).unwrap()]);
    spec.config["Cmd"] = serde_json::json!(["/bin/true"]);
    let layout = d.join("layout");
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

    // A copy whose layer blob the registry then serves with one byte flipped.
    let bad_layout = d.join("bad-layout");
    let built = write_image(&bad_layout, "v1", &spec).unwrap();
    push_layout(
        &bad_layout,
        "v1",
        &registry,
        "runners/bad:v1",
        ManifestFormat::Oci,
        None,
    )
    .unwrap();
    let blob = registry.blob_data_path(&built.layers[0]);
    let mut data = std::fs::read(&blob).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    std::fs::write(&blob, data).unwrap();

    write_hostile_image(&layout);

    // Broken copies of the layout: a flipped byte in the layer, a truncated index, a
    // missing layer blob.
    let layer_hex = built.layers[0].trim_start_matches("sha256:");
    for broken in ["tampered-layout", "truncated-index", "missing-blob"] {
        let copy = d.join(broken);
        let status = Command::new("cp")
            .arg("-r")
            .arg(&bad_layout)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(status.success());
        let blob = copy.join("blobs/sha256").join(layer_hex);
        match broken {
            "tampered-layout" => {
                let mut data = std::fs::read(&blob).unwrap();
                let middle = data.len() / 2;
                data[middle] ^= 0xff;
                std::fs::write(&blob, data).unwrap();
            }
            "truncated-index" => {
                std::fs::write(copy.join("index.json"), "{\"schemaVersion\":2,\"manif").unwrap();
            }
            _ => std::fs::remove_file(&blob).unwrap(),
        }
    }

    let files = [
        ("context.yaml", RUNNER_CONTEXT.to_owned()),
        ("args.yaml", "workflow: {}\n".to_owned()),
        ("malformed.yaml", "name: [unclosed\n".to_owned()),
        (
            "wrong-type.yaml",
            RUNNER_CONTEXT.replace("dryRun: true", "dryRun: maybe"),
        ),
        (
            "bad-duration.yaml",
            RUNNER_CONTEXT.replace("timeout: 10m", "timeout: ten minutes"),
        ),
        ("not-yaml.yaml", "\tworkflow: : :\n- x\n".to_owned()),
        (
            "kubeconfig-missing-certs.yaml",
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    \
             server: https://127.0.0.1:6443\n    certificate-authority: /nonexistent/ca.crt\n\
             users:\n- name: u\n  user:\n    client-certificate: /nonexistent/client.crt\n    \
             client-key: /nonexistent/client.key\ncontexts:\n- name: c\n  context: {cluster: c, \
             user: u}\ncurrent-context: c\n"
                .to_owned(),
        ),
    ];
    for (name, text) in files {
        std::fs::write(d.join(name), text).unwrap();
    }
    // Root reads any file whatever its mode, so "unreadable" is a directory.
    std::fs::create_dir(d.join("a-directory")).unwrap();
    std::fs::create_dir(d.join("full")).unwrap();
    // Root writes through any mode bits: a read-only file system is what stops it.
    std::fs::create_dir(d.join("read-only")).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &d.join("read-only"),
        Some("tmpfs"),
        nix::mount::MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .unwrap();
    std::fs::write(d.join("full/keep"), "mine").unwrap();
    Fixture { registry, dir }
}

/// Adds the image `hostile` to `layout`: one uncompressed layer whose entries climb out of
/// the root file system, written header by header because tar writers refuse such names.
fn write_hostile_image(layout: &Path) {
    let blobs = layout.join("blobs/sha256");
    let put = |bytes: &[u8]| -> String {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        format!("sha256:{hex}")
    };
    let mut builder = tar::Builder::new(Vec::new());
    // A file climbing out of the root (which unpacking clamps to the root, as the
    // container would see it), then a hard link to a host file (which it refuses).
    for (name, kind, link, data) in [
        (
            &b"../../cli-errors-escape"[..],
            tar::EntryType::Regular,
            &b""[..],
            &b"owned"[..],
        ),
        (b"evil", tar::EntryType::Link, b"../../../etc/shadow", b""),
    ] {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    let layer = builder.into_inner().unwrap();
    let layer_digest = put(&layer);
    let diff_id = layer_digest.clone();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "hostile"},
        }));
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

impl Drop for Fixture {
    /// A case that wrongly succeeds (`executor bundle`) leaves a rootfs mounted under the
    /// fixture directory; unmount it so the directory can go.
    fn drop(&mut self) {
        let prefix = format!(" {}/", self.dir.path().display());
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        for line in mounts.lines().filter(|l| l.contains(&prefix)) {
            if let Some(target) = line.split(' ').nth(1) {
                let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// One bad invocation.
struct Case {
    /// Names the case, and its root (`root-NAME`).
    name: &'static str,
    /// Pull the good layout image into the case's root first.
    prepull: bool,
    /// The arguments after `--root R`; `{d}` is the fixture directory, `{reg}` the
    /// registry, `{layout}` the good layout image.
    args: &'static [&'static str],
    /// What the one stderr line must contain (expanded like `args`).
    names: &'static [&'static str],
    /// What the stderr line must not contain (expanded like `args`).
    hides: &'static [&'static str],
    /// A further check of what the case must not have touched.
    after: fn(&Path),
}

fn nothing(_: &Path) {}

impl Fixture {
    fn expand(&self, text: &str) -> String {
        text.replace("{layout}", "oci-layout:{d}/layout:v1")
            .replace("{d}", self.dir.path().to_str().unwrap())
            .replace("{reg}", self.registry.addr())
    }

    fn executor(&self, root: &Path, args: &[String]) -> Output {
        Command::new(executor_bin().unwrap())
            .env_remove("EXECUTOR_ROOT")
            .env_remove("EXECUTOR_LOG")
            .env_remove("RUST_LOG")
            .env_remove("EXECUTOR_INSECURE_REGISTRIES")
            .current_dir(self.dir.path())
            // Warnings (a retried download) are progress, not the error; an error-level
            // log line repeating the failure would still make a second line.
            .args(["--log-level", "error", "--root"])
            .arg(root)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a case and returns what is wrong with it, if anything.
    fn check(&self, case: &Case) -> Option<String> {
        let root = self.dir.path().join(format!("root-{}", case.name));
        if case.prepull {
            let pulled = self.executor(&root, &["pull".into(), self.expand("{layout}")]);
            assert!(pulled.status.success(), "prepull: {pulled:?}");
        }
        let args: Vec<String> = case.args.iter().map(|a| self.expand(a)).collect();
        let output = self.executor(&root, &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut problems = Vec::new();
        if output.status.code() != Some(125) {
            problems.push(format!("exit {:?}, not 125", output.status.code()));
        }
        let lines: Vec<&str> = stderr.lines().collect();
        // `executor runtime: ` is the embedded runtime's own process speaking.
        if lines.len() != 1 || !lines[0].starts_with("executor") {
            problems.push(format!("stderr is not one `executor` line: {stderr:?}"));
        }
        for name in case.names {
            let name = self.expand(name);
            if !stderr.contains(&name) {
                problems.push(format!("stderr does not name {name:?}: {stderr:?}"));
            }
        }
        for hidden in case.hides {
            let hidden = self.expand(hidden);
            if stderr.contains(&hidden) {
                problems.push(format!("stderr names {hidden:?}: {stderr:?}"));
            }
        }
        problems.extend(leftovers(&root));
        (case.after)(self.dir.path());
        (!problems.is_empty()).then(|| format!("{}: {}", case.name, problems.join("; ")))
    }

    fn check_all(&self, cases: &[Case]) {
        let failures: Vec<String> = cases.iter().filter_map(|c| self.check(c)).collect();
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }
}

/// What a failed command left under its root.
fn leftovers(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in ["runs", "tmp", "snapshots/tmp"] {
        let path = root.join(dir);
        if let Ok(entries) = std::fs::read_dir(&path) {
            let names: Vec<_> = entries.map(|e| e.unwrap().file_name()).collect();
            if !names.is_empty() {
                found.push(format!("{} holds {names:?}", path.display()));
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let prefix = format!(" {}/", root.display());
    for line in mounts.lines().filter(|l| l.contains(&prefix)) {
        found.push(format!("still mounted: {line}"));
    }
    if root.join("blobs").exists()
        && let Err(e) = verify_store(root)
    {
        found.push(format!("store: {e:#}"));
    }
    found
}

fn bundle_dir_untouched(d: &Path) {
    let names: Vec<_> = std::fs::read_dir(d.join("full"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["keep"],
        "executor bundle touched a non-empty directory"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("full/keep")).unwrap(),
        "mine"
    );
}

fn no_new_bundle(d: &Path) {
    assert!(
        !d.join("new-bundle").exists(),
        "a failed executor bundle left its output directory"
    );
}

fn no_new_layout(d: &Path) {
    assert!(
        !d.join("new-layout").exists(),
        "a failed executor pack left a layout"
    );
}

fn layout_unchanged(d: &Path) {
    let index = std::fs::read_to_string(d.join("layout/index.json")).unwrap();
    assert!(
        !index.contains("\"v2\""),
        "a failed executor pack tagged v2: {index}"
    );
}

fn nothing_escaped(d: &Path) {
    // The refused layer left no half-unpacked snapshot for a later run to trust.
    let snapshots = d.join("root-hostile-tar/snapshots/sha256");
    let left: Vec<_> = std::fs::read_dir(&snapshots)
        .map(|e| e.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a refused layer left snapshots {left:?}");
    for dir in [std::env::temp_dir(), PathBuf::from("/")] {
        assert!(
            !dir.join("cli-errors-escape").exists(),
            "a ../ tar entry was written outside the rootfs"
        );
    }
}

/// Every run case uses runc (its state lives in the run directory, so `runs/` being empty
/// also means no container is left) and the good inputs unless the case replaces them.
const GOOD: [&str; 4] = ["--context", "{d}/context.yaml", "--args", "{d}/args.yaml"];

macro_rules! run_args {
    (runtime = $rt:expr, $image:expr $(, $extra:expr)* $(,)?) => {
        &["run", $image, "--runtime", $rt, "--insecure-registry", "{reg}",
          GOOD[0], GOOD[1], GOOD[2], GOOD[3] $(, $extra)*]
    };
    ($image:expr $(, $extra:expr)* $(,)?) => {
        run_args!(runtime = "runc", $image $(, $extra)*)
    };
}

const fn case(
    name: &'static str,
    args: &'static [&'static str],
    names: &'static [&'static str],
) -> Case {
    Case {
        name,
        prepull: false,
        args,
        names,
        hides: &[],
        after: nothing,
    }
}

#[test]
fn bad_run_inputs_fail_cleanly() {
    let fx = fixture();
    // Leaked: the table is small, fixed and lives as long as the test.
    let input = |name, context: &'static str, args: &'static str, names| {
        let argv: &'static [&'static str] = Box::leak(Box::new([
            "run",
            "{layout}",
            "--runtime",
            "runc",
            "--context",
            context,
            "--args",
            args,
        ]));
        case(name, argv, names)
    };
    fx.check_all(&[
        input(
            "malformed-context",
            "{d}/malformed.yaml",
            "{d}/args.yaml",
            &["malformed.yaml", "line 1"],
        ),
        input(
            "wrong-type",
            "{d}/wrong-type.yaml",
            "{d}/args.yaml",
            &["wrong-type.yaml", "dryRun"],
        ),
        input(
            "bad-duration",
            "{d}/bad-duration.yaml",
            "{d}/args.yaml",
            &["bad-duration.yaml", "ten minutes"],
        ),
        input(
            "missing-context",
            "{d}/nope.yaml",
            "{d}/args.yaml",
            &["nope.yaml", "No such file"],
        ),
        input(
            "unreadable-context",
            "{d}/a-directory",
            "{d}/args.yaml",
            &["a-directory", "Is a directory"],
        ),
        input(
            "missing-args",
            "{d}/context.yaml",
            "{d}/nope.yaml",
            &["nope.yaml", "No such file"],
        ),
        input(
            "unreadable-args",
            "{d}/context.yaml",
            "{d}/a-directory",
            &["{d}/a-directory", "Is a directory"],
        ),
        input(
            "args-not-yaml",
            "{d}/context.yaml",
            "{d}/not-yaml.yaml",
            &["args", "not-yaml.yaml"],
        ),
    ]);
}

#[test]
fn bad_images_and_registries_fail_cleanly() {
    let fx = fixture();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable: &'static str = Box::leak(format!("127.0.0.1:{port}/runners/x:v1").into());
    let unreachable_registry: &'static str = Box::leak(format!("127.0.0.1:{port}").into());
    fx.check_all(&[
        case(
            "layout-unknown-tag",
            run_args!("oci-layout:{d}/layout:nope"),
            &["nope", "{d}/layout"],
        ),
        case(
            "no-layout",
            run_args!("oci-layout:{d}/nowhere:v1"),
            &["{d}/nowhere"],
        ),
        case(
            "tampered-layout-blob",
            &["pull", "oci-layout:{d}/tampered-layout:v1"],
            &["{d}/tampered-layout", "digest mismatch"],
        ),
        case(
            "truncated-layout-index",
            run_args!("oci-layout:{d}/truncated-index:v1"),
            &["{d}/truncated-index/index.json"],
        ),
        case(
            "missing-layout-blob",
            run_args!("oci-layout:{d}/missing-blob:v1"),
            &["{d}/missing-blob", "is not in the layout"],
        ),
        case(
            "registry-unknown-image",
            run_args!("{reg}/runners/unknown:v1"),
            &["{reg}/runners/unknown:v1"],
        ),
        case(
            "pull-registry-unknown-image",
            &[
                "pull",
                "{reg}/runners/unknown:v1",
                "--insecure-registry",
                "{reg}",
            ],
            &["{reg}/runners/unknown:v1"],
        ),
        case(
            "invalid-reference",
            run_args!("Bad//Ref::x"),
            &["Bad//Ref::x"],
        ),
        case(
            "unreachable-registry",
            Box::leak(Box::new([
                "run",
                unreachable,
                "--runtime",
                "runc",
                "--insecure-registry",
                unreachable_registry,
                GOOD[0],
                GOOD[1],
                GOOD[2],
                GOOD[3],
            ])),
            Box::leak(Box::new([unreachable_registry, "unreachable"])),
        ),
        case(
            "tampered-blob",
            run_args!("{reg}/runners/bad:v1"),
            &["{reg}/runners/bad:v1", "sha256:"],
        ),
        Case {
            after: nothing_escaped,
            ..case(
                "hostile-tar",
                run_args!("oci-layout:{d}/layout:hostile"),
                &["evil", "hard link"],
            )
        },
        case(
            "pull-never-nothing-stored",
            run_args!("{layout}", "--pull", "never"),
            &["{d}/layout:v1", "never"],
        ),
        case(
            "rmi-unknown",
            &["rmi", "{reg}/runners/unknown:v1"],
            &["{reg}/runners/unknown:v1"],
        ),
    ]);
}

#[test]
fn bad_run_options_fail_cleanly() {
    let fx = fixture();
    fx.check_all(&[
        case(
            "runtime-false",
            run_args!(runtime = "/bin/false", "{layout}"),
            &["/bin/false"],
        ),
        case(
            "mount-not-pair",
            run_args!("{layout}", "--mount", "nocolon"),
            &["--mount", "nocolon"],
        ),
        case(
            "mount-relative-destination",
            run_args!("{layout}", "--mount", "/tmp:relative"),
            &["--mount", "/tmp:relative"],
        ),
        case(
            "env-no-equals",
            run_args!("{layout}", "--env", "NOEQUALS"),
            &["NOEQUALS"],
        ),
        case(
            "env-empty-key",
            run_args!("{layout}", "--env", "=x"),
            &["\"=x\""],
        ),
        case(
            "memory",
            run_args!("{layout}", "--memory", "12q"),
            &["--memory", "12q"],
        ),
        case(
            "kubeconfig-missing",
            run_args!("{layout}", "--kubeconfig", "{d}/no-kubeconfig"),
            &["{d}/no-kubeconfig"],
        ),
        case(
            "kubeconfig-missing-certs",
            run_args!(
                "{layout}",
                "--kubeconfig",
                "{d}/kubeconfig-missing-certs.yaml"
            ),
            &["/nonexistent/ca.crt"],
        ),
        case(
            "embedded-missing-entrypoint",
            run_args!(
                runtime = "embedded",
                "{layout}",
                "--entrypoint",
                "/no/such/cmd"
            ),
            &["/no/such/cmd"],
        ),
        case(
            "output-dir-not-writable",
            run_args!("{layout}", "--output-dir", "{d}/read-only/out"),
            &["{d}/read-only/out"],
        ),
        case(
            "output-dir-is-a-file",
            run_args!("{layout}", "--output-dir", "{d}/args.yaml"),
            &["{d}/args.yaml"],
        ),
        case(
            "status-reporter-missing-dir",
            run_args!("{layout}", "--status-reporter", "file:/nonexistent/dir/x"),
            &["/nonexistent/dir/x"],
        ),
    ]);
}

#[test]
fn bad_bundle_and_pack_fail_cleanly() {
    let fx = fixture();
    let bundle = |name, context, args, output, names, after| Case {
        prepull: true,
        after,
        ..case(
            name,
            Box::leak(Box::new([
                "bundle",
                "{layout}",
                "--context",
                context,
                "--args",
                args,
                "--output",
                output,
            ])),
            names,
        )
    };
    fx.check_all(&[
        bundle(
            "bundle-non-empty-dir",
            "{d}/context.yaml",
            "{d}/args.yaml",
            "{d}/full",
            &["{d}/full", "not empty"],
            bundle_dir_untouched,
        ),
        bundle(
            "bundle-malformed-context",
            "{d}/malformed.yaml",
            "{d}/args.yaml",
            "{d}/new-bundle",
            &["malformed.yaml"],
            no_new_bundle,
        ),
        bundle(
            "bundle-args-not-yaml",
            "{d}/context.yaml",
            "{d}/not-yaml.yaml",
            "{d}/new-bundle",
            &["not-yaml.yaml"],
            no_new_bundle,
        ),
        bundle(
            "bundle-missing-args",
            "{d}/context.yaml",
            "{d}/nope.yaml",
            "{d}/new-bundle",
            &["nope.yaml"],
            no_new_bundle,
        ),
        case(
            "bundle-not-pulled",
            &[
                "bundle",
                "{layout}",
                "--context",
                "{d}/context.yaml",
                "--args",
                "{d}/args.yaml",
                "--output",
                "{d}/new-bundle",
            ],
            &["{d}/layout:v1", "executor pull"],
        ),
        Case {
            after: no_new_layout,
            ..case(
                "pack-missing-file-new-layout",
                &[
                    "pack",
                    "--layout",
                    "{d}/new-layout",
                    "--tag",
                    "v1",
                    "--add",
                    "{d}/nope:/bin/x",
                    "--entrypoint",
                    "/bin/x",
                ],
                &["{d}/nope"],
            )
        },
        Case {
            after: layout_unchanged,
            ..case(
                "pack-missing-file-existing-layout",
                &[
                    "pack",
                    "--layout",
                    "{d}/layout",
                    "--tag",
                    "v2",
                    "--add-binary",
                    "{d}/nope:/bin/x",
                    "--entrypoint",
                    "/bin/x",
                ],
                &["{d}/nope"],
            )
        },
    ]);
}

#[test]
fn usage_errors_exit_125_in_one_line() {
    let fx = fixture();
    fx.check_all(&[
        case(
            "runtime-nonexistent",
            run_args!(runtime = "nonexistent", "{layout}"),
            &["--runtime", "nonexistent"],
        ),
        case(
            "timeout-bad-unit",
            run_args!("{layout}", "--timeout", "5parsecs"),
            &["--timeout", "5parsecs"],
        ),
        case(
            "status-reporter-unknown",
            run_args!("{layout}", "--status-reporter", "bogus"),
            &["--status-reporter", "bogus"],
        ),
        // clap lists the missing flags on lines of their own: they join the one line.
        case(
            "run-missing-context-and-args",
            &["run", "{layout}"],
            &["not provided: --context <FILE>, --args <FILE>"],
        ),
        case(
            "pack-relative-image-path",
            &[
                "pack",
                "--layout",
                "{d}/new-layout",
                "--tag",
                "v1",
                "--add",
                "/bin/busybox:relative",
                "--entrypoint",
                "/bin/x",
            ],
            &["--add", "relative"],
        ),
    ]);
}

#[test]
fn status_reporter_error_names_only_the_status_file() {
    let fx = fixture();
    fx.check_all(&[Case {
        hides: &[".tmp"],
        ..case(
            "status-reporter-temp-name",
            run_args!("{layout}", "--status-reporter", "file:/nonexistent/dir/x"),
            &["/nonexistent/dir/x"],
        )
    }]);
}

/// The runtime's own error output (runc's logrus line, crun's message, youki's
/// report) becomes the reason in the executor's one line, not a second line. (The
/// embedded runtime's case is in `bad_run_options_fail_cleanly`.)
#[test]
fn runtime_start_failure_is_one_line_naming_the_cause() {
    let fx = fixture();
    fx.check_all(&[
        case(
            "runc-missing-entrypoint",
            run_args!("{layout}", "--entrypoint", "/no/such/cmd"),
            &["/no/such/cmd"],
        ),
        case(
            "crun-missing-entrypoint",
            run_args!(runtime = "crun", "{layout}", "--entrypoint", "/no/such/cmd"),
            &["/no/such/cmd"],
        ),
        case(
            "youki-missing-entrypoint",
            run_args!(
                runtime = "youki",
                "{layout}",
                "--entrypoint",
                "/no/such/cmd"
            ),
            &["/no/such/cmd"],
        ),
    ]);
}

#[test]
fn mount_with_missing_source_fails_cleanly() {
    let fx = fixture();
    fx.check_all(&[
        case(
            "mount-missing-source",
            run_args!("{layout}", "--mount", "{d}/no-such-source:/x"),
            &["--mount", "{d}/no-such-source"],
        ),
        case(
            "embedded-mount-missing-source",
            run_args!(
                runtime = "embedded",
                "{layout}",
                "--mount",
                "{d}/no-such-source:/x"
            ),
            &["--mount", "{d}/no-such-source"],
        ),
    ]);
}
