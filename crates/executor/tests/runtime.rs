//! `executor run --bundle` and `executor gc` as processes: exit codes (the
//! runner's, 124, 125), the executor stopped by SIGTERM, and killed by SIGKILL
//! mid-run and then cleaned up by `executor gc`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use support::{TestBundle, process_alive, scratch_dir, wait_for};

const EXECUTOR: &str = env!("CARGO_BIN_EXE_executor");

fn executor(root: &Path) -> Command {
    let mut cmd = Command::new(EXECUTOR);
    cmd.arg("--root").arg(root).env_remove("EXECUTOR_ROOT");
    cmd
}

fn run_bundle(root: &Path, runtime: &str, bundle: &Path, extra: &[&str]) -> Command {
    let mut cmd = executor(root);
    cmd.arg("run")
        .arg("--runtime")
        .arg(runtime)
        .arg("--bundle")
        .arg(bundle)
        .args(extra);
    cmd
}

fn run_dirs(root: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(root.join("runs")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => vec![],
    }
}

/// Waits until the single run of `root` has a container whose process runs the
/// runner (it was started: its command line is the runner's `sleep` script, no
/// longer the runtime's init), and returns the run dir and the container's pid.
async fn container_pid(root: &Path) -> (PathBuf, i32) {
    let mut found = None;
    wait_for("the container's pid file", || {
        found = run_dirs(root)
            .into_iter()
            .map(|d| d.join("container.pid"))
            .find(|p| std::fs::read_to_string(p).is_ok_and(|s| !s.trim().is_empty()));
        found.is_some()
    })
    .await;
    let pid_file = found.unwrap();
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for("the runner to start", || {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("sleep"))
    })
    .await;
    (pid_file.parent().unwrap().to_path_buf(), pid)
}

fn assert_nothing_left(root: &Path, run_dir: &Path, container_pid: i32) {
    assert!(
        run_dirs(root).is_empty(),
        "run dirs left: {:?}",
        run_dirs(root)
    );
    assert!(!run_dir.exists());
    assert!(
        !process_alive(container_pid),
        "container process {container_pid} still alive"
    );
    assert!(
        support::mounts_under(root).is_empty(),
        "mounts left under {}",
        root.display()
    );
}

async fn wait_child(child: &mut Child) -> std::process::ExitStatus {
    let mut status = None;
    wait_for("the executor to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    status.unwrap()
}

macro_rules! on_every_runtime {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn embedded() {
                super::$name("embedded").await
            }
            #[tokio::test]
            async fn runc() {
                super::$name("runc").await
            }
            #[tokio::test]
            async fn crun() {
                super::$name("crun").await
            }
            #[tokio::test]
            async fn youki() {
                super::$name("youki").await
            }
        }
    )*};
}

on_every_runtime!(
    exit_codes_are_the_runners_own,
    timed_out_run_exits_124,
    sigterm_to_the_executor_stops_the_runner_and_cleans_up,
    sigkill_of_the_executor_then_gc_leaves_nothing,
    image_run_end_to_end,
    eight_concurrent_runs_of_one_image,
);

async fn exit_codes_are_the_runners_own(runtime: &str) {
    let root = scratch_dir();
    for code in [0, 1, 42] {
        let bundle = TestBundle::shell(&format!("echo out; exit {code}"));
        let output = run_bundle(root.path(), runtime, bundle.path(), &[])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(code), "{output:?}");
        // The runner's stdout reaches the executor's stdout.
        assert_eq!(String::from_utf8_lossy(&output.stdout), "out\n");
    }
    // A bundle the runtime cannot run is the executor's failure: 125, one line.
    let bundle = TestBundle::shell("exit 0");
    std::fs::remove_dir_all(bundle.path().join("rootfs")).unwrap();
    let output = run_bundle(root.path(), runtime, bundle.path(), &[])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("executor: run failed: runtime"), "{stderr}");
    assert!(run_dirs(root.path()).is_empty());
}

async fn timed_out_run_exits_124(runtime: &str) {
    let root = scratch_dir();
    let out = scratch_dir();
    let outcome = out.path().join("outcome.json");
    let bundle = TestBundle::shell("trap '' TERM; sleep 1000");
    let reporter = format!("file:{}", outcome.display());
    let status = run_bundle(
        root.path(),
        runtime,
        bundle.path(),
        &[
            "--timeout",
            "1s",
            "--stop-timeout",
            "1s",
            "--status-reporter",
            &reporter,
        ],
    )
    .status()
    .unwrap();
    assert_eq!(status.code(), Some(124));
    let outcome: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&outcome).unwrap()).unwrap();
    assert_eq!(outcome["timedOut"], true);
    assert_eq!(outcome["succeeded"], false);
    assert_eq!(outcome["exitCode"], 137);
    assert!(run_dirs(root.path()).is_empty());
}

async fn sigterm_to_the_executor_stops_the_runner_and_cleans_up(runtime: &str) {
    let root = scratch_dir();
    let bundle = TestBundle::shell("trap '' TERM; sleep 1000");
    let mut child = run_bundle(
        root.path(),
        runtime,
        bundle.path(),
        &["--stop-timeout", "1s"],
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let (run_dir, pid) = container_pid(root.path()).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_child(&mut child).await;
    // The runner ignored SIGTERM and was killed after the grace period.
    assert_eq!(status.code(), Some(137));
    assert_nothing_left(root.path(), &run_dir, pid);
}

async fn sigkill_of_the_executor_then_gc_leaves_nothing(runtime: &str) {
    let root = scratch_dir();
    let bundle = TestBundle::shell("sleep 1000");
    let mut child = run_bundle(root.path(), runtime, bundle.path(), &[])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (run_dir, pid) = container_pid(root.path()).await;
    child.kill().unwrap();
    child.wait().unwrap();
    // The executor is gone; its container is not.
    assert!(process_alive(pid));
    assert!(run_dir.exists());

    let output = executor(root.path()).arg("gc").output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let run_id = run_dir.file_name().unwrap().to_str().unwrap();
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&format!("removed {run_id}")),
        "{output:?}"
    );
    // The container dies with SIGKILL; give the kernel a moment to reap it.
    wait_for("the container to die", || !process_alive(pid)).await;
    assert_nothing_left(root.path(), &run_dir, pid);
    // The orphaned runtime process (`runc run ID`, `executor runtime ... run ID`)
    // sees its container gone and exits too.
    wait_for("the orphaned runtime process to exit", || {
        support::processes_mentioning(run_id).is_empty()
    })
    .await;
    // A second gc finds nothing to do.
    let output = executor(root.path()).arg("gc").output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty(),
        "{output:?}"
    );
}

/// Writes the runner's inputs into `dir`; returns (context, args).
fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let context = dir.join("context.yaml");
    let args = dir.join("args.yaml");
    std::fs::write(&context, support::CONTEXT).unwrap();
    std::fs::write(&args, "workflow:\n  entrypoint: main\n").unwrap();
    (context, args)
}

fn run_image(root: &Path, runtime: &str, layout: &Path, context: &Path, args: &Path) -> Command {
    let mut cmd = executor(root);
    cmd.arg("run")
        .arg(format!("oci-layout:{}:t", layout.display()))
        .args(["--runtime", runtime, "--context"])
        .arg(context)
        .arg("--args")
        .arg(args);
    cmd
}

async fn image_run_end_to_end(runtime: &str) {
    let root = scratch_dir();
    let work = scratch_dir();
    let layout = work.path().join("layout");
    support::build_image(
        &layout,
        "cat \"$RUNNER_CONTEXT_PATH\" \"$RUNNER_ARGS_PATH\"; mkdir -p /out/r && echo 42 > /out/r/answer; \
         echo '{\"phase\":\"done\"}' > \"$RUNNER_STATUS_PATH\"; exit 4",
    );
    let (context, args) = inputs(work.path());
    let outcome = work.path().join("outcome.json");
    let output = run_image(root.path(), runtime, &layout, &context, &args)
        .arg("--output-dir")
        .arg(work.path().join("artifacts"))
        .arg("--status-reporter")
        .arg(format!("file:{}", outcome.display()))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    // The inputs reach the runner unchanged (dryRun included).
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("dryRun: true") && stdout.contains("entrypoint: main"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(work.path().join("artifacts/r/answer")).unwrap(),
        "42\n"
    );
    let outcome: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&outcome).unwrap()).unwrap();
    assert_eq!(outcome["exitCode"], 4);
    assert_eq!(outcome["succeeded"], false);
    assert_eq!(
        outcome["runnerStatus"],
        serde_json::json!({"phase": "done"})
    );
    assert!(run_dirs(root.path()).is_empty());
    assert!(support::mounts_under(root.path()).is_empty());

    // The image is stored now: --pull never runs it; an unknown one fails with 125.
    let output = run_image(root.path(), runtime, &layout, &context, &args)
        .args(["--pull", "never"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let output = executor(root.path())
        .args([
            "run",
            "oci-layout:/nonexistent:t",
            "--pull",
            "never",
            "--runtime",
            runtime,
        ])
        .arg("--context")
        .arg(&context)
        .arg("--args")
        .arg(&args)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not in the store"), "{stderr}");
    assert!(run_dirs(root.path()).is_empty());
}

async fn eight_concurrent_runs_of_one_image(runtime: &str) {
    let root = scratch_dir();
    let work = scratch_dir();
    let layout = work.path().join("layout");
    support::build_image(
        &layout,
        "echo \"$RUNNER_CONTEXT_PATH\" > /out/seen; sleep 0.3; exit 0",
    );
    let (context, args) = inputs(work.path());
    // All eight pull, unpack and mount the same image at once.
    let children: Vec<_> = (0..8)
        .map(|i| {
            run_image(root.path(), runtime, &layout, &context, &args)
                .arg("--output-dir")
                .arg(work.path().join(format!("out-{i}")))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "run {i}: {output:?}");
        assert_eq!(
            std::fs::read_to_string(work.path().join(format!("out-{i}/seen"))).unwrap(),
            "/runner-context\n"
        );
    }
    assert!(run_dirs(root.path()).is_empty());
    assert!(support::mounts_under(root.path()).is_empty());
}

#[tokio::test]
async fn gc_leaves_a_live_run_alone() {
    let root = scratch_dir();
    let bundle = TestBundle::shell("sleep 1000");
    let mut child = run_bundle(
        root.path(),
        "runc",
        bundle.path(),
        &["--stop-timeout", "1s"],
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let (run_dir, pid) = container_pid(root.path()).await;
    let output = executor(root.path()).arg("gc").output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty(),
        "{output:?}"
    );
    assert!(run_dir.exists() && process_alive(pid));
    // Clean up: stop the run the normal way.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    wait_child(&mut child).await;
    assert_nothing_left(root.path(), &run_dir, pid);
}

/// CVE-2019-5736: the embedded runtime (whose binary the container's init runs
/// until it execs the entrypoint) runs from a read-only view or a sealed in-memory
/// copy of the executor, so nothing reachable through /proc/PID/exe can be written.
#[tokio::test]
async fn embedded_runtime_runs_from_a_sealed_copy_of_the_executor() {
    use executor::runtime::Runtime;
    use std::io::Write;
    let root = scratch_dir();
    let bundle = TestBundle::shell("sleep 1000");
    // Created, not started: the container's init process is still the runtime's
    // binary, waiting for `start`, as the executor's create command leaves it.
    let runtime = support::embedded().build(&root.path().join("state"));
    let pid_file = root.path().join("pid");
    // (The init process inherits the create command's stdio: no pipes to wait on.)
    let created = runtime
        .create_command("sealed", bundle.path(), &pid_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(created.success(), "create: {created:?}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    // Either view: a detached read-only bind mount of the executor (as root, the
    // usual case) or a sealed memfd copy.
    let binary = std::fs::File::open(format!("/proc/{pid}/exe")).unwrap();
    let read_only = nix::sys::statvfs::fstatvfs(&binary)
        .unwrap()
        .flags()
        .contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    assert!(
        read_only || exe.to_string_lossy().starts_with("/memfd:executor-runtime"),
        "the container's init runs from {}",
        exe.display()
    );
    // The executor's own binary must not be reachable as a path: the view's mount
    // is detached (nothing in this mount namespace shows it).
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("/.exe-"), "{mounts}");
    let write = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/exe"))
        .and_then(|mut f| f.write_all(b"overwritten"));
    assert!(write.is_err(), "the runtime binary is writable");

    runtime.delete("sealed").await.unwrap();
    wait_for("the init process to die", || !process_alive(pid)).await;
    assert!(!runtime.exists("sealed"));
}

/// A second SIGTERM/SIGINT to the executor cuts the grace period short: the runner
/// is killed at once and the run still cleaned up.
#[tokio::test]
async fn second_signal_kills_the_runner_at_once() {
    use std::io::BufRead;
    let root = scratch_dir();
    let bundle = TestBundle::shell("trap '' TERM; sleep 1000");
    let mut child = run_bundle(
        root.path(),
        "runc",
        bundle.path(),
        &["--stop-timeout", "1h"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (run_dir, pid) = container_pid(root.path()).await;
    let executor_pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(executor_pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    // Wait until the first signal was taken (two pending signals would merge).
    wait_for("the first signal to be handled", || {
        lines_rx
            .try_iter()
            .any(|l| l.contains("received, stopping the runner"))
    })
    .await;
    nix::sys::signal::kill(executor_pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = wait_child(&mut child).await;
    assert_eq!(status.code(), Some(137));
    assert_nothing_left(root.path(), &run_dir, pid);
}

/// The Kubernetes Secret reporter puts the outcome under key `status` of the Secret
/// named after the context's `name`, through a real HTTP API (the project's fake
/// API server) reached with the `--kubeconfig` given to the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_secret_reporter_writes_the_outcome() {
    use base64::Engine as _;
    use kube_fake::{FakeApiServer, Resource};
    let server = FakeApiServer::start().await.unwrap();
    server
        .create(
            Resource::Secrets,
            "default",
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "action-1", "namespace": "default"},
                "data": {},
            }),
        )
        .unwrap();
    let root = scratch_dir();
    let work = scratch_dir();
    let kubeconfig = work.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig, "default").unwrap();
    let layout = work.path().join("layout");
    support::build_image(
        &layout,
        "echo '{\"phase\":\"done\"}' > \"$RUNNER_STATUS_PATH\"; exit 0",
    );
    let (context, args) = inputs(work.path());
    let mut cmd = run_image(root.path(), "runc", &layout, &context, &args);
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--status-reporter", "k8s-secret"]);
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    let secret = server
        .get(Resource::Secrets, "default", "action-1")
        .expect("the secret still exists");
    let encoded = secret["data"]["status"]
        .as_str()
        .expect("status key written");
    let status = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let outcome: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(outcome["succeeded"], true);
    assert_eq!(outcome["exitCode"], 0);
    assert_eq!(
        outcome["runnerStatus"],
        serde_json::json!({"phase": "done"})
    );
    assert!(run_dirs(root.path()).is_empty());
}
