//! Garbage collection of the executor's root, as library calls the CLI only prints:
//! [`prune`] deletes what no stored image needs (`executor prune`), [`collect`] cleans
//! what interrupted runs, pulls and unpacks left behind (`executor gc`).
//!
//! The policy lives here, not in the CLI: a blob is kept while an image record names it
//! (the content store decides that); a snapshot while a stored image's layer chain or a
//! mounted root file system (a live run, a bundle) stacks it. An overlay that names its
//! layers by file descriptor cannot be mapped to snapshots, so then none is deleted.

use crate::root::{Root, RootError};
use crate::runs::GcReport as RunsReport;
use crate::snapshot::{SnapshotError, chain_ids, layer_blobs, mounted_lowers};
use crate::store::{PruneReport as BlobsReport, StoreError};
use std::collections::HashSet;
use std::path::PathBuf;

/// Why garbage collection stopped; what it deleted before stays deleted.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// A part of the root could not be opened.
    #[error(transparent)]
    Open(#[from] RootError),
    /// Pruning the content store failed.
    #[error("while pruning the store under {}", .root.display())]
    Store {
        /// The executor root.
        root: PathBuf,
        /// The store's error.
        source: StoreError,
    },
    /// Reading a stored image failed, so what it needs is unknown.
    #[error("while reading image {reference}")]
    Image {
        /// The image reference.
        reference: String,
        /// The store's (or the layer list's) error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Reading or pruning the snapshot cache failed.
    #[error("while pruning the snapshots under {}", .root.display())]
    Snapshots {
        /// The executor root.
        root: PathBuf,
        /// The snapshot cache's error.
        source: SnapshotError,
    },
}

/// What [`prune`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs deleted and bytes freed.
    pub blobs: BlobsReport,
    /// What happened to the snapshots.
    pub snapshots: SnapshotsPruned,
}

/// What [`prune`] did to the snapshot cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotsPruned {
    /// There is no snapshot cache.
    None,
    /// Snapshots were deleted: `removed` of them; `only_mounted` were kept only because
    /// a mounted root file system stacks them.
    Removed {
        /// Snapshots deleted.
        removed: usize,
        /// Snapshots no stored image needs, kept for a mounted root file system.
        only_mounted: usize,
    },
    /// None was deleted: this overlay names its layers by file descriptor, so which
    /// snapshots it uses cannot be known.
    KeptAll {
        /// The overlay's mount point.
        mount: PathBuf,
    },
}

/// Deletes blobs no image record needs, then snapshots that no stored image and no
/// mounted root file system stacks.
pub async fn prune(root: &Root) -> Result<PruneReport, GcError> {
    let store_err = |source| GcError::Store {
        root: root.path().to_owned(),
        source,
    };
    let snapshots_err = |source| GcError::Snapshots {
        root: root.path().to_owned(),
        source,
    };
    let store = root.store()?;
    let blobs = store.prune().await.map_err(store_err)?;
    if !root.snapshots_dir().is_dir() {
        return Ok(PruneReport {
            blobs,
            snapshots: SnapshotsPruned::None,
        });
    }
    let mut keep = HashSet::new();
    for record in store.images().map_err(store_err)? {
        let image_err = |source: Box<dyn std::error::Error + Send + Sync>| GcError::Image {
            reference: record.reference.clone(),
            source,
        };
        let config = match store.read_config(&record) {
            Ok(config) => config,
            // An image whose config is gone cannot be unpacked again: nothing to keep.
            Err(StoreError::MissingBlob { .. }) => continue,
            Err(e) => return Err(image_err(Box::new(e))),
        };
        let layers = layer_blobs(&config, &record.layers, |d| store.blob_path(d))
            .map_err(|e| image_err(Box::new(e)))?;
        keep.extend(chain_ids(layers.iter().map(|l| &l.diff_id)));
    }
    let mounted = mounted_lowers().map_err(snapshots_err)?;
    if let Some(mount) = mounted.unmapped.first() {
        tracing::warn!(
            mount = %mount.display(),
            "an overlay names its layers by file descriptor: no snapshot pruned"
        );
        return Ok(PruneReport {
            blobs,
            snapshots: SnapshotsPruned::KeptAll {
                mount: mount.clone(),
            },
        });
    }
    let snapshots = root.snapshots()?;
    let in_use = snapshots.chains_in(&mounted.dirs);
    let only_mounted = in_use.difference(&keep).count();
    keep.extend(in_use);
    let removed = snapshots.prune(&keep).map_err(snapshots_err)?;
    Ok(PruneReport {
        blobs,
        snapshots: SnapshotsPruned::Removed {
            removed,
            only_mounted,
        },
    })
}

/// For every run whose executor is gone, kills and deletes its container, unmounts what
/// it mounted and removes its directory; also clears what killed pulls and unpacks left
/// in the store and snapshot cache (opening them does). Live runs and live pulls are
/// left alone. The report lists the runs cleaned and those that could not be (a later
/// call retries them).
pub async fn collect(root: &Root) -> Result<RunsReport, GcError> {
    let report = root.runs()?.gc().await;
    root.store()?;
    root.snapshots()?;
    Ok(report)
}

impl Root {
    /// Deletes the blobs and snapshots nothing needs; see [`prune`].
    pub async fn prune(&self) -> Result<PruneReport, GcError> {
        prune(self).await
    }

    /// Cleans what interrupted runs, pulls and unpacks left; see [`collect`].
    pub async fn gc(&self) -> Result<RunsReport, GcError> {
        collect(self).await
    }
}
