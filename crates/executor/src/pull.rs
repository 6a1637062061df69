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
//! after its lowers; otherwise both are discarded. Layers download
//! in parallel up to `max_concurrent_downloads`; each blob is still fetched once across
//! processes (under its blob lock, held until the snapshot is committed).
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

use crate::reference::ImageSource;
use crate::snapshot::{LayerBlob, Lowers, SnapshotError, Snapshotter, Streamed};
use crate::source::layout::LayoutReader;
use crate::source::registry::{RegistryOptions, RegistryReader};
use crate::source::{
    CONFIG_MEDIA_TYPES, ImageReader, LAYER_MEDIA_TYPES, Manifest, Platform, SourceError,
    parse_manifest, select_platform, verify_bytes,
};
use crate::store::{BlobWriter, ImageRecord, Store, StoreError, VerifiedBlob};
use crate::trust::{self, TrustError, policy::Policy};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageManifest, MediaType};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

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
    /// Show a progress bar per blob when stderr is a terminal.
    pub progress: bool,
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
            progress: true,
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
    let reader: Box<dyn ImageReader> = match source {
        ImageSource::Registry(r) => Box::new(
            RegistryReader::new(r.clone(), &opts.registry).map_err(|source| PullError::Source {
                reference: reference.clone(),
                source,
            })?,
        ),
        ImageSource::Layout {
            path,
            tag_or_digest,
        } => Box::new(LayoutReader::new(path, tag_or_digest)),
    };
    Puller {
        store,
        snapshots: snapshots.filter(|s| s.uses_overlay()),
        reader: reader.as_ref(),
        source,
        reference,
        opts,
        progress: (opts.progress && std::io::stderr().is_terminal()).then(MultiProgress::new),
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
    progress: Option<MultiProgress>,
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

    /// Runs `op`, retrying transient failures with exponential backoff.
    async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, PullError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SourceError>>,
    {
        let mut attempt = 0;
        loop {
            // A registry that accepts the connection but never answers must not hang the
            // pull: the stall timeout bounds the whole request (manifests are small).
            let result = match tokio::time::timeout(self.opts.stall_timeout, op()).await {
                Ok(result) => result,
                Err(_) => Err(SourceError::Transient {
                    what: what.to_owned(),
                    detail: format!(
                        "stalled: no complete response within {}s",
                        self.opts.stall_timeout.as_secs()
                    ),
                    retry_after: None,
                }),
            };
            match result {
                Ok(value) => return Ok(value),
                Err(e) if e.is_transient() && attempt < self.opts.retries => {
                    let delay = self.delay(attempt, &e);
                    tracing::warn!(what, attempt = attempt + 1, delay_ms = millis(delay), error = %e, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(self.source_err(e)),
            }
        }
    }

    /// How long to wait before retry number `attempt + 1` after `error`.
    fn delay(&self, attempt: u32, error: &SourceError) -> Duration {
        if let Some(asked) = error.retry_after() {
            return asked.min(Duration::from_secs(300));
        }
        let factor = 2u32.saturating_pow(attempt.min(16));
        (self.opts.initial_backoff * factor).min(Duration::from_secs(30))
    }

    /// Fetches one blob into the store unless it is there already; under the blob's lock,
    /// so that concurrent pullers wait for each other instead of downloading twice.
    async fn fetch_blob(&self, descriptor: &Descriptor) -> Result<(), PullError> {
        let digest = descriptor.digest();
        let size = descriptor.size();
        if self.store.has_blob(digest, size) {
            tracing::debug!(image = %self.reference, blob = %digest, "already stored");
            return Ok(());
        }
        let _lock = self
            .store
            .lock_blob(digest)
            .await
            .map_err(|e| self.store_err(e))?;
        if self.store.has_blob(digest, size) {
            tracing::debug!(image = %self.reference, blob = %digest, "stored by another pull");
            return Ok(());
        }
        let writer = self
            .store
            .blob_writer(digest, size)
            .await
            .map_err(|e| self.store_err(e))?;
        let (verified, _) = self.download(descriptor, writer).await?;
        verified.persist().map_err(|e| self.store_err(e))
    }

    /// Fetches and unpacks every layer, in parallel: up to `max_concurrent_downloads`
    /// downloading at a time, each unpacked as its bytes arrive once the snapshots below it
    /// are committed. Waits for every layer's work to end (so that a failure leaves no
    /// temp file or directory of this pull behind), then reports the first failure.
    async fn stream_layers(
        &self,
        snapshots: &Snapshotter,
        config: &ImageConfiguration,
        descriptors: &[Descriptor],
    ) -> Result<(), PullError> {
        let layers = crate::snapshot::layer_blobs(config, descriptors, |d| self.store.blob_path(d))
            .map_err(|e| self.unpack_err(e))?;
        if let Some(layer) = layers
            .iter()
            .find(|l| l.diff_id.algorithm().as_ref() != "sha256")
        {
            return Err(self.unpack_err(SnapshotError::UnsupportedDiffId {
                digest: layer.digest.clone(),
                diff_id: layer.diff_id.clone(),
            }));
        }
        let chains = crate::snapshot::chain_ids(layers.iter().map(|l| &l.diff_id));
        let slots = Semaphore::new(self.opts.max_concurrent_downloads.max(1));
        // Kept here, not moved into the tasks: every task sends its outcome before it
        // ends, so a waiter never sees a closed channel.
        let (states, watchers): (Vec<_>, Vec<_>) = layers
            .iter()
            .map(|_| watch::channel(LayerState::Pending))
            .unzip();
        let tasks: Vec<_> = layers
            .iter()
            .zip(descriptors)
            .zip(&chains)
            .zip(&states)
            .enumerate()
            .map(|(i, (((layer, descriptor), chain), state))| {
                let lowers = &watchers[..i];
                let slots = &slots;
                async move {
                    let result = self
                        .layer(snapshots, layer, descriptor, chain, lowers, slots)
                        .await;
                    state.send_replace(match &result {
                        Ok(Some(dir)) => LayerState::Ready(dir.clone()),
                        _ => LayerState::Failed,
                    });
                    result
                }
            })
            .collect();
        let results = futures::future::join_all(tasks).await;
        for result in results {
            // `None`: gave up because a layer below failed, which is reported itself.
            result?;
        }
        Ok(())
    }

    /// One layer of [`Puller::stream_layers`]: its snapshot directory once committed, or
    /// `None` if a layer below it failed.
    async fn layer(
        &self,
        snapshots: &Snapshotter,
        layer: &LayerBlob,
        descriptor: &Descriptor,
        chain: &Digest,
        lowers: &[watch::Receiver<LayerState>],
        slots: &Semaphore,
    ) -> Result<Option<PathBuf>, PullError> {
        let digest = descriptor.digest();
        let size = descriptor.size();
        let dir = snapshots.snapshot_dir(chain);
        let slot = slots
            .acquire()
            .await
            .expect("the download semaphore is never closed");
        if self.store.has_blob(digest, size) && dir.exists() {
            tracing::debug!(image = %self.reference, blob = %digest, "already stored and unpacked");
            return Ok(Some(dir));
        }
        let lock = self
            .store
            .lock_blob(digest)
            .await
            .map_err(|e| self.store_err(e))?;
        if !self.store.has_blob(digest, size) {
            let writer = self
                .store
                .blob_writer(digest, size)
                .await
                .map_err(|e| self.store_err(e))?;
            if dir.exists() {
                // Unpacked earlier, its blob since pruned: fetch the blob alone.
                let (verified, _) = self.download(descriptor, writer).await?;
                verified.persist().map_err(|e| self.store_err(e))?;
                return Ok(Some(dir));
            }
            return self
                .stream_layer(snapshots, layer, descriptor, chain, lowers, writer, slot)
                .await;
        }
        // Stored by another pull (or `executor pull`) but not unpacked: unpack the blob.
        drop((slot, lock));
        let Some(lower_dirs) = wait_lowers(lowers).await else {
            return Ok(None);
        };
        let (snapshots, layer, chain) = (snapshots.clone(), layer.clone(), chain.clone());
        let dir =
            tokio::task::spawn_blocking(move || snapshots.ensure(&layer, &chain, &lower_dirs))
                .await
                .map_err(|e| self.store_err(StoreError::Task(e.to_string())))?
                .map_err(|e| self.unpack_err(e))?;
        Ok(Some(dir))
    }

    /// Downloads a layer into `writer` while unpacking it from the bytes the writer puts
    /// on disk; stores the blob and commits the snapshot once both verified. The caller
    /// holds the blob's lock (`_slot` is the download slot, given back once the bytes are
    /// in).
    #[allow(clippy::too_many_arguments)]
    async fn stream_layer(
        &self,
        snapshots: &Snapshotter,
        layer: &LayerBlob,
        descriptor: &Descriptor,
        chain: &Digest,
        lowers: &[watch::Receiver<LayerState>],
        writer: BlobWriter,
        slot: tokio::sync::SemaphorePermit<'_>,
    ) -> Result<Option<PathBuf>, PullError> {
        let follower = writer.follower().map_err(|e| self.store_err(e))?;
        let download = async {
            let downloaded = self.download(descriptor, writer).await;
            drop(slot);
            downloaded
        };
        // Unpacked at once, while the layers below are too (each from its own download):
        // waiting for them would make the unpack of a large image the sum of its layers'.
        // What this layer takes to be absent below is checked once they are committed.
        let has_lowers = !lowers.is_empty();
        let (unpacking, layer_to_unpack, chain_id) =
            (snapshots.clone(), layer.clone(), chain.clone());
        let unpack = tokio::task::spawn_blocking(move || {
            let lowers = if has_lowers {
                Lowers::NotYet
            } else {
                Lowers::Ready(&[])
            };
            unpacking.unpack_pending(&layer_to_unpack, &chain_id, lowers, follower)
        });
        // Both run to their end: a failed download stops the unpacker (its reads fail),
        // and each removes its own temp file or directory before this returns.
        let (downloaded, unpacked) = tokio::join!(download, unpack);
        let (verified, restarted) = downloaded?;
        let Some(lower_dirs) = wait_lowers(lowers).await else {
            // A layer below failed; this blob itself verified, so keep it.
            verified.persist().map_err(|e| self.store_err(e))?;
            return Ok(None);
        };
        let unpacked = unpacked.map_err(|e| self.store_err(StoreError::Task(e.to_string())))?;
        let pending = match unpacked {
            Ok(Streamed::Pending(pending)) if !restarted => {
                if pending.holds_over(&lower_dirs) {
                    Some(pending)
                } else {
                    tracing::debug!(image = %self.reference, layer = %layer.digest, "a lower layer has a path this one took to be absent: unpacking it again");
                    // Dropped here, before `ensure` takes the chain's lock again.
                    drop(pending);
                    None
                }
            }
            Ok(Streamed::Present(dir)) => {
                verified.persist().map_err(|e| self.store_err(e))?;
                return Ok(Some(dir));
            }
            // What was unpacked is exactly the verified blob: the layer itself is bad.
            Err(e) if !restarted => return Err(self.unpack_err(e)),
            // The layer needs an overlay mount, or the stream was of a download that
            // started over: unpack the verified blob instead.
            _ => None,
        };
        let dir = match pending {
            Some(pending) => {
                verified.persist().map_err(|e| self.store_err(e))?;
                let dir = pending.commit().map_err(|e| self.unpack_err(e))?;
                tracing::debug!(image = %self.reference, layer = %layer.digest, chain_id = %chain, while_fetching = true, "unpacked layer");
                dir
            }
            None => {
                let from = LayerBlob {
                    path: verified.path().to_owned(),
                    ..layer.clone()
                };
                let (snapshots, chain) = (snapshots.clone(), chain.clone());
                let dir = tokio::task::spawn_blocking(move || {
                    snapshots.ensure(&from, &chain, &lower_dirs)
                })
                .await
                .map_err(|e| self.store_err(StoreError::Task(e.to_string())))?
                .map_err(|e| self.unpack_err(e))?;
                verified.persist().map_err(|e| self.store_err(e))?;
                dir
            }
        };
        Ok(Some(dir))
    }

    /// Downloads one blob into `writer` (fresh), with retries and resumes, and verifies
    /// it; the caller holds the blob's lock and stores the result. Also says whether the
    /// download had to start over with a fresh writer (which fails `writer`'s followers).
    async fn download(
        &self,
        descriptor: &Descriptor,
        mut writer: BlobWriter,
    ) -> Result<(VerifiedBlob, bool), PullError> {
        let digest = descriptor.digest();
        let size = descriptor.size();
        let bar = self.progress_bar(descriptor);
        let mut restarted = false;
        let mut attempt = 0;
        let verified = loop {
            let transferred = self
                .transfer(descriptor, &mut writer, bar.as_ref(), &mut restarted)
                .await;
            let failure = match transferred {
                Ok(()) => match writer.verify().await {
                    Ok(verified) => break verified,
                    // Bytes mangled on the way (a bad proxy, a flaky middlebox): the temp
                    // file is gone, so start over from byte 0. A registry that keeps
                    // serving bad content fails once the retries are used up.
                    Err(
                        e @ (StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. }),
                    ) if attempt < self.opts.retries => {
                        tracing::warn!(
                            image = %self.reference, blob = %digest, attempt = attempt + 1,
                            error = %e, "blob content is wrong; downloading it again"
                        );
                        attempt += 1;
                        restarted = true;
                        writer = self
                            .store
                            .blob_writer(digest, size)
                            .await
                            .map_err(|e| self.store_err(e))?;
                        continue;
                    }
                    Err(e) => return Err(self.store_err(e)),
                },
                Err(failure) => failure,
            };
            match failure {
                Failure::Source(e) if e.is_transient() && attempt < self.opts.retries => {
                    let delay = self.delay(attempt, &e);
                    tracing::warn!(
                        image = %self.reference, blob = %digest, attempt = attempt + 1,
                        resume_at = writer.written(), delay_ms = millis(delay),
                        error = %e, "blob transfer interrupted; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Failure::Stalled if attempt < self.opts.retries => {
                    tracing::warn!(image = %self.reference, blob = %digest, attempt = attempt + 1, "blob transfer stalled; retrying");
                    attempt += 1;
                }
                Failure::Stalled => {
                    return Err(PullError::Stalled {
                        reference: self.reference.clone(),
                        digest: digest.clone(),
                        seconds: self.opts.stall_timeout.as_secs(),
                    });
                }
                Failure::Source(e) => return Err(self.source_err(e)),
                Failure::Store(e) => return Err(self.store_err(e)),
            }
        };
        if let Some(bar) = bar {
            bar.finish();
        }
        // Per blob, so debug: the default text log has one line per stage.
        tracing::debug!(image = %self.reference, blob = %digest, size, "fetched blob");
        Ok((verified, restarted))
    }

    /// One attempt: streams the rest of the blob (from `writer.written()`) into the writer.
    async fn transfer(
        &self,
        descriptor: &Descriptor,
        writer: &mut BlobWriter,
        bar: Option<&ProgressBar>,
        restarted: &mut bool,
    ) -> Result<(), Failure> {
        let offset = writer.written();
        // A registry that never sends the response head counts as a stall too.
        let (mut stream, start) = tokio::time::timeout(
            self.opts.stall_timeout,
            self.reader.blob(descriptor, offset),
        )
        .await
        .map_err(|_| Failure::Stalled)?
        .map_err(Failure::Source)?;
        if start != offset {
            // The source ignored the range: start over with a fresh temp file.
            tracing::debug!(blob = %descriptor.digest(), "source does not resume; restarting");
            *restarted = true;
            *writer = self
                .store
                .blob_writer(descriptor.digest(), descriptor.size())
                .await
                .map_err(Failure::Store)?;
        }
        if let Some(bar) = bar {
            bar.set_position(writer.written());
        }
        loop {
            let next = tokio::time::timeout(self.opts.stall_timeout, stream.next())
                .await
                .map_err(|_| Failure::Stalled)?;
            match next {
                // A body that ends early (a lying `Content-Length`, a proxy that closed
                // cleanly) is resumed like a broken connection, not failed as corrupt.
                None if writer.written() < descriptor.size() => {
                    return Err(Failure::Source(SourceError::Transient {
                        what: descriptor.digest().to_string(),
                        detail: format!(
                            "response ended after {} of {} bytes",
                            writer.written(),
                            descriptor.size()
                        ),
                        retry_after: None,
                    }));
                }
                None => return Ok(()),
                Some(Ok(chunk)) => {
                    writer.write(chunk).await.map_err(Failure::Store)?;
                    if let Some(bar) = bar {
                        bar.set_position(writer.written());
                    }
                }
                // Every byte is here and only the framing broke (a `Content-Length` that
                // promised more): commit verifies the digest, so no need to fetch again.
                Some(Err(_)) if writer.written() == descriptor.size() => return Ok(()),
                Some(Err(e)) => return Err(Failure::Source(e)),
            }
        }
    }

    fn progress_bar(&self, descriptor: &Descriptor) -> Option<ProgressBar> {
        let multi = self.progress.as_ref()?;
        let bar = multi.add(ProgressBar::new(descriptor.size()));
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        let hex = descriptor.digest().digest();
        bar.set_prefix(hex.get(..12).unwrap_or(hex).to_owned());
        Some(bar)
    }
}

/// The platform image manifest an image reference resolved to.
/// Whole milliseconds, for logs (a delay is at most minutes).
fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

struct Resolved {
    manifest: ImageManifest,
    media_type: MediaType,
    manifest_digest: Digest,
    index_digest: Option<Digest>,
    platform: Option<String>,
    /// The verified manifests (and index) to store once the image is trusted.
    verified_manifests: Vec<(Digest, Bytes)>,
}

enum Failure {
    Source(SourceError),
    Store(StoreError),
    Stalled,
}

/// How far one layer of [`Puller::stream_layers`] got, for the layers above it.
#[derive(Debug, Clone)]
enum LayerState {
    Pending,
    Ready(PathBuf),
    Failed,
}

/// Waits until every layer in `lowers` has its snapshot; their directories, bottom
/// first, or `None` if one of them failed.
async fn wait_lowers(lowers: &[watch::Receiver<LayerState>]) -> Option<Vec<PathBuf>> {
    let mut dirs = Vec::with_capacity(lowers.len());
    for lower in lowers {
        let mut lower = lower.clone();
        let state = lower
            .wait_for(|s| !matches!(s, LayerState::Pending))
            .await
            .ok()?
            .clone();
        match state {
            LayerState::Ready(dir) => dirs.push(dir),
            _ => return None,
        }
    }
    Some(dirs)
}
