//! Applying tar entries to the destination: the [`Unpacker`] and its per-entry work —
//! regular files, directories (created on the way as needed), symlinks, hard links, device
//! nodes and FIFOs — each created or replaced relative to a parent resolved inside the root.

use super::metadata::{Meta, read_pax};
use super::whiteout::{OPAQUE_WHITEOUT, WHITEOUT_PREFIX, is_whiteout};
use super::{
    BUF_SIZE, UnpackError, UnpackOptions, apply_err, clean_path, is_dir, os, remove_all, resolve,
    split_parent,
};
#[cfg(doc)]
use super::{unpack_layer_over, unpack_stream_before_lowers};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstatat, futimens, makedev, mkdirat, mknodat};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, symlinkat};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

/// The process umask from `/proc/self/status` (reading it with umask(2) would change it for
/// a moment, for every thread).
fn read_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(value.trim(), 8).ok()
}

/// Applies entries to one root directory; holds the state that spans entries.
pub(crate) struct Unpacker {
    pub(super) root: OwnedFd,
    /// Paths this layer created, and all their ancestors: whiteouts never remove them.
    pub(super) touched: HashSet<Vec<u8>>,
    /// Directories whose mtime is set after all entries (creating children changes it).
    pub(super) dir_times: Vec<(Vec<u8>, i64)>,
    /// The last resolved parent directory: consecutive entries in one directory resolve once.
    /// Also whether that directory is setgid (new files then take its group).
    parent_cache: Option<(Vec<u8>, OwnedFd, bool)>,
    pub(super) is_root: bool,
    /// The process umask when unpacking started (`None` if unknown): new files whose mode
    /// it leaves intact need no chmod. Caveat: assumes nothing changes the umask meanwhile.
    umask: Option<u32>,
    /// Force the userspace path walk instead of `openat2`.
    pub(super) walk: bool,
    buf: Vec<u8>,
    warned_devices: bool,
    /// Non-empty when unpacking straight into an overlayfs upper directory: the lower
    /// snapshot roots, top first (see [`unpack_layer_over`]).
    pub(super) lowers: Vec<OwnedFd>,
    /// Unpacking into an upper directory whose lowers are not there yet
    /// ([`unpack_stream_before_lowers`]): lookups go to `assumed_absent`.
    pub(super) deferred: bool,
    pub(super) assumed_absent: std::cell::RefCell<Vec<Vec<u8>>>,
}

impl Unpacker {
    pub(crate) fn new(root: OwnedFd, walk: bool) -> Self {
        Self {
            root,
            touched: HashSet::new(),
            dir_times: Vec::new(),
            parent_cache: None,
            is_root: nix::unistd::geteuid().is_root(),
            umask: read_umask(),
            walk,
            buf: vec![0; BUF_SIZE],
            warned_devices: false,
            lowers: Vec::new(),
            deferred: false,
            assumed_absent: std::cell::RefCell::default(),
        }
    }

    pub(super) fn apply_all<R: Read>(
        &mut self,
        archive: &mut tar::Archive<R>,
        opts: &UnpackOptions,
    ) -> Result<u64, UnpackError> {
        let mut count = 0u64;
        for entry in archive.entries().map_err(UnpackError::Read)? {
            let mut entry = entry.map_err(UnpackError::Read)?;
            count += 1;
            if count > opts.max_entries {
                return Err(UnpackError::TooManyEntries {
                    limit: opts.max_entries,
                });
            }
            self.apply_entry(&mut entry)?;
        }
        Ok(count)
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let name_for_errors = String::from_utf8_lossy(&raw_path).into_owned();
        let err = |reason: &str| UnpackError::Invalid {
            entry: name_for_errors.clone(),
            reason: reason.to_owned(),
        };
        let path = clean_path(&raw_path);
        let header = entry.header();
        let kind = header.entry_type();
        let (parent, name) = split_parent(&path);

        if name.starts_with(WHITEOUT_PREFIX) {
            self.parent_cache = None;
            if name == OPAQUE_WHITEOUT {
                return self.opaque(parent, &name_for_errors);
            }
            let target = &name[WHITEOUT_PREFIX.len()..];
            if target.starts_with(WHITEOUT_PREFIX) {
                // Other `.wh..wh.*` names are AUFS bookkeeping (hard-link dirs): not content.
                return Ok(());
            }
            if target.is_empty() || target == b"." || target == b".." {
                return Err(err("whiteout names no file"));
            }
            return self.whiteout(parent, target, &name_for_errors);
        }

        let mut meta = Meta {
            mode: header.mode().map_err(|e| err(&format!("bad mode: {e}")))? & 0o7777,
            uid: header
                .uid()
                .ok()
                .and_then(|u| u32::try_from(u).ok())
                .ok_or_else(|| err("bad uid"))?,
            gid: header
                .gid()
                .ok()
                .and_then(|g| u32::try_from(g).ok())
                .ok_or_else(|| err("bad gid"))?,
            mtime: header
                .mtime()
                .ok()
                .and_then(|m| i64::try_from(m).ok())
                .ok_or_else(|| err("bad mtime"))?,
            xattrs: Vec::new(),
        };
        let dev = (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        );
        let pax = read_pax(entry).map_err(UnpackError::Read)?;
        // PAX records override the header (ids too large for its octal fields).
        if let Some(uid) = pax.uid {
            meta.uid = u32::try_from(uid).map_err(|_| err("bad uid"))?;
        }
        if let Some(gid) = pax.gid {
            meta.gid = u32::try_from(gid).map_err(|_| err("bad gid"))?;
        }
        if let Some(mtime) = pax.mtime {
            meta.mtime = mtime;
        }
        if matches!(
            kind,
            tar::EntryType::Regular | tar::EntryType::Directory | tar::EntryType::Continuous
        ) {
            meta.xattrs = pax.xattrs;
        }

        if path.is_empty() {
            // The root itself (`./`): only its metadata can be applied.
            if kind != tar::EntryType::Directory {
                return Err(err("the image root can only be a directory"));
            }
            let fd = openat(
                &self.root,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                Mode::empty(),
            )
            .map_err(|e| apply_err(&name_for_errors, "open root directory", e))?;
            self.set_fd_meta(&fd, &meta, &name_for_errors, true, true)?;
            self.dir_times.push((path, meta.mtime));
            return Ok(());
        }

        // An entry at (or above) the cached directory's path may replace a directory on it
        // with a symlink: then the path must be resolved again. Whiteouts reset it above.
        if self
            .parent_cache
            .as_ref()
            .is_some_and(|(p, _, _)| p.starts_with(&path))
        {
            self.parent_cache = None;
        }
        // Archives list a directory's files together: resolve their parent once.
        let (key, parent_fd, parent_setgid) = match self.parent_cache.take() {
            Some((p, fd, setgid)) if p.as_slice() == parent => (p, fd, setgid),
            _ => {
                let fd = self.ensure_dir_path(parent, &name_for_errors)?;
                let setgid =
                    nix::sys::stat::fstat(&fd).map_or(true, |st| st.st_mode & libc::S_ISGID != 0);
                (parent.to_vec(), fd, setgid)
            }
        };
        let ctx = EntryCtx {
            dir: parent_fd.as_fd(),
            name: os(name),
            entry: &name_for_errors,
            over_lowers: self.over_lowers(),
        };

        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.write_file(&ctx, entry, &meta, parent_setgid)?;
            }
            tar::EntryType::Directory => {
                let fd = ctx.ensure_dir()?;
                self.set_fd_meta(&fd, &meta, &name_for_errors, true, true)?;
                self.dir_times.push((path.clone(), meta.mtime));
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| err("symlink without target"))?
                    .into_owned();
                if target.is_empty() {
                    return Err(err("symlink without target"));
                }
                // The target is stored verbatim: it is only ever resolved inside the root.
                ctx.replace_with(
                    || symlinkat(os(&target), ctx.dir, ctx.name),
                    "create symlink",
                )?;
                self.set_link_meta(&ctx, &meta)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| err("hard link without target"))?
                    .into_owned();
                let target = clean_path(&target);
                let (tparent, tname) = split_parent(&target);
                if tname.is_empty() {
                    return Err(err("hard link to the image root"));
                }
                // The target's parent is resolved inside the root and linkat does not follow a
                // symlink as the final component, so a link can never reach a host file.
                let tdir =
                    resolve::open_in_root(self.root.as_fd(), tparent, OFlag::O_PATH, self.walk)
                        .map_err(|e| apply_err(&name_for_errors, "find hard link target", e))?;
                // Over lowers, a whiteout of this layer must not be linked as if it were the
                // target (through an overlay mount the link fails: the target is gone).
                if ctx.over_lowers
                    && fstatat(&tdir, os(tname), AtFlags::AT_SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| is_whiteout(&st))
                {
                    return Err(err("hard link to a whited-out file"));
                }
                ctx.replace_with(
                    || linkat(&tdir, os(tname), ctx.dir, ctx.name, AtFlags::empty()),
                    "create hard link",
                )?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                if !self.make_node(&ctx, sflag, dev, &meta)? {
                    return Ok(());
                }
            }
            tar::EntryType::XGlobalHeader => return Ok(()),
            other => {
                return Err(err(&format!("unsupported entry type {other:?}")));
            }
        }
        self.mark_touched(&path);
        self.parent_cache = Some((key, parent_fd, parent_setgid));
        Ok(())
    }

    /// Creates a regular file and streams the entry's data into it.
    fn write_file<R: Read>(
        &mut self,
        ctx: &EntryCtx<'_>,
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        parent_setgid: bool,
    ) -> Result<(), UnpackError> {
        let mut file = File::from(ctx.create_file(meta.mode)?);
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UnpackError::Read(e)),
            };
            file.write_all(&self.buf[..n])
                .map_err(|source| UnpackError::Apply {
                    entry: ctx.entry.to_owned(),
                    op: "write file",
                    source,
                })?;
        }
        // A file root creates is root:root unless its directory is setgid: most files of an
        // image need no chown.
        let owned = self.is_root && meta.uid == 0 && meta.gid == 0 && !parent_setgid;
        // Created with its mode (O_EXCL: always a new file), so only a umask that cut bits or
        // special bits (which chown would clear) need a chmod: one syscall fewer per file.
        let exact_mode = meta.mode & 0o7000 == 0 && self.umask.is_some_and(|u| meta.mode & u == 0);
        self.set_fd_meta(&file, meta, ctx.entry, !owned, !(owned && exact_mode))?;
        let t = TimeSpec::new(meta.mtime, 0);
        futimens(&file, &t, &t).map_err(|e| apply_err(ctx.entry, "set mtime", e))
    }

    /// Creates a device node or FIFO; returns false when skipped (devices need root).
    fn make_node(
        &mut self,
        ctx: &EntryCtx<'_>,
        sflag: SFlag,
        (major, minor): (u32, u32),
        meta: &Meta,
    ) -> Result<bool, UnpackError> {
        if !self.is_root && sflag != SFlag::S_IFIFO {
            if !self.warned_devices {
                tracing::warn!(entry = %ctx.entry, "not root: skipping device nodes");
                self.warned_devices = true;
            }
            return Ok(false);
        }
        let perm = Mode::from_bits_truncate(meta.mode & 0o777);
        let rdev = makedev(u64::from(major), u64::from(minor));
        ctx.replace_with(
            || mknodat(ctx.dir, ctx.name, sflag, perm, rdev),
            "create device node",
        )?;
        // The node was just created by us, is not a symlink, and nothing else writes in this
        // tree: chmod by name cannot be redirected. It undoes the umask.
        nix::sys::stat::fchmodat(
            ctx.dir,
            ctx.name,
            perm,
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        )
        .or_else(|e| {
            if e == Errno::EOPNOTSUPP || e == Errno::ENOTSUP {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(|e| apply_err(ctx.entry, "set mode", e))?;
        self.set_link_meta(ctx, meta)?;
        Ok(true)
    }

    /// Opens a directory (resolved inside the root), creating missing directories on the
    /// way with mode 0755.
    fn ensure_dir_path(&mut self, path: &[u8], entry: &str) -> Result<OwnedFd, UnpackError> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        match resolve::open_in_root(self.root.as_fd(), path, flags, self.walk) {
            Ok(fd) => Ok(fd),
            Err(Errno::ENOENT) if !path.is_empty() => {
                let (parent, name) = split_parent(path);
                let pfd = self.ensure_dir_path(parent, entry)?;
                if self.in_lowers(path) {
                    return Err(UnpackError::Invalid {
                        entry: entry.to_owned(),
                        reason: format!(
                            "parent {} is only in a lower layer",
                            String::from_utf8_lossy(path)
                        ),
                    });
                }
                match mkdirat(&pfd, os(name), Mode::from_bits_truncate(0o755)) {
                    Ok(()) => {
                        self.mark_touched(path);
                    }
                    Err(Errno::EEXIST) => {}
                    Err(e) => return Err(apply_err(entry, "create parent directory", e)),
                }
                // Resolve again from the root: if `name` is a symlink, follow it in the root.
                resolve::open_in_root(self.root.as_fd(), path, flags, self.walk).map_err(|e| {
                    UnpackError::Invalid {
                        entry: entry.to_owned(),
                        reason: format!(
                            "parent {} cannot be resolved to a directory: {e}",
                            String::from_utf8_lossy(path)
                        ),
                    }
                })
            }
            Err(e) => Err(UnpackError::Invalid {
                entry: entry.to_owned(),
                reason: format!(
                    "parent {} is not a directory: {e}",
                    String::from_utf8_lossy(path)
                ),
            }),
        }
    }

    fn mark_touched(&mut self, path: &[u8]) {
        let mut p = path;
        loop {
            if !self.touched.insert(p.to_vec()) {
                return;
            }
            if p.is_empty() {
                return;
            }
            p = split_parent(p).0;
        }
    }
}

/// One entry's final component, relative to its resolved parent directory.
pub(super) struct EntryCtx<'a> {
    pub(super) dir: std::os::fd::BorrowedFd<'a>,
    pub(super) name: &'a OsStr,
    pub(super) entry: &'a str,
    /// Unpacking straight into an upper directory (see [`unpack_layer_over`]).
    over_lowers: bool,
}

impl EntryCtx<'_> {
    /// Creates a new regular file, replacing whatever is there. `O_EXCL` never follows a
    /// symlink at the final component.
    fn create_file(&self, mode: u32) -> Result<OwnedFd, UnpackError> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let perm = Mode::from_bits_truncate(mode & 0o777);
        let mut result = openat(self.dir, self.name, flags, perm);
        if matches!(result, Err(Errno::EEXIST)) {
            self.remove_existing()?;
            result = openat(self.dir, self.name, flags, perm);
        }
        result.map_err(|e| apply_err(self.entry, "create file", e))
    }

    /// Creates a directory, or keeps an existing one (layers merge directories); anything
    /// else in the way is replaced. Returns it opened for setting metadata.
    fn ensure_dir(&self) -> Result<OwnedFd, UnpackError> {
        match mkdirat(self.dir, self.name, Mode::from_bits_truncate(0o755)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                let st = fstatat(self.dir, self.name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| apply_err(self.entry, "inspect existing entry", e))?;
                if !is_dir(&st) {
                    self.remove_existing()?;
                    mkdirat(self.dir, self.name, Mode::from_bits_truncate(0o755))
                        .map_err(|e| apply_err(self.entry, "create directory", e))?;
                }
            }
            Err(e) => return Err(apply_err(self.entry, "create directory", e)),
        }
        openat(
            self.dir,
            self.name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| apply_err(self.entry, "open directory", e))
    }

    /// Runs `create`; if the name exists, removes it and tries once more.
    fn replace_with(
        &self,
        create: impl Fn() -> nix::Result<()>,
        op: &'static str,
    ) -> Result<(), UnpackError> {
        match create() {
            Err(Errno::EEXIST) => {
                self.remove_existing()?;
                create().map_err(|e| apply_err(self.entry, op, e))
            }
            other => other.map_err(|e| apply_err(self.entry, op, e)),
        }
    }

    fn remove_existing(&self) -> Result<(), UnpackError> {
        // Over lowers, replacing a whiteout of this layer by a directory would merge in the
        // lower directory it was meant to hide: leave that to an overlay mount.
        if self.over_lowers
            && fstatat(self.dir, self.name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|st| is_whiteout(&st))
        {
            return Err(UnpackError::Invalid {
                entry: self.entry.to_owned(),
                reason: "replaces a whiteout of the same layer".to_owned(),
            });
        }
        remove_all(self.dir, self.name)
            .map_err(|e| apply_err(self.entry, "replace existing entry", e))
    }
}
