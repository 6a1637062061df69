//! OCI runtimes: the [`Runtime`] trait and the runtimes the executor can drive.
//!
//! Every runtime is driven the same way, as a runc-like command line with its own
//! state root (`--root`) under the run directory:
//!
//! - a foreground `run --bundle B --pid-file F ID` whose own exit status is the
//!   container's (128+N when the container was killed by signal N), so the exit code
//!   comes back without the executor having to be the container's parent or a child
//!   subreaper; the pid file tells a runtime failure (never written) from a runner
//!   that failed (written);
//! - `state`, `kill` and `delete --force` to inspect, stop and remove the container.
//!
//! The embedded runtime is youki's `libcontainer` (see [`embedded`]); because it
//! forks, it never runs inside the multi-threaded executor: the executor re-executes
//! itself as the hidden `executor runtime` command line, which is single-threaded.

mod cli_runtime;
pub mod embedded;

pub use cli_runtime::CliRuntime;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

/// Why a runtime command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The runtime program could not be started at all (missing, not executable).
    #[error("cannot start runtime {program}")]
    Spawn {
        /// The runtime program.
        program: PathBuf,
        /// The error from `exec`.
        source: std::io::Error,
    },
    /// The runtime ran and exited unsuccessfully.
    #[error(
        "runtime {program} {verb} exited with {status}: {}",
        first_line(stderr)
    )]
    Failed {
        /// The runtime program.
        program: PathBuf,
        /// The verb that failed (`kill`, `delete`, `state`).
        verb: &'static str,
        /// The runtime's exit status.
        status: ExitStatus,
        /// What the runtime wrote to stdout.
        stdout: String,
        /// What the runtime wrote to stderr.
        stderr: String,
    },
    /// The runtime did not finish in time and was killed.
    #[error("runtime {program} {verb} did not finish within {after:?}")]
    Timeout {
        /// The runtime program.
        program: PathBuf,
        /// The verb that hung.
        verb: &'static str,
        /// How long it was given.
        after: Duration,
    },
    /// Waiting for or talking to the runtime process failed.
    #[error("cannot wait for runtime {program}")]
    Io {
        /// The runtime program.
        program: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `state` printed something that is not an OCI state document.
    #[error("runtime {program} printed an invalid state for container {id}")]
    InvalidState {
        /// The runtime program.
        program: PathBuf,
        /// The container.
        id: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The `--runtime` value names no known runtime and no executable path.
    #[error("unknown runtime {0:?}: expected embedded, runc, crun, youki or a path to a runtime")]
    Unknown(String),
}

fn first_line(s: &str) -> &str {
    s.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("(no error output)")
}

/// Which OCI runtime to use; the `--runtime` flag and the value recorded in a run's
/// record so that `executor gc` can reach the container later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "path")]
pub enum RuntimeKind {
    /// youki's `libcontainer`, run by re-executing the given executor binary as
    /// `executor runtime`.
    Embedded(PathBuf),
    /// `runc` from `PATH`.
    Runc,
    /// `crun` from `PATH`; run in a private mount namespace without the cgroup2
    /// mount of a hybrid cgroup host, which crun refuses.
    Crun,
    /// `youki` from `PATH`.
    Youki,
    /// Any runc-compatible runtime CLI at this path.
    Path(PathBuf),
}

impl RuntimeKind {
    /// Parses a `--runtime` value: `embedded`, `runc`, `crun`, `youki`, or a path
    /// (anything containing `/`) to a runc-compatible CLI.
    ///
    /// `embedded` uses the running executor binary (`/proc/self/exe` resolved now,
    /// so that a later upgrade of the file does not change a running executor).
    pub fn parse(value: &str) -> Result<Self, RuntimeError> {
        match value {
            "embedded" => {
                let exe = std::env::current_exe().map_err(|source| RuntimeError::Spawn {
                    program: PathBuf::from("/proc/self/exe"),
                    source,
                })?;
                Ok(Self::Embedded(exe))
            }
            "runc" => Ok(Self::Runc),
            "crun" => Ok(Self::Crun),
            "youki" => Ok(Self::Youki),
            path if path.contains('/') => Ok(Self::Path(PathBuf::from(path))),
            other => Err(RuntimeError::Unknown(other.to_owned())),
        }
    }

    /// A short name for logs and records.
    pub fn name(&self) -> &str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Runc => "runc",
            Self::Crun => "crun",
            Self::Youki => "youki",
            Self::Path(p) => p.to_str().unwrap_or("custom"),
        }
    }

    /// Builds the runtime with `state_root` as its own state directory.
    pub fn build(&self, state_root: &Path) -> CliRuntime {
        CliRuntime::new(self.clone(), state_root)
    }
}

/// What a runtime's `state` says about a container (the OCI state, the part we use).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContainerState {
    /// The container ID.
    pub id: String,
    /// `creating`, `created`, `running`, `stopped` (or `paused`).
    pub status: String,
    /// The container's init process on the host, while it exists.
    #[serde(default)]
    pub pid: Option<i32>,
}

/// An OCI runtime driven by container ID, with its own state root.
///
/// Implementations must be safe to call from any thread of a multi-threaded
/// process: they talk to the runtime through child processes.
#[async_trait]
pub trait Runtime: Send + Sync + std::fmt::Debug {
    /// Name for logs (`runc`, `embedded`).
    fn name(&self) -> &str;

    /// The runtime's state directory; a container `id` has state under `state_root/id`.
    fn state_root(&self) -> &Path;

    /// The foreground run command: creates and starts container `id` from `bundle`,
    /// writes the container's host pid to `pid_file` once it is created, streams its
    /// stdio (inherited from the caller), waits, removes the container and exits with
    /// its exit code (128+N when killed by signal N).
    ///
    /// The caller spawns it, so that it decides about stdio and process groups.
    fn run_command(&self, id: &str, bundle: &Path, pid_file: &Path) -> tokio::process::Command;

    /// The container's state, or `None` when the runtime knows no such container.
    async fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError>;

    /// Sends `signal` to the container's init process.
    async fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError>;

    /// Removes the container, killing it first if it still runs. Removing a container
    /// the runtime does not know is not an error.
    async fn delete(&self, id: &str) -> Result<(), RuntimeError>;

    /// Whether the runtime holds state for container `id` (it has a directory under
    /// the state root; runc, crun, youki and the embedded runtime all lay state out so).
    fn exists(&self, id: &str) -> bool {
        self.state_root().join(id).exists()
    }
}

/// Turns a wait status into the shell's exit code: the code itself, or 128+N when the
/// process was killed by signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        // Stopped/continued are not final states; a waited-for child has one of the above.
        (None, None) => 128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runtime_names_and_paths() {
        assert_eq!(RuntimeKind::parse("runc").unwrap(), RuntimeKind::Runc);
        assert_eq!(RuntimeKind::parse("crun").unwrap(), RuntimeKind::Crun);
        assert_eq!(RuntimeKind::parse("youki").unwrap(), RuntimeKind::Youki);
        assert_eq!(
            RuntimeKind::parse("/usr/local/bin/runc").unwrap(),
            RuntimeKind::Path("/usr/local/bin/runc".into())
        );
        assert!(matches!(
            RuntimeKind::parse("embedded").unwrap(),
            RuntimeKind::Embedded(_)
        ));
        let err = RuntimeKind::parse("docker").unwrap_err();
        assert!(
            err.to_string().contains("unknown runtime \"docker\""),
            "{err}"
        );
    }

    #[test]
    fn runtime_kind_round_trips_through_the_run_record() {
        for kind in [
            RuntimeKind::Runc,
            RuntimeKind::Embedded("/usr/bin/executor".into()),
            RuntimeKind::Path("/opt/rt".into()),
        ] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(serde_json::from_str::<RuntimeKind>(&json).unwrap(), kind);
        }
    }

    #[test]
    fn signal_deaths_map_to_128_plus_n() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }
}
