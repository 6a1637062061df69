//! The executor's state directory (`--root`, default `/var/lib/executor`) and its layout,
//! written down once: the content store's `blobs/`, `images/` and `tmp/`, the snapshot
//! cache in `snapshots/`, one directory per live run in `runs/`.
//!
//! Opening a part cleans what killed processes left in it (temp files, temp
//! directories and their mounts), so each is opened when a command needs it, not all up
//! front: `executor images` never touches the snapshot cache. `Root::prune` and
//! `Root::gc` are in [`crate::gc`], with the policy.

use crate::runs::{Runs, RunsError};
use crate::snapshot::{SnapshotError, Snapshotter};
use crate::store::{Store, StoreError};
use std::path::{Path, PathBuf};

/// Why a part of the root could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// The content store.
    #[error("while opening the store at {}", .root.display())]
    Store {
        /// The root.
        root: PathBuf,
        /// The store's error.
        source: Box<StoreError>,
    },
    /// The snapshot cache.
    #[error("while opening the snapshots under {}", .root.display())]
    Snapshots {
        /// The root.
        root: PathBuf,
        /// The cache's error.
        source: Box<SnapshotError>,
    },
    /// The run directories.
    #[error("while opening runs under {}", .root.display())]
    Runs {
        /// The root.
        root: PathBuf,
        /// The runs' error.
        source: Box<RunsError>,
    },
}

/// The executor's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    path: PathBuf,
}

impl Root {
    /// The root at `path`; does no I/O.
    pub fn new(path: impl Into<PathBuf>) -> Root {
        Root { path: path.into() }
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the snapshot cache lives.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.path.join("snapshots")
    }

    /// Opens the content store (creating it if missing).
    pub fn store(&self) -> Result<Store, RootError> {
        Store::open(&self.path).map_err(|source| RootError::Store {
            root: self.path.clone(),
            source: Box::new(source),
        })
    }

    /// Opens the snapshot cache (creating it if missing).
    pub fn snapshots(&self) -> Result<Snapshotter, RootError> {
        Snapshotter::new(self.snapshots_dir()).map_err(|source| RootError::Snapshots {
            root: self.path.clone(),
            source: Box::new(source),
        })
    }

    /// Opens the run directories (creating them if missing).
    pub fn runs(&self) -> Result<Runs, RootError> {
        Runs::open(&self.path).map_err(|source| RootError::Runs {
            root: self.path.clone(),
            source: Box::new(source),
        })
    }
}
