//! Whiteouts and lower layers: `.wh.NAME` and opaque directories, applied by deletion or
//! written in overlayfs format over lower snapshots, and the lookups into those lowers
//! that decide when only an overlay mount would unpack a layer the same way.

use super::{UnpackError, Unpacker, apply_err, is_dir, os, remove_all, resolve};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, mknodat};
use std::os::fd::{AsFd, OwnedFd};

/// Prefix of a whiteout entry's file name (OCI image spec, "Whiteouts").
pub(super) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// File name of an opaque whiteout: hides everything the lower layers have in its directory.
pub(super) const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";

/// Whether any of `lowers` has something at `path`. Conservative: an error other than
/// "not there" counts as present. The lookup may follow a lower layer's symlinks (even
/// out of it): that can only make it answer "present", which sends the layer through an
/// overlay mount, never write anything.
pub(super) fn present_in(lowers: &[OwnedFd], path: &[u8]) -> bool {
    lowers.iter().any(|lower| {
        !matches!(
            fstatat(lower, os(path), AtFlags::AT_SYMLINK_NOFOLLOW),
            Err(Errno::ENOENT | Errno::ENOTDIR)
        )
    })
}

/// An overlayfs whiteout: a character device with device number 0/0.
pub(super) fn is_whiteout(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR && st.st_rdev == 0
}

impl Unpacker {
    /// Whether this is an overlayfs upper directory over lower snapshots.
    pub(super) fn over_lowers(&self) -> bool {
        self.deferred || !self.lowers.is_empty()
    }

    /// Whether any lower snapshot has something at `path` (always false when not unpacking
    /// over lowers; see [`present_in`]). With the lowers not there yet, `path` is taken to
    /// be absent and recorded, to be checked once they are.
    pub(super) fn in_lowers(&self, path: &[u8]) -> bool {
        if path.is_empty() {
            return self.over_lowers();
        }
        if self.deferred {
            self.assumed_absent.borrow_mut().push(path.to_vec());
            return false;
        }
        present_in(&self.lowers, path)
    }

    /// Parent of a whiteout missing from this layer's tree: nothing to hide if no lower layer
    /// has it either, else the layer needs an overlay mount (the parent's metadata).
    pub(super) fn missing_whiteout_parent(
        &self,
        parent: &[u8],
        entry: &str,
    ) -> Result<(), UnpackError> {
        if self.in_lowers(parent) {
            return Err(UnpackError::Invalid {
                entry: entry.to_owned(),
                reason: "whiteout in a directory only a lower layer has".to_owned(),
            });
        }
        Ok(())
    }

    /// `.wh.NAME`: removes NAME of a lower layer (nothing if it does not exist).
    pub(super) fn whiteout(
        &mut self,
        parent: &[u8],
        target: &[u8],
        entry: &str,
    ) -> Result<(), UnpackError> {
        let mut full = parent.to_vec();
        if !full.is_empty() {
            full.push(b'/');
        }
        full.extend_from_slice(target);
        if self.touched.contains(&full) {
            return Ok(());
        }
        let dir = match resolve::open_in_root(
            self.root.as_fd(),
            parent,
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            self.walk,
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) if self.over_lowers() => {
                return self.missing_whiteout_parent(parent, entry);
            }
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(()),
            Err(e) => return Err(apply_err(entry, "open whiteout directory", e)),
        };
        if self.over_lowers() {
            // What overlayfs writes for a deleted lower entry: a 0/0 character device.
            return match mknodat(&dir, os(target), SFlag::S_IFCHR, Mode::empty(), 0) {
                Ok(()) => Ok(()),
                Err(Errno::EEXIST)
                    if fstatat(&dir, os(target), AtFlags::AT_SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| is_whiteout(&st)) =>
                {
                    Ok(())
                }
                Err(e) => Err(apply_err(entry, "create whiteout", e)),
            };
        }
        remove_all(dir.as_fd(), os(target)).map_err(|e| apply_err(entry, "apply whiteout", e))
    }

    /// `.wh..wh..opq` in DIR: removes everything lower layers have in DIR, keeping what this
    /// layer added.
    pub(super) fn opaque(&mut self, dir_path: &[u8], entry: &str) -> Result<(), UnpackError> {
        let dir = match resolve::open_in_root(
            self.root.as_fd(),
            dir_path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            self.walk,
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) if self.over_lowers() => {
                return self.missing_whiteout_parent(dir_path, entry);
            }
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(()),
            Err(e) => return Err(apply_err(entry, "open opaque directory", e)),
        };
        if self.over_lowers() {
            // Hides every lower layer's content of the directory, at any depth, while what
            // this layer put there stays: the same as clearing the untouched entries below.
            crate::sys::fsetxattr(dir.as_fd(), c"trusted.overlay.opaque", b"y")
                .map_err(|e| apply_err(entry, "mark directory opaque", e))?;
            return Ok(());
        }
        self.clear_untouched(dir, dir_path)
            .map_err(|e| apply_err(entry, "apply opaque whiteout", e))
    }

    fn clear_untouched(&self, dir: OwnedFd, dir_path: &[u8]) -> nix::Result<()> {
        let mut d = nix::dir::Dir::from_fd(dir)?;
        let names = crate::unpack::entry_names(&mut d);
        let dfd = d.as_fd();
        for name in names {
            let mut child = dir_path.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(&name);
            if !self.touched.contains(&child) {
                remove_all(dfd, os(&name))?;
                continue;
            }
            let st = fstatat(dfd, os(&name), AtFlags::AT_SYMLINK_NOFOLLOW)?;
            if is_dir(&st) {
                let sub = openat(
                    dfd,
                    os(&name),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                self.clear_untouched(sub, &child)?;
            }
        }
        Ok(())
    }
}
