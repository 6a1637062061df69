//! Writing a blob: [`BlobWriter`] streams it into a temp file through a hashing and a
//! writing thread, [`BlobFollower`] reads it while it is written, and [`VerifiedBlob`]
//! holds it once digest and size checked out, until it is renamed into `blobs/`.

use super::blobs::sha256_hex;
use super::{Store, StoreError, io_err, sync_dir};
use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

impl Store {
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
    use crate::store::test_util::{digest_of, files_in};
    use bytes::Bytes;
    use std::fs;

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
}
