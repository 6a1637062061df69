//! Prepare an OCI runtime bundle for one run: `config.json`, the writable `rootfs`, the
//! runner's input files and its output and status directories.
//!
//! Layout of a bundle directory:
//!
//! | path | what | in the container |
//! |---|---|---|
//! | `config.json` | the OCI runtime spec | |
//! | `rootfs/` | overlay over the snapshots (upper in `upper/`, `work/`) | `/` |
//! | `inputs/context`, `inputs/args` | copies of the runner inputs, mode 0600, owned by the process user | `/runner-context`, `/runner-args` (read-only) |
//! | `inputs/kubeconfig`, `inputs/kube/` | optional kubeconfig with its certificate files | `/etc/runner/kubeconfig`, `/etc/runner/kube/` (read-only) |
//! | `out/` | artifacts | `/out` (writable) |
//! | `status/` | the SDK's file reporter writes `status.json` here | `/run/runner` (writable) |
//!
//! The spec follows the secure defaults of containerd and runc's `runc spec`: new PID, IPC,
//! UTS and mount namespaces, a network namespace unless host networking is asked for, the 11
//! default capabilities and no more, `noNewPrivileges`, runc's masked and read-only paths, a
//! device cgroup that denies all but the standard devices, `RLIMIT_NOFILE` 1024. The cgroups
//! path is left to the runtime. The seccomp filter is Docker's allow list
//! ([`crate::seccomp`]), resolved for the capabilities the process gets
//! ([`crate::capabilities`]: podman's default set, stricter than containerd's).

mod confinement;
mod inputs;
mod spec;

pub use confinement::{CPU_PERIOD_US, Cpus, MASKED_PATHS, READONLY_PATHS, Seccomp};

use crate::capabilities::{CapChange, CapabilityError};
use crate::seccomp::{self, SeccompError};
use crate::snapshot::{self, RootfsMount, SnapshotError};
use crate::user::{self, UserError};
use inputs::{Inputs, stage_kubeconfig, write_private};
use oci_spec::OciSpecError;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Spec;
use spec::build_spec;
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};

pub use runner_contract::paths::{ARGS_PATH, CONTEXT_PATH, OUT_DIR};
/// The directory the runner's status file is written to in the container.
pub const STATUS_DIR: &str = "/run/runner";
/// The status file path given to the runner (`RUNNER_STATUS_PATH`).
pub const STATUS_PATH: &str = "/run/runner/status.json";
/// Where an optional kubeconfig appears in the container (`KUBECONFIG`).
pub const KUBECONFIG_PATH: &str = "/etc/runner/kubeconfig";
/// Where the certificate files a kubeconfig references appear in the container.
pub const KUBE_FILES_DIR: &str = "/etc/runner/kube";
/// `PATH` when the image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub use crate::capabilities::DEFAULT_CAPABILITIES;

/// Errors while preparing or cleaning up a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file or directory of the bundle could not be written or read.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The runner context or args file cannot be read or is not YAML.
    #[error("invalid runner {what} {path}: {reason}")]
    InvalidInput {
        /// `context` or `args`.
        what: &'static str,
        /// The host file.
        path: PathBuf,
        /// What is wrong (the parser's message, with line and column).
        reason: String,
    },
    /// The bundle directory exists and is not empty: a bundle never overwrites one.
    #[error("bundle directory {0} exists and is not empty")]
    NotEmpty(PathBuf),
    /// The root file system could not be made (or removed).
    #[error("cannot prepare the root file system")]
    Rootfs(#[from] SnapshotError),
    /// The process user could not be resolved in the image.
    #[error("cannot resolve the process user")]
    User(#[from] UserError),
    /// Neither the options nor the image config give a command.
    #[error("no command: the image has no Entrypoint or Cmd and none was given")]
    NoCommand,
    /// An option is invalid.
    #[error("invalid option {field}: {reason}")]
    InvalidOption {
        /// The option.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The kubeconfig cannot be read or rewritten.
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The host kubeconfig file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A `--cap-add` or `--cap-drop` value is invalid.
    #[error("invalid capabilities")]
    Capabilities(#[from] CapabilityError),
    /// The seccomp profile cannot be resolved.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// oci-spec rejected the generated spec.
    #[error("cannot build the runtime spec")]
    Spec(#[from] OciSpecError),
    /// Preparing failed, and so did removing what was already made.
    #[error("{error} (and cleaning up failed: {cleanup})")]
    Cleanup {
        /// The original failure.
        error: Box<BundleError>,
        /// The cleanup failure.
        cleanup: Box<BundleError>,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Whether the container gets its own network namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// A new, empty network namespace (loopback only): the default.
    #[default]
    None,
    /// The host's network namespace; the host's `/etc/resolv.conf` and `/etc/hosts` are
    /// mounted read-only. Needed by runners that talk to an API server.
    Host,
}

/// An extra bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Host path.
    pub source: PathBuf,
    /// Absolute path in the container.
    pub destination: PathBuf,
    /// Mount read-only.
    pub read_only: bool,
}

/// A runner input file's bytes, read once; `Debug` shows only their length (runner
/// inputs may hold secrets).
#[derive(Clone, PartialEq, Eq)]
pub struct InputBytes(pub std::sync::Arc<[u8]>);

impl std::fmt::Debug for InputBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InputBytes({} bytes)", self.0.len())
    }
}

/// What a run may change about the image's defaults, and the runner's inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleOptions {
    /// The runner context file on the host (copied into the bundle).
    pub context_file: PathBuf,
    /// The context file's bytes as the caller already read them (to parse the typed
    /// context from): the bundle then holds exactly those bytes, not a second read that
    /// could differ. `None`: the file is read.
    pub context_bytes: Option<InputBytes>,
    /// The runner args file on the host (copied into the bundle).
    pub args_file: PathBuf,
    /// Replaces the image's `Entrypoint`; as with Docker, it also drops the image's `Cmd`.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` pairs added to (or replacing) the image's `Env`.
    pub env: Vec<String>,
    /// Replaces the image's `User` (`name`, `uid`, `user:group`, `uid:gid`).
    pub user: Option<String>,
    /// Replaces the image's `WorkingDir` (absolute).
    pub workdir: Option<String>,
    /// Network namespace choice.
    pub network: Network,
    /// Mount the root file system read-only (`/out` and `/run/runner` stay writable).
    pub readonly_rootfs: bool,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// Maximum number of processes.
    pub pids_limit: Option<i64>,
    /// Extra bind mounts.
    pub mounts: Vec<BindMount>,
    /// A kubeconfig to hand to the runner, with the certificate files it references.
    pub kubeconfig: Option<PathBuf>,
    /// The container's host name.
    pub hostname: String,
    /// The seccomp filter: the built-in allow list by default.
    pub seccomp: Seccomp,
    /// Capabilities added to the default set ([`DEFAULT_CAPABILITIES`]).
    pub cap_add: Vec<CapChange>,
    /// Capabilities dropped from the default set.
    pub cap_drop: Vec<CapChange>,
    /// CPU limit (a CFS quota over a 100 ms period).
    pub cpus: Option<Cpus>,
    /// How the runtime that will run the bundle reads seccomp argument conditions.
    pub seccomp_dialect: seccomp::Dialect,
    /// The executor binary, run as a `createRuntime` hook (`executor hook loopback-up`)
    /// that brings up `lo` in the container's own network namespace. runc and crun do
    /// that themselves; youki's libcontainer does not, and a runner then cannot even
    /// talk to itself on 127.0.0.1. `None`: no hook.
    pub loopback_hook: Option<PathBuf>,
}

impl BundleOptions {
    /// Options with the image's defaults and the secure defaults for everything else.
    pub fn new(context_file: impl Into<PathBuf>, args_file: impl Into<PathBuf>) -> Self {
        Self {
            context_file: context_file.into(),
            context_bytes: None,
            args_file: args_file.into(),
            entrypoint: None,
            cmd: None,
            env: Vec::new(),
            user: None,
            workdir: None,
            network: Network::None,
            readonly_rootfs: false,
            memory_limit: None,
            pids_limit: None,
            mounts: Vec::new(),
            kubeconfig: None,
            hostname: "runner".to_owned(),
            seccomp: Seccomp::Default,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            cpus: None,
            seccomp_dialect: seccomp::Dialect::Oci,
            loopback_hook: None,
        }
    }
}

/// A prepared bundle directory. The root file system stays mounted until
/// [`Bundle::cleanup`].
#[derive(Debug)]
pub struct Bundle {
    dir: PathBuf,
    rootfs: Option<RootfsMount>,
    spec: Spec,
}

impl Bundle {
    /// Writes a bundle for an image into `dir` (must be absent or empty; its mode becomes
    /// 0700): mounts the root file system over `lowers` (snapshot directories, bottom first),
    /// resolves the user in it, copies the inputs and writes `config.json`. On failure,
    /// everything made so far is removed again (`dir` too, if this call created it).
    pub fn prepare(
        config: &ImageConfiguration,
        lowers: &[PathBuf],
        dir: &Path,
        opts: &BundleOptions,
    ) -> Result<Bundle, BundleError> {
        check_options(opts)?;
        // Read and checked before anything is made, so a bad input costs no rootfs mount
        // and the runner never starts on a document it cannot parse.
        let inputs = Inputs::read(opts)?;
        let created = match fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(BundleError::NotEmpty(dir.to_owned()));
                }
                false
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
                true
            }
            Err(e) => return Err(io_err("read directory", dir)(e)),
        };
        // config.json and inputs/ may hold secrets (env, args, kubeconfig). The container
        // reaches its rootfs and binds through mounts, not through this path, so 0700 costs
        // it nothing.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("set mode of", dir))?;
        let mut bundle = Bundle {
            dir: dir.to_owned(),
            rootfs: None,
            spec: Spec::default(),
        };
        match bundle.fill(config, lowers, opts, &inputs) {
            Ok(()) => Ok(bundle),
            Err(error) => match bundle.remove_contents().and_then(|()| {
                // A directory this call created goes too; one the caller made stays.
                if created {
                    fs::remove_dir(dir).map_err(io_err("remove", dir))?;
                }
                Ok(())
            }) {
                Ok(()) => Err(error),
                Err(cleanup) => Err(BundleError::Cleanup {
                    error: Box::new(error),
                    cleanup: Box::new(cleanup),
                }),
            },
        }
    }

    fn fill(
        &mut self,
        config: &ImageConfiguration,
        lowers: &[PathBuf],
        opts: &BundleOptions,
        input: &Inputs,
    ) -> Result<(), BundleError> {
        let dir = self.dir.clone();
        let inputs = dir.join("inputs");
        let out = dir.join("out");
        let status = dir.join("status");
        mkdir(&inputs, 0o700)?;
        mkdir(&out, 0o755)?;
        mkdir(&status, 0o755)?;

        let rootfs = snapshot::mount_rootfs(lowers, &dir)?;
        let image = config.config().clone().unwrap_or_default();
        let user_spec = opts
            .user
            .clone()
            .or_else(|| image.user().clone())
            .unwrap_or_default();
        let user = user::resolve(rootfs.path(), &user_spec)?;
        self.rootfs = Some(rootfs);

        // The runner reads its inputs and writes its results as the image's user.
        let owned = |path: &Path| {
            chown(path, Some(user.uid), Some(user.gid)).map_err(io_err("set owner of", path))
        };
        let context = inputs.join("context");
        let args = inputs.join("args");
        write_private(&context, &input.context)?;
        owned(&context)?;
        write_private(&args, &input.args)?;
        owned(&args)?;
        owned(&out)?;
        owned(&status)?;

        let kube = match &opts.kubeconfig {
            Some(path) => {
                let kube_dir = inputs.join("kube");
                mkdir(&kube_dir, 0o755)?;
                let written = stage_kubeconfig(path, &inputs.join("kubeconfig"), &kube_dir)?;
                for file in written.iter().chain([&inputs.join("kubeconfig")]) {
                    owned(file)?;
                }
                true
            }
            None => false,
        };

        self.spec = build_spec(&image, &user, &dir, opts, kube)?;
        let config_path = dir.join("config.json");
        let json = serde_json::to_vec_pretty(&self.spec)
            .map_err(|e| io_err("serialize", &config_path)(io::Error::other(e)))?;
        write_private(&config_path, &json)?;
        tracing::debug!(bundle = %dir.display(), uid = user.uid, gid = user.gid, "bundle prepared");
        Ok(())
    }

    /// The bundle directory (what `runc run -b` takes).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The generated runtime spec (as written to `config.json`).
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The root file system (`rootfs/`).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// The host side of the container's `/out`.
    pub fn out_dir(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// The host side of `RUNNER_STATUS_PATH`: read it after the run.
    pub fn status_file(&self) -> PathBuf {
        self.dir.join("status").join("status.json")
    }

    /// Leaves the bundle in place, root file system mounted, for whoever removes it later
    /// ([`snapshot::cleanup_rootfs`] on the directory, then delete it): for bundles that
    /// outlive this process (`executor bundle`) or whose run directory is removed as a whole.
    pub fn detach(self) -> PathBuf {
        let mut this = self;
        if let Some(rootfs) = this.rootfs.take() {
            rootfs.detach();
        }
        this.dir.clone()
    }

    /// Unmounts the root file system and removes the whole bundle directory, including
    /// `out/` and the status file: collect them first.
    pub fn cleanup(mut self) -> Result<(), BundleError> {
        self.remove_contents()?;
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &self.dir)(e)),
        }
    }

    fn remove_contents(&mut self) -> Result<(), BundleError> {
        match self.rootfs.take() {
            Some(rootfs) => rootfs.unmount()?,
            // Also unmounts a rootfs that was mounted before a later step failed.
            None => snapshot::cleanup_rootfs(&self.dir)?,
        }
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("read directory", &self.dir)(e)),
        };
        for entry in entries {
            let path = entry.map_err(io_err("read directory", &self.dir))?.path();
            let result = if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            result.map_err(io_err("remove", &path))?;
        }
        Ok(())
    }
}

fn check_options(opts: &BundleOptions) -> Result<(), BundleError> {
    let invalid = |field, reason: String| Err(BundleError::InvalidOption { field, reason });
    for kv in &opts.env {
        if !kv.contains('=') || kv.starts_with('=') {
            return invalid("env", format!("{kv:?} is not KEY=VALUE"));
        }
    }
    if let Some(w) = &opts.workdir
        && !w.starts_with('/')
    {
        return invalid("workdir", format!("{w:?} is not absolute"));
    }
    for m in &opts.mounts {
        if !m.destination.is_absolute() {
            return invalid(
                "mounts",
                format!("destination {} is not absolute", m.destination.display()),
            );
        }
        if let Err(e) = fs::metadata(&m.source) {
            return invalid(
                "mounts",
                format!("source {} is not usable: {e}", m.source.display()),
            );
        }
    }
    if opts.memory_limit.is_some_and(|m| m <= 0) {
        return invalid("memory_limit", "must be positive".to_owned());
    }
    if opts.pids_limit.is_some_and(|m| m <= 0) {
        return invalid("pids_limit", "must be positive".to_owned());
    }
    Ok(())
}

fn mkdir(path: &Path, mode: u32) -> Result<(), BundleError> {
    fs::create_dir(path).map_err(io_err("create directory", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("set mode of", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_are_rejected_by_name() {
        let mut opts = BundleOptions::new("/c", "/a");
        opts.env = vec!["NOVALUE".into()];
        assert_eq!(
            check_options(&opts).unwrap_err().to_string(),
            "invalid option env: \"NOVALUE\" is not KEY=VALUE"
        );
        let mut opts = BundleOptions::new("/c", "/a");
        opts.workdir = Some("relative".into());
        assert!(
            check_options(&opts)
                .unwrap_err()
                .to_string()
                .contains("workdir")
        );
        let mut opts = BundleOptions::new("/c", "/a");
        opts.memory_limit = Some(0);
        assert!(
            check_options(&opts)
                .unwrap_err()
                .to_string()
                .contains("memory_limit")
        );
    }
}
