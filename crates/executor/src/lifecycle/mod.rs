//! Runs one container from a prepared bundle to completion, through the OCI
//! lifecycle: `create`, `start`, wait, `delete`.
//!
//! The executor makes itself a child subreaper, so that when the runtime's create
//! command exits, the container's init process is re-parented to the executor
//! rather than to the system's init; the executor then waits for it through a
//! pidfd and reads its exit status (128+N when signal N killed it).
//!
//! The container's stdout is the executor's own. Its stderr passes through a pipe
//! the executor relays, because the runtime writes its own errors to the same
//! stderr: whatever arrives before the create command exits (the init process
//! waits for `start` until then) is the runtime's, and becomes the one-line reason
//! of a failed create instead of noise on the user's terminal.
//!
//! A timeout or a stop request (the executor got SIGINT/SIGTERM) sends SIGTERM to
//! the container, waits the grace period, then sends SIGKILL; a second request
//! skips the rest of the grace period. A stop before the container started skips
//! the start. Whatever happens, the container is deleted from the runtime before
//! [`run_container`] returns.

use crate::error::error_chain;
use crate::runtime::{Runtime, RuntimeError, runtime_message};
use nix::sys::signal::Signal;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod process;
mod signals;
mod stdio;

use process::{InitProcess, read_pid};
pub use signals::forward_termination_signals;
use stdio::{drain, relay_stderr};

/// How long to wait for the container to exit after SIGKILL through the runtime
/// before killing its init process directly.
const AFTER_KILL_WAIT: Duration = Duration::from_secs(10);

/// How long the runtime's create command may go on after a stop request before it
/// is killed.
const CREATE_AFTER_STOP: Duration = Duration::from_secs(10);

/// How long to wait, once the container exited, for the rest of its stderr (a
/// process outside the container holding the pipe must not hold up the run).
const STDERR_DRAIN: Duration = Duration::from_secs(1);

/// Why a container could not be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// The runtime process could not be started.
    #[error("cannot start runtime {runtime}")]
    Spawn {
        /// Runtime name.
        runtime: String,
        /// The error from `exec`.
        source: std::io::Error,
    },
    /// The runtime failed to create or start the container (bad bundle, missing
    /// entrypoint, runtime failure): the user process never ran.
    #[error("runtime {runtime} failed to {verb} container {id}: {message}")]
    NotStarted {
        /// Runtime name.
        runtime: String,
        /// `create` or `start`.
        verb: &'static str,
        /// The container ID.
        id: String,
        /// Why, in the runtime's words (one line).
        message: String,
    },
    /// Setting the executor up to wait for the container failed.
    #[error("cannot wait for container {id} ({step})")]
    Wait {
        /// The container ID.
        id: String,
        /// What failed.
        step: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The container ran (its result is in `exit`) but could not be deleted.
    #[error("cannot delete container {id}")]
    Cleanup {
        /// The container ID.
        id: String,
        /// How the container ended.
        exit: Box<Exit>,
        /// The runtime's error.
        source: RuntimeError,
    },
    /// The run failed and deleting the container failed as well.
    #[error("deleting the container failed too ({})", error_chain(cleanup))]
    RunAndCleanup {
        /// The first failure.
        #[source]
        run: Box<LifecycleError>,
        /// The deletion failure.
        cleanup: RuntimeError,
    },
}

/// Bounds on a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleOptions {
    /// Stop the container after this long; `None` runs it until it exits.
    pub timeout: Option<Duration>,
    /// Grace period between SIGTERM and SIGKILL when stopping.
    pub stop_timeout: Duration,
}

impl Default for LifecycleOptions {
    fn default() -> Self {
        Self {
            timeout: None,
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// How the executor asks a running container to stop; clones share the requests.
///
/// [`Stop::stop`] starts the graceful stop (SIGTERM, the grace period, SIGKILL);
/// [`Stop::kill`] (say, a second Ctrl-C) cuts the grace period short. Either one
/// before the container exists stops it as soon as it does.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    graceful: CancellationToken,
    now: CancellationToken,
}

impl Stop {
    /// No stop requested yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for a graceful stop.
    pub fn stop(&self) {
        self.graceful.cancel();
    }

    /// Asks for the container to be killed now (also a stop request).
    pub fn kill(&self) {
        self.graceful.cancel();
        self.now.cancel();
    }

    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.graceful.is_cancelled()
    }

    /// Resolves once a stop is requested.
    pub async fn requested(&self) {
        self.graceful.cancelled().await
    }

    async fn killed(&self) {
        self.now.cancelled().await
    }
}

/// Why the executor stopped a container before it exited by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The run's timeout passed.
    Timeout,
    /// The executor was asked to stop (SIGINT/SIGTERM).
    Interrupted,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The container's exit code; 128+N when it was killed by signal N.
    pub exit_code: i32,
    /// Set when the executor stopped the container.
    pub stopped: Option<StopReason>,
    /// When the runtime was started.
    pub started_at: SystemTime,
    /// When the container had exited.
    pub finished_at: SystemTime,
}

impl Exit {
    /// Whether the run's timeout stopped the container.
    pub fn timed_out(&self) -> bool {
        self.stopped == Some(StopReason::Timeout)
    }
}

/// Runs container `id` from `bundle` with `runtime` and waits for it; see the
/// [module docs](self).
///
/// The container's stdout and stderr are this process's (live, no buffering); its
/// stdin is empty. The runtime runs in its own process group, so a Ctrl-C at a
/// terminal reaches only the executor, which then stops the container through
/// `stop` (see [`Stop`]). `pid_file` receives the container's host pid.
///
/// Makes this process a child subreaper (for good: other children's orphans are
/// re-parented to it too from then on).
pub async fn run_container(
    runtime: &dyn Runtime,
    id: &str,
    bundle: &Path,
    pid_file: &Path,
    opts: &LifecycleOptions,
    stop: &Stop,
) -> Result<Exit, LifecycleError> {
    let mut init = None;
    let result = drive(runtime, id, bundle, pid_file, opts, stop, &mut init).await;
    let cleanup = runtime.delete(id).await;
    // The init process was left a zombie (waited for with WNOWAIT) until the
    // runtime deleted the container, so that its pid could not be reused meanwhile.
    if let Some(init) = init {
        init.reap().await;
    }
    match (result, cleanup) {
        (Ok(exit), Ok(())) => Ok(exit),
        (Ok(exit), Err(source)) => Err(LifecycleError::Cleanup {
            id: id.to_owned(),
            exit: Box::new(exit),
            source,
        }),
        (Err(err), Ok(())) => Err(err),
        (Err(err), Err(cleanup)) => Err(LifecycleError::RunAndCleanup {
            run: Box::new(err),
            cleanup,
        }),
    }
}

async fn drive(
    runtime: &dyn Runtime,
    id: &str,
    bundle: &Path,
    pid_file: &Path,
    opts: &LifecycleOptions,
    stop: &Stop,
    init: &mut Option<InitProcess>,
) -> Result<Exit, LifecycleError> {
    let wait_error = |step| {
        move |source| LifecycleError::Wait {
            id: id.to_owned(),
            step,
            source,
        }
    };
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| wait_error("become a child subreaper")(e.into()))?;
    let started_at = SystemTime::now();
    let deadline = opts.timeout.map(|after| Instant::now() + after);
    let timeout = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timeout);
    let stopped_before_start = |reason| Exit {
        // As if SIGTERM had stopped it: the user process never ran.
        exit_code: 128 + Signal::SIGTERM as i32,
        stopped: Some(reason),
        started_at,
        finished_at: SystemTime::now(),
    };

    // create
    let (stderr_read, stderr_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| wait_error("pipe")(e.into()))?;
    let mut cmd = runtime.create_command(id, bundle, pid_file);
    cmd.stdin(Stdio::null())
        .stderr(Stdio::from(stderr_write))
        .process_group(0);
    let mut create = cmd.spawn().map_err(|source| LifecycleError::Spawn {
        runtime: runtime.name().to_owned(),
        source,
    })?;
    // The command holds the pipe's write end: drop it so that the relay sees the
    // end of the container's stderr.
    drop(cmd);
    tracing::debug!(container = id, runtime = runtime.name(), "creating");
    let (create_status, stopped) = tokio::select! {
        status = create.wait() => (Some(status), None),
        () = &mut timeout => (None, Some(StopReason::Timeout)),
        () = stop.requested() => (None, Some(StopReason::Interrupted)),
    };
    let create_status = match create_status {
        Some(status) => status,
        None => {
            tracing::warn!(container = id, reason = ?stopped, "stop requested while creating");
            tokio::select! {
                status = create.wait() => status,
                () = tokio::time::sleep(CREATE_AFTER_STOP) => {
                    tracing::warn!(container = id, "runtime create does not exit, killing it");
                    let _ = create.start_kill();
                    create.wait().await
                }
            }
        }
    }
    .map_err(wait_error("wait for the runtime's create"))?;
    // Until start, nothing in the container writes: all that is in the pipe now is
    // the runtime's.
    let said = drain(&stderr_read);
    if !create_status.success() {
        if let Some(reason) = stopped {
            return Ok(stopped_before_start(reason));
        }
        return Err(LifecycleError::NotStarted {
            runtime: runtime.name().to_owned(),
            verb: "create",
            id: id.to_owned(),
            message: runtime_message(&said),
        });
    }
    for line in said.lines().filter(|l| !l.trim().is_empty()) {
        tracing::warn!(container = id, runtime = runtime.name(), "runtime: {line}");
    }
    let pid = read_pid(pid_file).map_err(wait_error("read the pid file"))?;
    tracing::debug!(container = id, pid, "created");
    let process =
        &*init.insert(InitProcess::open(pid).map_err(wait_error("open the init process"))?);
    if let Some(reason) = stopped.or(stop.is_requested().then_some(StopReason::Interrupted)) {
        return Ok(stopped_before_start(reason));
    }
    let exited = process.exited();

    // start
    if let Err(err) = runtime.start(id).await {
        let message = match &err {
            RuntimeError::Failed { stderr, .. } => runtime_message(stderr),
            other => error_chain(other),
        };
        return Err(LifecycleError::NotStarted {
            runtime: runtime.name().to_owned(),
            verb: "start",
            id: id.to_owned(),
            message,
        });
    }
    tracing::info!(
        container = id,
        runtime = runtime.name(),
        pid,
        "container started"
    );
    // Relayed from here on: the container's first words follow the line saying it
    // started (the pipe holds them meanwhile).
    let relay = relay_stderr(stderr_read);

    // wait
    tokio::pin!(exited);
    let stop_reason = tokio::select! {
        status = &mut exited => Err(status),
        () = &mut timeout => Ok(StopReason::Timeout),
        () = stop.requested() => Ok(StopReason::Interrupted),
    };
    let (status, stopped) = match stop_reason {
        Err(status) => (status, None),
        Ok(reason) => {
            tracing::warn!(container = id, ?reason, "stopping container");
            let status =
                stop_container(runtime, id, process, exited, opts.stop_timeout, stop).await;
            (status, Some(reason))
        }
    };
    let code = status.map_err(wait_error("wait for the init process"))?;
    let finished_at = SystemTime::now();
    // The rest of what the container wrote to stderr, before anything else is said.
    let _ = tokio::time::timeout(STDERR_DRAIN, relay).await;
    tracing::debug!(container = id, exit_code = code, "container exited");
    Ok(Exit {
        exit_code: code,
        stopped,
        started_at,
        finished_at,
    })
}

/// SIGTERM, the grace period, SIGKILL; returns the container's exit code.
async fn stop_container(
    runtime: &dyn Runtime,
    id: &str,
    process: &InitProcess,
    mut exited: std::pin::Pin<&mut impl Future<Output = std::io::Result<i32>>>,
    grace: Duration,
    stop: &Stop,
) -> std::io::Result<i32> {
    if let Err(err) = runtime.kill(id, Signal::SIGTERM).await {
        let error = error_chain(&err);
        tracing::warn!(container = id, %error, "cannot send SIGTERM");
    }
    tokio::select! {
        code = &mut exited => return code,
        () = tokio::time::sleep(grace) => {
            tracing::warn!(container = id, ?grace, "grace period over, sending SIGKILL");
        }
        () = stop.killed() => tracing::warn!(container = id, "kill requested, sending SIGKILL"),
    }
    if let Err(err) = runtime.kill(id, Signal::SIGKILL).await {
        let error = error_chain(&err);
        tracing::warn!(container = id, %error, "cannot send SIGKILL");
    }
    tokio::select! {
        code = &mut exited => return code,
        () = tokio::time::sleep(AFTER_KILL_WAIT) => {}
    }
    // The runtime cannot kill it; deleting the container afterwards (with --force)
    // kills whatever is left in its cgroup.
    tracing::warn!(
        container = id,
        "container does not die, killing its init process"
    );
    process.kill();
    exited.await
}

#[cfg(test)]
mod tests;
