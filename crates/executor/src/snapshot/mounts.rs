//! Overlayfs mounts: mounting a stack of snapshot directories (with the options that fit
//! in one page), unmounting, and reading back from `/proc/self/mountinfo` which snapshot
//! directories the overlays of this mount namespace stack.

#[cfg(doc)]
use super::Snapshotter;
use super::{SnapshotError, io_err};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use std::collections::HashSet;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// An overlayfs mount that is unmounted when dropped (on error paths).
pub(super) struct OverlayMount {
    pub(super) target: Option<PathBuf>,
}

impl OverlayMount {
    /// Mounts `lowers` (bottom first) with `upper` and `work` at `target`.
    pub(super) fn mount(
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

    pub(super) fn unmount(mut self) -> Result<(), SnapshotError> {
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

pub(super) fn unmount_path(target: &Path) -> Result<(), SnapshotError> {
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

/// The lower directories of the overlays mounted in this mount namespace (run root file
/// systems, bundles that `executor bundle` left mounted), read from `/proc/self/mountinfo`;
/// [`Snapshotter::chains_in`] maps them to the snapshots they stack.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MountedLowers {
    /// Lower directories named by some overlay mount, as mounted (absolute for the
    /// snapshotter's own mounts: its root is canonical).
    pub dirs: HashSet<PathBuf>,
    /// Mount points of overlays whose lower directories cannot be mapped back to paths
    /// (named `/proc/self/fd/N` because the options were too long for one page). While any
    /// exists, no snapshot should be pruned: it might stack any of them.
    pub unmapped: Vec<PathBuf>,
}

/// Reads the overlay mounts of this mount namespace; see [`MountedLowers`]. Caveat: mounts
/// made in other mount namespaces (a container's own) are not visible; run root file
/// systems are mounted in the executor's namespace, so they are.
pub fn mounted_lowers() -> Result<MountedLowers, SnapshotError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(io_err("read", path))?;
    Ok(parse_mounted_lowers(&text))
}

/// [`mounted_lowers`] on the text of a mountinfo file.
pub fn parse_mounted_lowers(mountinfo: &str) -> MountedLowers {
    let mut out = MountedLowers::default();
    for mount in crate::mount::parse(mountinfo) {
        if mount.fs_type != "overlay" {
            continue;
        }
        let mut unmapped = false;
        for opt in mount.super_options.split(',') {
            let Some((key, value)) = opt.split_once('=') else {
                continue;
            };
            if !matches!(key, "lowerdir" | "lowerdir+" | "datadir+") {
                continue;
            }
            for dir in value.split(':').filter(|d| !d.is_empty()) {
                if dir.starts_with("/proc/") {
                    unmapped = true;
                } else {
                    out.dirs.insert(PathBuf::from(crate::mount::unescape(dir)));
                }
            }
        }
        if unmapped {
            out.unmapped.push(mount.mount_point);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn mounted_lowers_come_from_overlay_mounts_only() {
        let info = format!(
            "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
             90 22 0:50 / /run/x/rootfs rw,relatime - overlay overlay \
             rw,lowerdir=/s/sha256/{B}:/s\\040x/sha256/{A},upperdir=/run/x/upper,workdir=/w\n\
             91 22 0:51 / /b rw - tmpfs tmpfs rw,lowerdir=/s/sha256/{A}3\n"
        );
        let mounted = parse_mounted_lowers(&info);
        let expected: HashSet<PathBuf> = [format!("/s/sha256/{B}"), format!("/s x/sha256/{A}")]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(mounted.dirs, expected);
        assert!(mounted.unmapped.is_empty());
    }

    #[test]
    fn overlays_named_by_fd_are_reported_unmapped() {
        let info = format!(
            "90 22 0:50 / /run/with\\040space/rootfs rw - overlay overlay \
             rw,lowerdir=/proc/self/fd/7:/proc/self/fd/8,upperdir=/proc/self/fd/9,workdir=/w\n\
             91 22 0:51 / /other rw - overlay overlay rw,lowerdir+=/s/{A},datadir+=/s/{B}\n"
        );
        let mounted = parse_mounted_lowers(&info);
        assert_eq!(
            mounted.unmapped,
            vec![PathBuf::from("/run/with space/rootfs")]
        );
        assert_eq!(mounted.dirs.len(), 2);
    }
}
