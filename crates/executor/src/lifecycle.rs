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
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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

/// Reads what is in the pipe now, without waiting for more.
fn drain(pipe: &OwnedFd) -> String {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let mut said = Vec::new();
    let Ok(flags) = fcntl(pipe, FcntlArg::F_GETFL) else {
        return String::new();
    };
    let flags = OFlag::from_bits_truncate(flags);
    if fcntl(pipe, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).is_ok() {
        let mut buf = [0u8; 4096];
        // Stops at EAGAIN (empty), at EOF and at a runtime that says too much.
        while said.len() < 64 * 1024 {
            match nix::unistd::read(pipe, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => said.extend_from_slice(&buf[..n]),
            }
        }
        let _ = fcntl(pipe, FcntlArg::F_SETFL(flags));
    }
    String::from_utf8_lossy(&said).into_owned()
}

/// Copies the container's stderr to this process's stderr as it comes, on a
/// thread of its own (a blocked read holds no runtime thread); the returned future
/// resolves at the end of the stream.
fn relay_stderr(pipe: OwnedFd) -> impl Future<Output = ()> {
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("container-stderr".into())
        .spawn(move || {
            let mut pipe = std::fs::File::from(pipe);
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        // Nobody to tell if our own stderr is gone; keep draining so
                        // that the container does not block on a full pipe.
                        // (Locked per write: the executor logs to stderr too.)
                        let _ = std::io::Write::write_all(&mut std::io::stderr(), &buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            drop(done);
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot relay the container's stderr");
    }
    async move {
        let _ = finished.await;
    }
}

fn read_pid(pid_file: &Path) -> std::io::Result<i32> {
    let text = std::fs::read_to_string(pid_file)?;
    text.trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("{:?} is not a pid", text.trim())))
}

/// The container's init process, a child of this process (re-parented to it as
/// a subreaper), held through a pidfd so that its pid cannot be confused with
/// another process's.
#[derive(Debug)]
struct InitProcess {
    pid: i32,
    pidfd: std::sync::Arc<AsyncFd<OwnedFd>>,
}

impl InitProcess {
    fn open(pid: i32) -> std::io::Result<Self> {
        let pidfd = crate::sys::pidfd_open(pid)?;
        // Only a child can be waited for: a runtime whose init process is not
        // re-parented here (no subreaper support) would leave us blind.
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        waitid(Id::PIDFd(pidfd.as_fd()), flags).map_err(|e| {
            std::io::Error::other(format!(
                "process {pid} is not a child of the executor ({e})"
            ))
        })?;
        let pidfd = crate::sys::async_pidfd(pidfd)?;
        Ok(Self {
            pid,
            pidfd: std::sync::Arc::new(pidfd),
        })
    }

    /// Resolves with the exit code (128+N for signal N) once the process exited;
    /// leaves it a zombie until [`InitProcess::reap`].
    fn exited(&self) -> impl Future<Output = std::io::Result<i32>> + use<> {
        let pidfd = self.pidfd.clone();
        async move {
            loop {
                let mut ready = pidfd.readable().await?;
                let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
                match waitid(Id::PIDFd(pidfd.get_ref().as_fd()), flags) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                    Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
                    Ok(_) => ready.clear_ready(),
                    Err(nix::Error::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }

    /// Reaps the process once it has exited (the runtime's delete has just killed
    /// it, if it had not exited yet). One that does not die within a second is
    /// left to whoever inherits it.
    async fn reap(self) {
        let dead = tokio::time::timeout(Duration::from_secs(1), self.exited()).await;
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG;
        let reaped = match dead {
            Ok(Ok(_)) => waitid(Id::PIDFd(self.pidfd.get_ref().as_fd()), flags).map(drop),
            Ok(Err(error)) => Err(nix::Error::from_raw(error.raw_os_error().unwrap_or(0))),
            Err(_) => Err(nix::Error::ETIMEDOUT),
        };
        if let Err(error) = reaped {
            tracing::warn!(pid = self.pid, %error, "cannot reap the container's init process");
        }
    }

    fn kill(&self) {
        if let Err(error) =
            crate::sys::pidfd_send_signal(self.pidfd.get_ref().as_fd(), Signal::SIGKILL)
        {
            tracing::warn!(pid = self.pid, %error, "cannot kill the container's init process");
        }
    }
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

/// The lifecycle against the recording fake runtime: no root, no bundle, no runtime.
#[cfg(test)]
mod tests {
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
}
