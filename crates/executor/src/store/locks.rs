//! Lock files under `locks/`, and [`StoreLock`], a held one.
//!
//! - `locks/<hex>.lock`: held (flock) by whoever writes that blob, so that two processes
//!   pulling the same image download each blob once. It exists only while held: the holder
//!   removes it before it unlocks, and whoever locks it checks afterwards that the path
//!   still names the file it locked (see `lock_file_at`), so a failed pull leaves no
//!   lock behind. Only a killed holder leaves one; `open` and `prune` remove those.
//! - `locks/store.lock`: held shared by every pull and exclusively by `prune`, so prune
//!   never deletes a blob a running pull just fetched but has not recorded yet.

use super::blobs::sha256_hex;
use super::{Store, StoreError, io_err};
use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::Digest;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// A held file lock; released on drop. A blob's lock file is removed on drop, before
/// it is unlocked.
#[derive(Debug)]
pub struct StoreLock {
    _lock: Flock<File>,
    /// The lock file to remove on release (blob locks; not the store-wide lock).
    remove: Option<PathBuf>,
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Still locked here (the flock is released when `_lock` drops, after this): any
        // waiter on this file finds the path gone once it gets the lock, and retries on
        // a fresh file. A file that cannot be removed is only a leftover for `prune`.
        if let Some(path) = &self.remove {
            let _ = fs::remove_file(path);
        }
    }
}

impl Store {
    /// Takes the exclusive lock for writing one blob, waiting for another holder (another
    /// task or process downloading the same blob) to finish.
    /// Its lock file is removed again when the lock is released.
    pub async fn lock_blob(&self, digest: &Digest) -> Result<StoreLock, StoreError> {
        let path = self.blob_lock_path(sha256_hex(digest)?);
        let mut lock = lock_blocking(path.clone(), FlockArg::LockExclusive).await?;
        lock.remove = Some(path);
        Ok(lock)
    }

    pub(super) fn blob_lock_path(&self, hex: &str) -> PathBuf {
        self.locks_dir().join(format!("{hex}.lock"))
    }

    /// The blob lock at `path` if nobody holds it, to be removed on release.
    pub(super) fn try_lock_blob_file(path: &Path) -> Result<Option<StoreLock>, StoreError> {
        Ok(
            lock_file_at(path, FlockArg::LockExclusiveNonblock)?.map(|lock| StoreLock {
                _lock: lock,
                remove: Some(path.to_owned()),
            }),
        )
    }

    /// Takes the store-wide lock shared: held by a pull for its whole duration so that a
    /// concurrent `prune` cannot delete what it fetched before it is recorded.
    pub async fn lock_shared(&self) -> Result<StoreLock, StoreError> {
        lock_blocking(self.locks_dir().join("store.lock"), FlockArg::LockShared).await
    }
}

pub(super) fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
}

/// Locks the file at `path`, creating it if needed. Returns `None` when `arg` is a
/// non-blocking lock and someone else holds it.
///
/// A lock file may be removed by its holder (see [`StoreLock`]); whoever was waiting on
/// it then holds a lock on a file no longer at `path`, which excludes nobody. So after
/// locking, the file at `path` must still be the one locked (same device and inode);
/// otherwise this starts over on whatever is at `path` now.
fn lock_file_at(path: &Path, arg: FlockArg) -> Result<Option<Flock<File>>, StoreError> {
    use std::os::unix::fs::MetadataExt as _;
    loop {
        let file = open_lock_file(path).map_err(io_err("opening", path))?;
        let lock = match Flock::lock(file, arg) {
            Ok(lock) => lock,
            Err((_, nix::Error::EWOULDBLOCK))
                if matches!(
                    arg,
                    FlockArg::LockExclusiveNonblock | FlockArg::LockSharedNonblock
                ) =>
            {
                return Ok(None);
            }
            Err((_, source)) => {
                return Err(StoreError::Lock {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let locked = lock.metadata().map_err(io_err("inspecting", path))?;
        match fs::metadata(path) {
            Ok(now) if now.dev() == locked.dev() && now.ino() == locked.ino() => {
                return Ok(Some(lock));
            }
            // Removed (and maybe created anew) while we waited: try again.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspecting", path)(e)),
        }
    }
}

pub(super) async fn lock_blocking(path: PathBuf, arg: FlockArg) -> Result<StoreLock, StoreError> {
    tokio::task::spawn_blocking(move || {
        lock_file_at(&path, arg)?
            .map(|lock| StoreLock {
                _lock: lock,
                remove: None,
            })
            // Only a non-blocking lock comes back empty; callers here block.
            .ok_or(StoreError::Lock {
                path,
                source: nix::Error::EWOULDBLOCK,
            })
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::{digest_of, files_in};
    use bytes::Bytes;

    /// Whether someone holds the lock file at `path` (a fresh open, as another process).
    fn is_locked(path: &Path) -> bool {
        let file = File::open(path).unwrap();
        Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err()
    }

    #[tokio::test]
    async fn failed_blob_write_leaves_no_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = digest_of(b"the real content");
        let lock_path = store.blob_lock_path(digest.digest());
        let lock = store.lock_blob(&digest).await.unwrap();
        assert!(is_locked(&lock_path));
        let mut writer = store.blob_writer(&digest, 16).await.unwrap();
        writer
            .write(Bytes::from_static(b"tampered content"))
            .await
            .unwrap();
        assert!(matches!(
            writer.commit().await,
            Err(StoreError::DigestMismatch { .. })
        ));
        drop(lock);
        assert!(files_in(&store.locks_dir()).is_empty(), "lock file kept");
        assert!(files_in(&store.tmp_dir()).is_empty());
    }

    #[tokio::test]
    async fn a_waiter_whose_lock_file_was_removed_locks_the_file_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = digest_of(b"blob");
        let lock_path = store.blob_lock_path(digest.digest());
        let first = store.lock_blob(&digest).await.unwrap();
        let waiter = {
            let store = store.clone();
            let digest = digest.clone();
            tokio::spawn(async move { store.lock_blob(&digest).await.unwrap() })
        };
        // Let the waiter open the current file and block on it.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!waiter.is_finished(), "the lock did not exclude the waiter");
        // Released: the file the waiter blocks on is removed first, so the waiter must
        // not settle for it but lock a file that is at the path.
        drop(first);
        let second = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the waiter never got the lock")
            .unwrap();
        assert!(lock_path.exists(), "the waiter holds a removed file");
        assert!(is_locked(&lock_path), "the file at the path is not locked");
        // A third locker, seeing that file, waits for the waiter.
        let third = {
            let store = store.clone();
            tokio::spawn(async move { store.lock_blob(&digest).await.unwrap() })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!third.is_finished(), "two holders of one blob lock");
        drop(second);
        drop(third.await.unwrap());
        assert!(!lock_path.exists());
    }

    #[tokio::test]
    async fn concurrent_writers_of_one_blob_serialize_on_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = vec![7u8; 100_000];
        let digest = digest_of(&data);
        let writes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (store, data, digest, writes) =
                (store.clone(), data.clone(), digest.clone(), writes.clone());
            tasks.push(tokio::spawn(async move {
                let _lock = store.lock_blob(&digest).await.unwrap();
                if store.has_blob(&digest, data.len() as u64) {
                    return;
                }
                writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut w = store.blob_writer(&digest, data.len() as u64).await.unwrap();
                w.write(Bytes::copy_from_slice(&data)).await.unwrap();
                w.commit().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(writes.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(fs::read(store.blob_path(&digest)).unwrap(), data);
    }
}
