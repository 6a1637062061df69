//! The embedded runtime: youki's `libcontainer` behind a runc-like command line.
//!
//! These functions fork (libcontainer clones the container's init process), so they
//! must only be called from a single-threaded process: the hidden `executor runtime`
//! command, which the executor re-executes itself into before any thread exists.
//! The multi-threaded executor reaches them through [`super::CliRuntime`] with
//! [`super::RuntimeKind::Embedded`].

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::error::LibcontainerError;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Why an embedded runtime operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// libcontainer refused or failed an operation on a container.
    #[error("cannot {op} container {id}")]
    Container {
        /// The operation (`create`, `start`, `kill`, `delete`, `load`).
        op: &'static str,
        /// The container ID.
        id: String,
        /// libcontainer's error.
        source: Box<LibcontainerError>,
    },
    /// The state root has no container of that ID.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// Waiting for the container's init process failed.
    #[error("cannot wait for container {id}")]
    Wait {
        /// The container ID.
        id: String,
        /// The errno from `waitpid`.
        source: nix::Error,
    },
    /// The signal given to `kill` is not a signal name or number.
    #[error("unknown signal {0:?}")]
    UnknownSignal(String),
    /// The runtime could not re-execute itself from a sealed copy of its binary.
    #[error("cannot seal the runtime binary ({step})")]
    Seal {
        /// What failed.
        step: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Name of the in-memory copy of the binary (shows in `/proc/PID/exe`).
const SEALED_NAME: &std::ffi::CStr = c"executor-runtime";

/// Makes sure this process runs from a sealed in-memory copy of its binary:
/// returns at once if it already does, otherwise copies the binary into a sealed
/// memfd and re-executes itself from it with the same arguments and environment
/// (never returning on success).
///
/// This defends against CVE-2019-5736: between its fork and its exec of the
/// image's entrypoint, the container's init process is this binary, running inside
/// the container; a hostile image could reach it through `/proc/self/exe` and
/// overwrite the executor on the host, which every later run then executes as
/// root. A sealed memfd has no file on the host behind it, and its seals forbid
/// writing it. Call before anything creates a container; single-threaded only.
pub fn ensure_sealed() -> Result<(), EmbeddedError> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    use std::os::unix::ffi::OsStringExt;
    let seal = |step| move |source| EmbeddedError::Seal { step, source };
    let errno = |step| {
        move |e: nix::Error| EmbeddedError::Seal {
            step,
            source: e.into(),
        }
    };

    let mut exe = std::fs::File::open("/proc/self/exe").map_err(seal("open /proc/self/exe"))?;
    let wanted = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE;
    // A regular file has no seals (EINVAL); a memfd we made has all of them.
    if let Ok(seals) = fcntl(&exe, FcntlArg::F_GET_SEALS)
        && SealFlag::from_bits_truncate(seals).contains(wanted)
    {
        return Ok(());
    }
    // Close-on-exec: the copy must not leak into the container as an open fd.
    let memfd = memfd_create(
        SEALED_NAME,
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(errno("memfd_create"))?;
    let mut copy = std::fs::File::from(memfd);
    std::io::copy(&mut exe, &mut copy).map_err(seal("copy the binary"))?;
    fcntl(&copy, FcntlArg::F_ADD_SEALS(wanted)).map_err(errno("add seals"))?;
    let cstring = |bytes: Vec<u8>| {
        std::ffi::CString::new(bytes).map_err(|e| EmbeddedError::Seal {
            step: "pass arguments",
            source: std::io::Error::other(e),
        })
    };
    let args = std::env::args_os()
        .map(|a| cstring(a.into_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    let env = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            cstring(kv)
        })
        .collect::<Result<Vec<_>, _>>()?;
    // fexecve works on a close-on-exec fd for an ELF binary (not for a script).
    let never = nix::unistd::fexecve(&copy, &args, &env).map_err(errno("fexecve"))?;
    match never {}
}

/// The OCI state of a container, as `runc state` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// OCI runtime spec version of this document.
    pub oci_version: &'static str,
    /// The container ID.
    pub id: String,
    /// `creating`, `created`, `running`, `stopped` or `paused`.
    pub status: &'static str,
    /// The init process on the host, while the container has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The bundle the container was created from.
    pub bundle: PathBuf,
}

/// Creates container `id` from `bundle`, starts it, waits for it to exit, deletes it
/// and returns its exit code (128+N when it was killed by signal N).
///
/// The container inherits this process's stdio. `pid_file` receives the init
/// process's host pid once the container exists. Single-threaded callers only.
pub fn run(
    state_root: &Path,
    id: &str,
    bundle: &Path,
    pid_file: &Path,
) -> Result<i32, EmbeddedError> {
    let err = |op| {
        move |source| EmbeddedError::Container {
            op,
            id: id.to_owned(),
            source: Box::new(source),
        }
    };
    std::fs::create_dir_all(state_root)
        .map_err(|e| err("create")(LibcontainerError::OtherIO(e)))?;
    let mut container = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_executor(DefaultExecutor {})
        .with_root_path(state_root)
        .map_err(err("create"))?
        .with_pid_file(Some(pid_file))
        .map_err(err("create"))?
        .validate_id()
        .map_err(err("create"))?
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(false)
        .build()
        .map_err(err("create"))?;
    let waited = start_and_wait(&mut container, id);
    // Remove the container whatever happened, like `runc run` does.
    let deleted = container.delete(true).map_err(err("delete"));
    let code = waited?;
    deleted?;
    Ok(code)
}

fn start_and_wait(container: &mut Container, id: &str) -> Result<i32, EmbeddedError> {
    container
        .start()
        .map_err(|source| EmbeddedError::Container {
            op: "start",
            id: id.to_owned(),
            source: Box::new(source),
        })?;
    let pid = container.pid().ok_or_else(|| EmbeddedError::Container {
        op: "start",
        id: id.to_owned(),
        source: Box::new(LibcontainerError::Other(
            "container has no init process".into(),
        )),
    })?;
    // With detach(false) the init process is our direct child.
    let pid = Pid::from_raw(pid.as_raw());
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(source) => {
                return Err(EmbeddedError::Wait {
                    id: id.to_owned(),
                    source,
                });
            }
        }
    }
}

fn load(state_root: &Path, id: &str) -> Result<Container, EmbeddedError> {
    let dir = state_root.join(id);
    if !dir.join("state.json").exists() {
        return Err(EmbeddedError::NotFound(id.to_owned()));
    }
    Container::load(dir).map_err(|source| EmbeddedError::Container {
        op: "load",
        id: id.to_owned(),
        source: Box::new(source),
    })
}

/// The state of container `id`.
pub fn state(state_root: &Path, id: &str) -> Result<State, EmbeddedError> {
    let container = load(state_root, id)?;
    let status = match container.status() {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
        ContainerStatus::Paused => "paused",
    };
    Ok(State {
        oci_version: "1.0.2",
        id: id.to_owned(),
        status,
        pid: container
            .pid()
            .map(|p| p.as_raw())
            .filter(|_| status != "stopped"),
        bundle: container.bundle().clone(),
    })
}

/// Sends `signal` (`SIGTERM`, `TERM` or `15`) to the init process of container `id`.
pub fn kill(state_root: &Path, id: &str, signal: &str) -> Result<(), EmbeddedError> {
    let signal = parse_signal(signal)?;
    let mut container = load(state_root, id)?;
    container
        .kill(signal, false)
        .map_err(|source| EmbeddedError::Container {
            op: "kill",
            id: id.to_owned(),
            source: Box::new(source),
        })
}

/// Deletes container `id`; with `force`, kills it first if it still runs.
pub fn delete(state_root: &Path, id: &str, force: bool) -> Result<(), EmbeddedError> {
    let mut container = match load(state_root, id) {
        Ok(container) => container,
        // The state file may be gone while the directory remains (a create killed
        // half-way); removing the directory is all there is to do.
        Err(EmbeddedError::NotFound(_)) if force => {
            let dir = state_root.join(id);
            return match std::fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(EmbeddedError::Container {
                    op: "delete",
                    id: id.to_owned(),
                    source: Box::new(LibcontainerError::OtherIO(e)),
                }),
            };
        }
        Err(err) => return Err(err),
    };
    container
        .delete(force)
        .map_err(|source| EmbeddedError::Container {
            op: "delete",
            id: id.to_owned(),
            source: Box::new(source),
        })
}

fn parse_signal(value: &str) -> Result<libcontainer::signal::Signal, EmbeddedError> {
    libcontainer::signal::Signal::try_from(value)
        .map_err(|_| EmbeddedError::UnknownSignal(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_short_name_and_number() {
        for value in ["SIGTERM", "TERM", "term", "15", "KILL"] {
            assert!(parse_signal(value).is_ok(), "{value}");
        }
        assert!(matches!(
            parse_signal("SIGNOPE"),
            Err(EmbeddedError::UnknownSignal(_))
        ));
    }

    #[test]
    fn unknown_containers_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            state(dir.path(), "nope"),
            Err(EmbeddedError::NotFound(_))
        ));
        assert!(matches!(
            kill(dir.path(), "nope", "TERM"),
            Err(EmbeddedError::NotFound(_))
        ));
        delete(dir.path(), "nope", true).unwrap();
    }
}
