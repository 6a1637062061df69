//! The mounts under a run directory ([`crate::mount`]'s table), and unmounting them.

use super::RunsError;
use std::path::{Path, PathBuf};

/// Mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = crate::mount::read()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts.dedup();
    mounts
}

/// Unmounts everything mounted at or under `dir`, deepest first; a busy mount is
/// detached (MNT_DETACH) as a last resort so that the directory can be removed.
pub fn unmount_under(dir: &Path) -> Result<(), RunsError> {
    use nix::mount::{MntFlags, umount2};
    // Stacked mounts on one point need one unmount each: repeat until none is left.
    for _ in 0..16 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return Ok(());
        }
        for mount in mounts {
            if let Err(errno) = umount2(&mount, MntFlags::empty()) {
                tracing::debug!(path = %mount.display(), %errno, "unmount failed, detaching");
                match umount2(&mount, MntFlags::MNT_DETACH) {
                    Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
                    Err(source) => {
                        return Err(RunsError::Unmount {
                            path: mount,
                            source,
                        });
                    }
                }
            }
        }
    }
    match mounts_under(dir).into_iter().next() {
        None => Ok(()),
        Some(path) => Err(RunsError::Unmount {
            path,
            source: nix::Error::EBUSY,
        }),
    }
}
