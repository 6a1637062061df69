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
//! Docker's overlay drivers do. Layer N is unpacked into the merged view of an overlay mount
//! (lowers = snapshots 0..N-1, upper = the new snapshot), so paths resolve against everything
//! below (a later layer can write through a symlinked directory of an earlier one, hard links
//! can point at lower files) and deletions become overlayfs whiteouts in the upper directory
//! by the kernel itself.
//!
//! Where overlayfs cannot be mounted (not root, the cache on overlayfs itself), snapshots
//! are flattened instead (`snapshots/flat/<chain-id>`): the parent chain's tree copied and the
//! layer applied to the copy, whiteouts by deletion; runs then get a copy of that tree.
//!
//! Crash safety: a snapshot is unpacked in `snapshots/tmp/<random>/` and renamed into place
//! only after its diff ID was verified, so a killed unpack never leaves a directory that looks
//! complete; leftovers (and their mounts) are removed by [`Snapshotter::new`]. A per-chain
//! `flock` makes concurrent processes that prepare the same snapshot unpack it once.

use crate::unpack::{self, UnpackError, UnpackOptions, remove_all};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, Flock, FlockArg, OFlag, openat};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, fchmod, fstatat, futimens};
use nix::sys::stat::{mkdirat, mknodat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, symlinkat};
use oci_spec::image::{Descriptor, Digest, ImageConfiguration, MediaType};
use sha2::{Digest as _, Sha256};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

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

/// One layer of an image, as the snapshotter needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// The blob's digest (manifest layer descriptor); names the layer in errors.
    pub digest: Digest,
    /// The uncompressed digest from the image config's `rootfs.diff_ids`.
    pub diff_id: Digest,
    /// The layer media type; chooses the decompressor.
    pub media_type: MediaType,
    /// Where the (verified) blob is stored.
    pub path: PathBuf,
}

/// Pairs an image manifest's layer descriptors (base first) with the image config's
/// `rootfs.diff_ids` into what [`Snapshotter::prepare`] takes; `blob_path` says where the
/// content store keeps a blob. Fails if the counts differ (a malformed image).
pub fn layer_blobs(
    config: &ImageConfiguration,
    layers: &[Descriptor],
    blob_path: impl Fn(&Digest) -> PathBuf,
) -> Result<Vec<LayerBlob>, SnapshotError> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != layers.len() {
        return Err(SnapshotError::LayerCount {
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    layers
        .iter()
        .zip(diff_ids)
        .map(|(layer, diff_id)| {
            let diff_id = Digest::from_str(diff_id).map_err(|e| SnapshotError::BadDiffId {
                diff_id: diff_id.clone(),
                reason: e.to_string(),
            })?;
            Ok(LayerBlob {
                digest: layer.digest().clone(),
                diff_id,
                media_type: layer.media_type().clone(),
                path: blob_path(layer.digest()),
            })
        })
        .collect()
}

/// Computes the chain IDs of a layer stack, bottom first.
pub fn chain_ids<'a>(diff_ids: impl IntoIterator<Item = &'a Digest>) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::new();
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => {
                let sum = Sha256::digest(format!("{parent} {diff_id}").as_bytes());
                Digest::from_str(&format!("sha256:{}", hex::encode(sum)))
                    .expect("a sha256 hex digest is a valid digest")
            }
        };
        out.push(next);
    }
    out
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
        let mut this = Self {
            root,
            unpack: UnpackOptions::default(),
            overlay: true,
        };
        this.remove_stale_temp()?;
        this.overlay = this.overlay_works();
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
        let dir = self.root.join(self.kind_dir());
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|hex| Digest::from_str(&format!("sha256:{hex}")).ok())
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Removes every snapshot whose chain ID is not in `keep` (the chain IDs of the images
    /// still stored, see [`chain_ids`]); returns how many went. Caveat: a running container
    /// must not lose its lower directories, so prune only when no run uses a removed chain.
    pub fn prune(&self, keep: &std::collections::HashSet<Digest>) -> Result<usize, SnapshotError> {
        let mut removed = 0;
        for chain in self.snapshots()? {
            if !keep.contains(&chain) {
                self.remove(&chain)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes one snapshot (for pruning). The caller makes sure no image or run needs it.
    pub fn remove(&self, chain_id: &Digest) -> Result<(), SnapshotError> {
        let dir = self.snapshot_dir(chain_id);
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
            let dir = self.snapshot_dir(chain);
            if !dir.exists() {
                let _lock = self.lock(chain)?;
                // Another process may have finished it while we waited for the lock.
                if !dir.exists() {
                    if self.overlay {
                        self.unpack_one(layer, &dirs, &dir)?;
                    } else {
                        self.unpack_flat(layer, dirs.last(), &dir)?;
                    }
                    tracing::info!(layer = %layer.digest, chain_id = %chain, "unpacked layer");
                }
            }
            dirs.push(dir);
        }
        if !self.overlay {
            // Each flattened tree already holds everything below it.
            return Ok(dirs.pop().into_iter().collect());
        }
        Ok(dirs)
    }

    /// Without overlayfs: copies the parent chain's tree and applies the layer to the copy,
    /// deleting what it whites out. Costs a full copy per layer; hard links of lower layers
    /// become separate files and xattrs of lower layers are not copied.
    fn unpack_flat(
        &self,
        layer: &LayerBlob,
        parent: Option<&PathBuf>,
        dest: &Path,
    ) -> Result<(), SnapshotError> {
        let work = self.temp_dir()?;
        let tree = work.path().join("upper");
        create_dir_mode(&tree, 0o755)?;
        if let Some(parent) = parent {
            copy_diff(parent, &tree).map_err(|e| io_err("copy snapshot", parent)(e.into()))?;
        }
        self.commit(layer, &tree, dest, |target| {
            Ok(unpack::unpack_layer(
                &layer.path,
                &layer.media_type,
                target,
                &self.unpack,
            ))
        })?;
        work.close()
            .map_err(io_err("remove temp directory", &self.root))
    }

    fn unpack_one(
        &self,
        layer: &LayerBlob,
        lowers: &[PathBuf],
        dest: &Path,
    ) -> Result<(), SnapshotError> {
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

    fn temp_dir(&self) -> Result<LockedTempDir, SnapshotError> {
        let tmp = self.root.join("tmp");
        let dir = tempfile::Builder::new()
            .prefix("unpack-")
            .tempdir_in(&tmp)
            .map_err(io_err("create temp directory in", &tmp))?;
        let handle = File::open(dir.path()).map_err(io_err("open", dir.path()))?;
        // Held while the directory is in use: tells `remove_stale_temp` of other processes
        // that it is not stale.
        let lock = Flock::lock(handle, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| io_err("lock", dir.path())(e.into()))?;
        Ok(LockedTempDir { dir, _lock: lock })
    }

    fn remove_stale_temp(&self) -> Result<(), SnapshotError> {
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_err("list", &tmp))? {
            let path = entry.map_err(io_err("list", &tmp))?.path();
            let Ok(handle) = File::open(&path) else {
                continue;
            };
            let Ok(_lock) = Flock::lock(handle, FlockArg::LockExclusiveNonblock) else {
                continue; // a live unpack of another process
            };
            let merged = path.join("merged");
            match umount2(&merged, MntFlags::MNT_DETACH) {
                Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
                Err(e) => {
                    return Err(SnapshotError::Mount {
                        op: "unmount",
                        target: merged,
                        source: e.into(),
                    });
                }
            }
            tracing::info!(path = %path.display(), "removing leftover of an interrupted unpack");
            fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
        }
        Ok(())
    }
}

/// A temp directory with an flock on it, removed on drop.
struct LockedTempDir {
    dir: tempfile::TempDir,
    _lock: Flock<File>,
}

impl LockedTempDir {
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn close(self) -> io::Result<()> {
        self.dir.close()
    }
}

fn create_dir_mode(path: &Path, mode: u32) -> Result<(), SnapshotError> {
    fs::create_dir(path).map_err(io_err("create directory", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("set mode of", path))
}

/// An overlayfs mount that is unmounted when dropped (on error paths).
struct OverlayMount {
    target: Option<PathBuf>,
}

impl OverlayMount {
    /// Mounts `lowers` (bottom first) with `upper` and `work` at `target`.
    fn mount(
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<Self, SnapshotError> {
        let mut data = overlay_options(lowers, upper, work, target)?;
        // Held until mount(2) has resolved the paths below.
        let mut held: Vec<OwnedFd> = Vec::new();
        if data.len() >= MAX_MOUNT_DATA {
            // mount(2) copies one page of options: long paths times many layers do not fit.
            // `/proc/self/fd/N` names the same directories in a few bytes each.
            let mut short = |p: &Path| -> Result<PathBuf, SnapshotError> {
                let fd = nix::fcntl::open(
                    p,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io_err("open", p)(e.into()))?;
                let name = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                held.push(fd);
                Ok(name)
            };
            let lowers = lowers
                .iter()
                .map(|l| short(l))
                .collect::<Result<Vec<_>, _>>()?;
            let upper = short(upper)?;
            let work = short(work)?;
            data = overlay_options(&lowers, &upper, &work, target)?;
        }
        if data.len() >= MAX_MOUNT_DATA {
            return Err(SnapshotError::OverlayOptions {
                target: target.to_owned(),
                reason: format!(
                    "{} layers need {} bytes of options, more than the kernel's {}",
                    lowers.len(),
                    data.len(),
                    MAX_MOUNT_DATA - 1
                ),
            });
        }
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| SnapshotError::Mount {
            op: "mount",
            target: target.to_owned(),
            source: e.into(),
        })?;
        Ok(Self {
            target: Some(target.to_owned()),
        })
    }

    fn unmount(mut self) -> Result<(), SnapshotError> {
        match self.target.take() {
            Some(target) => unmount_path(&target),
            None => Ok(()),
        }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if let Some(target) = self.target.take() {
            let _ = umount2(&target, MntFlags::MNT_DETACH);
        }
    }
}

fn unmount_path(target: &Path) -> Result<(), SnapshotError> {
    match umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        // Something (a process in the container's shadow) still holds it: detach lazily.
        Err(Errno::EBUSY) => umount2(target, MntFlags::MNT_DETACH),
        Err(e) => Err(e),
    }
    .map_err(|e| SnapshotError::Mount {
        op: "unmount",
        target: target.to_owned(),
        source: e.into(),
    })
}

/// mount(2) copies at most one page of options, including the terminating NUL.
const MAX_MOUNT_DATA: usize = 4096;

/// Overlay mount data; lowerdir lists the top layer first.
fn overlay_options(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<String, SnapshotError> {
    let bad = |reason: String| SnapshotError::OverlayOptions {
        target: target.to_owned(),
        reason,
    };
    let text = |p: &Path| -> Result<String, SnapshotError> {
        let s = p
            .to_str()
            .ok_or_else(|| bad(format!("{} is not UTF-8", p.display())))?;
        if s.contains([',', ':']) {
            return Err(bad(format!("{s} contains ',' or ':'")));
        }
        Ok(s.to_owned())
    };
    let lowerdir = lowers
        .iter()
        .rev()
        .map(|p| text(p))
        .collect::<Result<Vec<_>, _>>()?
        .join(":");
    let data = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        text(upper)?,
        text(work)?
    );
    Ok(data)
}

/// How a run's root file system was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsKind {
    /// An overlayfs mount over the snapshots with a private upper directory.
    Overlay,
    /// A full copy of the snapshots (where overlayfs cannot be mounted).
    Copy,
}

/// A run's writable root file system at `<run_dir>/rootfs`. Writes go to the run's own upper
/// directory (or copy), never to a snapshot. Call [`RootfsMount::unmount`] when the run is
/// over; [`cleanup_rootfs`] does the same for a run directory found later.
#[derive(Debug)]
#[must_use = "the rootfs stays mounted until unmount() is called"]
pub struct RootfsMount {
    run_dir: PathBuf,
    path: PathBuf,
    kind: RootfsKind,
}

impl RootfsMount {
    /// The root file system directory (`<run_dir>/rootfs`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is an overlay mount or a copy.
    pub fn kind(&self) -> RootfsKind {
        self.kind
    }

    /// Forgets the mount without unmounting it: someone else (gc, [`cleanup_rootfs`])
    /// removes it later. Returns the root file system directory.
    pub fn detach(self) -> PathBuf {
        self.path
    }

    /// Unmounts the root file system and removes it with the run's upper and work dirs.
    pub fn unmount(self) -> Result<(), SnapshotError> {
        cleanup_rootfs(&self.run_dir)
    }
}

/// Makes the writable root file system of a run at `<run_dir>/rootfs` from snapshot
/// directories given bottom-to-top: an overlay mount with upper and work directories in
/// `run_dir`, or, if overlayfs cannot be mounted there, a copy that applies the snapshots'
/// whiteouts.
pub fn mount_rootfs(lowers: &[PathBuf], run_dir: &Path) -> Result<RootfsMount, SnapshotError> {
    if lowers.is_empty() {
        return copy_rootfs(lowers, run_dir);
    }
    let rootfs = run_dir.join("rootfs");
    let upper = run_dir.join("upper");
    let work = run_dir.join("work");
    fs::create_dir_all(run_dir).map_err(io_err("create directory", run_dir))?;
    create_dir_mode(&rootfs, 0o755)?;
    create_dir_mode(&upper, 0o755)?;
    create_dir_mode(&work, 0o700)?;
    match OverlayMount::mount(lowers, &upper, &work, &rootfs) {
        Ok(mut m) => {
            // Ownership passes to RootfsMount; it unmounts explicitly.
            m.target = None;
            Ok(RootfsMount {
                run_dir: run_dir.to_owned(),
                path: rootfs,
                kind: RootfsKind::Overlay,
            })
        }
        Err(err) => {
            tracing::warn!(error = %err, "overlayfs unavailable, copying the root file system");
            for dir in [&rootfs, &upper, &work] {
                fs::remove_dir_all(dir).map_err(io_err("remove", dir))?;
            }
            copy_rootfs(lowers, run_dir)
        }
    }
}

/// Makes the root file system of a run at `<run_dir>/rootfs` as a full copy of the snapshot
/// directories (bottom first), applying their whiteouts. Slower and larger than
/// [`mount_rootfs`]; it is the fallback where overlayfs cannot be mounted.
pub fn copy_rootfs(lowers: &[PathBuf], run_dir: &Path) -> Result<RootfsMount, SnapshotError> {
    let rootfs = run_dir.join("rootfs");
    fs::create_dir_all(run_dir).map_err(io_err("create directory", run_dir))?;
    create_dir_mode(&rootfs, 0o755)?;
    let made = RootfsMount {
        run_dir: run_dir.to_owned(),
        path: rootfs.clone(),
        kind: RootfsKind::Copy,
    };
    for lower in lowers {
        if let Err(e) = copy_diff(lower, &rootfs) {
            // Leave nothing half-copied behind.
            let _ = made.unmount();
            return Err(io_err("copy snapshot", lower)(e.into()));
        }
    }
    Ok(made)
}

/// Unmounts `<run_dir>/rootfs` if it is mounted and removes it with `upper/` and `work/`.
/// Safe to call on a run directory in any state (also by garbage collection after a crash).
pub fn cleanup_rootfs(run_dir: &Path) -> Result<(), SnapshotError> {
    let rootfs = run_dir.join("rootfs");
    match umount2(&rootfs, MntFlags::empty()) {
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
        Err(Errno::EBUSY) => unmount_path(&rootfs)?,
        Err(e) => {
            return Err(SnapshotError::Mount {
                op: "unmount",
                target: rootfs,
                source: e.into(),
            });
        }
    }
    // Defends against deleting through a mount that is still there (stacked mounts): that
    // would whiteout or, for a bind, delete the files of whatever is mounted.
    if let (Ok(dir_meta), Ok(root_meta)) = (fs::metadata(run_dir), fs::symlink_metadata(&rootfs))
        && dir_meta.dev() != root_meta.dev()
    {
        return Err(SnapshotError::Mount {
            op: "unmount",
            target: rootfs,
            source: io::Error::other("still a mount point after unmounting"),
        });
    }
    for dir in [rootfs, run_dir.join("upper"), run_dir.join("work")] {
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &dir)(e)),
        }
    }
    Ok(())
}

/// Copies one overlayfs diff onto `dest`: a char device 0/0 deletes, an opaque directory
/// replaces, everything else is added or replaces. Both trees are walked through directory
/// fds opened with `O_NOFOLLOW`, so no symlink of the image is ever followed on the host.
/// Caveats: hard links become copies; xattrs other than the opaque marker are not copied.
fn copy_diff(src: &Path, dest: &Path) -> nix::Result<()> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let src_fd = nix::fcntl::open(src, flags, Mode::empty())?;
    let dest_fd = nix::fcntl::open(dest, flags, Mode::empty())?;
    copy_dir(src_fd, dest_fd.as_fd())
}

fn copy_dir(src: OwnedFd, dst: BorrowedFd<'_>) -> nix::Result<()> {
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut d = nix::dir::Dir::from_fd(src)?;
    let names: Vec<Vec<u8>> = d
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_bytes().to_vec())
        .filter(|n| n != b"." && n != b"..")
        .collect();
    let sfd = d.as_fd();
    for name in names {
        let name = OsStr::from_bytes(&name);
        let st = fstatat(sfd, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let perm = Mode::from_bits_truncate(st.st_mode & 0o7777);
        let owner = (
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        );
        let time = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
        if kind == SFlag::S_IFCHR && st.st_rdev == 0 {
            remove_all(dst, name)?;
            continue;
        }
        if kind == SFlag::S_IFDIR {
            let sub = openat(sfd, name, dir_flags, Mode::empty())?;
            let mut value = [0u8; 1];
            // SAFETY: fd open, name NUL-terminated, buffer pointer and length passed together.
            let n = unsafe {
                libc::fgetxattr(
                    sub.as_raw_fd(),
                    c"trusted.overlay.opaque".as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if n == 1 && value[0] == b'y' {
                remove_all(dst, name)?;
            }
            match mkdirat(dst, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    let existing = fstatat(dst, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
                    if SFlag::from_bits_truncate(existing.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR
                    {
                        remove_all(dst, name)?;
                        mkdirat(dst, name, Mode::from_bits_truncate(0o755))?;
                    }
                }
                Err(e) => return Err(e),
            }
            let dsub = openat(dst, name, dir_flags, Mode::empty())?;
            copy_dir(sub, dsub.as_fd())?;
            fchown(&dsub, owner.0, owner.1)?;
            fchmod(&dsub, perm)?;
            futimens(&dsub, &time, &time)?;
            continue;
        }
        remove_all(dst, name)?;
        if kind == SFlag::S_IFREG {
            let from = openat(
                sfd,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let to = openat(
                dst,
                name,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )?;
            let mut from = File::from(from);
            let mut to = File::from(to);
            io::copy(&mut from, &mut to)
                .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
            fchown(&to, owner.0, owner.1)?;
            fchmod(&to, perm)?;
            futimens(&to, &time, &time)?;
            continue;
        }
        if kind == SFlag::S_IFLNK {
            let target = nix::fcntl::readlinkat(sfd, name)?;
            symlinkat(target.as_os_str(), dst, name)?;
        } else {
            mknodat(dst, name, kind, perm, st.st_rdev)?;
        }
        fchownat(dst, name, owner.0, owner.1, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        utimensat(dst, name, &time, &time, UtimensatFlags::NoFollowSymlink)?;
    }
    Ok(())
}
