//! The lifecycle of one container on every runtime: exit codes, signals, timeouts,
//! stop requests, clean-up, concurrency, and a whole `run` with artifacts and status.
//! Real runtimes (the embedded libcontainer, runc, crun, youki) on real bundles.

mod support;

use executor::lifecycle::{self, Exit, LifecycleError, LifecycleOptions, Stop, StopReason};
use executor::run::report::{Outcome, Reporter};
use executor::run::{self, ExistingBundle, RunOptions};
use executor::runs::{RunDir, Runs};
use executor::runtime::{Runtime, RuntimeKind};
use std::time::{Duration, Instant};
use support::{TestBundle, scratch_dir, wait_for};

/// Generates one test per runtime for an `async fn(RuntimeKind)`.
macro_rules! on_every_runtime {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name(support::embedded()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn runc() {
                super::$name(RuntimeKind::Runc).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn crun() {
                super::$name(RuntimeKind::Crun).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn youki() {
                super::$name(RuntimeKind::Youki).await
            }
        }
    )*};
}

on_every_runtime!(
    success_exits_zero_and_leaves_no_container,
    failing_runner_exit_code_comes_back,
    runner_killed_by_signal_exits_128_plus_n,
    timeout_kills_a_runner_that_ignores_sigterm,
    timeout_lets_a_runner_exit_on_sigterm,
    stop_request_stops_the_runner,
    stop_before_the_container_exists_still_cleans_up,
    runtime_failure_is_not_a_runner_exit_code,
    eight_concurrent_runs,
    whole_run_reports_status_and_copies_artifacts,
);

struct Fixture {
    _root: tempfile::TempDir,
    run: RunDir,
}

fn fixture(kind: &RuntimeKind) -> Fixture {
    let root = scratch_dir();
    let run = Runs::open(root.path()).unwrap().create(kind).unwrap();
    Fixture { _root: root, run }
}

fn opts(timeout: Option<Duration>, grace: Duration) -> LifecycleOptions {
    LifecycleOptions {
        timeout,
        stop_timeout: grace,
    }
}

async fn run_bundle(
    fx: &Fixture,
    bundle: &TestBundle,
    opts: LifecycleOptions,
    stop: &Stop,
) -> Result<Exit, LifecycleError> {
    let runtime = fx.run.runtime();
    let id = fx.run.record().container_id.clone();
    let result = lifecycle::run_container(
        &runtime,
        &id,
        bundle.path(),
        &fx.run.pid_file(),
        &opts,
        stop,
    )
    .await;
    // Whatever happened, the runtime no longer knows the container.
    assert!(!runtime.exists(&id), "container {id} left in the runtime");
    assert_eq!(runtime.state(&id).await.unwrap(), None);
    result
}

/// Runs the bundle with no stop request and returns how it ended.
async fn run_to_end(fx: &Fixture, bundle: &TestBundle, opts: LifecycleOptions) -> Exit {
    run_bundle(fx, bundle, opts, &Stop::new()).await.unwrap()
}

async fn success_exits_zero_and_leaves_no_container(kind: RuntimeKind) {
    let fx = fixture(&kind);
    let bundle = TestBundle::shell("echo hello from the runner");
    let exit = run_to_end(&fx, &bundle, opts(None, Duration::from_secs(5))).await;
    assert_eq!(exit.exit_code, 0);
    assert_eq!(exit.stopped, None);
    assert!(exit.finished_at >= exit.started_at);
}

async fn failing_runner_exit_code_comes_back(kind: RuntimeKind) {
    let fx = fixture(&kind);
    let bundle = TestBundle::shell("echo failing >&2; exit 3");
    let exit = run_to_end(&fx, &bundle, opts(None, Duration::from_secs(5))).await;
    assert_eq!(exit.exit_code, 3);
    assert_eq!(exit.stopped, None);
}

async fn runner_killed_by_signal_exits_128_plus_n(kind: RuntimeKind) {
    let fx = fixture(&kind);
    let bundle = TestBundle::with_args(&["/bin/sleep", "1000"]);
    let pid_file = fx.run.pid_file();
    let runtime = fx.run.runtime();
    let id = fx.run.record().container_id.clone();
    let killer = tokio::spawn(async move {
        wait_for("the container's pid file", || pid_file.exists()).await;
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The pid file may appear at create, before start: wait for `running`.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut state = None;
        while Instant::now() < deadline {
            state = runtime.state(&id).await.unwrap();
            if state.as_ref().is_some_and(|s| s.status == "running") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // From the host, like the OOM killer: PID 1 of the container cannot
        // block it. Killed whatever the state said, so a failure cannot hang.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        (pid, state)
    });
    // The timeout is only a safety net against a hang: it must not fire.
    let exit = run_to_end(
        &fx,
        &bundle,
        opts(Some(Duration::from_secs(300)), Duration::from_secs(5)),
    )
    .await;
    let (pid, state) = killer.await.unwrap();
    let state = state.expect("the runtime knew the container");
    assert_eq!(state.status, "running");
    assert_eq!(state.pid, Some(pid));
    assert_eq!(exit.exit_code, 128 + 9);
    assert_eq!(exit.stopped, None);
}

async fn timeout_kills_a_runner_that_ignores_sigterm(kind: RuntimeKind) {
    let fx = fixture(&kind);
    let bundle = TestBundle::shell("trap '' TERM; sleep 1000");
    let began = Instant::now();
    let exit = run_to_end(
        &fx,
        &bundle,
        opts(Some(Duration::from_secs(1)), Duration::from_secs(1)),
    )
    .await;
    assert_eq!(exit.stopped, Some(StopReason::Timeout));
    assert!(exit.timed_out());
    assert_eq!(exit.exit_code, 128 + 9, "SIGKILL ends it");
    // Loose bound: it must not wait for the sleep to end.
    assert!(began.elapsed() < Duration::from_secs(60));
}

async fn timeout_lets_a_runner_exit_on_sigterm(kind: RuntimeKind) {
    let fx = fixture(&kind);
    let bundle = TestBundle::shell("trap 'exit 7' TERM; while true; do sleep 0.2; done");
    // The timeout leaves the shell ample time to set its trap (PID 1 ignores
    // SIGTERM without one); the long grace period shows the runner exits on
    // SIGTERM, not on SIGKILL.
    let exit = run_to_end(
        &fx,
        &bundle,
        opts(Some(Duration::from_secs(5)), Duration::from_secs(120)),
    )
    .await;
    assert_eq!(exit.stopped, Some(StopReason::Timeout));
    assert_eq!(exit.exit_code, 7, "the runner's own SIGTERM handler ran");
}

async fn stop_request_stops_the_runner(kind: RuntimeKind) {
    let fx = fixture(&kind);
    let bundle =
        TestBundle::shell("trap 'exit 9' TERM; touch /out/trapped; while true; do sleep 0.2; done");
    let trapped = bundle.path().join("out/trapped");
    let stop = Stop::new();
    let requester = stop.clone();
    let pid_file = fx.run.pid_file();
    let parent = tokio::spawn(async move {
        // Stop once the runner handles SIGTERM (PID 1 ignores it before that).
        wait_for("the runner's trap", || trapped.exists()).await;
        // The runtime's create has exited: the container's init is re-parented to
        // this process, the child subreaper, not to the system's init.
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(|p| p.trim().parse::<u32>().unwrap());
        requester.stop();
        ppid
    });
    let exit = run_bundle(&fx, &bundle, opts(None, Duration::from_secs(120)), &stop)
        .await
        .unwrap();
    assert_eq!(exit.stopped, Some(StopReason::Interrupted));
    assert!(!exit.timed_out());
    assert_eq!(exit.exit_code, 9);
    assert_eq!(parent.await.unwrap(), Some(std::process::id()));
}

async fn stop_before_the_container_exists_still_cleans_up(kind: RuntimeKind) {
    let fx = fixture(&kind);
    let bundle = TestBundle::shell("trap '' TERM; sleep 1000");
    // Stop at once: the runtime is still creating the container.
    let stop = Stop::new();
    stop.stop();
    let exit = run_bundle(&fx, &bundle, opts(None, Duration::from_secs(1)), &stop)
        .await
        .unwrap();
    assert_eq!(exit.stopped, Some(StopReason::Interrupted));
    assert_ne!(exit.exit_code, 0);
    if let Ok(pid) = std::fs::read_to_string(fx.run.pid_file()) {
        let pid: i32 = pid.trim().parse().unwrap();
        wait_for("the container to die", || !support::process_alive(pid)).await;
    }
}

async fn runtime_failure_is_not_a_runner_exit_code(kind: RuntimeKind) {
    let fx = fixture(&kind);
    let bundle = TestBundle::shell("exit 0");
    std::fs::remove_dir_all(bundle.path().join("rootfs")).unwrap();
    let err = run_bundle(
        &fx,
        &bundle,
        opts(None, Duration::from_secs(5)),
        &Stop::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, LifecycleError::NotStarted { .. }),
        "expected NotStarted, got {err:?}"
    );
    assert!(
        err.to_string().contains("failed to create container"),
        "{err}"
    );
}

async fn eight_concurrent_runs(kind: RuntimeKind) {
    let root = scratch_dir();
    let runs = Runs::open(root.path()).unwrap();
    let bundle = TestBundle::shell("test -d /out && sleep 0.5 && exit 5");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let run = runs.create(&kind).unwrap();
            let bundle = bundle.path().to_path_buf();
            tokio::spawn(async move {
                let runtime = run.runtime();
                let exit = lifecycle::run_container(
                    &runtime,
                    &run.record().container_id,
                    &bundle,
                    &run.pid_file(),
                    &opts(None, Duration::from_secs(5)),
                    &Stop::new(),
                )
                .await;
                run.remove().await.unwrap();
                exit
            })
        })
        .collect();
    for handle in handles {
        let exit = handle.await.unwrap().unwrap();
        assert_eq!(exit.exit_code, 5);
    }
    assert_eq!(
        std::fs::read_dir(runs.path()).unwrap().count(),
        0,
        "run dirs left"
    );
}

async fn whole_run_reports_status_and_copies_artifacts(kind: RuntimeKind) {
    let root = scratch_dir();
    let output = scratch_dir();
    let bundle = TestBundle::shell(
        "mkdir -p /out/reports && echo 42 > /out/reports/answer.txt \
         && echo '{\"phase\":\"Succeeded\"}' > /status/status.json && exit 0",
    );
    let outcome_file = output.path().join("outcome.json");
    let opts = RunOptions {
        runtime: kind,
        lifecycle: LifecycleOptions::default(),
        output_dir: Some(output.path().join("artifacts")),
        reporter: Reporter::File(outcome_file.clone()),
        max_concurrent_runs: None,
    };
    let result = run::run(
        root.path(),
        &ExistingBundle(bundle.path().to_path_buf()),
        &opts,
        &Stop::new(),
    )
    .await
    .unwrap();
    assert_eq!(result.exit_code, 0);
    assert!(result.outcome.succeeded);
    let reported: Outcome = serde_json::from_slice(&std::fs::read(&outcome_file).unwrap()).unwrap();
    assert_eq!(reported, result.outcome);
    assert_eq!(
        reported.runner_status,
        Some(serde_json::json!({"phase": "Succeeded"}))
    );
    assert_eq!(
        std::fs::read_to_string(output.path().join("artifacts/reports/answer.txt")).unwrap(),
        "42\n"
    );
    let runs = root.path().join("runs");
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 0, "run dir left");
    assert!(support::mounts_under(root.path()).is_empty());
}
