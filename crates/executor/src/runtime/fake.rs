//! A recording stand-in for an OCI runtime, so that the container lifecycle
//! ([`crate::lifecycle`]) is tested without root, a bundle or a runtime installed (the
//! way containerd's runc wrapper is tested with `/bin/true` standing in for runc).
//!
//! Its "container" is a shell process: the create command forks one that waits for
//! [`Runtime::start`] (a file appearing in the state directory), then runs the shell
//! command the test chose; the create command writes its pid and exits, so the process
//! is re-parented to the executor exactly like a real container's init. `kill` signals
//! it, `delete` kills it (as `delete --force` does) and removes the state. Every call is
//! recorded, in order, for the test to assert on.

use super::{ContainerState, Runtime, RuntimeError};
use async_trait::async_trait;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the fake runtime does; see the module docs.
#[derive(Debug)]
pub struct FakeRuntime {
    state_root: PathBuf,
    /// The container's command (`sh -c`), run once started.
    command: String,
    /// When set, `create` prints this to stderr and fails; no container is made.
    create_error: Option<String>,
    /// When set, `start` fails with this on the runtime's stderr.
    start_error: Option<String>,
    /// When set, `delete` fails (after killing the container, as a real one might).
    delete_error: bool,
    calls: Mutex<Vec<String>>,
}

impl FakeRuntime {
    /// A runtime whose containers run `command` with `sh -c`; state under `state_root`.
    pub fn new(state_root: &Path, command: &str) -> FakeRuntime {
        FakeRuntime {
            state_root: state_root.to_owned(),
            command: command.to_owned(),
            create_error: None,
            start_error: None,
            delete_error: false,
            calls: Mutex::default(),
        }
    }

    /// `create` fails, printing `stderr` as the runtime's output.
    pub fn failing_create(mut self, stderr: &str) -> FakeRuntime {
        self.create_error = Some(stderr.to_owned());
        self
    }

    /// `start` fails with `stderr` as the runtime's output.
    pub fn failing_start(mut self, stderr: &str) -> FakeRuntime {
        self.start_error = Some(stderr.to_owned());
        self
    }

    /// `delete` fails.
    pub fn failing_delete(mut self) -> FakeRuntime {
        self.delete_error = true;
        self
    }

    /// The calls so far: `create`, `start`, `kill SIGTERM`, `delete`, ...
    pub fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .expect("no test panicked holding it")
            .clone()
    }

    fn record(&self, call: String) {
        self.calls
            .lock()
            .expect("no test panicked holding it")
            .push(call);
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.state_root.join(id)
    }

    fn pid(&self, id: &str) -> Option<nix::unistd::Pid> {
        let text = std::fs::read_to_string(self.dir(id).join("pid")).ok()?;
        text.trim().parse().ok().map(nix::unistd::Pid::from_raw)
    }

    fn failed(&self, verb: &'static str, stderr: &str) -> RuntimeError {
        use std::os::unix::process::ExitStatusExt;
        RuntimeError::Failed {
            program: PathBuf::from("fake-runtime"),
            verb,
            status: std::process::ExitStatus::from_raw(1 << 8),
            stdout: String::new(),
            stderr: stderr.to_owned(),
        }
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &str {
        "fake"
    }

    fn state_root(&self) -> &Path {
        &self.state_root
    }

    fn create_command(&self, id: &str, _bundle: &Path, pid_file: &Path) -> tokio::process::Command {
        self.record("create".into());
        let mut command = tokio::process::Command::new("/bin/sh");
        let script = match &self.create_error {
            Some(_) => r#"printf '%s\n' "$CREATE_ERROR" >&2; exit 1"#,
            // The init waits for the start file, then becomes the container's command.
            None => {
                r#"mkdir -p "$STATE" || exit 1
                (while [ ! -e "$STATE/started" ]; do sleep 0.01; done; exec /bin/sh -c "$COMMAND") &
                echo $! > "$STATE/pid" && cp "$STATE/pid" "$PID_FILE""#
            }
        };
        command
            .args(["-c", script])
            .env("STATE", self.dir(id))
            .env("PID_FILE", pid_file)
            .env("COMMAND", &self.command)
            .env("CREATE_ERROR", self.create_error.as_deref().unwrap_or(""));
        command
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.record("start".into());
        if let Some(stderr) = &self.start_error {
            return Err(self.failed("start", stderr));
        }
        std::fs::write(self.dir(id).join("started"), b"").map_err(|source| RuntimeError::Io {
            program: PathBuf::from("fake-runtime"),
            source,
        })
    }

    async fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        self.record("state".into());
        Ok(self.pid(id).map(|pid| ContainerState {
            id: id.to_owned(),
            status: "running".into(),
            pid: Some(pid.as_raw()),
        }))
    }

    async fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        self.record(format!("kill {signal}"));
        if let Some(pid) = self.pid(id) {
            let _ = nix::sys::signal::kill(pid, signal);
        }
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.record("delete".into());
        if let Some(pid) = self.pid(id) {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(self.dir(id));
        if self.delete_error {
            return Err(self.failed("delete", "container is busy"));
        }
        Ok(())
    }
}
