//! Host-side set-up of a container's own network namespace: bringing up its loopback
//! interface, from a `createRuntime` hook (`executor hook loopback-up`).
//!
//! A new network namespace starts with `lo` down. runc and crun bring it up; youki's
//! libcontainer does not, and a runner under it cannot reach even 127.0.0.1. The hook
//! makes every runtime give the same namespace: loopback up, nothing else.

use std::fs::File;
use std::io;

/// Errors of the loopback hook.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The OCI state on the hook's stdin is not JSON with a `pid`.
    #[error("invalid container state on stdin: {0}")]
    State(String),
    /// The container's network namespace cannot be entered.
    #[error("cannot enter the network namespace of process {pid}")]
    Namespace {
        /// The container's init process.
        pid: i32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `lo` cannot be brought up.
    #[error("cannot bring up the loopback interface")]
    Loopback(#[source] io::Error),
}

/// The container's init process, from the OCI state a runtime writes to a hook's stdin.
pub fn hook_pid(state: &[u8]) -> Result<i32, NetworkError> {
    #[derive(serde::Deserialize)]
    struct State {
        pid: Option<i32>,
    }
    let state: State =
        serde_json::from_slice(state).map_err(|e| NetworkError::State(e.to_string()))?;
    match state.pid {
        Some(pid) if pid > 0 => Ok(pid),
        _ => Err(NetworkError::State("no pid".to_owned())),
    }
}

/// Brings up `lo` in the network namespace of process `pid`. `setns` moves only the
/// calling thread, so this runs on a thread of its own, which ends with the namespace.
pub fn loopback_up(pid: i32) -> Result<(), NetworkError> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|source| NetworkError::Namespace { pid, source })?;
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            NetworkError::Namespace {
                pid,
                source: e.into(),
            }
        })?;
        crate::sys::set_interface_up("lo").map_err(NetworkError::Loopback)
    })
    .join()
    .unwrap_or_else(|_| Err(NetworkError::Loopback(io::Error::other("thread panicked"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_comes_from_the_oci_state() {
        let state =
            br#"{"ociVersion":"1.0.2","id":"x","status":"creating","pid":4242,"bundle":"/b"}"#;
        assert_eq!(hook_pid(state).unwrap(), 4242);
        for bad in [&b"{}"[..], b"not json", br#"{"pid":0}"#] {
            assert!(hook_pid(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
