//! OCI runtimes: the [`Runtime`] trait and the runtimes the executor can drive.
//!
//! Every runtime is driven the same way, as a runc-like command line with its own
//! state root (`--root`) under the run directory, through the OCI lifecycle:
//!
//! - `create --bundle B --pid-file F ID` sets the container up and leaves its init
//!   process waiting; the container inherits the create command's stdout and
//!   stderr, and once the command exits the init process is re-parented to the
//!   nearest child subreaper, which the executor makes itself (see
//!   [`crate::lifecycle`]), so that it can wait for the container and read its exit
//!   status (128+N when it was killed by signal N);
//! - `start ID` runs the user process;
//! - `state`, `kill` and `delete --force` to inspect, stop and remove the container.
//!
//! The embedded runtime is youki's `libcontainer` (see [`embedded`]); because it
//! forks, it never runs inside the multi-threaded executor: the executor re-executes
//! itself as the hidden `executor runtime` command line, which is single-threaded.

mod cli_runtime;
pub mod embedded;
#[cfg(test)]
pub mod fake;

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
        runtime_message(stderr)
    )]
    Failed {
        /// The runtime program.
        program: PathBuf,
        /// The verb that failed (`start`, `kill`, `delete`, `state`).
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
    /// The embedded runtime, called in this process, failed.
    #[error("embedded runtime {verb} failed")]
    Embedded {
        /// The verb that failed (`start`, `kill`, `delete`, `state`).
        verb: &'static str,
        /// libcontainer's error.
        source: embedded::EmbeddedError,
    },
    /// The `--runtime` value names no known runtime and no executable path.
    #[error("unknown runtime {0:?}: expected embedded, runc, crun, youki or a path to a runtime")]
    Unknown(String),
}

/// The one line that says why a runtime command failed, out of what it wrote to
/// stderr: the last error-level message of runc's and crun's logrus/JSON log lines,
/// the `Error:` report of a Rust CLI (youki) with its causes joined, or else the
/// last non-empty line.
pub fn runtime_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut found = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(message) = log_line_error(line) {
            found = Some(message);
        } else if let Some(report) = line.strip_prefix("Error: ") {
            // anyhow's report: `Error: top`, then `Caused by:` and the causes,
            // numbered when there are several, then maybe a backtrace.
            let mut message = report.to_owned();
            while let Some(next) = lines.get(i + 1) {
                let report_ends = next.starts_with("Stack backtrace:")
                    || next.starts_with("Error: ")
                    || log_line_error(next).is_some();
                if report_ends {
                    break;
                }
                if *next != "Caused by:" {
                    let cause = next
                        .split_once(": ")
                        .filter(|(n, _)| n.parse::<u32>().is_ok())
                        .map_or(*next, |(_, cause)| cause);
                    message.push_str(": ");
                    message.push_str(cause);
                }
                i += 1;
            }
            found = Some(message);
        }
        i += 1;
    }
    found
        .or_else(|| lines.last().map(|l| (*l).to_owned()))
        .unwrap_or_else(|| "(no error output)".to_owned())
}

/// The message of an error-level log line in logrus text (`level=error
/// msg="..."`) or JSON (`{"level":"error","msg":"..."}`) form.
fn log_line_error(line: &str) -> Option<String> {
    const ERROR_LEVELS: [&str; 3] = ["error", "fatal", "panic"];
    if line.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        let level = value.get("level")?.as_str()?;
        let message = value.get("msg").or_else(|| value.get("message"))?;
        return ERROR_LEVELS
            .contains(&level)
            .then(|| message.as_str().map(str::to_owned))
            .flatten();
    }
    let level = logfmt_value(line, "level")?;
    if !ERROR_LEVELS.contains(&level.as_str()) {
        return None;
    }
    logfmt_value(line, "msg")
}

/// The value of `key=value` or `key="quoted \"value\""` in a logfmt line.
fn logfmt_value(line: &str, key: &str) -> Option<String> {
    let mut rest = line;
    loop {
        let at = rest.find(&format!("{key}="))?;
        let before_ok = at == 0 || rest.as_bytes()[at - 1] == b' ';
        let value = &rest[at + key.len() + 1..];
        if !before_ok {
            rest = value;
            continue;
        }
        let Some(quoted) = value.strip_prefix('"') else {
            return Some(value.split(' ').next().unwrap_or("").to_owned());
        };
        let mut out = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(out),
                '\\' => match chars.next() {
                    Some('n') => out.push(' '),
                    Some('t') => out.push(' '),
                    Some(other) => out.push(other),
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Some(out);
    }
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

    /// How this runtime reads seccomp argument conditions (youki's libcontainer
    /// differs from runc and crun; see [`crate::seccomp::Dialect`]).
    pub fn seccomp_dialect(&self) -> crate::seccomp::Dialect {
        match self {
            Self::Embedded(_) | Self::Youki => crate::seccomp::Dialect::Libcontainer,
            Self::Runc | Self::Crun | Self::Path(_) => crate::seccomp::Dialect::Oci,
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

    /// The create command: sets container `id` up from `bundle`, writes its init
    /// process's host pid to `pid_file`, and exits, leaving the init process waiting
    /// for [`Runtime::start`]. The container inherits the command's stdout and
    /// stderr, so the caller spawns it, choosing stdio and process group; whatever
    /// the runtime itself prints (its errors) goes to the same stderr.
    fn create_command(&self, id: &str, bundle: &Path, pid_file: &Path) -> tokio::process::Command;

    /// Starts the user process of created container `id`.
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;

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
    fn runtime_messages_are_the_errors_of_each_runtimes_output() {
        // runc, logrus text.
        assert_eq!(
            runtime_message(
                "time=\"2026-11-28T13:45:02Z\" level=warning msg=\"cgroup\"\n\
                 time=\"2026-11-28T13:45:02Z\" level=error msg=\"runc create failed: \\\"/x\\\" not found\"\n"
            ),
            "runc create failed: \"/x\" not found"
        );
        // runc/crun with --log-format json.
        assert_eq!(
            runtime_message(
                "{\"level\":\"error\",\"msg\":\"container does not exist\",\"time\":\"t\"}\n"
            ),
            "container does not exist"
        );
        // youki: tracing lines, then anyhow's report with its causes.
        let youki = "ERROR youki: error in executing command: oci spec error\n\
                     Error: oci spec error\n\nCaused by:\n    0: io operation failed\n    \
                     1: No such file or directory (os error 2)\n\nStack backtrace:\n   0: <unknown>\n";
        assert_eq!(
            runtime_message(youki),
            "oci spec error: io operation failed: No such file or directory (os error 2)"
        );
        // Plain lines (crun, the embedded runtime): the last one.
        assert_eq!(
            runtime_message("a warning\ncrun: executable not found\n\n"),
            "crun: executable not found"
        );
        assert_eq!(runtime_message(""), "(no error output)");
    }

    #[test]
    fn signal_deaths_map_to_128_plus_n() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }
}
