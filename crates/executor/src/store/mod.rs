//! The content store: verified blobs addressed by digest, and the image references that
//! point into them.
//!
//! Layout under the store root:
//! - `blobs/sha256/<hex>`: blob content; a file here is complete and verified.
//! - `tmp/<hex>.<random>.tmp`: a blob being written; renamed into `blobs/` once verified.
//! - `locks/<hex>.lock`: held (flock) by whoever writes that blob; `locks/store.lock`: held
//!   shared by every pull and exclusively by `prune` (both in the `locks` submodule).
//! - `images/<sha256 of reference>.json`: one [`ImageRecord`] per stored reference.
//!
//! Only sha256 digests are supported for blobs; other algorithms are refused.
//!
//! This module holds [`Store`] itself (opening it, its directories) and [`StoreError`].
//! The rest is in submodules, each adding methods to [`Store`], their types re-exported
//! here:
//! - `blobs`: the content addressed by digest: blob paths, reading, storing small blobs;
//! - `writer`: [`BlobWriter`] (streaming a blob in, its hashing and writing threads),
//!   [`BlobFollower`] (reading a blob while it is written) and [`VerifiedBlob`];
//! - `locks`: the lock files, and [`StoreLock`], a held one;
//! - `images`: [`ImageRecord`] and the image records on disk;
//! - `gc`: what [`Store::prune`] deletes ([`PruneReport`]), and the leftovers of killed
//!   writers that [`Store::open`] removes.

mod blobs;
mod gc;
mod images;
mod locks;
mod writer;

pub use gc::PruneReport;
pub use images::ImageRecord;
pub use locks::StoreLock;
pub use writer::{BlobFollower, BlobWriter, VerifiedBlob};

use oci_spec::image::Digest;
use std::fs::{self, File};
use std::io;
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
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

/// Helpers the tests of the submodules share.
#[cfg(test)]
mod test_util {
    use super::Store;
    use oci_spec::image::{Descriptor, DescriptorBuilder, Digest, MediaType};
    use sha2::{Digest as _, Sha256};
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::str::FromStr;

    pub(super) fn digest_of(data: &[u8]) -> Digest {
        Digest::from_str(&format!("sha256:{}", hex::encode(Sha256::digest(data)))).unwrap()
    }

    pub(super) fn descriptor(data: &[u8]) -> Descriptor {
        DescriptorBuilder::default()
            .media_type(MediaType::ImageLayerGzip)
            .digest(digest_of(data))
            .size(data.len() as u64)
            .build()
            .unwrap()
    }

    pub(super) fn files_in(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    pub(super) async fn store_blob(store: &Store, data: &[u8]) {
        store.put_blob(&digest_of(data), data).await.unwrap();
    }
}
