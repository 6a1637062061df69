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
//! (`--max-concurrent-runs`): files `0`..`N-1`, each held with `flock` by the run
//! that took it (see [`Runs::wait_for_slot`]). As with the run lock, the kernel
//! frees a slot when its executor dies, however it dies.

use crate::error::error_chain;
use crate::runtime::{CliRuntime, Runtime, RuntimeError, RuntimeKind};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

const LOCK_FILE: &str = "lock";
const RECORD_FILE: &str = "run.json";

/// A run directory without a lock file younger than this may be one being created
/// right now; older ones are left-overs of an executor killed while creating it.
const CREATION_WINDOW: Duration = Duration::from_secs(60);

/// The directory of the concurrent-run slots, a sibling of `runs/` (inside it, gc
/// would take it for a run left-over).
const SLOTS_DIR: &str = "run-slots";

/// How long gc waits for the runtime of a dead executor (killed with it) to exit
/// and free the run's lock.
const DYING_RUNTIME_WAIT: Duration = Duration::from_secs(10);

/// How often a run waiting for a slot tries the slots again. flock has no way to
/// wait for any one of several locks, so waiting runs poll; a run lasts far longer.
const SLOT_POLL: Duration = Duration::from_millis(100);

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

/// One slot of the concurrent-run limit, held for as long as this value lives
/// (and freed by the kernel if the process dies).
#[derive(Debug)]
pub struct RunSlot {
    index: usize,
    _lock: Flock<File>,
}

impl RunSlot {
    /// Which slot (`0`..limit) this is.
    pub fn index(&self) -> usize {
        self.index
    }
}

/// A live run's directory, locked for as long as this value lives.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    record: RunRecord,
    _lock: Flock<File>,
}

/// What [`Runs::gc`] did.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Runs whose left-overs were removed.
    pub removed: Vec<String>,
    /// Runs skipped because their executor is alive.
    pub live: Vec<String>,
    /// Runs that could not be cleaned, and why; a later gc retries them.
    pub failed: Vec<(String, RunsError)>,
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

    /// Takes a free slot of `limit` if there is one, without waiting.
    ///
    /// The slots are shared by every executor with this root; one that runs with a
    /// smaller limit uses only the first slots, so runs with different limits
    /// together stay within the largest of them.
    pub fn try_slot(&self, limit: NonZeroUsize) -> Result<Option<RunSlot>, RunsError> {
        std::fs::create_dir_all(&self.slots).map_err(io("create", &self.slots))?;
        // Start at a different slot in each process: with many waiting runs, most
        // first tries then hit different files.
        let first = std::process::id() as usize % limit.get();
        for index in (first..limit.get()).chain(0..first) {
            let path = self.slots.join(index.to_string());
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io("create", &path))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(Some(RunSlot { index, _lock: lock })),
                Err((_, nix::Error::EWOULDBLOCK)) => continue,
                Err((_, errno)) => return Err(io("lock", &path)(errno.into())),
            }
        }
        Ok(None)
    }

    /// Waits until one of the `limit` slots is free and takes it; logs once that
    /// the run waits. Waiting runs take freed slots in no particular order.
    pub async fn wait_for_slot(&self, limit: NonZeroUsize) -> Result<RunSlot, RunsError> {
        let mut logged = false;
        loop {
            if let Some(slot) = self.try_slot(limit)? {
                if logged {
                    tracing::info!(slot = slot.index(), "got a run slot");
                }
                return Ok(slot);
            }
            if !logged {
                tracing::info!(
                    limit = limit.get(),
                    "waiting for a run slot: the concurrent-run limit is reached"
                );
                logged = true;
            }
            tokio::time::sleep(SLOT_POLL).await;
        }
    }

    /// The runs directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

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

    /// Finds runs whose executor is gone and removes what they left: the container
    /// (killed and deleted through its runtime), mounts under the run directory and
    /// the directory itself. Live runs are never touched.
    pub async fn gc(&self) -> GcReport {
        let mut report = GcReport::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(source) => {
                report.failed.push((
                    String::new(),
                    RunsError::Io {
                        op: "read",
                        path: self.dir.clone(),
                        source,
                    },
                ));
                return report;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            match collect(&entry.path()).await {
                Ok(true) => report.removed.push(name),
                Ok(false) => report.live.push(name),
                Err(err) => report.failed.push((name, err)),
            }
        }
        for id in &report.removed {
            tracing::info!(run = %id, "removed left-overs of an interrupted run");
        }
        for (id, err) in &report.failed {
            tracing::warn!(run = %id, error = %error_chain(err), "cannot clean up interrupted run");
        }
        report
    }
}

/// Cleans one run directory if its owner is gone; `Ok(false)` when it is live.
async fn collect(dir: &Path) -> Result<bool, RunsError> {
    let lock_path = dir.join(LOCK_FILE);
    let _lock = match File::open(&lock_path) {
        Ok(file) => match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Some(lock),
            Err((file, nix::Error::EWOULDBLOCK)) => {
                if owner_alive(dir) {
                    return Ok(false);
                }
                // The executor is gone but a runtime it started still holds the
                // inherited lock: it was sent SIGKILL when the executor died and
                // is about to exit. Wait for it rather than clean up under it.
                match wait_for_lock(file, &lock_path, DYING_RUNTIME_WAIT).await? {
                    Some(lock) => Some(lock),
                    None => return Ok(false),
                }
            }
            Err((_, errno)) => return Err(io("lock", &lock_path)(errno.into())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let age = std::fs::metadata(dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            if age < CREATION_WINDOW {
                return Ok(false);
            }
            None
        }
        Err(e) => return Err(io("open", &lock_path)(e)),
    };
    let record_path = dir.join(RECORD_FILE);
    let record: Option<RunRecord> = match std::fs::read(&record_path) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes).map_err(|source| RunsError::Record {
                path: record_path.clone(),
                source,
            })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("read", &record_path)(e)),
    };
    if let Some(record) = &record {
        // The lock is free, so the owner is gone; the pid check guards against a
        // lock file replaced by hand.
        if record.pid_start_time.is_some()
            && process_start_time(record.pid) == record.pid_start_time
        {
            return Ok(false);
        }
        let runtime = record.runtime.build(&record.state_root);
        let removed = remove_container(&runtime, record).await;
        remove_cgroups(Path::new(CGROUP_ROOT), &record.container_id).await;
        if let Err(err) = removed {
            // A runtime killed half-way through creating the container leaves
            // state its own delete trips over (say, youki looking for a cgroup
            // it never made). The container's processes died with its cgroups
            // above; what is left is the state, which is ours to remove.
            tracing::warn!(
                run = %record.id,
                error = %error_chain(&err),
                "runtime cannot delete the container; removing its state"
            );
            remove_dir(&record.state_root.join(&record.container_id))?;
        }
    }
    unmount_under(dir)?;
    remove_dir(dir)?;
    Ok(true)
}

/// Whether the executor recorded in `dir`'s run record still runs (or, without a
/// readable record, whether it may: then it counts as alive).
fn owner_alive(dir: &Path) -> bool {
    match std::fs::read(dir.join(RECORD_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<RunRecord>(&bytes).ok())
    {
        Some(record) => {
            record.pid_start_time.is_none()
                || process_start_time(record.pid) == record.pid_start_time
        }
        None => true,
    }
}

/// Retries the lock on `file` until `limit` passes.
async fn wait_for_lock(
    mut file: File,
    path: &Path,
    limit: Duration,
) -> Result<Option<Flock<File>>, RunsError> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(lock)),
            Err((back, nix::Error::EWOULDBLOCK)) => file = back,
            Err((_, errno)) => return Err(io("lock", path)(errno.into())),
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(path = %path.display(), "a runtime of a dead executor still holds the run");
            return Ok(None);
        }
    }
}

/// Where cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Removes the cgroups a runtime killed while creating container `id` left: it
/// made them before it wrote any state, so `delete` knows nothing of them. They
/// are named after the container (runc and crun: `ID`, youki: `:youki:ID`) at the
/// top of each hierarchy (cgroup v1: one per controller; v2: the root itself), as
/// the bundles leave `cgroupsPath` unset. Processes still in them are killed
/// first. Best effort: failures are logged, a later gc retries nothing (the run
/// directory is gone), so this waits up to a second for the kills to land.
async fn remove_cgroups(root: &Path, id: &str) {
    let mut hierarchies = vec![root.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(root) {
        hierarchies.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    for hierarchy in hierarchies {
        for name in [id.to_owned(), format!(":youki:{id}")] {
            let cgroup = hierarchy.join(name);
            if !cgroup.is_dir() {
                continue;
            }
            for _ in 0..50 {
                let procs =
                    std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                match std::fs::remove_dir(&cgroup) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            if cgroup.exists() {
                tracing::warn!(cgroup = %cgroup.display(), "cannot remove a left-over cgroup");
            } else {
                tracing::info!(cgroup = %cgroup.display(), "removed a left-over cgroup");
            }
        }
    }
}

async fn remove_container(runtime: &CliRuntime, record: &RunRecord) -> Result<(), RunsError> {
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
fn remove_dir(dir: &Path) -> Result<(), RunsError> {
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

fn write_atomic(path: &Path, record: &RunRecord) -> Result<(), RunsError> {
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(record).map_err(|source| RunsError::Record {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(&tmp, json).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("write", path))
}

/// The start time of process `pid` in clock ticks after boot, if it exists.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields after
    // it start after the last ')'. starttime is field 22, the 20th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| PathBuf::from(unescape_mount_path(escaped)))
        .filter(|p| p.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts.dedup();
    mounts
}

/// Unmounts everything mounted at or under `dir`, deepest first; a busy mount is
/// detached (MNT_DETACH) as a last resort so that the directory can be removed.
pub fn unmount_under(dir: &Path) -> Result<(), RunsError> {
    use nix::mount::{MntFlags, umount2};
    // Stacked mounts on one point need one unmount each: repeat until none is left.
    for _ in 0..16 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return Ok(());
        }
        for mount in mounts {
            if let Err(errno) = umount2(&mount, MntFlags::empty()) {
                tracing::debug!(path = %mount.display(), %errno, "unmount failed, detaching");
                match umount2(&mount, MntFlags::MNT_DETACH) {
                    Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
                    Err(source) => {
                        return Err(RunsError::Unmount {
                            path: mount,
                            source,
                        });
                    }
                }
            }
        }
    }
    match mounts_under(dir).into_iter().next() {
        None => Ok(()),
        Some(path) => Err(RunsError::Unmount {
            path,
            source: nix::Error::EBUSY,
        }),
    }
}

/// Undoes the octal escapes (`\040` for a space) of paths in mountinfo.
fn unescape_mount_path(escaped: &str) -> String {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &escaped[i + 1..i + 4];
            if let Ok(b) = u8::from_str_radix(digits, 8) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mount_path(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape_mount_path(r"/tab\011x"), "/tab\tx");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path(r"/end\04"), r"/end\04");
    }

    #[test]
    fn own_start_time_is_known_and_a_dead_pid_has_none() {
        assert!(process_start_time(std::process::id()).is_some());
        // pid_max is at most 2^22.
        assert_eq!(process_start_time(u32::MAX - 1), None);
    }

    #[test]
    fn run_ids_are_unique() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| new_run_id()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[tokio::test]
    async fn a_live_run_is_skipped_and_a_dead_one_removed() {
        let root = tempfile::tempdir().unwrap();
        let runs = Runs::open(root.path()).unwrap();
        let live = runs.create(&RuntimeKind::Runc).unwrap();
        std::fs::create_dir_all(live.bundle_dir().join("inputs")).unwrap();
        let mode = std::fs::metadata(live.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "run dirs are private");

        // A run whose executor died: lock free, record naming a process that is
        // not the recorded one (start time 1 tick after boot is never ours).
        let dead = runs.create(&RuntimeKind::Runc).unwrap();
        let dead_path = dead.path().to_path_buf();
        let mut record = dead.record().clone();
        record.pid_start_time = Some(1);
        write_atomic(&dead_path.join(RECORD_FILE), &record).unwrap();
        drop(dead);

        let report = runs.gc().await;
        assert_eq!(report.live, vec![live.id().to_owned()]);
        assert_eq!(report.removed, vec![record.id.clone()]);
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert!(!dead_path.exists());
        assert!(live.bundle_dir().join("inputs").exists());

        let path = live.path().to_path_buf();
        live.remove().await.unwrap();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn gc_waits_for_the_dying_runtime_of_a_dead_executor() {
        let root = tempfile::tempdir().unwrap();
        let runs = Runs::open(root.path()).unwrap();
        let run = runs.create(&RuntimeKind::Runc).unwrap();
        let path = run.path().to_path_buf();
        let mut record = run.record().clone();
        record.pid_start_time = Some(1);
        write_atomic(&path.join(RECORD_FILE), &record).unwrap();
        // The executor is gone; the runtime it started (here: flock holding the
        // lock file) still has the lock for a moment.
        drop(run);
        let mut runtime = std::process::Command::new("flock")
            .arg("--no-fork")
            .arg(path.join(LOCK_FILE))
            .args(["sleep", "60"])
            .spawn()
            .unwrap();
        let lock = File::open(path.join(LOCK_FILE)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Ok(held) = Flock::lock(lock.try_clone().unwrap(), FlockArg::LockExclusiveNonblock)
        {
            drop(held);
            assert!(std::time::Instant::now() < deadline, "flock never locked");
            std::thread::sleep(Duration::from_millis(20));
        }
        let gc = tokio::spawn({
            let runs = runs.clone();
            async move { runs.gc().await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!gc.is_finished(), "gc did not wait for the runtime");
        runtime.kill().unwrap();
        runtime.wait().unwrap();
        let report = gc.await.unwrap();
        assert_eq!(report.removed, vec![record.id.clone()], "{report:?}");
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn left_over_cgroups_named_after_the_container_are_removed() {
        // A stand-in cgroup root: one v1-style controller directory, the v2 root,
        // and a cgroup of another container that must stay.
        let root = tempfile::tempdir().unwrap();
        let id = "abc123";
        for dir in [
            "pids/abc123",
            "abc123",
            "memory/:youki:abc123",
            "pids/other",
        ] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        remove_cgroups(root.path(), id).await;
        assert!(!root.path().join("pids/abc123").exists());
        assert!(!root.path().join("abc123").exists());
        assert!(!root.path().join("memory/:youki:abc123").exists());
        assert!(root.path().join("pids/other").exists());
    }

    #[tokio::test]
    async fn slots_are_limited_shared_and_freed_on_drop() {
        let root = tempfile::tempdir().unwrap();
        let runs = Runs::open(root.path()).unwrap();
        let two = NonZeroUsize::new(2).unwrap();
        let a = runs.try_slot(two).unwrap().expect("first slot");
        // Another handle on the same root (as another executor would have).
        let other = Runs::open(root.path()).unwrap();
        let b = other.try_slot(two).unwrap().expect("second slot");
        assert_ne!(a.index(), b.index());
        assert!(runs.try_slot(two).unwrap().is_none(), "limit 2 reached");
        // The slots are not runs: gc leaves them be.
        let report = runs.gc().await;
        assert!(report.removed.is_empty() && report.live.is_empty());
        let waiter = tokio::spawn(async move { other.wait_for_slot(two).await });
        tokio::time::sleep(SLOT_POLL * 3).await;
        assert!(!waiter.is_finished(), "a third run waits");
        let freed = a.index();
        drop(a);
        let c = waiter.await.unwrap().unwrap();
        assert_eq!(c.index(), freed);
        drop((b, c));
    }

    #[test]
    fn a_dead_process_frees_its_slot() {
        let root = tempfile::tempdir().unwrap();
        let runs = Runs::open(root.path()).unwrap();
        let one = NonZeroUsize::new(1).unwrap();
        runs.try_slot(one).unwrap();
        // Another process holds it (`flock --no-fork` execs sleep with the lock),
        // then is killed as an executor would be.
        let slot_file = root.path().join(SLOTS_DIR).join("0");
        let mut holder = std::process::Command::new("flock")
            .arg("--no-fork")
            .arg(&slot_file)
            .args(["sleep", "60"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while runs.try_slot(one).unwrap().is_some() {
            assert!(std::time::Instant::now() < deadline, "holder never locked");
            std::thread::sleep(Duration::from_millis(20));
        }
        holder.kill().unwrap();
        holder.wait().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let slot = loop {
            if let Some(slot) = runs.try_slot(one).unwrap() {
                break slot;
            }
            assert!(std::time::Instant::now() < deadline, "slot never freed");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(slot.index(), 0);
    }

    #[tokio::test]
    async fn a_fresh_directory_without_lock_is_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let runs = Runs::open(root.path()).unwrap();
        std::fs::create_dir(runs.path().join("being-created")).unwrap();
        let report = runs.gc().await;
        assert_eq!(report.live, vec!["being-created".to_owned()]);
        assert!(runs.path().join("being-created").exists());
    }

    #[tokio::test]
    async fn gc_unmounts_what_a_dead_run_left_mounted() {
        let root = tempfile::tempdir().unwrap();
        let runs = Runs::open(root.path()).unwrap();
        let run = runs.create(&RuntimeKind::Runc).unwrap();
        let outer = run.bundle_dir().join("rootfs");
        let inner = outer.join("out");
        std::fs::create_dir_all(&outer).unwrap();
        let tmpfs = |target: &Path| {
            nix::mount::mount(
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .unwrap()
        };
        tmpfs(&outer);
        std::fs::create_dir_all(&inner).unwrap();
        tmpfs(&inner);
        // Something holds the inner mount busy: a lazy unmount is needed.
        let busy = File::create(inner.join("held")).unwrap();
        let path = run.path().to_path_buf();
        assert_eq!(mounts_under(&path), vec![inner.clone(), outer.clone()]);
        let mut record = run.record().clone();
        record.pid_start_time = Some(1);
        write_atomic(&path.join(RECORD_FILE), &record).unwrap();
        drop(run);

        let report = runs.gc().await;
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert!(mounts_under(&path).is_empty());
        assert!(!path.exists());
        drop(busy);
    }
}
