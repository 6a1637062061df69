//! Flattened snapshots, for hosts where overlayfs cannot be mounted: each chain's tree is
//! a copy of its parent's with the layer applied, and copying an overlayfs diff onto a
//! tree (applying its whiteouts) is also how runs get their copied root file system.

use super::{LayerBlob, SnapshotError, Snapshotter, create_dir_mode, io_err};
use crate::unpack::{self, remove_all};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, fchmod, fstatat, futimens};
use nix::sys::stat::{mkdirat, mknodat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, symlinkat};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

impl Snapshotter {
    /// Without overlayfs: copies the parent chain's tree and applies the layer to the copy,
    /// deleting what it whites out. Costs a full copy per layer; hard links of lower layers
    /// become separate files and xattrs of lower layers are not copied.
    pub(super) fn unpack_flat(
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
}

/// Copies one overlayfs diff onto `dest`: a char device 0/0 deletes, an opaque directory
/// replaces, everything else is added or replaces. Both trees are walked through directory
/// fds opened with `O_NOFOLLOW`, so no symlink of the image is ever followed on the host.
/// Caveats: hard links become copies; xattrs other than the opaque marker are not copied.
pub(super) fn copy_diff(src: &Path, dest: &Path) -> nix::Result<()> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let src_fd = nix::fcntl::open(src, flags, Mode::empty())?;
    let dest_fd = nix::fcntl::open(dest, flags, Mode::empty())?;
    copy_dir(src_fd, dest_fd.as_fd())
}

fn copy_dir(src: OwnedFd, dst: BorrowedFd<'_>) -> nix::Result<()> {
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut d = nix::dir::Dir::from_fd(src)?;
    let names = crate::unpack::entry_names(&mut d);
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
            let n = crate::sys::fgetxattr(sub.as_fd(), c"trusted.overlay.opaque", &mut value);
            if n == Ok(1) && value[0] == b'y' {
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
