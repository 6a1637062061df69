//! Garbage collection of runs whose executor died ([`Runs::gc`]): their container,
//! left-over cgroups, mounts and directory; live runs are never touched.

use super::dir::{remove_container, remove_dir};
use super::{
    LOCK_FILE, RECORD_FILE, RunRecord, Runs, RunsError, io, process_start_time, unmount_under,
};
use crate::error::error_chain;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A run directory without a lock file younger than this may be one being created
/// right now; older ones are left-overs of an executor killed while creating it.
const CREATION_WINDOW: Duration = Duration::from_secs(60);

/// How long gc waits for the runtime of a dead executor (killed with it) to exit
/// and free the run's lock.
const DYING_RUNTIME_WAIT: Duration = Duration::from_secs(10);

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::dir::write_atomic;
    use crate::runs::mounts_under;
    use crate::runtime::RuntimeKind;
    use std::os::unix::fs::PermissionsExt;

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
