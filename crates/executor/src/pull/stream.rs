//! Unpack while fetching: every layer is unpacked into a pending snapshot from its bytes
//! as they arrive, and committed once its blob and diff ID verified and the layers below
//! are committed (see the [module docs](super)).

use super::{PullError, Puller};
use crate::snapshot::{LayerBlob, Lowers, SnapshotError, Snapshotter, Streamed};
use crate::store::{BlobWriter, StoreError};
use oci_spec::image::{Descriptor, Digest, ImageConfiguration};
use std::path::PathBuf;
use tokio::sync::{Semaphore, watch};

impl Puller<'_> {
    /// Fetches and unpacks every layer, in parallel: up to `max_concurrent_downloads`
    /// downloading at a time, each unpacked as its bytes arrive once the snapshots below it
    /// are committed. Waits for every layer's work to end (so that a failure leaves no
    /// temp file or directory of this pull behind), then reports the first failure.
    pub(super) async fn stream_layers(
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
