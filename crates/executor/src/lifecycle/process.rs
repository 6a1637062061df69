//! The container's init process, waited for through a pidfd.

use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

pub(super) fn read_pid(pid_file: &Path) -> std::io::Result<i32> {
    let text = std::fs::read_to_string(pid_file)?;
    text.trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("{:?} is not a pid", text.trim())))
}

/// The container's init process, a child of this process (re-parented to it as
/// a subreaper), held through a pidfd so that its pid cannot be confused with
/// another process's.
#[derive(Debug)]
pub(super) struct InitProcess {
    pid: i32,
    pidfd: std::sync::Arc<AsyncFd<OwnedFd>>,
}

impl InitProcess {
    pub(super) fn open(pid: i32) -> std::io::Result<Self> {
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
    pub(super) fn exited(&self) -> impl Future<Output = std::io::Result<i32>> + use<> {
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
    pub(super) async fn reap(self) {
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

    pub(super) fn kill(&self) {
        if let Err(error) =
            crate::sys::pidfd_send_signal(self.pidfd.get_ref().as_fd(), Signal::SIGKILL)
        {
            tracing::warn!(pid = self.pid, %error, "cannot kill the container's init process");
        }
    }
}
