//! Reading images from a local OCI image layout (the directory `skopeo copy ... oci:DIR`
//! or `umoci` writes): `oci-layout`, `index.json`, `blobs/<alg>/<hex>`.
//!
//! The layout is not trusted more than a registry: every blob read from it is verified
//! against its digest by the pull, as it is copied into the store.

use super::{ByteStream, ImageReader, SourceError, verify_bytes};
use crate::reference::LayoutTarget;
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, Digest, ImageIndex};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use tokio::io::AsyncSeekExt;

/// The annotation naming a tagged image in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The `index.json` annotation `cosign save` marks its manifests with.
pub const COSIGN_KIND_ANNOTATION: &str = "kind";
/// The `kind` of a signature manifest in a `cosign save` layout.
pub const COSIGN_KIND_SIGNATURES: &str = "dev.cosignproject.cosign/sigs";

/// An image in an OCI image layout directory.
#[derive(Debug, Clone)]
pub struct LayoutReader {
    path: PathBuf,
    target: LayoutTarget,
}

impl LayoutReader {
    /// A reader for the image `target` names in the layout at `path`. Does no I/O.
    pub fn new(path: &Path, target: &LayoutTarget) -> Self {
        LayoutReader {
            path: path.to_owned(),
            target: target.clone(),
        }
    }

    fn error(&self, path: &Path, reason: impl Into<String>) -> SourceError {
        SourceError::Layout {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.path
            .join("blobs")
            .join(digest.algorithm().as_ref())
            .join(digest.digest())
    }

    async fn read_index(&self) -> Result<ImageIndex, SourceError> {
        let marker = self.path.join("oci-layout");
        if !tokio::fs::try_exists(&marker).await.unwrap_or(false) {
            return Err(self.error(&self.path, "not an OCI image layout (no oci-layout file)"));
        }
        let index_path = self.path.join("index.json");
        let data = tokio::fs::read(&index_path)
            .await
            .map_err(|e| self.error(&index_path, e.to_string()))?;
        serde_json::from_slice(&data).map_err(|e| self.error(&index_path, e.to_string()))
    }

    /// The digest of the manifest (or index) the target names, and its size when a
    /// descriptor in `index.json` gives one.
    fn pick(&self, index: &ImageIndex) -> Result<(Digest, Option<u64>), SourceError> {
        let manifests = index.manifests();
        let tags = || {
            let names: Vec<String> = manifests.iter().filter_map(ref_name).collect();
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        // `cosign save` lists the image's signatures beside it: they are not images.
        let images: Vec<&Descriptor> = manifests.iter().filter(|d| !is_cosign_extra(d)).collect();
        match &self.target {
            LayoutTarget::Only => match images.as_slice() {
                [only] => Ok((only.digest().clone(), Some(only.size()))),
                [] => Err(self.error(&self.path, "the layout holds no image")),
                many => Err(self.error(
                    &self.path,
                    format!(
                        "the layout holds {} images; name one with :TAG or @DIGEST (tags: {})",
                        many.len(),
                        tags()
                    ),
                )),
            },
            LayoutTarget::Tag(tag) => manifests
                .iter()
                .find(|d| ref_name(d).as_deref() == Some(tag))
                .map(|d| (d.digest().clone(), Some(d.size())))
                .ok_or_else(|| {
                    self.error(
                        &self.path,
                        format!("no image tagged {tag:?} (tags: {})", tags()),
                    )
                }),
            // A digest may name a manifest that is not listed in index.json itself (a
            // platform manifest inside a listed index): it is read as a plain blob.
            LayoutTarget::Digest(digest) => Ok((digest.clone(), None)),
        }
    }
}

/// A signature, attestation or SBOM manifest `cosign save` listed (`kind` annotation).
fn is_cosign_extra(descriptor: &Descriptor) -> bool {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(COSIGN_KIND_ANNOTATION))
        .is_some_and(|kind| {
            kind.starts_with("dev.cosignproject.cosign/")
                && !kind.ends_with("/image")
                && !kind.ends_with("/imageIndex")
        })
}

fn ref_name(descriptor: &Descriptor) -> Option<String> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME_ANNOTATION).cloned())
}

#[async_trait]
impl ImageReader for LayoutReader {
    async fn root_manifest(&self) -> Result<(Bytes, Digest), SourceError> {
        let index = self.read_index().await?;
        let (digest, size) = self.pick(&index)?;
        let bytes = self.manifest(&digest).await?;
        verify_bytes(&digest, &bytes)?;
        if let Some(size) = size
            && size != bytes.len() as u64
        {
            return Err(self.error(
                &self.path.join("index.json"),
                format!(
                    "manifest {digest} is {} bytes, its descriptor says {size}",
                    bytes.len()
                ),
            ));
        }
        Ok((bytes, digest))
    }

    async fn manifest(&self, digest: &Digest) -> Result<Bytes, SourceError> {
        let path = self.blob_path(digest);
        // Checked before reading: a huge file must not be loaded into memory.
        if let Ok(meta) = tokio::fs::metadata(&path).await
            && meta.len() > super::MAX_MANIFEST_SIZE as u64
        {
            return Err(SourceError::BadManifest {
                digest: digest.clone(),
                reason: format!(
                    "{} bytes, more than the {} bytes a manifest may have",
                    meta.len(),
                    super::MAX_MANIFEST_SIZE
                ),
            });
        }
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.error(
                &self.path,
                format!("manifest {digest} is not in the layout"),
            )),
            Err(e) => Err(self.error(&path, e.to_string())),
        }
    }

    async fn blob(
        &self,
        descriptor: &Descriptor,
        offset: u64,
    ) -> Result<(ByteStream, u64), SourceError> {
        let path = self.blob_path(descriptor.digest());
        let mut file = tokio::fs::File::open(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                self.error(
                    &self.path,
                    format!("blob {} is not in the layout", descriptor.digest()),
                )
            } else {
                self.error(&path, e.to_string())
            }
        })?;
        // A local file does not heal: a blob of the wrong length is refused at once
        // instead of being retried like a registry response that ended early.
        let actual = file
            .metadata()
            .await
            .map_err(|e| self.error(&path, e.to_string()))?
            .len();
        if actual != descriptor.size() {
            return Err(self.error(
                &path,
                format!(
                    "size mismatch for blob {}: the descriptor says {} bytes, the layout holds {actual}",
                    descriptor.digest(),
                    descriptor.size()
                ),
            ));
        }
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(|e| self.error(&path, e.to_string()))?;
        let stream = tokio_util::io::ReaderStream::new(file)
            .map_err(move |e| SourceError::Layout {
                path: path.clone(),
                reason: e.to_string(),
            })
            .boxed();
        Ok((stream, offset))
    }

    async fn tagged_manifest(&self, tag: &str) -> Result<Option<Bytes>, SourceError> {
        let index = self.read_index().await?;
        match index
            .manifests()
            .iter()
            .find(|d| ref_name(d).as_deref() == Some(tag))
        {
            Some(descriptor) => {
                let bytes = self.manifest(descriptor.digest()).await?;
                verify_bytes(descriptor.digest(), &bytes)?;
                Ok(Some(bytes))
            }
            None => Ok(None),
        }
    }

    async fn referrers(&self, _digest: &Digest) -> Result<Option<Bytes>, SourceError> {
        // What `cosign save` writes: the signature manifests, marked by kind. Which image
        // they sign is in their payloads, which the caller checks.
        let index = self.read_index().await?;
        let signatures: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(COSIGN_KIND_ANNOTATION))
                    .is_some_and(|kind| kind == COSIGN_KIND_SIGNATURES)
            })
            .cloned()
            .collect();
        if signatures.is_empty() {
            return Ok(None);
        }
        let mut referrers = ImageIndex::default();
        referrers.set_manifests(signatures);
        let bytes =
            serde_json::to_vec(&referrers).map_err(|e| self.error(&self.path, e.to_string()))?;
        Ok(Some(Bytes::from(bytes)))
    }
}
