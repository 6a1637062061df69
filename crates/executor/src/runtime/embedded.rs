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

/// Makes sure this process runs from a binary that cannot be written through
/// `/proc/self/exe`: returns at once if it already does, otherwise re-executes
/// itself (same arguments and environment, never returning on success) from a
/// read-only view of its binary, or failing that from a sealed in-memory copy.
///
/// This defends against CVE-2019-5736: between its fork and its exec of the
/// image's entrypoint, the container's init process is this binary, running inside
/// the container; a hostile image could reach it through `/proc/self/exe` and
/// overwrite the executor on the host, which every later run then executes as
/// root. Either view refuses that write:
///
/// - a read-only bind mount of the binary, detached from every mount tree right
///   after it is opened (no path leads to it; a write through the fd or
///   `/proc/PID/exe` fails with `EROFS`, and the container cannot remount what is
///   not in its mount namespace). It costs a few syscalls. It needs
///   `CAP_SYS_ADMIN` and a scratch file at `scratch` (an empty file is created
///   and removed there);
/// - a sealed memfd copy: no file on the host behind it, and its seals forbid
///   writing. It copies the whole binary for every run (tens of MB), so it is
///   only the fallback.
///
/// A binary on a read-only mount is already safe and runs as is. Call before
/// anything creates a container; single-threaded only.
pub fn ensure_sealed(scratch: &Path) -> Result<(), EmbeddedError> {
    let exe = std::fs::File::open("/proc/self/exe").map_err(seal("open /proc/self/exe"))?;
    if is_read_only(&exe) || is_sealed(&exe) {
        return Ok(());
    }
    let view = match read_only_view(&exe, scratch) {
        Ok(view) => view,
        // Not privileged enough to mount (or mounts are refused): pay for the copy.
        Err(_) => sealed_copy(exe)?,
    };
    reexec(&view)
}

/// Opens `exe` (the executor binary) as [`ensure_sealed`] would re-execute it:
/// through a detached read-only bind mount, or as is when it already lies on a
/// read-only mount. The executor spawns `executor runtime run` from this file
/// (`/proc/self/fd/N`), so that the runtime starts protected and skips its own
/// re-exec. Needs `CAP_SYS_ADMIN`; `scratch` as for [`ensure_sealed`].
pub fn read_only_binary(exe: &Path, scratch: &Path) -> Result<std::fs::File, EmbeddedError> {
    let file = std::fs::File::open(exe).map_err(seal("open the executor binary"))?;
    if is_read_only(&file) {
        return Ok(file);
    }
    read_only_view(&file, scratch)
}

fn seal(step: &'static str) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    move |source| EmbeddedError::Seal { step, source }
}

fn errno(step: &'static str) -> impl FnOnce(nix::Error) -> EmbeddedError {
    move |e| EmbeddedError::Seal {
        step,
        source: e.into(),
    }
}

const WANTED_SEALS: nix::fcntl::SealFlag = nix::fcntl::SealFlag::F_SEAL_SEAL
    .union(nix::fcntl::SealFlag::F_SEAL_SHRINK)
    .union(nix::fcntl::SealFlag::F_SEAL_GROW)
    .union(nix::fcntl::SealFlag::F_SEAL_WRITE);

/// Whether `file` is on a read-only mount (our detached view, or a read-only
/// root file system as a hardened pod has).
fn is_read_only(file: &std::fs::File) -> bool {
    nix::sys::statvfs::fstatvfs(file)
        .is_ok_and(|st| st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Whether `file` is a memfd with all our seals (a regular file has none: EINVAL).
fn is_sealed(file: &std::fs::File) -> bool {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    fcntl(file, FcntlArg::F_GET_SEALS)
        .is_ok_and(|seals| SealFlag::from_bits_truncate(seals).contains(WANTED_SEALS))
}

/// Opens `exe` through a read-only bind mount that is detached before this
/// returns; the scratch mount point is removed whatever happens.
fn read_only_view(exe: &std::fs::File, scratch: &Path) -> Result<std::fs::File, EmbeddedError> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(scratch).map_err(seal("create the scratch directory"))?;
    let target = scratch.join(format!(".exe-{}", std::process::id()));
    std::fs::File::create(&target).map_err(seal("create the mount point"))?;
    let source = PathBuf::from(format!("/proc/self/fd/{}", exe.as_raw_fd()));
    let opened = (|| {
        mount(
            Some(&source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(errno("bind-mount the binary"))?;
        let view = (|| {
            // A bind mount takes the read-only flag only on a remount.
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(errno("remount the binary read-only"))?;
            let view = std::fs::File::open(&target).map_err(seal("open the read-only binary"))?;
            // Defends against a mount that did not take the flag (say, a kernel
            // or LSM ignoring it): then the copy it is.
            if !is_read_only(&view) {
                return Err(EmbeddedError::Seal {
                    step: "check the read-only binary",
                    source: std::io::Error::other("the bind mount is writable"),
                });
            }
            Ok(view)
        })();
        // Detached: no path leads to the view any more; the open fd keeps it alive.
        umount2(&target, MntFlags::MNT_DETACH).map_err(errno("detach the binary's mount"))?;
        view
    })();
    let _ = std::fs::remove_file(&target);
    opened
}

/// Copies `exe` into a sealed memfd.
fn sealed_copy(mut exe: std::fs::File) -> Result<std::fs::File, EmbeddedError> {
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    // Close-on-exec: the copy must not leak into the container as an open fd.
    let memfd = memfd_create(
        SEALED_NAME,
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(errno("memfd_create"))?;
    let mut copy = std::fs::File::from(memfd);
    std::io::copy(&mut exe, &mut copy).map_err(seal("copy the binary"))?;
    fcntl(&copy, FcntlArg::F_ADD_SEALS(WANTED_SEALS)).map_err(errno("add seals"))?;
    Ok(copy)
}

/// Re-executes this process from `binary` with the same arguments and environment.
fn reexec(binary: &std::fs::File) -> Result<(), EmbeddedError> {
    use std::os::unix::ffi::OsStringExt;
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
    let never = nix::unistd::fexecve(binary, &args, &env).map_err(errno("fexecve"))?;
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

/// Creates container `id` from `bundle` and returns once its init process waits
/// for [`start`]; `pid_file` receives the init process's host pid.
///
/// The init process inherits this process's stdio. It is this process's child (a
/// sibling of libcontainer's intermediate process); once this process exits it is
/// re-parented to the nearest child subreaper, the executor. A failed create
/// removes what it made. Single-threaded callers only.
pub fn create(
    state_root: &Path,
    id: &str,
    bundle: &Path,
    pid_file: &Path,
) -> Result<(), EmbeddedError> {
    let err = |op| {
        move |source| EmbeddedError::Container {
            op,
            id: id.to_owned(),
            source: Box::new(source),
        }
    };
    std::fs::create_dir_all(state_root)
        .map_err(|e| err("create")(LibcontainerError::OtherIO(e)))?;
    ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_executor(DefaultExecutor {})
        .with_root_path(state_root)
        .map_err(err("create"))?
        .with_pid_file(Some(pid_file))
        .map_err(err("create"))?
        .validate_id()
        .map_err(err("create"))?
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map(drop)
        .map_err(err("create"))
}

/// Starts the user process of created container `id`.
pub fn start(state_root: &Path, id: &str) -> Result<(), EmbeddedError> {
    load(state_root, id)?
        .start()
        .map_err(|source| EmbeddedError::Container {
            op: "start",
            id: id.to_owned(),
            source: Box::new(source),
        })
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

    /// Opening the view's binary for writing, as a container would through
    /// `/proc/self/exe` (here: through the fd's magic link).
    fn writable(file: &std::fs::File) -> bool {
        use std::os::fd::AsRawFd;
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .is_ok()
    }

    #[test]
    fn the_read_only_view_cannot_be_written_and_leaves_no_mount() {
        let scratch = tempfile::tempdir().unwrap();
        // A binary that is not running: a running one refuses writes anyway
        // (ETXTBSY), which would hide a writable view.
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("executor");
        std::fs::write(&binary, b"\x7fELF not really").unwrap();
        let exe = std::fs::File::open(&binary).unwrap();
        assert!(writable(&exe), "the file itself is writable");
        let view = read_only_view(&exe, scratch.path()).unwrap();
        assert!(is_read_only(&view));
        assert!(!writable(&view), "the view is writable");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let scratch_path = scratch.path().to_str().unwrap();
        assert!(!mounts.contains(scratch_path), "{mounts}");
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &view, &mut bytes).unwrap();
        assert_eq!(bytes, std::fs::read(&binary).unwrap());
    }

    #[test]
    fn the_sealed_copy_cannot_be_written() {
        let exe = std::fs::File::open("/proc/self/exe").unwrap();
        let size = exe.metadata().unwrap().len();
        let copy = sealed_copy(exe).unwrap();
        assert!(is_sealed(&copy));
        assert_eq!(copy.metadata().unwrap().len(), size);
        use std::io::Write;
        assert!((&copy).write_all(b"x").is_err(), "the copy is writable");
    }

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
