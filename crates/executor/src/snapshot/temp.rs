//! Crash safety: the temp directories under `tmp/` that snapshots are unpacked in, each
//! locked for as long as its creator lives, and the removal of those (and their overlay
//! mounts) that killed unpacks left behind.

use super::{SnapshotError, Snapshotter, io_err};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{MntFlags, umount2};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

impl Snapshotter {
    /// A fresh directory under `tmp/`, locked for as long as it lives. The lock is a file
    /// `locks/tmp-<name>.lock` taken *before* the directory exists: a lock on the directory
    /// itself would leave a window between mkdir and flock in which another process's
    /// [`Snapshotter::remove_stale_temp`] takes the new directory for a leftover and
    /// deletes it under its creator.
    pub(super) fn temp_dir(&self) -> Result<LockedTempDir, SnapshotError> {
        let tmp = self.root.join("tmp");
        let locks = self.root.join("locks");
        let lock_file = tempfile::Builder::new()
            .prefix("tmp-unpack-")
            .suffix(".lock")
            .tempfile_in(&locks)
            .map_err(io_err("create lock file in", &locks))?;
        let (file, lock_path) = lock_file.into_parts();
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| io_err("lock", &lock_path)(e.into()))?;
        let name = lock_path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("tmp-"))
            .and_then(|n| n.strip_suffix(".lock"))
            .expect("the lock file is named tmp-<name>.lock")
            .to_owned();
        let path = tmp.join(name);
        fs::create_dir(&path).map_err(io_err("create temp directory", &path))?;
        Ok(LockedTempDir {
            path,
            lock: Some((lock, lock_path)),
        })
    }

    /// Removes the temp directories (and their overlay mounts) of unpacks whose process
    /// died: those whose lock file nobody holds. Live unpacks of other processes are left
    /// alone.
    pub(super) fn remove_stale_temp(&self) -> Result<(), SnapshotError> {
        let tmp = self.root.join("tmp");
        let locks = self.root.join("locks");
        for entry in fs::read_dir(&tmp).map_err(io_err("list", &tmp))? {
            let entry = entry.map_err(io_err("list", &tmp))?;
            let path = entry.path();
            let lock_path = locks.join(format!("tmp-{}.lock", entry.file_name().to_string_lossy()));
            // Created if missing (a crash after the lock file went but before the directory
            // did); a live creator always has its lock file in place.
            let Ok(handle) = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
            else {
                continue;
            };
            let Ok(_lock) = Flock::lock(handle, FlockArg::LockExclusiveNonblock) else {
                continue; // a live unpack of another process
            };
            let merged = path.join("merged");
            match umount2(&merged, MntFlags::MNT_DETACH) {
                Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
                Err(e) => {
                    return Err(SnapshotError::Mount {
                        op: "unmount",
                        target: merged,
                        source: e.into(),
                    });
                }
            }
            tracing::info!(path = %path.display(), "removing leftover of an interrupted unpack");
            match fs::remove_dir_all(&path) {
                Ok(()) => {}
                // Another process cleaning up at the same time.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &path)(e)),
            }
            let _ = fs::remove_file(&lock_path);
        }
        // Lock files of creators that died before making their directory.
        for entry in fs::read_dir(&locks).map_err(io_err("list", &locks))? {
            let entry = entry.map_err(io_err("list", &locks))?;
            let name = entry.file_name();
            let Some(dir) = name
                .to_str()
                .and_then(|n| n.strip_prefix("tmp-"))
                .and_then(|n| n.strip_suffix(".lock"))
            else {
                continue;
            };
            if tmp.join(dir).exists() {
                continue;
            }
            let Ok(handle) = File::open(entry.path()) else {
                continue;
            };
            if let Ok(_lock) = Flock::lock(handle, FlockArg::LockExclusiveNonblock) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// A temp directory under `tmp/` with its lock held; both removed on close or drop.
#[derive(Debug)]
pub(super) struct LockedTempDir {
    path: PathBuf,
    lock: Option<(Flock<File>, tempfile::TempPath)>,
}

impl LockedTempDir {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn close(mut self) -> io::Result<()> {
        self.remove()
    }

    /// Directory first, lock file last: while the directory exists, its lock must too.
    fn remove(&mut self) -> io::Result<()> {
        let Some((lock, lock_path)) = self.lock.take() else {
            return Ok(());
        };
        let result = match fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
        if result.is_err() {
            // Keep the lock file so that a later start sees the directory as stale.
            let _ = lock_path.keep();
        } else {
            drop(lock_path);
        }
        drop(lock);
        result
    }
}

impl Drop for LockedTempDir {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}
