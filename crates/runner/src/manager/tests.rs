//! Unit tests of the manager: start, wait, timeouts, signals and exit codes, on small runners.

use super::*;
use crate::context::{OwnerReference, Platform};
use crate::runner::StartOutput;
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the fake runner does in each step.
#[derive(Clone, Copy)]
enum Step {
    Succeed,
    Fail,
    Error,
    Hang,
}

/// A runner that follows a script and records what happened to it.
struct Fake {
    start: Step,
    wait: Step,
    events: Arc<Mutex<Vec<String>>>,
    dropped_while_running: Arc<AtomicBool>,
}

impl Fake {
    fn new(start: Step, wait: Step) -> Self {
        Fake {
            start,
            wait,
            events: Arc::default(),
            dropped_while_running: Arc::default(),
        }
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    fn log(&self, event: impl Into<String>) {
        self.events.lock().unwrap().push(event.into());
    }

    async fn hang(&self) {
        // Records whether the manager dropped (cancelled) the in-flight future.
        struct Guard(Arc<AtomicBool>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _guard = Guard(self.dropped_while_running.clone());
        std::future::pending::<()>().await;
    }
}

#[async_trait]
impl Runner for Fake {
    fn name(&self) -> &str {
        "fake"
    }

    async fn start(&self, ctx: &Ctx, input: StartInput) -> Result<StartOutput, BoxError> {
        self.log(format!(
            "start {} args={} deadline={}",
            input.context.name,
            input.args,
            ctx.deadline.is_some()
        ));
        match self.start {
            Step::Succeed | Step::Fail => Ok(StartOutput {
                status: serde_json::json!({"ref": input.context.name}),
            }),
            Step::Error => Err("cannot create the workload".into()),
            Step::Hang => {
                self.hang().await;
                unreachable!("hang never returns")
            }
        }
    }

    async fn wait_for_completion(
        &self,
        _ctx: &Ctx,
        input: WaitInput,
    ) -> Result<WaitOutput, BoxError> {
        self.log(format!("wait {}", input.context.name));
        match self.wait {
            Step::Succeed => Ok(WaitOutput {
                succeeded: true,
                message: "all done".into(),
            }),
            Step::Fail => Ok(WaitOutput {
                succeeded: false,
                message: "step 2 exited with 3".into(),
            }),
            Step::Error => Err("lost the watch".into()),
            Step::Hang => {
                self.hang().await;
                unreachable!("hang never returns")
            }
        }
    }
}

/// A reporter that records statuses, or fails.
#[derive(Clone, Default)]
struct Recorder {
    reports: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    fail: bool,
}

#[async_trait]
impl StatusReporter for Recorder {
    async fn report(
        &self,
        context: &Context,
        status: &serde_json::Value,
    ) -> Result<(), ReportError> {
        if self.fail {
            return Err(ReportError::Other("secret action-1 not found".into()));
        }
        self.reports
            .lock()
            .unwrap()
            .push((context.name.clone(), status.clone()));
        Ok(())
    }
}

fn context(timeout: Duration) -> Context {
    Context {
        name: "action-1".into(),
        dry_run: false,
        timeout: GoDuration(timeout),
        platform: Platform {
            namespace: "ns".into(),
            service_account_name: "sa".into(),
            owner_ref: OwnerReference {
                api_version: "core.capact.io/v1alpha1".into(),
                kind: "Action".into(),
                name: "action-1".into(),
                uid: "uid-1".into(),
                controller: None,
                block_owner_deletion: None,
            },
        },
    }
}

fn never() -> impl Future<Output = Signal> {
    std::future::pending()
}

async fn execute(
    fake: Fake,
    recorder: Recorder,
    timeout: Duration,
    stop: impl Future<Output = Signal>,
) -> (Result<WaitOutput, ManagerError>, Manager<Fake>) {
    let manager = Manager::new(fake).with_reporter(recorder);
    let result = manager
        .execute(context(timeout), serde_json::json!({"x": 1}), stop)
        .await;
    (result, manager)
}

#[tokio::test]
async fn success_reports_the_start_status_then_waits() {
    let recorder = Recorder::default();
    let (result, manager) = execute(
        Fake::new(Step::Succeed, Step::Succeed),
        recorder.clone(),
        Duration::ZERO,
        never(),
    )
    .await;
    let out = result.unwrap();
    assert_eq!(
        out,
        WaitOutput {
            succeeded: true,
            message: "all done".into()
        }
    );
    assert_eq!(
        manager.runner().events(),
        [
            "start action-1 args={\"x\":1} deadline=false",
            "wait action-1"
        ]
    );
    assert_eq!(
        *recorder.reports.lock().unwrap(),
        [(
            "action-1".to_string(),
            serde_json::json!({"ref": "action-1"})
        )]
    );
}

#[tokio::test]
async fn a_failed_runner_returns_its_message() {
    let (result, _) = execute(
        Fake::new(Step::Succeed, Step::Fail),
        Recorder::default(),
        Duration::ZERO,
        never(),
    )
    .await;
    let out = result.unwrap();
    assert!(!out.succeeded);
    assert_eq!(out.message, "step 2 exited with 3");
}

#[tokio::test]
async fn a_start_error_skips_reporting_and_waiting() {
    let recorder = Recorder::default();
    let (result, manager) = execute(
        Fake::new(Step::Error, Step::Succeed),
        recorder.clone(),
        Duration::ZERO,
        never(),
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "runner fake failed to start: cannot create the workload"
    );
    assert_eq!(err.exit_code(), EXIT_FAILED);
    assert_eq!(manager.runner().events().len(), 1);
    assert!(recorder.reports.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_wait_error_is_named() {
    let (result, _) = execute(
        Fake::new(Step::Succeed, Step::Error),
        Recorder::default(),
        Duration::ZERO,
        never(),
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "runner fake failed while waiting for completion: lost the watch"
    );
}

#[tokio::test]
async fn a_report_error_stops_before_waiting() {
    let recorder = Recorder {
        fail: true,
        ..Recorder::default()
    };
    let (result, manager) = execute(
        Fake::new(Step::Succeed, Step::Succeed),
        recorder,
        Duration::ZERO,
        never(),
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot report the start status of runner fake: secret action-1 not found"
    );
    assert_eq!(manager.runner().events().len(), 1, "wait must not run");
}

#[tokio::test]
async fn the_context_timeout_bounds_start_and_wait() {
    // Hanging in wait: the timeout covers the whole execution, not one call.
    let (result, manager) = execute(
        Fake::new(Step::Succeed, Step::Hang),
        Recorder::default(),
        Duration::from_millis(100),
        never(),
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "runner fake timed out after 100ms (the context timeout)"
    );
    assert_eq!(err.exit_code(), 124);
    assert!(manager.runner().events()[0].ends_with("deadline=true"));
    assert!(
        manager
            .runner()
            .dropped_while_running
            .load(Ordering::SeqCst),
        "the runner's future must be dropped"
    );

    let (result, _) = execute(
        Fake::new(Step::Hang, Step::Succeed),
        Recorder::default(),
        Duration::from_millis(10),
        never(),
    )
    .await;
    assert!(matches!(result, Err(ManagerError::TimedOut { .. })));
}

#[tokio::test]
async fn a_zero_timeout_means_no_timeout() {
    // A zero timeout must not fire at once (nor ever): the stop signal ends the run.
    let stop = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Signal::Interrupt
    };
    let (result, _) = execute(
        Fake::new(Step::Succeed, Step::Hang),
        Recorder::default(),
        Duration::ZERO,
        stop,
    )
    .await;
    assert!(
        matches!(
            result,
            Err(ManagerError::Cancelled {
                signal: Signal::Interrupt,
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_stop_signal_cancels_the_runner_cleanly() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let fake = Fake::new(Step::Succeed, Step::Hang);
    let dropped = fake.dropped_while_running.clone();
    let events = fake.events.clone();
    let stop = async move {
        rx.await.expect("sender kept alive");
        Signal::Terminate
    };
    let run = tokio::spawn(execute(fake, Recorder::default(), Duration::ZERO, stop));
    // Signal only once the runner is waiting.
    while events.lock().unwrap().len() < 2 {
        tokio::task::yield_now().await;
    }
    tx.send(()).unwrap();
    let (result, _) = run.await.unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.to_string(), "runner fake cancelled by SIGTERM");
    assert_eq!(err.exit_code(), 143);
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn run_reads_the_files_and_writes_the_status_file() {
    let dir = tempfile::tempdir().unwrap();
    let context_path = dir.path().join("context.yaml");
    let args_path = dir.path().join("args.yaml");
    let status_path = dir.path().join("status.json");
    std::fs::write(
        &context_path,
        "name: action-1\ndryRun: true\ntimeout: 10m\nplatform:\n  namespace: ns\n  serviceAccountName: sa\n  ownerRef:\n    apiVersion: v1\n    kind: Action\n    name: action-1\n    uid: u\n",
    )
    .unwrap();
    std::fs::write(&args_path, "x: 1\n").unwrap();
    let config = Config {
        context_path,
        args_path,
        logger_dev_mode: false,
        status_path: Some(status_path.clone()),
    };
    let manager = Manager::for_config(Fake::new(Step::Succeed, Step::Succeed), &config);
    let out = manager.run(&config).await.unwrap();
    assert!(out.succeeded);
    assert_eq!(
        manager.runner().events()[0],
        "start action-1 args={\"x\":1} deadline=true"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&status_path).unwrap()).unwrap();
    assert_eq!(status, serde_json::json!({"ref": "action-1"}));
}

#[tokio::test]
async fn run_names_a_missing_input_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        context_path: dir.path().join("nope.yaml"),
        args_path: dir.path().join("args.yaml"),
        logger_dev_mode: false,
        status_path: None,
    };
    let manager = Manager::for_config(Fake::new(Step::Succeed, Step::Succeed), &config);
    let err = manager.run(&config).await.unwrap_err();
    assert_eq!(err.exit_code(), EXIT_INVALID_INPUT);
    let message = err.to_string();
    assert!(message.contains("RUNNER_CONTEXT_PATH"), "{message}");
    assert!(message.contains("nope.yaml"), "{message}");
    assert!(manager.runner().events().is_empty());
}
