//! Garbage collection: what [`Store::prune`] deletes (blobs no image record needs, free
//! blob lock files), and the leftovers of killed writers that [`Store::open`] removes.

use super::locks::lock_blocking;
use super::{Store, StoreError, io_err};
use nix::fcntl::{Flock, FlockArg};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io;

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Number of blobs deleted.
    pub blobs_removed: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
}

impl Store {
    /// Deletes every blob no image record needs. Waits for running pulls to finish first
    /// (they hold the store lock shared).
    pub async fn prune(&self) -> Result<PruneReport, StoreError> {
        let _lock =
            lock_blocking(self.locks_dir().join("store.lock"), FlockArg::LockExclusive).await?;
        let keep: HashSet<String> = self
            .images()?
            .iter()
            .flat_map(|r| r.blobs().map(|d| d.digest().to_owned()).collect::<Vec<_>>())
            .collect();
        let mut report = PruneReport::default();
        let dir = self.blobs_dir();
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let name = entry.file_name();
            if keep.contains(name.to_string_lossy().as_ref()) {
                continue;
            }
            let path = entry.path();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(io_err("removing", &path))?;
            tracing::debug!(blob = %path.display(), size, "pruned blob");
            report.blobs_removed += 1;
            report.bytes_freed += size;
        }
        // Blob lock files exist only while held, or when their holder was killed. Such
        // leftovers go too, each under its own lock: `Store::open` of another process
        // takes blob locks without the store lock, and removing a file someone else
        // holds would let a second writer lock a fresh file beside it.
        let locks = self.locks_dir();
        for entry in fs::read_dir(&locks).map_err(io_err("listing", &locks))? {
            let path = entry.map_err(io_err("listing", &locks))?.path();
            if path.extension().is_some_and(|e| e == "lock")
                && path.file_name().is_some_and(|n| n != "store.lock")
            {
                // Dropping the lock removes the file; a held one is a live writer's.
                drop(Self::try_lock_blob_file(&path)?);
            }
        }
        Ok(report)
    }

    /// Removes temp files whose writer is gone: a writer holds the blob's lock for as long
    /// as its temp file exists, so a temp file whose lock is free is garbage.
    pub(super) fn remove_stale_temp_files(&self) -> Result<(), StoreError> {
        let dir = self.tmp_dir();
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.split('.').next()) else {
                continue;
            };
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            // Removed again (with the lock file) when `_held` drops.
            if let Ok(Some(_held)) = Self::try_lock_blob_file(&self.blob_lock_path(hex)) {
                match fs::remove_file(&path) {
                    Ok(()) => tracing::info!(path = %path.display(), "removed stale temp file"),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("removing", &path)(e)),
                }
            }
        }
        // Half-written image records (a crash between write and rename): their writer
        // holds a lock on them while alive.
        let dir = self.images_dir();
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "tmp") {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if let Ok(_dead_writer) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed half-written image record")
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("removing", &path)(e)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::ImageSource;
    use crate::store::ImageRecord;
    use crate::store::locks::open_lock_file;
    use crate::store::test_util::{descriptor, digest_of, files_in, store_blob};
    use oci_spec::image::MediaType;

    #[test]
    fn open_removes_temp_files_of_dead_writers_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let stale = dir
            .path()
            .join("tmp")
            .join(format!("{}.x1.tmp", "a".repeat(64)));
        fs::write(&stale, b"half a layer").unwrap();
        // A live writer: holds the lock of its blob.
        let live_hex = "b".repeat(64);
        let live = dir.path().join("tmp").join(format!("{live_hex}.x2.tmp"));
        fs::write(&live, b"being written").unwrap();
        let lock_file =
            open_lock_file(&store.locks_dir().join(format!("{live_hex}.lock"))).unwrap();
        let held = Flock::lock(lock_file, FlockArg::LockExclusive).unwrap();

        Store::open(dir.path()).unwrap();
        assert!(!stale.exists(), "stale temp file was kept");
        assert!(live.exists(), "a live writer's temp file was removed");
        assert_eq!(
            files_in(&store.locks_dir()),
            [store.locks_dir().join(format!("{live_hex}.lock"))],
            "the dead writer's blob lock was kept, or the live writer's removed"
        );
        drop(held);
    }

    #[test]
    fn open_removes_half_written_records_of_dead_writers_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let dead = store.images_dir().join(".record.dead.tmp");
        let alive = store.images_dir().join(".record.alive.tmp");
        std::fs::write(&dead, b"{\"refer").unwrap();
        std::fs::write(&alive, b"{\"refer").unwrap();
        let _writer = Flock::lock(File::open(&alive).unwrap(), FlockArg::LockExclusive).unwrap();
        Store::open(dir.path()).unwrap();
        assert!(!dead.exists(), "a dead writer's record was kept");
        assert!(alive.exists(), "a live writer's record was removed");
    }

    #[tokio::test]
    async fn records_list_remove_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (manifest, config, shared, only_b) = (
            b"manifest-a".as_slice(),
            b"{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}"
                .as_slice(),
            b"shared layer".as_slice(),
            b"layer only b needs".as_slice(),
        );
        for blob in [manifest, config, shared, only_b, b"manifest-b".as_slice()] {
            store_blob(&store, blob).await;
        }
        let source_a = ImageSource::parse("registry.test/a:1").unwrap();
        let record_a = ImageRecord {
            reference: source_a.to_string(),
            manifest_digest: digest_of(manifest),
            manifest_media_type: MediaType::ImageManifest,
            index_digest: None,
            platform: Some("linux/amd64".into()),
            config: descriptor(config),
            layers: vec![descriptor(shared)],
            signatures: Vec::new(),
            verified: None,
        };
        let record_b = ImageRecord {
            reference: "registry.test/b:1".into(),
            manifest_digest: digest_of(b"manifest-b"),
            layers: vec![descriptor(shared), descriptor(only_b)],
            ..record_a.clone()
        };
        store.put_image(&record_a).unwrap();
        store.put_image(&record_b).unwrap();

        assert_eq!(store.image(&source_a).unwrap().as_ref(), Some(&record_a));
        let listed: Vec<_> = store
            .images()
            .unwrap()
            .into_iter()
            .map(|r| r.reference)
            .collect();
        assert_eq!(listed, ["registry.test/a:1", "registry.test/b:1"]);
        let parsed = store.read_config(&record_a).unwrap();
        assert_eq!(parsed.os().to_string(), "linux");

        // Nothing to prune while both are referenced.
        assert_eq!(store.prune().await.unwrap(), PruneReport::default());

        // What killed pulls leave: a free lock file of a blob to be pruned, and of one
        // never stored; and a lock a live writer holds.
        let pruned_lock = store.blob_lock_path(digest_of(only_b).digest());
        let never_stored_lock = store.blob_lock_path(digest_of(b"never stored").digest());
        let held_lock = store.blob_lock_path(digest_of(b"being written").digest());
        for path in [&pruned_lock, &never_stored_lock, &held_lock] {
            fs::write(path, b"").unwrap();
        }
        let held = Flock::lock(File::open(&held_lock).unwrap(), FlockArg::LockExclusive).unwrap();

        let source_b = ImageSource::parse("registry.test/b:1").unwrap();
        assert_eq!(store.remove_image(&source_b).unwrap(), Some(record_b));
        assert_eq!(store.remove_image(&source_b).unwrap(), None);
        let report = store.prune().await.unwrap();
        assert_eq!(
            report.blobs_removed, 2,
            "manifest-b and the layer only b needs"
        );
        assert_eq!(
            report.bytes_freed,
            (b"manifest-b".len() + only_b.len()) as u64
        );
        assert!(!store.blob_path(&digest_of(only_b)).exists());
        assert!(store.blob_path(&digest_of(shared)).exists());
        assert!(store.read_config(&record_a).is_ok());
        let mut locks: Vec<_> = files_in(&dir.path().join("locks"));
        locks.sort();
        let mut expected = vec![dir.path().join("locks/store.lock"), held_lock.clone()];
        expected.sort();
        assert_eq!(
            locks, expected,
            "free blob lock files kept, or a held one removed"
        );
        drop(held);
    }
}
