//! The content proper, which knows only digests: where a blob lives, whether it is
//! there, reading it, and storing a small in-memory one.

use super::{Store, StoreError};
use oci_spec::image::{Digest, DigestAlgorithm};
use std::fs;
use std::io;
use std::path::PathBuf;

impl Store {
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
}

pub(super) fn sha256_hex(digest: &Digest) -> Result<&str, StoreError> {
    match digest.algorithm() {
        DigestAlgorithm::Sha256 => Ok(digest.digest()),
        _ => Err(StoreError::UnsupportedDigest {
            digest: digest.clone(),
        }),
    }
}
