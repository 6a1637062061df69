//! The mounts under a run directory, read from `/proc/self/mountinfo`, and
//! unmounting them.

use super::RunsError;
use std::path::{Path, PathBuf};

/// Mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| PathBuf::from(unescape_mount_path(escaped)))
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

/// Undoes the octal escapes (`\040` for a space) of paths in mountinfo.
fn unescape_mount_path(escaped: &str) -> String {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &escaped[i + 1..i + 4];
            if let Ok(b) = u8::from_str_radix(digits, 8) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mount_path(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape_mount_path(r"/tab\011x"), "/tab\tx");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path(r"/end\04"), r"/end\04");
    }
}
