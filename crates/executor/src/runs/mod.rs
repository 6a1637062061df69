//! The runs directory: one directory per run under `root/runs/<run-id>/`, found and
//! cleaned by `executor gc` (and at the start of every `executor run`) when the
//! executor that owned it died.
//!
//! Layout of a run directory:
//!
//! - `lock`: held with `flock` by the owning executor for the whole run, so that
//!   gc never touches a live run; the kernel releases it when the owner dies,
//!   however it dies;
//! - `run.json`: the [`RunRecord`], written before the container exists;
//! - `state/`: the runtime's state root; `container.pid`: the container's pid;
//! - `bundle/`: the OCI bundle (rootfs mount, config.json, inputs with secrets, out).
//!
//! Next to it, `root/run-slots/` holds the slots of the concurrent-run limit
//! (`--max-concurrent-runs`, see [`Runs::wait_for_slot`]).
//!
//! This module holds [`Runs`] itself, [`RunRecord`], [`RunsError`] and
//! [`process_start_time`]. The rest is in submodules, their items re-exported here:
//! - `dir`: [`RunDir`], a live run's directory: creating, using and removing it;
//! - `slots`: [`RunSlot`], the slots of the concurrent-run limit;
//! - `gc`: [`Runs::gc`] and [`GcReport`]: cleaning up after runs whose executor died;
//! - `mounts`: [`mounts_under`] and [`unmount_under`], the mounts under a directory.

mod dir;
mod gc;
mod mounts;
mod slots;

pub use dir::RunDir;
pub use gc::GcReport;
pub use mounts::{mounts_under, unmount_under};
pub use slots::RunSlot;

use crate::runtime::{RuntimeError, RuntimeKind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const LOCK_FILE: &str = "lock";
const RECORD_FILE: &str = "run.json";

/// The directory of the concurrent-run slots, a sibling of `runs/` (inside it, gc
/// would take it for a run left-over).
const SLOTS_DIR: &str = "run-slots";

/// Why a run directory could not be created, read or cleaned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunsError {
    /// A file system operation on a run directory failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done (`create`, `remove`, `lock`, `read`, `write`).
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `run.json` is not a run record.
    #[error("invalid run record {path}")]
    Record {
        /// The record file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A mount under a run directory could not be unmounted, even lazily.
    #[error("cannot unmount {path}")]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// The errno.
        source: nix::Error,
    },
    /// The runtime could not kill or delete a left-over container.
    #[error("cannot remove container {id} of run {run}")]
    Runtime {
        /// The run.
        run: String,
        /// The container.
        id: String,
        /// The runtime's error.
        source: Box<RuntimeError>,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RunsError + 'a {
    move |source| RunsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What a run directory says about its run; enough for gc to clean it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The run ID (the directory's name).
    pub id: String,
    /// The owning executor's pid.
    pub pid: u32,
    /// That process's start time (clock ticks after boot, `/proc/PID/stat` field
    /// 22), which tells a live owner from an unrelated process that reused its pid.
    pub pid_start_time: Option<u64>,
    /// The runtime that runs the container.
    pub runtime: RuntimeKind,
    /// The runtime's state root.
    pub state_root: PathBuf,
    /// The container ID.
    pub container_id: String,
}

/// The `root/runs` directory.
#[derive(Debug, Clone)]
pub struct Runs {
    dir: PathBuf,
    slots: PathBuf,
}

impl Runs {
    /// Opens (creating it if needed) the runs directory under `root`.
    pub fn open(root: &Path) -> Result<Self, RunsError> {
        let dir = root.join("runs");
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        // Mount points in /proc/self/mountinfo are canonical paths.
        let dir = dir.canonicalize().map_err(io("resolve", &dir))?;
        let slots = root.join(SLOTS_DIR);
        Ok(Self { dir, slots })
    }

    /// The runs directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// The start time of process `pid` in clock ticks after boot, if it exists.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields after
    // it start after the last ')'. starttime is field 22, the 20th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_known_and_a_dead_pid_has_none() {
        assert!(process_start_time(std::process::id()).is_some());
        // pid_max is at most 2^22.
        assert_eq!(process_start_time(u32::MAX - 1), None);
    }
}
