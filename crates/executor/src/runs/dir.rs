//! A live run's directory ([`RunDir`]): creating and locking it with its record,
//! what lives in it, and removing it with its container and mounts (which gc does
//! for runs whose executor died, too).

use super::{
    LOCK_FILE, RECORD_FILE, RunRecord, Runs, RunsError, io, process_start_time, unmount_under,
};
use crate::error::error_chain;
use crate::runtime::{CliRuntime, Runtime, RuntimeKind};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

/// A live run's directory, locked for as long as this value lives.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    record: RunRecord,
    _lock: Flock<File>,
}

impl Runs {
    /// Creates and locks a new run directory for a container run by `runtime`, and
    /// writes its record.
    pub fn create(&self, runtime: &RuntimeKind) -> Result<RunDir, RunsError> {
        let id = new_run_id();
        let path = self.dir.join(&id);
        // Owner-only: the bundle in it holds the runner's inputs, which may carry
        // secrets (kubeconfig, credentials in args).
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io("create", &path))?;
        let created = (|| {
            let lock_path = path.join(LOCK_FILE);
            let file = File::create(&lock_path).map_err(io("create", &lock_path))?;
            let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
                .map_err(|(_, errno)| io("lock", &lock_path)(errno.into()))?;
            let record = RunRecord {
                id: id.clone(),
                pid: std::process::id(),
                pid_start_time: process_start_time(std::process::id()),
                runtime: runtime.clone(),
                state_root: path.join("state"),
                container_id: id.clone(),
            };
            write_atomic(&path.join(RECORD_FILE), &record)?;
            Ok(RunDir {
                path: path.clone(),
                record,
                _lock: lock,
            })
        })();
        if created.is_err() {
            let _ = std::fs::remove_dir_all(&path);
        }
        created
    }
}

pub(super) async fn remove_container(
    runtime: &CliRuntime,
    record: &RunRecord,
) -> Result<(), RunsError> {
    let id = &record.container_id;
    if !runtime.exists(id) {
        return Ok(());
    }
    let err = |source| RunsError::Runtime {
        run: record.id.clone(),
        id: id.clone(),
        source: Box::new(source),
    };
    // delete --force kills too, but an explicit SIGKILL first makes a runtime that
    // refuses to force-delete a running container still succeed. A stopped
    // container (the executor died after it exited) needs no signal.
    let status = match runtime.state(id).await {
        Ok(Some(state)) => Some(state.status),
        Ok(None) => None,
        Err(e) => {
            let error = error_chain(&e);
            tracing::debug!(container = %id, %error, "state of left-over container unknown");
            Some("unknown".to_owned())
        }
    };
    tracing::info!(container = %id, status = status.as_deref().unwrap_or("gone"), "removing a left-over container");
    if status.as_deref().is_some_and(|s| s != "stopped")
        && let Err(e) = runtime.kill(id, nix::sys::signal::Signal::SIGKILL).await
    {
        let error = error_chain(&e);
        tracing::debug!(container = %id, %error, "kill of left-over container failed");
    }
    runtime.delete(id).await.map_err(err)
}

/// Removes a run directory, its lock file last: an executor killed half-way
/// through leaves a directory that still has its lock (free now), which the next
/// gc removes; without it, gc would take the directory for one being created.
pub(super) fn remove_dir(dir: &Path) -> Result<(), RunsError> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => return Err(io("read", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io("read", dir))?;
        if entry.file_name() == LOCK_FILE {
            continue;
        }
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        match removed {
            Ok(()) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(io("remove", &path)(e)),
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if gone(&e) => Ok(()),
        Err(e) => Err(io("remove", dir)(e)),
    }
}

impl RunDir {
    /// The run ID.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The run directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record written for gc.
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// Where the bundle goes (not created here).
    pub fn bundle_dir(&self) -> PathBuf {
        self.path.join("bundle")
    }

    /// Where the runtime writes the container's pid.
    pub fn pid_file(&self) -> PathBuf {
        self.path.join("container.pid")
    }

    /// The runtime of this run, with its state root in the run directory.
    pub fn runtime(&self) -> CliRuntime {
        self.record.runtime.build(&self.record.state_root)
    }

    /// Removes the run: deletes the container if it still exists, unmounts what is
    /// mounted under the directory (deepest first) and removes the directory, with
    /// the secret-bearing inputs in it. The lock is released last.
    pub async fn remove(self) -> Result<(), RunsError> {
        remove_container(&self.runtime(), &self.record).await?;
        unmount_under(&self.path)?;
        remove_dir(&self.path)
    }
}

fn new_run_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{:012x}{:06x}{:04x}",
        nanos & 0xffff_ffff_ffff,
        std::process::id() & 0xff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

pub(super) fn write_atomic(path: &Path, record: &RunRecord) -> Result<(), RunsError> {
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(record).map_err(|source| RunsError::Record {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(&tmp, json).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_unique() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| new_run_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
