//! The lifecycle against the recording fake runtime: no root, no bundle, no runtime.

use super::*;
use crate::runtime::fake::FakeRuntime;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    fn runtime(&self, command: &str) -> FakeRuntime {
        FakeRuntime::new(&self.dir.path().join("state"), command)
    }

    async fn run(
        &self,
        runtime: &FakeRuntime,
        opts: LifecycleOptions,
        stop: &Stop,
    ) -> Result<Exit, LifecycleError> {
        let pid_file = self.dir.path().join("pid");
        run_container(runtime, "c1", self.dir.path(), &pid_file, &opts, stop).await
    }
}

fn opts(timeout_ms: Option<u64>, grace_ms: u64) -> LifecycleOptions {
    LifecycleOptions {
        timeout: timeout_ms.map(Duration::from_millis),
        stop_timeout: Duration::from_millis(grace_ms),
    }
}

#[tokio::test]
async fn the_exit_code_passes_through_and_the_container_is_deleted() {
    let fx = Fixture::new();
    let runtime = fx.runtime("exit 3");
    let exit = fx
        .run(&runtime, opts(None, 1000), &Stop::new())
        .await
        .unwrap();
    assert_eq!((exit.exit_code, exit.stopped), (3, None));
    assert!(exit.finished_at >= exit.started_at);
    assert_eq!(runtime.calls(), ["create", "start", "delete"]);
}

#[tokio::test]
async fn a_failed_create_is_one_line_in_the_runtimes_words() {
    let fx = Fixture::new();
    let runtime = fx
        .runtime("exit 0")
        .failing_create("level=error msg=\"container_linux.go: no such file: /runner\"");
    let err = fx
        .run(&runtime, opts(None, 1000), &Stop::new())
        .await
        .unwrap_err();
    let text = error_chain(&err);
    assert!(
        matches!(&err, LifecycleError::NotStarted { verb: "create", .. }),
        "{text}"
    );
    assert_eq!(
        text,
        "runtime fake failed to create container c1: container_linux.go: no such file: /runner"
    );
    assert_eq!(runtime.calls(), ["create", "delete"]);
}

#[tokio::test]
async fn a_failed_start_deletes_the_created_container() {
    let fx = Fixture::new();
    let runtime = fx
        .runtime("echo never runs; exit 0")
        .failing_start("Error: exec format error");
    let err = fx
        .run(&runtime, opts(None, 1000), &Stop::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LifecycleError::NotStarted { verb: "start", .. }),
        "{err:?}"
    );
    assert!(error_chain(&err).ends_with("exec format error"), "{err}");
    assert_eq!(runtime.calls(), ["create", "start", "delete"]);
}

#[tokio::test]
async fn a_timeout_sends_sigterm_then_sigkill_after_the_grace_period() {
    let fx = Fixture::new();
    // Ignores SIGTERM, as `sh` as PID 1 does.
    let runtime = fx.runtime("trap '' TERM; while :; do sleep 0.05; done");
    let exit = fx
        .run(&runtime, opts(Some(200), 200), &Stop::new())
        .await
        .unwrap();
    assert_eq!(exit.stopped, Some(StopReason::Timeout));
    assert!(exit.timed_out());
    assert_eq!(exit.exit_code, 128 + Signal::SIGKILL as i32);
    assert_eq!(
        runtime.calls(),
        ["create", "start", "kill SIGTERM", "kill SIGKILL", "delete"]
    );
}

#[tokio::test]
async fn a_container_that_obeys_sigterm_is_not_killed() {
    let fx = Fixture::new();
    let runtime = fx.runtime("sleep 30");
    let exit = fx
        .run(&runtime, opts(Some(200), 10_000), &Stop::new())
        .await
        .unwrap();
    assert_eq!(exit.exit_code, 128 + Signal::SIGTERM as i32);
    assert_eq!(
        runtime.calls(),
        ["create", "start", "kill SIGTERM", "delete"]
    );
}

#[tokio::test]
async fn a_stop_before_start_skips_the_start() {
    let fx = Fixture::new();
    let runtime = fx.runtime("echo never runs");
    let stop = Stop::new();
    stop.stop();
    let exit = fx.run(&runtime, opts(None, 1000), &stop).await.unwrap();
    assert_eq!(exit.stopped, Some(StopReason::Interrupted));
    assert_eq!(exit.exit_code, 128 + Signal::SIGTERM as i32);
    assert_eq!(runtime.calls(), ["create", "delete"]);
}

#[tokio::test]
async fn a_kill_request_cuts_the_grace_period_short() {
    let fx = Fixture::new();
    let runtime = fx.runtime("trap '' TERM; while :; do sleep 0.05; done");
    let stop = Stop::new();
    let requests = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        requests.stop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        requests.kill();
    });
    // A grace period far longer than the test: only the kill request ends it.
    let exit = fx.run(&runtime, opts(None, 600_000), &stop).await.unwrap();
    assert_eq!(exit.stopped, Some(StopReason::Interrupted));
    assert_eq!(exit.exit_code, 128 + Signal::SIGKILL as i32);
    assert_eq!(
        runtime.calls(),
        ["create", "start", "kill SIGTERM", "kill SIGKILL", "delete"]
    );
}

#[tokio::test]
async fn a_failed_delete_keeps_the_outcome_of_the_run() {
    let fx = Fixture::new();
    let runtime = fx.runtime("exit 0").failing_delete();
    let err = fx
        .run(&runtime, opts(None, 1000), &Stop::new())
        .await
        .unwrap_err();
    let LifecycleError::Cleanup { exit, id, .. } = &err else {
        panic!("not a cleanup error: {err:?}");
    };
    assert_eq!((id.as_str(), exit.exit_code), ("c1", 0));
    assert!(error_chain(&err).contains("container is busy"), "{err}");
}
