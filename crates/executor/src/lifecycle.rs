//! Runs one container from a prepared bundle to completion.
//!
//! create + start + wait happen in one foreground `run` of the runtime, whose exit
//! status is the container's. A timeout or a stop request (the executor got
//! SIGINT/SIGTERM) sends SIGTERM to the container, waits the grace period, then
//! sends SIGKILL; a second request skips the rest of the grace period. Whatever happens, the container is deleted from the runtime
//! before [`run_container`] returns.

use crate::report::error_chain;
use crate::runtime::{Runtime, RuntimeError, exit_code};
use nix::sys::signal::Signal;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime};
use tokio::process::Child;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long to wait for the runtime to report the container's exit after SIGKILL
/// before killing the runtime process itself.
const AFTER_KILL_WAIT: Duration = Duration::from_secs(10);

/// How often to retry SIGTERM while the runtime is still creating the container.
const SIGNAL_RETRY: Duration = Duration::from_millis(100);

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
    /// The runtime exited before it created the container (bad bundle, runtime
    /// failure); its own error message went to stderr.
    #[error("runtime {runtime} failed to create container {id} (exit code {exit_code})")]
    NotStarted {
        /// Runtime name.
        runtime: String,
        /// The container ID.
        id: String,
        /// The runtime's exit code.
        exit_code: i32,
    },
    /// Waiting for the runtime process failed.
    #[error("cannot wait for runtime {runtime}")]
    Wait {
        /// Runtime name.
        runtime: String,
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
/// `stop` (see [`Stop`]). `pid_file` must not exist yet: its appearance tells
/// that the runtime created the container (a runtime that exits without writing
/// it failed, which is [`LifecycleError::NotStarted`], not a runner exit code).
pub async fn run_container(
    runtime: &dyn Runtime,
    id: &str,
    bundle: &Path,
    pid_file: &Path,
    opts: &LifecycleOptions,
    stop: &Stop,
) -> Result<Exit, LifecycleError> {
    let result = drive(runtime, id, bundle, pid_file, opts, stop).await;
    let cleanup = runtime.delete(id).await;
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
) -> Result<Exit, LifecycleError> {
    let mut cmd = runtime.run_command(id, bundle, pid_file);
    cmd.stdin(Stdio::null()).process_group(0);
    let started_at = SystemTime::now();
    let mut child = cmd.spawn().map_err(|source| LifecycleError::Spawn {
        runtime: runtime.name().to_owned(),
        source,
    })?;
    tracing::info!(container = id, runtime = runtime.name(), "runtime started");

    let timeout = async {
        match opts.timeout {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
    };
    let reason = tokio::select! {
        status = child.wait() => Err(status),
        () = timeout => Ok(StopReason::Timeout),
        () = stop.requested() => Ok(StopReason::Interrupted),
    };
    let (status, stopped) = match reason {
        Err(status) => (status, None),
        Ok(reason) => {
            tracing::warn!(container = id, ?reason, "stopping container");
            let status = stop_container(runtime, id, &mut child, opts.stop_timeout, stop).await;
            (status, Some(reason))
        }
    };
    let status = status.map_err(|source| LifecycleError::Wait {
        runtime: runtime.name().to_owned(),
        source,
    })?;
    let finished_at = SystemTime::now();
    let code = exit_code(status);
    if !pid_file.exists() && stopped.is_none() {
        return Err(LifecycleError::NotStarted {
            runtime: runtime.name().to_owned(),
            id: id.to_owned(),
            exit_code: code,
        });
    }
    tracing::info!(container = id, exit_code = code, "container exited");
    Ok(Exit {
        exit_code: code,
        stopped,
        started_at,
        finished_at,
    })
}

/// SIGTERM, the grace period, SIGKILL; returns the runtime's exit status, which is
/// the container's.
async fn stop_container(
    runtime: &dyn Runtime,
    id: &str,
    child: &mut Child,
    grace: Duration,
    stop: &Stop,
) -> std::io::Result<ExitStatus> {
    let deadline = Instant::now() + grace;
    // The runtime may still be creating the container: retry until it takes the
    // signal, the container is gone or the grace period is over.
    loop {
        match runtime.kill(id, Signal::SIGTERM).await {
            Ok(()) => break,
            Err(err) => {
                if let Some(status) = child.try_wait()? {
                    return Ok(status);
                }
                if Instant::now() >= deadline || stop.now.is_cancelled() {
                    let error = error_chain(&err);
                    tracing::warn!(container = id, %error, "cannot send SIGTERM");
                    break;
                }
            }
        }
        tokio::time::sleep(SIGNAL_RETRY).await;
    }
    tokio::select! {
        status = child.wait() => return status,
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!(container = id, ?grace, "grace period over, sending SIGKILL");
        }
        () = stop.killed() => tracing::warn!(container = id, "kill requested, sending SIGKILL"),
    }
    if let Err(err) = runtime.kill(id, Signal::SIGKILL).await {
        let error = error_chain(&err);
        tracing::warn!(container = id, %error, "cannot send SIGKILL");
    }
    tokio::select! {
        status = child.wait() => return status,
        () = tokio::time::sleep(AFTER_KILL_WAIT) => {}
    }
    // The runtime itself hangs; kill it. Deleting the container afterwards (with
    // --force) kills whatever is left of it.
    tracing::warn!(container = id, "runtime does not exit, killing it");
    child.start_kill()?;
    child.wait().await
}

/// Turns SIGINT and SIGTERM to this process into requests on `stop`: the first
/// asks for a graceful stop, the next one for an immediate kill.
///
/// The handlers are installed before this returns (from then on these signals no
/// longer terminate the process); the forwarding runs as a task of the current
/// tokio runtime, so it fails outside one.
pub fn forward_termination_signals(stop: &Stop) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop = stop.clone();
    tokio::spawn(async move {
        for _ in 0..2 {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if stop.is_requested() {
                tracing::warn!(signal = name, "received again, killing the runner now");
                stop.kill();
            } else {
                tracing::info!(signal = name, "received, stopping the runner");
                stop.stop();
            }
        }
    });
    Ok(())
}
