//! The content store: verified blobs addressed by digest, and the image references that
//! point into them.
//!
//! Layout under the store root:
//! - `blobs/sha256/<hex>`: blob content; a file here is complete and verified.
//! - `tmp/<hex>.<random>.tmp`: a blob being written; renamed into `blobs/` once verified.
//! - `locks/<hex>.lock`: held (flock) by whoever writes that blob, so that two processes
//!   pulling the same image download each blob once. It exists only while held: the holder
//!   removes it before it unlocks, and whoever locks it checks afterwards that the path
//!   still names the file it locked (see `lock_file_at`), so a failed pull leaves no
//!   lock behind. Only a killed holder leaves one; `open` and `prune` remove those.
//!   `locks/store.lock` is held shared by
//!   every pull and exclusively by `prune`, so prune never deletes a blob a running pull
//!   just fetched but has not recorded yet.
//! - `images/<sha256 of reference>.json`: one [`ImageRecord`] per stored reference.
//!
//! Only sha256 digests are supported for blobs; other algorithms are refused.

use crate::reference::ImageSource;
use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{Descriptor, Digest, DigestAlgorithm, ImageConfiguration, MediaType};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Errors from the content store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory of the store could not be read, written or removed.
    #[error("{action} {path}")]
    Io {
        /// What was being done (`creating`, `reading`, ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The store's file system is full (or the user's quota is used up); what was being
    /// written was removed again, and nothing stored before was touched.
    #[error(
        "no space left on device for the store: {action} {path} (free space under {root} or prune images)"
    )]
    NoSpace {
        /// What was being done (`writing`, ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The store root (the file system to free space on).
        root: PathBuf,
    },
    /// A lock file could not be locked.
    #[error("locking {path}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: nix::Error,
    },
    /// The digest uses an algorithm the store does not handle.
    #[error("unsupported digest algorithm in {digest} (only sha256 is supported)")]
    UnsupportedDigest {
        /// The digest.
        digest: Digest,
    },
    /// Content did not hash to the digest it was fetched for; nothing was stored.
    #[error("digest mismatch for blob {digest}: content hashes to {actual}")]
    DigestMismatch {
        /// The expected digest.
        digest: Digest,
        /// The digest of what arrived.
        actual: String,
    },
    /// Content was longer or shorter than its descriptor says; nothing was stored.
    #[error("size mismatch for blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob's digest.
        digest: Digest,
        /// The size from the descriptor.
        expected: u64,
        /// The number of bytes that arrived (so far, when too many).
        actual: u64,
    },
    /// A stored JSON document (image record, config) does not parse.
    #[error("parsing {path}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A blob an image record needs is not in the store.
    #[error("blob {digest} is missing from the store")]
    MissingBlob {
        /// The blob's digest.
        digest: Digest,
    },
    /// A background task panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| match source.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => StoreError::NoSpace {
            action,
            path: path.to_owned(),
            root: store_root_of(path),
        },
        _ => StoreError::Io {
            action,
            path: path.to_owned(),
            source,
        },
    }
}

/// The store root a store path lies under (`<root>/blobs/sha256/x` -> `<root>`), for
/// messages; the path itself when it is not recognisably inside a store.
fn store_root_of(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|a| {
            a.file_name().is_some_and(|n| {
                ["blobs", "tmp", "images", "locks"].contains(&&*n.to_string_lossy())
            })
        })
        .and_then(Path::parent)
        .unwrap_or(path)
        .to_owned()
}

/// What the store knows about one pulled image reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The normalized reference (see [`ImageSource`]'s `Display`); the record's key.
    pub reference: String,
    /// Digest of the platform-specific image manifest.
    pub manifest_digest: Digest,
    /// Media type of that manifest (OCI or Docker schema2).
    pub manifest_media_type: MediaType,
    /// Digest of the index or manifest list the manifest was picked from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
    /// The platform the manifest is for, as `os/arch[/variant]`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The image configuration blob.
    pub config: Descriptor,
    /// The layers, in order, base first.
    pub layers: Vec<Descriptor>,
    /// The cosign signatures fetched when a signature policy asked for them, so that a
    /// later run re-verifies them under its own policy without the network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<crate::trust::cosign::Signature>,
    /// Which key verified the image at its pull; `None` when no policy required one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<crate::trust::Verified>,
}

impl ImageRecord {
    /// Whether `policy` trusts this image by the signatures kept from its pull (see
    /// [`crate::trust::verify_stored`]).
    pub fn verify_under(
        &self,
        policy: &crate::trust::policy::Policy,
        image: &ImageSource,
    ) -> Result<Option<crate::trust::Verified>, crate::trust::TrustError> {
        crate::trust::verify_stored(
            policy,
            image,
            &self.manifest_digest,
            self.index_digest.as_ref(),
            &self.signatures,
        )
    }

    /// Total size of the config and layer blobs (compressed, as stored).
    pub fn size(&self) -> u64 {
        self.config.size() + self.layers.iter().map(|l| l.size()).sum::<u64>()
    }

    /// Every blob this record needs kept: manifests, config, layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.manifest_digest, self.config.digest()]
            .into_iter()
            .chain(self.index_digest.iter())
            .chain(self.layers.iter().map(|l| l.digest()))
    }
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Number of blobs deleted.
    pub blobs_removed: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
}

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

/// The content store rooted at a directory (`--root`).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store under `root`, and removes temp files that a
    /// killed pull left behind (only those whose blob lock nobody holds).
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let store = Store {
            root: root.to_owned(),
        };
        for dir in [
            store.blobs_dir(),
            store.tmp_dir(),
            store.locks_dir(),
            store.images_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        store.remove_stale_temp_files()?;
        Ok(store)
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }
    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }
    fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Where the blob with this digest lives (whether or not it is there yet).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_ref())
            .join(digest.digest())
    }

    /// Whether the blob is stored with the expected size. Content is verified when it is
    /// written, so the size check only guards against truncation by outside hands.
    pub fn has_blob(&self, digest: &Digest, size: u64) -> bool {
        fs::metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Reads a whole blob into memory; for small blobs only (manifests, configs).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                StoreError::MissingBlob {
                    digest: digest.clone(),
                }
            } else {
                StoreError::Io {
                    action: "reading",
                    path,
                    source,
                }
            }
        })
    }

    /// Takes the exclusive lock for writing one blob, waiting for another holder (another
    /// task or process downloading the same blob) to finish.
    /// Its lock file is removed again when the lock is released.
    pub async fn lock_blob(&self, digest: &Digest) -> Result<StoreLock, StoreError> {
        let path = self.blob_lock_path(sha256_hex(digest)?);
        let mut lock = lock_blocking(path.clone(), FlockArg::LockExclusive).await?;
        lock.remove = Some(path);
        Ok(lock)
    }

    fn blob_lock_path(&self, hex: &str) -> PathBuf {
        self.locks_dir().join(format!("{hex}.lock"))
    }

    /// The blob lock at `path` if nobody holds it, to be removed on release.
    fn try_lock_blob_file(path: &Path) -> Result<Option<StoreLock>, StoreError> {
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

    /// Starts writing a blob; see [`BlobWriter`]. The caller should hold [`Store::lock_shared`]
    /// and [`Store::lock_blob`] (as [`crate::pull::pull`] does).
    pub async fn blob_writer(&self, digest: &Digest, size: u64) -> Result<BlobWriter, StoreError> {
        let hex = sha256_hex(digest)?;
        let tmp_dir = self.tmp_dir();
        let named = tempfile::Builder::new()
            .prefix(&format!("{hex}."))
            .suffix(".tmp")
            .tempfile_in(&tmp_dir)
            .map_err(io_err("creating a temp file in", &tmp_dir))?;
        let (file, temp) = named.into_parts();
        // A second handle on the same file for [`BlobWriter::follower`]: it reads with
        // `pread`, so the writer's file offset is not shared in any way that matters.
        let follow = file.try_clone().map_err(io_err("opening", &temp))?;
        let progress = std::sync::Arc::new(Progress::default());
        Ok(BlobWriter {
            worker: Some(HashWriter::spawn(file, OnDisk(progress.clone()))),
            follow,
            progress,
            batch: Vec::new(),
            batch_len: 0,
            temp: Some(temp),
            digest: digest.clone(),
            size,
            written: 0,
            dest: self.blob_path(digest),
        })
    }

    /// Stores a small in-memory blob (a manifest), verifying digest and size. The caller
    /// should hold [`Store::lock_shared`], or a concurrent prune may delete the blob.
    pub async fn put_blob(&self, digest: &Digest, data: &[u8]) -> Result<(), StoreError> {
        if self.has_blob(digest, data.len() as u64) {
            return Ok(());
        }
        let _lock = self.lock_blob(digest).await?;
        if self.has_blob(digest, data.len() as u64) {
            return Ok(());
        }
        let mut writer = self.blob_writer(digest, data.len() as u64).await?;
        writer.write(bytes::Bytes::copy_from_slice(data)).await?;
        writer.commit().await
    }

    /// The record for an image reference, if it was pulled.
    pub fn image(&self, source: &ImageSource) -> Result<Option<ImageRecord>, StoreError> {
        self.image_by_name(&source.to_string())
    }

    /// The record for a normalized reference string, if it was pulled.
    pub fn image_by_name(&self, reference: &str) -> Result<Option<ImageRecord>, StoreError> {
        let path = self.image_path(reference);
        match fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|source| StoreError::Json { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    /// All stored image records, sorted by reference.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.images_dir();
        let mut records = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let data = fs::read(&path).map_err(io_err("reading", &path))?;
            let record: ImageRecord =
                serde_json::from_slice(&data).map_err(|source| StoreError::Json {
                    path: path.clone(),
                    source,
                })?;
            records.push(record);
        }
        records.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(records)
    }

    /// Records (or replaces) an image reference. The caller must have stored every blob
    /// the record names; the write is atomic (temp file + rename).
    pub fn put_image(&self, record: &ImageRecord) -> Result<(), StoreError> {
        if let Some(missing) = record.blobs().find(|d| !self.blob_path(d).is_file()) {
            return Err(StoreError::MissingBlob {
                digest: missing.clone(),
            });
        }
        let path = self.image_path(&record.reference);
        let dir = self.images_dir();
        let mut temp = tempfile::Builder::new()
            .prefix(".record.")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(io_err("creating a temp file in", &dir))?;
        // Locked while it exists, so that `open` can tell a dead writer's leftover (after
        // a kill -9) from a record being written right now.
        let _writing = temp
            .as_file()
            .try_clone()
            .map_err(io_err("locking", temp.path()))
            .and_then(|f| {
                Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, source)| {
                    StoreError::Lock {
                        path: temp.path().to_owned(),
                        source,
                    }
                })
            })?;
        let data = serde_json::to_vec_pretty(record).expect("an image record always serializes");
        temp.write_all(&data)
            .and_then(|()| temp.as_file().sync_all())
            .map_err(io_err("writing", temp.path()))?;
        temp.persist(&path)
            .map_err(|e| io_err("renaming into", &path)(e.error))?;
        sync_dir(&dir)
    }

    /// Removes an image reference (not its blobs: see [`Store::prune`]). Returns the removed
    /// record, or `None` when the reference was not stored.
    pub fn remove_image(&self, source: &ImageSource) -> Result<Option<ImageRecord>, StoreError> {
        let Some(record) = self.image(source)? else {
            return Ok(None);
        };
        let path = self.image_path(&record.reference);
        fs::remove_file(&path).map_err(io_err("removing", &path))?;
        Ok(Some(record))
    }

    /// Parses the image configuration of a stored image.
    pub fn read_config(&self, record: &ImageRecord) -> Result<ImageConfiguration, StoreError> {
        let digest = record.config.digest();
        let data = self.read_blob(digest)?;
        serde_json::from_slice(&data).map_err(|source| StoreError::Json {
            path: self.blob_path(digest),
            source,
        })
    }

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

    fn image_path(&self, reference: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(reference.as_bytes()));
        self.images_dir().join(format!("{key}.json"))
    }

    /// Removes temp files whose writer is gone: a writer holds the blob's lock for as long
    /// as its temp file exists, so a temp file whose lock is free is garbage.
    fn remove_stale_temp_files(&self) -> Result<(), StoreError> {
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

fn sha256_hex(digest: &Digest) -> Result<&str, StoreError> {
    match digest.algorithm() {
        DigestAlgorithm::Sha256 => Ok(digest.digest()),
        _ => Err(StoreError::UnsupportedDigest {
            digest: digest.clone(),
        }),
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
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

async fn lock_blocking(path: PathBuf, arg: FlockArg) -> Result<StoreLock, StoreError> {
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

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

/// A blob being written to a temp file, hashed and counted as it streams. Nothing is
/// visible under `blobs/` until [`BlobWriter::commit`] verified digest and size; dropping
/// the writer without committing deletes the temp file.
///
/// Hashing and writing run on two threads of their own, fed through short queues, so
/// that they overlap with receiving the next chunks and with each other: sha256 alone
/// runs at about 2 GB/s here, and done in line it would cap a pull well below what
/// the network gives. Chunks reach the file in batches of a few hundred KiB, in order.
#[derive(Debug)]
pub struct BlobWriter {
    worker: Option<HashWriter>,
    /// Chunks not yet handed to the thread: they go in batches of at least
    /// [`WRITE_BATCH`] bytes, one thread wake-up per batch rather than per chunk
    /// (the network hands over a few KiB at a time).
    batch: Batch,
    batch_len: usize,
    temp: Option<tempfile::TempPath>,
    digest: Digest,
    size: u64,
    written: u64,
    dest: PathBuf,
    /// The temp file, for followers.
    follow: File,
    /// How far the writing thread got, for followers.
    progress: std::sync::Arc<Progress>,
}

/// How many bytes of a blob the writing thread has put into its temp file, and whether
/// it stopped (done, failed, or the writer was dropped); followers wait on it.
#[derive(Debug, Default)]
struct Progress {
    state: std::sync::Mutex<(u64, bool)>,
    changed: std::sync::Condvar,
}

impl Progress {
    fn update(&self, f: impl FnOnce(&mut (u64, bool))) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state);
        self.changed.notify_all();
    }
}

/// Held by the writing thread: reports each batch on disk, and the end of writing when
/// dropped (however the thread ends, or if it never started).
#[derive(Debug)]
struct OnDisk(std::sync::Arc<Progress>);

impl Drop for OnDisk {
    fn drop(&mut self) {
        self.0.update(|s| s.1 = true);
    }
}

/// Reads a blob while it is being written (see [`BlobWriter::follower`]): each read
/// waits until the bytes are in the temp file, and the stream ends at the blob's size.
/// If the writer stops short (a failed or restarted download, a dropped writer) reads
/// fail instead of ending, so a follower never takes a short blob for a whole one.
/// Nothing read here is verified yet: the caller must not use the result before
/// [`BlobWriter::verify`] succeeded.
#[derive(Debug)]
pub struct BlobFollower {
    file: File,
    progress: std::sync::Arc<Progress>,
    offset: u64,
    size: u64,
    digest: Digest,
}

impl io::Read for BlobFollower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if self.offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let on_disk = {
            let mut state = self
                .progress
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            while state.0 <= self.offset && !state.1 {
                state = self
                    .progress
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            state.0
        };
        if on_disk <= self.offset {
            return Err(io::Error::other(format!(
                "the download of blob {} stopped after {} of {} bytes",
                self.digest, self.offset, self.size
            )));
        }
        let want =
            usize::try_from(on_disk - self.offset).map_or(buf.len(), |left| buf.len().min(left));
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// A blob whose size and digest were verified, still in its temp file: nothing is
/// visible under `blobs/` until [`VerifiedBlob::persist`]; dropping it deletes the file.
#[derive(Debug)]
pub struct VerifiedBlob {
    temp: tempfile::TempPath,
    dest: PathBuf,
}

impl VerifiedBlob {
    /// The temp file holding the verified content (to read it before it is stored).
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Renames the blob into place.
    pub fn persist(self) -> Result<(), StoreError> {
        self.temp
            .persist(&self.dest)
            .map_err(|e| io_err("renaming into", &self.dest)(e.error))?;
        let parent = self.dest.parent().unwrap_or(Path::new("/"));
        sync_dir(parent)
    }
}

/// Batches queued between the receiving task and the hashing thread, and again
/// between the hashing and the writing thread: bounds the memory a fast network can
/// fill while the disk is slow (about 4 MiB a blob).
const WRITE_QUEUE: usize = 8;

/// Bytes gathered before a batch is handed to the hashing thread.
const WRITE_BATCH: usize = 256 * 1024;

/// Chunks as the network handed them over, passed between the threads as one unit.
type Batch = Vec<bytes::Bytes>;

/// The threads that hash and write a blob's chunks: the hashing thread takes each
/// batch from the receiving task and passes it on to the writing thread, so that
/// sha256 (the larger cost) and the copy into the file run side by side.
#[derive(Debug)]
struct HashWriter {
    chunks: tokio::sync::mpsc::Sender<Batch>,
    done: tokio::sync::oneshot::Receiver<Written>,
}

/// What the threads hand back once the queue is closed.
#[derive(Debug)]
struct Written {
    file: File,
    hasher: Sha256,
    result: io::Result<()>,
}

impl HashWriter {
    fn spawn(file: File, on_disk: OnDisk) -> Self {
        let (chunks, queue) = tokio::sync::mpsc::channel::<Batch>(WRITE_QUEUE);
        let (finished, done) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("blob-hasher".into())
            .spawn(move || {
                if let Some(written) = hash_then_write(queue, file, on_disk) {
                    let _ = finished.send(written);
                }
            });
        if let Err(e) = spawned {
            // No thread: the queue's receiver is gone with the closure, so the
            // first write fails and says why.
            tracing::warn!(error = %e, "cannot start a blob hashing thread");
        }
        Self { chunks, done }
    }

    /// Closes the queue and waits until everything queued is hashed and written;
    /// the thread's write error, if it had one.
    async fn finish(self) -> io::Result<(File, Sha256)> {
        drop(self.chunks);
        let written = self
            .done
            .await
            .map_err(|_| io::Error::other("the blob writer thread is gone"))?;
        written.result.map(|()| (written.file, written.hasher))
    }
}

/// The hashing thread: hashes each batch and hands it to a writing thread. Stops
/// early when the writer stopped on an error (its receiver is gone), which in turn
/// makes the receiving task's next send fail. `None` if there was no writer thread.
fn hash_then_write(
    mut queue: tokio::sync::mpsc::Receiver<Batch>,
    file: File,
    on_disk: OnDisk,
) -> Option<Written> {
    let (to_writer, batches) = std::sync::mpsc::sync_channel::<Batch>(WRITE_QUEUE);
    let writer = std::thread::Builder::new()
        .name("blob-writer".into())
        .spawn(move || write_batches(batches, file, on_disk));
    let writer = match writer {
        Ok(writer) => writer,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a blob writer thread");
            return None;
        }
    };
    let mut hasher = Sha256::new();
    while let Some(batch) = queue.blocking_recv() {
        for chunk in &batch {
            hasher.update(chunk);
        }
        if to_writer.send(batch).is_err() {
            break;
        }
    }
    // The receiving task's next send fails now rather than after the join; the
    // writer sees the end of its queue.
    drop(queue);
    drop(to_writer);
    let (file, result) = writer.join().ok()?;
    Some(Written {
        file,
        hasher,
        result,
    })
}

/// The writing thread: writes batches in order until the queue closes or a write fails.
fn write_batches(
    batches: std::sync::mpsc::Receiver<Batch>,
    mut file: File,
    on_disk: OnDisk,
) -> (File, io::Result<()>) {
    for batch in batches {
        if let Err(e) = write_batch(&mut file, &batch) {
            return (file, Err(e));
        }
        let len: u64 = batch.iter().map(|c| c.len() as u64).sum();
        on_disk.0.update(|s| s.0 += len);
    }
    (file, Ok(()))
}

/// Writes a batch of chunks with as few `writev` calls as the kernel allows.
fn write_batch(file: &mut File, batch: &[bytes::Bytes]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = batch.iter().map(|c| io::IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl BlobWriter {
    /// Number of bytes accepted so far, on disk or queued for it in order (where a
    /// resumed download continues).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends a chunk. Fails as soon as more bytes arrive than the descriptor's size, so
    /// a misbehaving server cannot fill the disk.
    pub async fn write(&mut self, chunk: bytes::Bytes) -> Result<(), StoreError> {
        let total = self.written + chunk.len() as u64;
        if total > self.size {
            return Err(StoreError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.size,
                actual: total,
            });
        }
        self.written = total;
        self.batch_len += chunk.len();
        self.batch.push(chunk);
        if self.batch_len >= WRITE_BATCH {
            self.send_batch().await?;
        }
        Ok(())
    }

    /// Hands the gathered chunks to the thread.
    async fn send_batch(&mut self) -> Result<(), StoreError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_len = 0;
        let sent = match &self.worker {
            Some(worker) => worker.chunks.send(batch).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread stopped on a write error: report it.
        let error = match self.worker.take() {
            Some(worker) => worker.finish().await.err(),
            None => None,
        };
        let error = error.unwrap_or_else(|| io::Error::other("the blob writer stopped"));
        Err(io_err("writing", &self.temp_path())(error))
    }

    fn temp_path(&self) -> PathBuf {
        self.temp
            .as_ref()
            .map(|t| t.to_path_buf())
            .unwrap_or_default()
    }

    /// A reader of this blob's bytes as they reach the temp file, for consumers that
    /// work while the download goes on (unpacking a layer); see [`BlobFollower`]. Reads
    /// start at byte 0; a writer replaced by a fresh one (a restart) fails its followers.
    pub fn follower(&self) -> Result<BlobFollower, StoreError> {
        let file = self
            .follow
            .try_clone()
            .map_err(io_err("opening", &self.temp_path()))?;
        Ok(BlobFollower {
            file,
            progress: self.progress.clone(),
            offset: 0,
            size: self.size,
            digest: self.digest.clone(),
        })
    }

    /// Verifies size and digest, fsyncs and renames the blob into place.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.verify().await?.persist()
    }

    /// Verifies size and digest and fsyncs the temp file, without storing it yet.
    pub async fn verify(mut self) -> Result<VerifiedBlob, StoreError> {
        self.send_batch().await?;
        let path = self.temp_path();
        let worker = self
            .worker
            .take()
            .ok_or_else(|| io_err("writing", &path)(io::Error::other("the blob writer stopped")))?;
        let (file, hasher) = worker.finish().await.map_err(io_err("writing", &path))?;
        if self.written != self.size {
            return Err(StoreError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.size,
                actual: self.written,
            });
        }
        let actual = hex::encode(hasher.finalize());
        if actual != self.digest.digest() {
            return Err(StoreError::DigestMismatch {
                digest: self.digest.clone(),
                actual: format!("sha256:{actual}"),
            });
        }
        let synced = tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
        synced.map_err(io_err("syncing", &path))?;
        let temp = self.temp.take().expect("verify consumes the writer once");
        Ok(VerifiedBlob {
            temp,
            dest: self.dest.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use oci_spec::image::DescriptorBuilder;
    use std::str::FromStr;

    fn digest_of(data: &[u8]) -> Digest {
        Digest::from_str(&format!("sha256:{}", hex::encode(Sha256::digest(data)))).unwrap()
    }

    fn descriptor(data: &[u8]) -> Descriptor {
        DescriptorBuilder::default()
            .media_type(MediaType::ImageLayerGzip)
            .digest(digest_of(data))
            .size(data.len() as u64)
            .build()
            .unwrap()
    }

    fn files_in(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    async fn store_blob(store: &Store, data: &[u8]) {
        store.put_blob(&digest_of(data), data).await.unwrap();
    }

    #[tokio::test]
    async fn verified_blob_is_stored_under_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = b"layer bytes";
        let digest = digest_of(data);
        let mut writer = store.blob_writer(&digest, data.len() as u64).await.unwrap();
        writer
            .write(Bytes::copy_from_slice(&data[..5]))
            .await
            .unwrap();
        writer
            .write(Bytes::copy_from_slice(&data[5..]))
            .await
            .unwrap();
        writer.commit().await.unwrap();
        assert_eq!(fs::read(store.blob_path(&digest)).unwrap(), data);
        assert!(
            store
                .blob_path(&digest)
                .ends_with(format!("blobs/sha256/{}", digest.digest()))
        );
        assert!(store.has_blob(&digest, data.len() as u64));
        assert!(files_in(&dir.path().join("tmp")).is_empty());
    }

    #[tokio::test]
    async fn digest_mismatch_stores_nothing_and_names_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = digest_of(b"expected");
        let mut writer = store.blob_writer(&digest, 8).await.unwrap();
        writer.write(Bytes::from_static(b"tampered")).await.unwrap();
        let err = writer.commit().await.unwrap_err();
        assert!(err.to_string().contains(&digest.to_string()), "{err}");
        assert!(!store.blob_path(&digest).exists());
        assert!(files_in(&dir.path().join("tmp")).is_empty());
    }

    #[tokio::test]
    async fn oversized_and_short_content_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = digest_of(b"abc");
        let mut writer = store.blob_writer(&digest, 3).await.unwrap();
        let err = writer.write(Bytes::from_static(b"abcd")).await.unwrap_err();
        assert!(matches!(err, StoreError::SizeMismatch { actual: 4, .. }));
        drop(writer);
        let mut writer = store.blob_writer(&digest, 3).await.unwrap();
        writer.write(Bytes::from_static(b"ab")).await.unwrap();
        let err = writer.commit().await.unwrap_err();
        assert!(matches!(err, StoreError::SizeMismatch { actual: 2, .. }));
        assert!(!store.blob_path(&digest).exists());
        assert!(files_in(&dir.path().join("tmp")).is_empty());
    }

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

    #[test]
    fn record_naming_a_missing_blob_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let record = ImageRecord {
            reference: "registry.test/a:1".into(),
            manifest_digest: digest_of(b"m"),
            manifest_media_type: MediaType::ImageManifest,
            index_digest: None,
            platform: None,
            config: descriptor(b"c"),
            layers: vec![],
            signatures: Vec::new(),
            verified: None,
        };
        let err = store.put_image(&record).unwrap_err();
        assert!(
            err.to_string().contains(&digest_of(b"m").to_string()),
            "{err}"
        );
        assert!(store.images().unwrap().is_empty());
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
