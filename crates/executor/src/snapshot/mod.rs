//! Unpacked layers cached as snapshots, and the per-run writable root file system over them.
//!
//! A snapshot is one layer's *diff* in overlayfs format, stored under
//! `snapshots/sha256/<chain-id>`: the files the layer adds or changes, a character device 0/0
//! for each entry it deletes and `trusted.overlay.opaque=y` on directories it makes opaque. The
//! key is the layer's chain ID (OCI image spec: `chainID(L0) = diffID(L0)`, `chainID(Ln) =
//! sha256(chainID(Ln-1) + " " + diffID(Ln))`), so images that share base layers share
//! snapshots, and a second prepare of the same image unpacks nothing.
//!
//! Why diffs stacked by overlayfs rather than one flattened directory per chain: flattening
//! copies every lower layer into every chain (disk and time grow with the square of the layer
//! count), while diffs are written once and mounted as a stack, the way containerd's and
//! Docker's overlay drivers do. Layer N is unpacked straight into its own snapshot directory,
//! whiteouts written in overlayfs format by the unpacker, as containerd's overlay snapshotter
//! does ([`unpack::unpack_layer_over`]). Where that could differ from what the kernel would
//! make — an entry under a directory the layer does not list but a lower layer has (a
//! symlinked merged-`/usr` directory, a parent whose metadata overlayfs would copy up), a hard
//! link to a lower file — the layer is unpacked again into the merged view of an overlay mount
//! (lowers = snapshots 0..N-1, upper = the new snapshot), so paths resolve against everything
//! below and deletions become whiteouts by the kernel itself.
//!
//! Where overlayfs cannot be mounted (not root, the cache on overlayfs itself), snapshots
//! are flattened instead (`snapshots/flat/<chain-id>`): the parent chain's tree copied and the
//! layer applied to the copy, whiteouts by deletion; runs then get a copy of that tree.
//!
//! Crash safety: a snapshot is unpacked in `snapshots/tmp/<random>/` and renamed into place
//! only after its diff ID was verified, so a killed unpack never leaves a directory that looks
//! complete; leftovers (and their mounts) are removed by [`Snapshotter::new`]. A per-chain
//! `flock` makes concurrent processes that prepare the same snapshot unpack it once.

use crate::unpack::{self, UnpackError, UnpackOptions};
use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::Digest;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

mod chain;
mod flat;
mod mounts;
mod pending;
mod rootfs;
mod temp;

use mounts::OverlayMount;
use temp::LockedTempDir;

pub use chain::{LayerBlob, chain_ids, layer_blobs};
pub use mounts::{MountedLowers, mounted_lowers, parse_mounted_lowers};
pub use pending::{Lowers, PendingSnapshot, Streamed};
pub use rootfs::{RootfsKind, RootfsMount, cleanup_rootfs, copy_rootfs, mount_rootfs};

/// Errors of the snapshotter and of per-run root file systems.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file-system operation on the snapshot store or run directory failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A layer's diff ID does not use sha256, the only algorithm the unpacker computes.
    #[error("layer {digest}: diff id {diff_id} is not a sha256 digest")]
    UnsupportedDiffId {
        /// The layer blob's digest.
        digest: Digest,
        /// The diff ID from the image config.
        diff_id: Digest,
    },
    /// Unpacking a layer failed.
    #[error("cannot unpack layer {digest}")]
    Unpack {
        /// The layer blob's digest.
        digest: Digest,
        /// The cause.
        #[source]
        source: UnpackError,
    },
    /// The unpacked content does not match the diff ID the image config declares.
    #[error("layer {digest}: uncompressed digest {actual} does not match diff id {expected}")]
    DiffIdMismatch {
        /// The layer blob's digest.
        digest: Digest,
        /// The diff ID from the image config.
        expected: Box<Digest>,
        /// The digest of what was unpacked.
        actual: Box<Digest>,
    },
    /// The manifest lists a different number of layers than the config has diff IDs.
    #[error("image has {layers} layers but {diff_ids} diff ids in its config")]
    LayerCount {
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// A diff ID in the image config is not a valid digest.
    #[error("invalid diff id {diff_id} in the image config: {reason}")]
    BadDiffId {
        /// The text from the config.
        diff_id: String,
        /// Why it is invalid.
        reason: String,
    },
    /// An overlayfs mount or unmount failed.
    #[error("cannot {op} overlay at {target}")]
    Mount {
        /// `mount` or `unmount`.
        op: &'static str,
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A path cannot be written into overlayfs mount options (contains `,` or `:`), or the
    /// options are longer than the kernel accepts (too many layers).
    #[error("overlay mount options for {target}: {reason}")]
    OverlayOptions {
        /// The mount point.
        target: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The snapshot cache under `<root>/snapshots`.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    root: PathBuf,
    unpack: UnpackOptions,
    /// Diffs stacked by overlayfs; otherwise one flattened tree per chain.
    overlay: bool,
}

impl Snapshotter {
    /// Opens (creating) the snapshot cache at `root` and removes what killed unpacks left
    /// behind (temp directories and their overlay mounts); live unpacks of other processes
    /// are recognised by their lock and left alone.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, SnapshotError> {
        let root = root.into();
        for sub in ["sha256", "flat", "tmp", "locks"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        // Canonical, so that overlay mounts name snapshots by the same absolute path that
        // `chains_in` looks for in /proc/self/mountinfo.
        let root = root.canonicalize().map_err(io_err("resolve", &root))?;
        let mut this = Self {
            root,
            unpack: UnpackOptions::default(),
            overlay: true,
        };
        this.remove_stale_temp()?;
        this.overlay = this.cached_overlay_works();
        if !this.overlay {
            tracing::warn!(
                root = %this.root.display(),
                "overlayfs cannot be mounted here: snapshots are flattened copies"
            );
        }
        Ok(this)
    }

    /// Forces flattened snapshots (`false`) even where overlayfs works, or overlay diffs
    /// (`true`) without checking that it does.
    pub fn with_overlay(mut self, overlay: bool) -> Self {
        self.overlay = overlay;
        self
    }

    /// Whether snapshots are overlay diffs (else flattened trees).
    pub fn uses_overlay(&self) -> bool {
        self.overlay
    }

    /// [`Snapshotter::overlay_works`], remembered in `<root>/overlay-probe` for this kernel:
    /// the probe's unmount waits for an RCU grace period (some 8 ms), which every executor
    /// process would otherwise pay on its start path. Caveat: a change that makes overlayfs
    /// unusable without a new kernel (a module unloaded) is only noticed when mounting fails;
    /// delete the file to probe again.
    fn cached_overlay_works(&self) -> bool {
        let cache = self.root.join("overlay-probe");
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let kernel = kernel.trim();
        if let Ok(text) = fs::read_to_string(&cache)
            && let Some((cached_kernel, answer)) = text.trim().split_once(' ')
            && cached_kernel == kernel
            && !kernel.is_empty()
        {
            return answer == "yes";
        }
        let works = self.overlay_works();
        // Best effort: a failed write only means probing again next time. Written whole
        // and renamed, so a concurrent reader never sees half of it.
        let temp = self
            .root
            .join(format!("overlay-probe.{}", std::process::id()));
        let answer = if works { "yes" } else { "no" };
        if fs::write(&temp, format!("{kernel} {answer}\n")).is_ok() {
            let _ = fs::rename(&temp, &cache);
        }
        works
    }

    /// Mounts a throw-away overlay to learn whether this host and file system support it
    /// (not as root, on overlayfs itself, in some user namespaces: no).
    fn overlay_works(&self) -> bool {
        let Ok(probe) = self.temp_dir() else {
            return false;
        };
        let dir = |name: &str| {
            let d = probe.path().join(name);
            fs::create_dir(&d).map(|()| d)
        };
        let (Ok(lower), Ok(upper), Ok(work), Ok(merged)) =
            (dir("lower"), dir("upper"), dir("work"), dir("merged"))
        else {
            return false;
        };
        let works = OverlayMount::mount(&[lower], &upper, &work, &merged)
            .and_then(OverlayMount::unmount)
            .is_ok();
        let _ = probe.close();
        works
    }

    /// Sets the tar bomb limits used when unpacking.
    pub fn with_unpack_options(mut self, opts: UnpackOptions) -> Self {
        self.unpack = opts;
        self
    }

    /// The directory of the snapshot with this chain ID (it may not exist).
    pub fn snapshot_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join(self.kind_dir()).join(chain_id.digest())
    }

    fn kind_dir(&self) -> &'static str {
        if self.overlay { "sha256" } else { "flat" }
    }

    /// Chain IDs of the snapshots present in the cache.
    pub fn snapshots(&self) -> Result<Vec<Digest>, SnapshotError> {
        self.list(self.kind_dir())
    }

    /// The chain IDs of this cache's snapshots among `dirs` (lower directories of mounted
    /// overlays, see [`mounted_lowers`]).
    pub fn chains_in(&self, dirs: &HashSet<PathBuf>) -> HashSet<Digest> {
        let own = self.root.join("sha256");
        dirs.iter()
            .filter(|d| d.parent() == Some(own.as_path()))
            .filter_map(|d| d.file_name()?.to_str())
            .filter_map(crate::digest::from_sha256_hex)
            .collect()
    }

    /// Removes every snapshot whose chain ID is not in `keep`, overlay diffs and flattened
    /// trees alike (the host may have switched between them); returns how many went.
    ///
    /// `keep` must hold the chain IDs of the images still stored (see [`chain_ids`]) and
    /// those of every mounted root file system (see [`mounted_lowers`] and [`Snapshotter::chains_in`]): a running
    /// container must not lose its lower directories. Caveat: a run that found its
    /// snapshots present but has not mounted them yet is not protected; its mount then
    /// fails cleanly (missing lower directory) rather than running on a partial tree.
    pub fn prune(&self, keep: &HashSet<Digest>) -> Result<usize, SnapshotError> {
        let mut removed = 0;
        for kind in ["sha256", "flat"] {
            for chain in self.list(kind)? {
                if !keep.contains(&chain) {
                    self.remove_in(kind, &chain)?;
                    tracing::debug!(chain_id = %chain, kind, "pruned snapshot");
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Removes one snapshot (for pruning). The caller makes sure no image or run needs it.
    pub fn remove(&self, chain_id: &Digest) -> Result<(), SnapshotError> {
        self.remove_in(self.kind_dir(), chain_id)
    }

    fn list(&self, kind: &str) -> Result<Vec<Digest>, SnapshotError> {
        let dir = self.root.join(kind);
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(crate::digest::from_sha256_hex)
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    fn remove_in(&self, kind: &str, chain_id: &Digest) -> Result<(), SnapshotError> {
        let dir = self.root.join(kind).join(chain_id.digest());
        let _lock = self.lock(chain_id)?;
        // Rename first so that a crash mid-delete never leaves a partial snapshot in place.
        let doomed = self.temp_dir()?;
        let target = doomed.path().join("removed");
        match fs::rename(&dir, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("remove snapshot", &dir)(e)),
        }
        doomed.close().map_err(io_err("remove snapshot", &dir))
    }

    /// Makes sure every layer is unpacked and returns the snapshot directories to stack,
    /// bottom first (what [`mount_rootfs`] takes): one per layer with overlayfs, the single
    /// flattened tree of the whole chain without. Only missing snapshots are unpacked; each
    /// layer's content is checked against its diff ID before the snapshot becomes visible.
    pub fn prepare(&self, layers: &[LayerBlob]) -> Result<Vec<PathBuf>, SnapshotError> {
        for layer in layers {
            if layer.diff_id.algorithm().as_ref() != "sha256" {
                return Err(SnapshotError::UnsupportedDiffId {
                    digest: layer.digest.clone(),
                    diff_id: layer.diff_id.clone(),
                });
            }
        }
        let chains = chain_ids(layers.iter().map(|l| &l.diff_id));
        let mut dirs: Vec<PathBuf> = Vec::with_capacity(layers.len());
        for (layer, chain) in layers.iter().zip(&chains) {
            let dir = self.ensure(layer, chain, &dirs)?;
            dirs.push(dir);
        }
        if !self.overlay {
            // Each flattened tree already holds everything below it.
            return Ok(dirs.pop().into_iter().collect());
        }
        Ok(dirs)
    }

    /// Makes sure the snapshot of one layer is there, unpacking it from `layer.path` if
    /// not, and returns its directory. `chain` is the layer's chain ID and `lowers` the
    /// directories [`Snapshotter::prepare`] returned for the layers below it (with
    /// overlayfs, one per layer; flattened, at most the parent's tree).
    pub fn ensure(
        &self,
        layer: &LayerBlob,
        chain: &Digest,
        lowers: &[PathBuf],
    ) -> Result<PathBuf, SnapshotError> {
        let dir = self.snapshot_dir(chain);
        if !dir.exists() {
            let _lock = self.lock(chain)?;
            // Another process may have finished it while we waited for the lock.
            if !dir.exists() {
                if self.overlay {
                    self.unpack_one(layer, lowers, &dir)?;
                } else {
                    self.unpack_flat(layer, lowers.last(), &dir)?;
                }
                tracing::debug!(layer = %layer.digest, chain_id = %chain, "unpacked layer");
            }
        }
        Ok(dir)
    }

    fn unpack_one(
        &self,
        layer: &LayerBlob,
        lowers: &[PathBuf],
        dest: &Path,
    ) -> Result<(), SnapshotError> {
        if !lowers.is_empty() && self.unpack_direct(layer, lowers, dest)? {
            return Ok(());
        }
        let work = self.temp_dir()?;
        let upper = work.path().join("upper");
        create_dir_mode(&upper, 0o755)?;
        self.commit(layer, &upper, dest, |upper| {
            if lowers.is_empty() {
                return Ok(unpack::unpack_layer(
                    &layer.path,
                    &layer.media_type,
                    upper,
                    &self.unpack,
                ));
            }
            let merged = work.path().join("merged");
            let overlay_work = work.path().join("work");
            create_dir_mode(&merged, 0o755)?;
            create_dir_mode(&overlay_work, 0o700)?;
            let mounted = OverlayMount::mount(lowers, upper, &overlay_work, &merged)?;
            let result =
                unpack::unpack_layer(&layer.path, &layer.media_type, &merged, &self.unpack);
            mounted.unmount()?;
            Ok(result)
        })?;
        work.close()
            .map_err(io_err("remove temp directory", &self.root))
    }

    /// Unpacks a layer straight into its snapshot directory, writing overlayfs whiteouts
    /// itself, without the overlay mount (and its copy-ups) of [`Snapshotter::unpack_one`]'s
    /// slow path. Returns false, leaving nothing behind, where that could give a different
    /// tree than the mount would (see [`unpack::unpack_layer_over`]): the caller then takes
    /// the slow path, which also reports a malformed layer's real error. Errors no retry can
    /// fix (limits, unreadable blob) and diff ID mismatches are returned as they are.
    fn unpack_direct(
        &self,
        layer: &LayerBlob,
        lowers: &[PathBuf],
        dest: &Path,
    ) -> Result<bool, SnapshotError> {
        let work = self.temp_dir()?;
        let upper = work.path().join("upper");
        create_dir_mode(&upper, 0o755)?;
        let result =
            unpack::unpack_layer_over(&layer.path, &layer.media_type, &upper, lowers, &self.unpack);
        let result = match result {
            Err(error @ (UnpackError::Invalid { .. } | UnpackError::Apply { .. })) => {
                tracing::debug!(
                    layer = %layer.digest,
                    error = %error,
                    "layer needs an overlay mount to unpack"
                );
                work.close()
                    .map_err(io_err("remove temp directory", &self.root))?;
                return Ok(false);
            }
            other => other,
        };
        self.commit(layer, &upper, dest, |_| Ok(result))?;
        work.close()
            .map_err(io_err("remove temp directory", &self.root))?;
        Ok(true)
    }

    /// Runs `unpack` into `tree`, checks the diff ID and renames `tree` to `dest`.
    fn commit(
        &self,
        layer: &LayerBlob,
        tree: &Path,
        dest: &Path,
        unpack: impl FnOnce(&Path) -> Result<Result<unpack::UnpackStats, UnpackError>, SnapshotError>,
    ) -> Result<(), SnapshotError> {
        let stats = unpack(tree)?.map_err(|source| SnapshotError::Unpack {
            digest: layer.digest.clone(),
            source,
        })?;
        if stats.diff_id != layer.diff_id {
            return Err(SnapshotError::DiffIdMismatch {
                digest: layer.digest.clone(),
                expected: Box::new(layer.diff_id.clone()),
                actual: Box::new(stats.diff_id),
            });
        }
        fs::rename(tree, dest).map_err(io_err("commit snapshot", dest))
    }

    fn lock(&self, chain: &Digest) -> Result<Flock<File>, SnapshotError> {
        let path = self
            .root
            .join("locks")
            .join(format!("{}.lock", chain.digest()));
        let file = File::create(&path).map_err(io_err("create lock", &path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io_err("lock", &path)(e.into()))
    }
}

fn create_dir_mode(path: &Path, mode: u32) -> Result<(), SnapshotError> {
    fs::create_dir(path).map_err(io_err("create directory", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("set mode of", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    const A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn the_overlay_probe_is_remembered_per_kernel() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("snapshots");
        let probed = Snapshotter::new(&root).unwrap().uses_overlay();
        let cache = root.join("overlay-probe");
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let kernel = kernel.trim();
        let answer = if probed { "yes" } else { "no" };
        assert_eq!(
            fs::read_to_string(&cache).unwrap(),
            format!("{kernel} {answer}\n")
        );
        // The cached answer is used as is (here the opposite of the truth)...
        let flipped = if probed { "no" } else { "yes" };
        fs::write(&cache, format!("{kernel} {flipped}\n")).unwrap();
        assert_eq!(Snapshotter::new(&root).unwrap().uses_overlay(), !probed);
        // ...but not one from another kernel.
        fs::write(&cache, "0.0.0-other yes\n").unwrap();
        assert_eq!(Snapshotter::new(&root).unwrap().uses_overlay(), probed);
    }

    #[test]
    fn only_this_caches_snapshots_count_as_mounted_chains() {
        let tmp = tempfile::tempdir().unwrap();
        let snaps = Snapshotter::new(tmp.path().join("snapshots"))
            .unwrap()
            .with_overlay(true);
        let root = tmp.path().canonicalize().unwrap().join("snapshots");
        let dirs: HashSet<PathBuf> = [
            root.join("sha256").join(A),
            root.join("flat").join(B),
            PathBuf::from("/elsewhere/sha256").join(B),
            root.join("sha256/not-a-digest"),
        ]
        .into_iter()
        .collect();
        let expected: HashSet<Digest> = [Digest::from_str(&format!("sha256:{A}")).unwrap()]
            .into_iter()
            .collect();
        assert_eq!(snaps.chains_in(&dirs), expected);
    }
}
