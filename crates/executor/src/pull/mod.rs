//! Pulling an image into the content store: resolve the reference to a platform
//! manifest, fetch every blob it needs (verified, streamed, deduplicated, in parallel),
//! then record the reference.
//!
//! A signature policy ([`crate::trust`]) is applied once the manifest digest is known and
//! before any blob is fetched or any manifest stored: an image it refuses leaves nothing.
//!
//! [`pull_and_unpack`] also unpacks the layers into overlay snapshots while they download:
//! each layer's bytes go to the content store's temp file and, as they land there, to an
//! unpacker that decompresses, hashes (the diff ID) and applies them into a temp snapshot.
//! All layers unpack at once, each while its own bytes arrive: one whose lower snapshots
//! are not there yet takes what it would have looked up in them (a parent directory it
//! does not list) to be absent, and that is checked once they are committed (if a lower
//! has one, the layer is unpacked again from its blob). The blob is stored and the
//! snapshot committed only when both the compressed digest and the diff ID verified, and
//! after its lowers; otherwise both are discarded. Layers download in parallel up to
//! `max_concurrent_downloads`; each blob is still fetched once across processes (under
//! its blob lock, held until the snapshot is committed).
//!
//! Faults are handled where they happen: transient errors (connection resets, 5xx, 429,
//! stalls) are retried with exponential backoff, and a blob interrupted mid-way resumes
//! from where it stopped with an HTTP `Range` request when the registry allows it.
//! The backoff is 1s, 2s, 4s, ... capped at 30s, unless the registry sent `Retry-After`
//! (seconds or an HTTP date, on blob requests), which is honoured up to 5 minutes.
//! A body that ends short resumes too; a request that gets no (complete) answer within
//! the stall timeout counts as a stall; a blob or manifest that fails verification is
//! fetched again (a blob from byte 0). Every retry counts against the same limit, so a
//! registry that keeps failing ends the pull with one error naming what and why. See
//! `RELIABILITY.md` for the faults this was tested against.
//!
//! Here: resolving, the trust check and recording the image; `fetch.rs`: blob
//! transfers with their retries; `stream.rs`: unpack while fetching.

use crate::reference::ImageSource;
use crate::snapshot::{SnapshotError, Snapshotter};
use crate::source::registry::RegistryOptions;
use crate::source::{
    CONFIG_MEDIA_TYPES, ImageReader, LAYER_MEDIA_TYPES, Manifest, Platform, SourceError,
    parse_manifest, select_platform, verify_bytes,
};
use crate::store::{ImageRecord, Store, StoreError};
use crate::trust::{self, TrustError, policy::Policy};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_spec::image::{Digest, ImageConfiguration, ImageManifest, MediaType};
use std::sync::Arc;
use std::time::Duration;

mod fetch;
mod progress;
mod stream;

pub use progress::{BlobProgress, PullProgress};

/// Errors from pulling an image.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Reading from the source failed (after retries, for transient faults).
    #[error("pulling {reference}")]
    Source {
        /// The normalized reference being pulled.
        reference: String,
        /// The underlying error.
        #[source]
        source: SourceError,
    },
    /// The content store failed (including a digest or size mismatch of a blob).
    #[error("pulling {reference}")]
    Store {
        /// The normalized reference being pulled.
        reference: String,
        /// The underlying error.
        #[source]
        source: StoreError,
    },
    /// The image has a layer the executor cannot unpack.
    #[error("pulling {reference}: layer {digest} has unsupported media type {media_type}")]
    UnsupportedLayer {
        /// The normalized reference being pulled.
        reference: String,
        /// The layer's digest.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// The manifest describes an artifact (Helm chart, signature, ...), not a container image.
    #[error("pulling {reference}: not a container image (config media type {media_type})")]
    NotAnImage {
        /// The normalized reference being pulled.
        reference: String,
        /// The config's media type.
        media_type: String,
    },
    /// Unpacking a layer while it downloaded failed (a malformed layer, a diff ID that
    /// does not match); neither its blob nor its snapshot was stored.
    #[error("pulling {reference}")]
    Unpack {
        /// The normalized reference being pulled.
        reference: String,
        /// The underlying error.
        #[source]
        source: SnapshotError,
    },
    /// A blob transfer made no progress for longer than the stall timeout, every try.
    #[error("pulling {reference}: blob {digest} stalled for {seconds}s")]
    Stalled {
        /// The normalized reference being pulled.
        reference: String,
        /// The blob's digest.
        digest: Digest,
        /// The stall timeout.
        seconds: u64,
    },
    /// The signature policy does not accept the image, or cannot be applied.
    #[error(transparent)]
    Untrusted(TrustError),
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to pick from an index; `None` means this machine's.
    pub platform: Option<Platform>,
    /// Registry access: plain-HTTP registries, auth file, CA certificates.
    pub registry: RegistryOptions,
    /// How many blobs download at once.
    pub max_concurrent_downloads: usize,
    /// How many times a transient fault is retried (per request).
    pub retries: u32,
    /// The first retry delay; doubled for each further retry, capped at 30s.
    pub initial_backoff: Duration,
    /// A transfer that delivers no byte for this long is abandoned (and retried).
    pub stall_timeout: Duration,
    /// Told about every blob transfer, to draw progress (the CLI draws bars on a
    /// terminal); `None`: nothing is told.
    pub progress: Option<Arc<dyn PullProgress>>,
    /// The signature policy to apply; `None`: accept any image (no policy file).
    pub policy: Option<Arc<Policy>>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: None,
            registry: RegistryOptions::default(),
            max_concurrent_downloads: 3,
            retries: 5,
            initial_backoff: Duration::from_secs(1),
            stall_timeout: Duration::from_secs(60),
            progress: None,
            policy: None,
        }
    }
}

/// Pulls `source` into `store` and records it under its normalized reference. Blobs
/// already in the store are not fetched again; concurrent pulls of the same image (in
/// this or other processes) fetch each blob once and all succeed.
pub async fn pull(
    store: &Store,
    source: &ImageSource,
    opts: &PullOptions,
) -> Result<ImageRecord, PullError> {
    pull_into(store, None, source, opts).await
}

/// Pulls like [`pull`] and unpacks every layer into `snapshots` as its bytes arrive (see
/// the module docs), so that [`Snapshotter::prepare`] afterwards finds them all. With
/// flattened snapshots (no overlayfs) layers are unpacked afterwards instead, each
/// needing a copy of the one below.
pub async fn pull_and_unpack(
    store: &Store,
    snapshots: &Snapshotter,
    source: &ImageSource,
    opts: &PullOptions,
) -> Result<ImageRecord, PullError> {
    pull_into(store, Some(snapshots), source, opts).await
}

async fn pull_into(
    store: &Store,
    snapshots: Option<&Snapshotter>,
    source: &ImageSource,
    opts: &PullOptions,
) -> Result<ImageRecord, PullError> {
    let reference = source.to_string();
    let reader =
        crate::source::reader_for(source, &opts.registry).map_err(|source| PullError::Source {
            reference: reference.clone(),
            source,
        })?;
    Puller {
        store,
        snapshots: snapshots.filter(|s| s.uses_overlay()),
        reader: reader.as_ref(),
        source,
        reference,
        opts,
    }
    .run()
    .await
}

struct Puller<'a> {
    store: &'a Store,
    /// Unpack while fetching into these (overlay) snapshots.
    snapshots: Option<&'a Snapshotter>,
    reader: &'a dyn ImageReader,
    source: &'a ImageSource,
    reference: String,
    opts: &'a PullOptions,
}

impl Puller<'_> {
    fn policy(&self) -> Option<&Policy> {
        self.opts.policy.as_deref()
    }

    fn source_err(&self, source: SourceError) -> PullError {
        PullError::Source {
            reference: self.reference.clone(),
            source,
        }
    }

    fn unpack_err(&self, source: SnapshotError) -> PullError {
        PullError::Unpack {
            reference: self.reference.clone(),
            source,
        }
    }

    fn store_err(&self, source: StoreError) -> PullError {
        PullError::Store {
            reference: self.reference.clone(),
            source,
        }
    }

    async fn run(&self) -> Result<ImageRecord, PullError> {
        // Held until the reference is recorded, so `prune` cannot delete fresh blobs.
        let _store_lock = self
            .store
            .lock_shared()
            .await
            .map_err(|e| self.store_err(e))?;
        // A policy that rejects the image refuses it before any request.
        let needs = match self.policy() {
            Some(policy) => trust::precheck(policy, self.source).map_err(PullError::Untrusted)?,
            None => trust::Needs::Nothing,
        };
        tracing::debug!(image = %self.reference, "resolving");
        let (root_bytes, root_digest) = self
            .retrying(&self.reference, || self.reader.root_manifest())
            .await?;
        let Resolved {
            manifest,
            media_type,
            manifest_digest,
            index_digest,
            platform,
            verified_manifests,
        } = self.resolve(root_bytes, root_digest).await?;

        // Trust is settled before anything of the image is stored or unpacked.
        let (signatures, verified) = match (needs, self.policy()) {
            (trust::Needs::Signatures, Some(policy)) => {
                let mut digests = vec![&manifest_digest];
                digests.extend(index_digest.iter());
                let mut signatures = Vec::new();
                for digest in &digests {
                    let found = self
                        .retrying(&format!("signatures of {digest}"), || {
                            trust::cosign::fetch(self.reader, digest)
                        })
                        .await?;
                    signatures.extend(found);
                }
                tracing::debug!(image = %self.reference, signatures = signatures.len(), "fetched signatures");
                let verified = trust::verify(policy, self.source, &digests, &signatures)
                    .map_err(PullError::Untrusted)?;
                if let Some(v) = &verified {
                    tracing::info!(image = %self.reference, key = %v.key, identity = %v.identity, "signature verified");
                }
                (signatures, verified)
            }
            _ => (Vec::new(), None),
        };
        for (digest, bytes) in &verified_manifests {
            self.put_manifest(digest, bytes).await?;
        }

        let config_type = manifest.config().media_type().to_string();
        if !CONFIG_MEDIA_TYPES.contains(&config_type.as_str()) {
            return Err(PullError::NotAnImage {
                reference: self.reference.clone(),
                media_type: config_type,
            });
        }
        if manifest.config().size() > crate::source::MAX_CONFIG_SIZE {
            return Err(self.source_err(SourceError::BadManifest {
                digest: manifest_digest.clone(),
                reason: format!(
                    "config of {} bytes, more than the {} bytes accepted",
                    manifest.config().size(),
                    crate::source::MAX_CONFIG_SIZE
                ),
            }));
        }
        for layer in manifest.layers() {
            let media_type = layer.media_type().to_string();
            if !LAYER_MEDIA_TYPES.contains(&media_type.as_str()) {
                return Err(PullError::UnsupportedLayer {
                    reference: self.reference.clone(),
                    digest: layer.digest().clone(),
                    media_type,
                });
            }
        }

        if let Some(snapshots) = self.snapshots {
            // The diff IDs are in the config: it comes first.
            self.fetch_blob(manifest.config()).await?;
            let digest = manifest.config().digest();
            let data = self
                .store
                .read_blob(digest)
                .map_err(|e| self.store_err(e))?;
            let config: ImageConfiguration = serde_json::from_slice(&data).map_err(|source| {
                self.store_err(StoreError::Json {
                    path: self.store.blob_path(digest),
                    source,
                })
            })?;
            self.stream_layers(snapshots, &config, manifest.layers())
                .await?;
        } else {
            // Futures collected first: a lazily mapped iterator here trips the compiler's
            // higher-ranked `Send` check when `pull` itself is spawned.
            let fetches: Vec<_> = std::iter::once(manifest.config())
                .chain(manifest.layers().iter())
                .map(|d| self.fetch_blob(d))
                .collect();
            futures::stream::iter(fetches)
                .buffer_unordered(self.opts.max_concurrent_downloads.max(1))
                .try_collect::<Vec<()>>()
                .await?;
        }

        let platform = platform.or_else(|| {
            // A single-platform image: read the platform from its config for display.
            let record_config = manifest.config().clone();
            let data = self.store.read_blob(record_config.digest()).ok()?;
            let config: serde_json::Value = serde_json::from_slice(&data).ok()?;
            Some(format!(
                "{}/{}",
                config.get("os")?.as_str()?,
                config.get("architecture")?.as_str()?
            ))
        });
        let record = ImageRecord {
            reference: self.reference.clone(),
            manifest_digest,
            manifest_media_type: media_type,
            index_digest,
            platform,
            config: manifest.config().clone(),
            layers: manifest.layers().clone(),
            signatures,
            verified,
        };
        self.store
            .put_image(&record)
            .map_err(|e| self.store_err(e))?;
        tracing::info!(image = %self.reference, digest = %record.manifest_digest, "pulled");
        Ok(record)
    }

    /// Turns the root manifest into the platform image manifest (through the index when
    /// it is one), verifying the manifests it used (stored once the image is trusted).
    async fn resolve(&self, root_bytes: Bytes, root_digest: Digest) -> Result<Resolved, PullError> {
        let index =
            match parse_manifest(&root_digest, &root_bytes).map_err(|e| self.source_err(e))? {
                Manifest::Image(manifest, media_type) => {
                    return Ok(Resolved {
                        manifest: *manifest,
                        media_type,
                        manifest_digest: root_digest.clone(),
                        index_digest: None,
                        platform: None,
                        verified_manifests: vec![(root_digest, root_bytes)],
                    });
                }
                Manifest::Index(index) => index,
            };
        let wanted = self.opts.platform.clone().unwrap_or_else(Platform::host);
        let chosen =
            select_platform(&index, &wanted, &self.reference).map_err(|e| self.source_err(e))?;
        let digest = chosen.digest().clone();
        let bytes = self
            .retrying(digest.as_ref(), || self.reader.manifest(&digest))
            .await?;
        verify_bytes(&digest, &bytes).map_err(|e| self.source_err(e))?;
        if bytes.len() as u64 != chosen.size() {
            return Err(self.store_err(StoreError::SizeMismatch {
                digest: digest.clone(),
                expected: chosen.size(),
                actual: bytes.len() as u64,
            }));
        }
        let Manifest::Image(manifest, media_type) =
            parse_manifest(&digest, &bytes).map_err(|e| self.source_err(e))?
        else {
            return Err(self.source_err(SourceError::BadManifest {
                digest,
                reason: "an index entry for a platform is itself an index".into(),
            }));
        };
        // Name the platform as the index does (`linux/arm` may have picked `linux/arm/v7`).
        let platform = chosen.platform().as_ref().map(|p| {
            let mut name = format!("{}/{}", p.os(), p.architecture());
            if let Some(variant) = p.variant() {
                name = format!("{name}/{variant}");
            }
            name
        });
        tracing::debug!(image = %self.reference, wanted = %wanted, manifest = %digest, "picked platform");
        Ok(Resolved {
            manifest: *manifest,
            media_type,
            manifest_digest: digest.clone(),
            index_digest: Some(root_digest.clone()),
            platform,
            verified_manifests: vec![(root_digest, root_bytes), (digest, bytes)],
        })
    }

    async fn put_manifest(&self, digest: &Digest, bytes: &[u8]) -> Result<(), PullError> {
        self.store
            .put_blob(digest, bytes)
            .await
            .map_err(|e| self.store_err(e))
    }
}

/// The platform image manifest an image reference resolved to.
struct Resolved {
    manifest: ImageManifest,
    media_type: MediaType,
    manifest_digest: Digest,
    index_digest: Option<Digest>,
    platform: Option<String>,
    /// The verified manifests (and index) to store once the image is trusted.
    verified_manifests: Vec<(Digest, Bytes)>,
}
