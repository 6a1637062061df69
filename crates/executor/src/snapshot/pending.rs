//! Unpacking while fetching: [`Snapshotter::unpack_pending`] unpacks a layer from its
//! download stream into a temp snapshot, checks its diff ID and hands back a
//! [`PendingSnapshot`] to commit ([`Streamed`]), possibly before the layers below it are
//! unpacked themselves ([`Lowers`]).

use super::{LayerBlob, LockedTempDir, SnapshotError, Snapshotter, create_dir_mode, io_err};
use crate::unpack::{self, UnpackError};
use nix::fcntl::Flock;
use oci_spec::image::Digest;
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;

impl Snapshotter {
    /// Unpacks one layer from a stream of its blob's bytes (a download in progress) into
    /// a temp snapshot over the overlay snapshots `lowers`, checking its diff ID; nothing is
    /// visible until [`PendingSnapshot::commit`]. Overlay snapshots only (with flattened
    /// ones, use [`Snapshotter::ensure`]). With [`Lowers::NotYet`] the layer is unpacked
    /// while the layers below still are: [`PendingSnapshot::holds_over`] then says, once
    /// they are committed, whether the result stands.
    ///
    /// Returns [`Streamed::NeedsBlob`], leaving nothing behind, where the layer needs an
    /// overlay mount to unpack (see [`unpack::unpack_layer_over`]): the caller unpacks it
    /// with [`Snapshotter::ensure`] once the whole blob is there.
    pub fn unpack_pending(
        &self,
        layer: &LayerBlob,
        chain: &Digest,
        lowers: Lowers<'_>,
        reader: impl io::Read + Send,
    ) -> Result<Streamed, SnapshotError> {
        let dest = self.snapshot_dir(chain);
        let lock = self.lock(chain)?;
        if dest.exists() {
            return Ok(Streamed::Present(dest));
        }
        let unpack_err = |source| SnapshotError::Unpack {
            digest: layer.digest.clone(),
            source,
        };
        let compression =
            unpack::Compression::from_media_type(&layer.media_type).map_err(unpack_err)?;
        let work = self.temp_dir()?;
        let tree = work.path().join("upper");
        create_dir_mode(&tree, 0o755)?;
        let (result, over_lowers) = match lowers {
            Lowers::Ready(dirs) => (
                unpack::unpack_stream_over(reader, compression, &tree, dirs, &self.unpack),
                !dirs.is_empty(),
            ),
            Lowers::NotYet => (
                unpack::unpack_stream_before_lowers(reader, compression, &tree, &self.unpack),
                true,
            ),
        };
        let stats = match result {
            Err(error @ (UnpackError::Invalid { .. } | UnpackError::Apply { .. }))
                if over_lowers =>
            {
                tracing::debug!(layer = %layer.digest, error = %error, "layer needs an overlay mount to unpack");
                work.close()
                    .map_err(io_err("remove temp directory", &self.root))?;
                return Ok(Streamed::NeedsBlob);
            }
            other => other.map_err(unpack_err)?,
        };
        if stats.diff_id != layer.diff_id {
            return Err(SnapshotError::DiffIdMismatch {
                digest: layer.digest.clone(),
                expected: Box::new(layer.diff_id.clone()),
                actual: Box::new(stats.diff_id),
            });
        }
        Ok(Streamed::Pending(PendingSnapshot {
            tree,
            dest,
            work,
            assumed_absent: stats.assumed_absent,
            _lock: lock,
        }))
    }
}

/// The lower snapshots a layer stream is unpacked over ([`Snapshotter::unpack_pending`]).
#[derive(Debug, Clone, Copy)]
pub enum Lowers<'a> {
    /// Their directories: one per layer below, bottom first; none for a base layer.
    Ready(&'a [PathBuf]),
    /// There are some, still being unpacked themselves.
    NotYet,
}

/// What [`Snapshotter::unpack_pending`] made of a layer stream.
#[derive(Debug)]
pub enum Streamed {
    /// Unpacked and its diff ID verified, waiting to be committed.
    Pending(PendingSnapshot),
    /// The snapshot was there already (another process made it); the stream was not read.
    Present(PathBuf),
    /// The layer needs an overlay mount: unpack it from the whole blob instead.
    NeedsBlob,
}

/// A snapshot unpacked into a temp directory, its diff ID verified, not visible yet: it
/// holds the chain's lock until [`PendingSnapshot::commit`] renames it into place.
/// Dropping it removes the directory.
#[derive(Debug)]
pub struct PendingSnapshot {
    tree: PathBuf,
    dest: PathBuf,
    work: LockedTempDir,
    /// Paths the unpack took no lower layer to have (unpacked before the lowers were).
    assumed_absent: Vec<Vec<u8>>,
    _lock: Flock<File>,
}

impl PendingSnapshot {
    /// Whether the snapshot is what unpacking over `lowers` (the committed snapshots of
    /// the layers below, bottom first) would have made: true unless it was unpacked
    /// before them and one of them has a path it took to be absent (a parent directory
    /// the layer does not list, the parent of a whiteout). When false, drop it and
    /// unpack the layer from its blob with [`Snapshotter::ensure`].
    pub fn holds_over(&self, lowers: &[PathBuf]) -> bool {
        self.assumed_absent.is_empty() || unpack::lowers_lack(&self.assumed_absent, lowers)
    }

    /// Renames the snapshot into place and returns its directory.
    pub fn commit(self) -> Result<PathBuf, SnapshotError> {
        fs::rename(&self.tree, &self.dest).map_err(io_err("commit snapshot", &self.dest))?;
        let work_path = self.work.path().to_owned();
        self.work
            .close()
            .map_err(io_err("remove temp directory", &work_path))?;
        Ok(self.dest)
    }
}
