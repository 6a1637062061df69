//! The per-run writable root file system over the snapshots: an overlay mount with the
//! run's own upper directory, or a full copy where overlayfs cannot be mounted, and its
//! cleanup.

use super::flat::copy_diff;
use super::mounts::{OverlayMount, unmount_path};
use super::{SnapshotError, create_dir_mode, io_err};
use nix::errno::Errno;
use nix::mount::{MntFlags, umount2};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
