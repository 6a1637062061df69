//! Entry metadata: the owner, mode, mtime and (safe) xattrs of an entry, from its tar
//! header and PAX records, and setting them on what the entry created; directory mtimes
//! are set last, by [`Unpacker::finish`].

use super::apply::EntryCtx;
use super::{UnpackError, Unpacker, apply_err, resolve};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, UtimensatFlags, fchmod, futimens, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat};
use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::AsFd;

/// Metadata of one entry, copied out of the tar header.
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: i64,
    pub(super) xattrs: Vec<(CString, Vec<u8>)>,
}

/// What an entry's PAX records say beyond its header.
#[derive(Default)]
pub(super) struct Pax {
    pub(super) uid: Option<u64>,
    pub(super) gid: Option<u64>,
    /// Whole seconds of `mtime` (sub-second precision is dropped).
    pub(super) mtime: Option<i64>,
    pub(super) xattrs: Vec<(CString, Vec<u8>)>,
}

/// Reads an entry's PAX records. Of the extended attributes (`SCHILY.xattr.*`) only the safe
/// ones are kept: `user.*` and file capabilities. Others (`trusted.overlay.*`,
/// `security.selinux`, ...) would let an image steer the host's overlayfs or security
/// modules, so they are dropped.
pub(super) fn read_pax<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Pax> {
    let mut out = Pax::default();
    let Some(exts) = entry.pax_extensions()? else {
        return Ok(out);
    };
    let number = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    for ext in exts {
        let ext = ext?;
        match ext.key_bytes() {
            b"uid" => out.uid = number(ext.value_bytes()),
            b"gid" => out.gid = number(ext.value_bytes()),
            b"mtime" => {
                out.mtime = std::str::from_utf8(ext.value_bytes())
                    .ok()
                    .and_then(|t| t.split('.').next()?.trim().parse::<i64>().ok());
            }
            key => {
                let Some(name) = key.strip_prefix(b"SCHILY.xattr.") else {
                    continue;
                };
                if !(name.starts_with(b"user.") || name == b"security.capability") {
                    continue;
                }
                if let Ok(c) = CString::new(name) {
                    out.xattrs.push((c, ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

impl Unpacker {
    /// Owner, mode and xattrs through an open fd (files and directories).
    pub(super) fn set_fd_meta(
        &self,
        fd: &impl AsFd,
        meta: &Meta,
        entry: &str,
        chown: bool,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        if self.is_root && chown {
            // chown before chmod: chown clears setuid/setgid bits.
            fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|e| apply_err(entry, "set owner", e))?;
        }
        if chmod {
            fchmod(fd, Mode::from_bits_truncate(meta.mode))
                .map_err(|e| apply_err(entry, "set mode", e))?;
        }
        for (name, value) in &meta.xattrs {
            if let Err(e) = crate::sys::fsetxattr(fd.as_fd(), name, value) {
                // File systems without xattr support lose them, as with `tar --xattrs`.
                if e != Errno::EOPNOTSUPP && e != Errno::EPERM {
                    return Err(apply_err(entry, "set xattr", e));
                }
                tracing::debug!(entry, xattr = ?name, error = %e, "xattr not applied");
            }
        }
        Ok(())
    }

    /// Owner and mtime of a symlink or device node, by name, never following it.
    pub(super) fn set_link_meta(&self, ctx: &EntryCtx<'_>, meta: &Meta) -> Result<(), UnpackError> {
        if self.is_root {
            fchownat(
                ctx.dir,
                ctx.name,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| apply_err(ctx.entry, "set owner", e))?;
        }
        let t = TimeSpec::new(meta.mtime, 0);
        utimensat(ctx.dir, ctx.name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| apply_err(ctx.entry, "set mtime", e))
    }

    /// Sets directory mtimes, last, so that creating their children does not change them.
    pub(crate) fn finish(&mut self) -> Result<(), UnpackError> {
        for (path, mtime) in std::mem::take(&mut self.dir_times) {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
            // A later entry may have replaced the directory: then its time is not ours to set.
            let Ok(fd) = resolve::open_in_root(self.root.as_fd(), &path, flags, self.walk) else {
                continue;
            };
            let t = TimeSpec::new(mtime, 0);
            futimens(&fd, &t, &t)
                .map_err(|e| apply_err(&String::from_utf8_lossy(&path), "set mtime", e))?;
        }
        Ok(())
    }
}
