//! Image metadata: [`ImageRecord`], what the store knows about one pulled reference,
//! and the records on disk under `images/`.

use super::{Store, StoreError, io_err, sync_dir};
use crate::reference::ImageSource;
use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{Descriptor, Digest, ImageConfiguration, MediaType};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

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

impl Store {
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

    fn image_path(&self, reference: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(reference.as_bytes()));
        self.images_dir().join(format!("{key}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::{descriptor, digest_of};

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
}
