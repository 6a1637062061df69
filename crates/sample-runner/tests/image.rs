//! The sample runner packed as an image by `executor pack` runs under runc and
//! honours the contract: inputs at the standard paths from the image's env, the
//! artifact in /out, the status file, the exit code. Real parts: umoci unpacks
//! the layout into a bundle, runc runs it.

use executor::pack::{FileMapping, PackOptions, pack};
use std::path::Path;
use std::process::{Command, Output};

const CONTEXT: &str = "name: image-action
timeout: 5m
platform:
  namespace: demo
  serviceAccountName: runner
  ownerRef: {apiVersion: v1, kind: Action, name: image-action, uid: u-1}
";

fn require(tool: &str) {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join(tool).is_file());
    assert!(found, "{tool} is not installed: run tests/install-deps.sh");
}

/// Packs the (dynamically linked) test build of the sample runner with its
/// libraries, unpacks it with umoci and runs it with runc.
fn run_in_image(dir: &Path, args: &str) -> Output {
    require("umoci");
    require("runc");
    let layout = dir.join("layout");
    pack(&PackOptions {
        layout: layout.clone(),
        tag: "test".into(),
        binaries: vec![FileMapping {
            host: env!("CARGO_BIN_EXE_sample-runner").into(),
            image: "/usr/local/bin/sample-runner".into(),
        }],
        entrypoint: vec!["/usr/local/bin/sample-runner".into()],
        env: vec![
            "RUNNER_CONTEXT_PATH=/runner-context".into(),
            "RUNNER_ARGS_PATH=/runner-args".into(),
        ],
        ..PackOptions::default()
    })
    .unwrap();
    let bundle = dir.join("bundle");
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:test", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rootfs = bundle.join("rootfs");
    std::fs::write(rootfs.join("runner-context"), CONTEXT).unwrap();
    std::fs::write(rootfs.join("runner-args"), args).unwrap();
    std::fs::create_dir(rootfs.join("out")).unwrap();
    std::fs::create_dir(rootfs.join("status")).unwrap();
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    // umoci writes terminal: true; a runner's stdio must be plain pipes.
    config["process"]["terminal"] = false.into();
    config["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push("RUNNER_STATUS_PATH=/status/status.json".into());
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();

    let id = format!(
        "sdk-sample-{}-{}",
        std::process::id(),
        dir.file_name().unwrap().to_string_lossy().replace('.', "")
    );
    Command::new("runc")
        .arg("--root")
        .arg(dir.join("runc-state"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .unwrap()
}

#[test]
fn the_packed_runner_succeeds_under_runc() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in_image(dir.path(), "greeting: hi from runc\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("action image-action in namespace demo"),
        "{stdout}"
    );
    let rootfs = dir.path().join("bundle/rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("out/greeting.txt")).unwrap(),
        "hi from runc from action image-action\n"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rootfs.join("status/status.json")).unwrap()).unwrap();
    assert_eq!(status["action"], "image-action");
}

#[test]
fn the_packed_runner_fails_under_runc_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in_image(dir.path(), "fail: true\nmessage: no luck\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().last(),
        Some("sample-runner: failed: no luck")
    );
}
