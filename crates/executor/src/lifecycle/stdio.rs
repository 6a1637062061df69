//! The container's stderr: what the runtime said while creating, and the relay of the
//! container's own output once it started.

use std::io::Read;
use std::os::fd::OwnedFd;

/// Reads what is in the pipe now, without waiting for more.
pub(super) fn drain(pipe: &OwnedFd) -> String {
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
pub(super) fn relay_stderr(pipe: OwnedFd) -> impl Future<Output = ()> {
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
