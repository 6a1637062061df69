//! The sample runner as a process: what the runner contract promises a caller
//! (exit codes, stderr line, status file, artifact, logs, signals).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Inputs {
    dir: tempfile::TempDir,
}

impl Inputs {
    fn new(timeout: &str, args: &str) -> Inputs {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("context.yaml"),
            format!(
                "name: sample-action\ndryRun: false\ntimeout: {timeout}\nplatform:\n  namespace: demo\n  serviceAccountName: runner\n  ownerRef:\n    apiVersion: core.capact.io/v1alpha1\n    kind: Action\n    name: sample-action\n    uid: 0000-1111\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("args.yaml"), args).unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        Inputs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sample-runner"));
        cmd.env_clear()
            .env("RUNNER_CONTEXT_PATH", self.path("context.yaml"))
            .env("RUNNER_ARGS_PATH", self.path("args.yaml"))
            .env("RUNNER_STATUS_PATH", self.path("status.json"))
            .env("SAMPLE_RUNNER_OUT_DIR", self.path("out"));
        cmd
    }

    fn run(&self) -> Output {
        self.command().output().unwrap()
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.path("status.json")).unwrap()).unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or("")
}

#[test]
fn success_writes_artifact_and_status_and_exits_zero() {
    let inputs = Inputs::new("10m", "greeting: hi there\nartifact: hello.txt\n");
    let out = inputs.run();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("action sample-action in namespace demo"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"greeting\":\"hi there\""),
        "args echoed: {stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(inputs.path("out/hello.txt")).unwrap(),
        "hi there from action sample-action\n"
    );
    assert_eq!(
        inputs.status(),
        serde_json::json!({"action": "sample-action", "dryRun": false, "artifact": "hello.txt"})
    );
}

#[test]
fn default_logs_are_json_and_dev_mode_logs_are_text() {
    let inputs = Inputs::new("0s", "");
    let out = inputs.run();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let logs = stderr(&out);
    assert!(!logs.is_empty());
    for line in logs.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert_ne!(entry["level"], "DEBUG", "info level by default: {line}");
    }

    let out = inputs
        .command()
        .env("RUNNER_LOGGER_DEV_MODE", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let logs = stderr(&out);
    assert!(logs.contains("DEBUG"), "dev mode logs at debug: {logs}");
    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
    );
}

#[test]
fn failure_exits_one_with_the_message() {
    let inputs = Inputs::new("0s", "fail: true\nmessage: the database is on fire\n");
    let out = inputs.run();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        last_line(&stderr(&out)),
        "sample-runner: failed: the database is on fire"
    );
    // The start status was reported before the failure.
    assert_eq!(inputs.status()["action"], "sample-action");
}

#[test]
fn dry_run_writes_no_artifact() {
    let inputs = Inputs::new("0s", "");
    let context = std::fs::read_to_string(inputs.path("context.yaml")).unwrap();
    std::fs::write(
        inputs.path("context.yaml"),
        context.replace("dryRun: false", "dryRun: true"),
    )
    .unwrap();
    let out = inputs.run();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(!inputs.path("out/greeting.txt").exists());
    assert_eq!(inputs.status()["dryRun"], true);
}

#[test]
fn bad_args_fail_to_start_naming_the_field() {
    let inputs = Inputs::new("0s", "fail: sometimes\n");
    let out = inputs.run();
    assert_eq!(out.status.code(), Some(1));
    let line = last_line(&stderr(&out)).to_owned();
    assert!(
        line.starts_with(
            "sample-runner: runner sample-runner failed to start: invalid runner args: "
        ),
        "{line}"
    );
    assert!(line.contains("sometimes"), "{line}");

    let inputs = Inputs::new("0s", "artifact: ../escape.txt\n");
    let out = inputs.run();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("must be a plain file name"));
    assert!(!inputs.path("escape.txt").exists());
}

#[test]
fn bad_inputs_exit_two_naming_variable_file_and_field() {
    let inputs = Inputs::new("ten minutes", "");
    let out = inputs.run();
    assert_eq!(out.status.code(), Some(2));
    let line = last_line(&stderr(&out)).to_owned();
    assert!(line.contains("RUNNER_CONTEXT_PATH"), "{line}");
    assert!(
        line.contains(&inputs.path("context.yaml").display().to_string()),
        "{line}"
    );
    assert!(line.contains("timeout"), "{line}");

    let out = inputs
        .command()
        .env_remove("RUNNER_ARGS_PATH")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        last_line(&stderr(&out)),
        "sample-runner: environment variable RUNNER_ARGS_PATH is not set"
    );
}

#[test]
fn a_missing_output_directory_fails_set_up() {
    let inputs = Inputs::new("0s", "");
    let missing = inputs.path("no-such-dir");
    let out = inputs
        .command()
        .env("SAMPLE_RUNNER_OUT_DIR", &missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        last_line(&stderr(&out)),
        format!(
            "sample-runner: cannot set up runner sample-runner: output directory {} does not exist (set SAMPLE_RUNNER_OUT_DIR or mount /out)",
            missing.display()
        )
    );
    assert!(!inputs.path("status.json").exists(), "nothing may start");
}

#[test]
fn the_context_timeout_stops_the_runner_with_124() {
    let inputs = Inputs::new("200ms", "sleep: 1h\n");
    let started = Instant::now();
    let out = inputs.run();
    assert_eq!(out.status.code(), Some(124), "stderr: {}", stderr(&out));
    assert_eq!(
        last_line(&stderr(&out)),
        "sample-runner: runner sample-runner timed out after 200ms (the context timeout)"
    );
    // Far below the hour it was asked to sleep; generous for a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(60));
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_cancels_the_runner_with_143() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let inputs = Inputs::new("0s", "sleep: 1h\n");
    let child = inputs
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The status file is written once the runner has started and is waiting.
    wait_for_file(&inputs.path("status.json"));
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "stderr: {}", stderr(&out));
    assert_eq!(
        last_line(&stderr(&out)),
        "sample-runner: runner sample-runner cancelled by SIGTERM"
    );
}
