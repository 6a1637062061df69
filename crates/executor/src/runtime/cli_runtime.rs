//! A runc-compatible runtime CLI (runc, crun, youki, the embedded `executor runtime`)
//! driven through child processes.
//!
//! The embedded runtime needs its own process for `create`, which forks
//! (libcontainer clones the container's init), and for `start`, which changes the
//! working directory (libcontainer `chdir`s next to the container's notify socket,
//! which would move every thread of the executor). `state`, `kill` and `delete`
//! touch no process-wide state, so they call libcontainer right here, on a
//! blocking thread: one process start fewer per run, and none for `executor gc`.

use super::embedded::{self, EmbeddedError};
use super::{ContainerState, Runtime, RuntimeError, RuntimeKind};
use async_trait::async_trait;
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The cgroup2 mount of a hybrid cgroup host, which crun refuses to work with.
const HYBRID_CGROUP2: &str = "/sys/fs/cgroup/unified";

/// How long `state`, `kill` and `delete` may take before they count as hung.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A runtime CLI with its own state root; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct CliRuntime {
    kind: RuntimeKind,
    program: PathBuf,
    prefix: Vec<OsString>,
    state_root: PathBuf,
    command_timeout: Duration,
    private_mount_ns: bool,
    /// Embedded runtime: the read-only view of the executor binary that `create` is
    /// spawned from (`None` when it cannot be made), open until this value drops.
    exe_view: OnceLock<Option<Arc<std::fs::File>>>,
}

impl CliRuntime {
    /// A runtime of `kind` keeping its state under `state_root`.
    pub fn new(kind: RuntimeKind, state_root: &Path) -> Self {
        let (program, prefix): (PathBuf, Vec<OsString>) = match &kind {
            RuntimeKind::Embedded(exe) => {
                (exe.clone(), vec!["runtime".into(), "--state-root".into()])
            }
            RuntimeKind::Runc => ("runc".into(), vec!["--root".into()]),
            RuntimeKind::Crun => ("crun".into(), vec!["--root".into()]),
            RuntimeKind::Youki => ("youki".into(), vec!["--root".into()]),
            RuntimeKind::Path(p) => (p.clone(), vec!["--root".into()]),
        };
        let private_mount_ns = kind == RuntimeKind::Crun && is_hybrid_cgroup_host();
        Self {
            kind,
            program,
            prefix,
            state_root: state_root.to_path_buf(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            private_mount_ns,
            exe_view: OnceLock::new(),
        }
    }

    /// Overrides the program (tests put `/bin/true` or `/bin/false` in place of a
    /// runtime to check the command plumbing).
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Overrides how long `state`, `kill` and `delete` may take (default 60s).
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The runtime this CLI stands for.
    pub fn kind(&self) -> &RuntimeKind {
        &self.kind
    }

    /// Whether `state`, `kill` and `delete` call libcontainer in this
    /// process (the embedded runtime, unless tests replaced its program).
    fn in_process(&self) -> bool {
        matches!(&self.kind, RuntimeKind::Embedded(exe) if exe == &self.program)
    }

    /// Runs an embedded runtime operation on a blocking thread.
    async fn embedded<T: Send + 'static>(
        &self,
        verb: &'static str,
        op: impl FnOnce(&Path) -> Result<T, EmbeddedError> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let root = self.state_root.clone();
        tokio::task::spawn_blocking(move || op(&root))
            .await
            .map_err(|e| RuntimeError::Io {
                program: self.program.clone(),
                source: std::io::Error::other(e),
            })?
            .map_err(|source| RuntimeError::Embedded { verb, source })
    }

    fn command(&self, verb: &str) -> tokio::process::Command {
        self.command_of(&self.program, verb)
    }

    fn command_of(&self, program: &Path, verb: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&self.prefix)
            .arg(&self.state_root)
            .arg(verb)
            .stdin(Stdio::null())
            // A Rust runtime (youki) would add backtraces to its error report.
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE");
        if self.private_mount_ns {
            // crun refuses a host whose cgroup v1 hierarchies sit next to a cgroup2
            // mount ("drop all controllers from cgroupv2"); hiding that mount in a
            // private mount namespace makes it see a plain cgroup v1 host.
            crate::sys::without_cgroup2_mount(&mut cmd);
        }
        cmd
    }

    async fn exec(
        &self,
        verb: &'static str,
        args: &[&std::ffi::OsStr],
    ) -> Result<Output, RuntimeError> {
        let mut cmd = self.command(verb);
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        // Dropping the future on timeout drops the child, which kills it.
        let output = tokio::time::timeout(self.command_timeout, child.wait_with_output())
            .await
            .map_err(|_| RuntimeError::Timeout {
                program: self.program.clone(),
                verb,
                after: self.command_timeout,
            })?
            .map_err(|source| RuntimeError::Io {
                program: self.program.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(RuntimeError::Failed {
                program: self.program.clone(),
                verb,
                status: output.status,
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(output)
    }
}

impl CliRuntime {
    /// The embedded runtime's read-only view of the executor binary, made on first
    /// use (see [`super::embedded::read_only_binary`]); `None` for other runtimes,
    /// an overridden program, or when it cannot be made (the runtime then protects
    /// itself by re-executing).
    fn embedded_view(&self) -> Option<&Arc<std::fs::File>> {
        let RuntimeKind::Embedded(exe) = &self.kind else {
            return None;
        };
        if exe != &self.program {
            return None;
        }
        self.exe_view
            .get_or_init(|| {
                super::embedded::read_only_binary(exe, &self.state_root)
                    .inspect_err(|err| {
                        let error = crate::error::error_chain(err);
                        tracing::debug!(%error, "no read-only view of the executor binary");
                    })
                    .ok()
                    .map(Arc::new)
            })
            .as_ref()
    }
}

/// Whether cgroup2 is mounted at [`HYBRID_CGROUP2`] next to cgroup v1.
fn is_hybrid_cgroup_host() -> bool {
    crate::mount::read().is_ok_and(|table| {
        table
            .iter()
            .any(|m| m.mount_point == Path::new(HYBRID_CGROUP2) && m.fs_type == "cgroup2")
    })
}

#[async_trait]
impl Runtime for CliRuntime {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn state_root(&self) -> &Path {
        &self.state_root
    }

    fn create_command(&self, id: &str, bundle: &Path, pid_file: &Path) -> tokio::process::Command {
        let mut cmd = match self.embedded_view() {
            // The path resolves in the child before exec closes the (close-on-exec)
            // fd. Saves the runtime's re-exec of itself from the view.
            Some(view) => {
                let fd = std::os::fd::AsRawFd::as_raw_fd(view.as_ref());
                self.command_of(Path::new(&format!("/proc/self/fd/{fd}")), "create")
            }
            None => self.command("create"),
        };
        cmd.arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id);
        cmd
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.exec("start", &[id.as_ref()]).await.map(drop)
    }

    async fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        if !self.exists(id) {
            return Ok(None);
        }
        if self.in_process() {
            let owned = id.to_owned();
            return match self
                .embedded("state", move |root| embedded::state(root, &owned))
                .await
            {
                Ok(state) => Ok(Some(ContainerState {
                    id: state.id,
                    status: state.status.to_owned(),
                    pid: state.pid,
                })),
                Err(RuntimeError::Embedded {
                    source: EmbeddedError::NotFound(_),
                    ..
                }) => Ok(None),
                Err(err) => Err(err),
            };
        }
        let output = match self.exec("state", &[id.as_ref()]).await {
            Ok(output) => output,
            // The container went away between the check and the command.
            Err(RuntimeError::Failed { .. }) if !self.exists(id) => return Ok(None),
            Err(err) => return Err(err),
        };
        serde_json::from_slice(&output.stdout)
            .map(Some)
            .map_err(|source| RuntimeError::InvalidState {
                program: self.program.clone(),
                id: id.to_owned(),
                source,
            })
    }

    async fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        if self.in_process() {
            let id = id.to_owned();
            return self
                .embedded("kill", move |root| {
                    embedded::kill(root, &id, signal.as_str())
                })
                .await;
        }
        self.exec("kill", &[id.as_ref(), signal.as_str().as_ref()])
            .await
            .map(drop)
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        if !self.exists(id) {
            return Ok(());
        }
        let deleted = if self.in_process() {
            let owned = id.to_owned();
            self.embedded("delete", move |root| embedded::delete(root, &owned, true))
                .await
        } else {
            self.exec("delete", &["--force".as_ref(), id.as_ref()])
                .await
                .map(drop)
        };
        match deleted {
            Ok(()) => Ok(()),
            // Another delete (`executor gc`) got there first: nothing left to delete.
            Err(RuntimeError::Failed { .. } | RuntimeError::Embedded { .. })
                if !self.exists(id) =>
            {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime_with(program: &str, state: &Path) -> CliRuntime {
        CliRuntime::new(RuntimeKind::Runc, state).with_program(program)
    }

    #[tokio::test]
    async fn a_successful_command_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime_with("/bin/true", dir.path());
        rt.kill("c1", Signal::SIGTERM).await.unwrap();
    }

    #[tokio::test]
    async fn a_failing_command_carries_status_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime_with("/bin/false", dir.path());
        let err = rt.kill("c1", Signal::SIGTERM).await.unwrap_err();
        match &err {
            RuntimeError::Failed { verb, status, .. } => {
                assert_eq!(*verb, "kill");
                assert_eq!(status.code(), Some(1));
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("runtime /bin/false kill exited with")
        );
    }

    #[tokio::test]
    async fn stderr_of_a_failed_command_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("rt.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"container $4 does not exist\" >&2\nexit 3\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let rt = runtime_with(script.to_str().unwrap(), dir.path());
        let err = rt.kill("c1", Signal::SIGKILL).await.unwrap_err();
        let RuntimeError::Failed { stderr, status, .. } = &err else {
            panic!("expected Failed, got {err:?}");
        };
        assert_eq!(status.code(), Some(3));
        assert_eq!(stderr.trim(), "container c1 does not exist");
        assert!(
            err.to_string().ends_with("container c1 does not exist"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_hung_command_times_out_distinctly() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("hang.sh");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let rt = runtime_with(script.to_str().unwrap(), dir.path())
            .with_command_timeout(Duration::from_millis(300));
        let err = rt.kill("c1", Signal::SIGTERM).await.unwrap_err();
        assert!(
            matches!(err, RuntimeError::Timeout { verb: "kill", .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime_with("/nonexistent/runtime", dir.path());
        let err = rt.kill("c1", Signal::SIGTERM).await.unwrap_err();
        assert!(matches!(err, RuntimeError::Spawn { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn state_and_delete_of_an_unknown_container_are_quiet() {
        let dir = tempfile::tempdir().unwrap();
        // /bin/false would fail if it were called: unknown containers need no call.
        let rt = runtime_with("/bin/false", dir.path());
        assert_eq!(rt.state("nope").await.unwrap(), None);
        rt.delete("nope").await.unwrap();
    }

    #[test]
    fn create_command_puts_the_state_root_before_the_verb() {
        let rt = CliRuntime::new(RuntimeKind::Runc, Path::new("/r/state"));
        let cmd = rt.create_command("c1", Path::new("/r/bundle"), Path::new("/r/pid"));
        let args: Vec<_> = cmd.as_std().get_args().collect();
        assert_eq!(
            args,
            [
                "--root",
                "/r/state",
                "create",
                "--bundle",
                "/r/bundle",
                "--pid-file",
                "/r/pid",
                "c1"
            ]
        );
        let rt = CliRuntime::new(
            RuntimeKind::Embedded("/bin/executor".into()),
            Path::new("/s"),
        );
        let cmd = rt.create_command("c1", Path::new("/b"), Path::new("/p"));
        assert_eq!(cmd.as_std().get_program(), "/bin/executor");
        let args: Vec<_> = cmd.as_std().get_args().collect();
        assert_eq!(args[..4], ["runtime", "--state-root", "/s", "create"]);
    }
}
