//! Unpack one image layer (a tar stream, optionally gzip or zstd compressed) into a directory.
//!
//! The layer is streamed once: decompressed, hashed (the diff ID is the sha256 of the
//! uncompressed tar) and applied entry by entry. Layers are untrusted input, so every path is
//! resolved *inside* the destination directory with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` (or, on kernels without it, an equivalent walk in `resolve`): `..` components, absolute paths and symlinks (absolute or relative)
//! all stay within the destination, exactly as they would inside the container. An absolute
//! symlink therefore means a path in the image, and a later entry may write through a symlinked
//! directory (merged-`/usr` images rely on that). Every final component is created or replaced
//! with `*at` syscalls relative to an already-resolved parent directory and never followed, so
//! no entry can create, replace or modify a file outside the destination.
//!
//! Whiteouts (`.wh.NAME`, `.wh..wh..opq`) are applied in one of two ways. [`unpack_layer`]
//! deletes from the destination, which is either an empty directory (the first layer) or the
//! merged view of an overlay mount whose lower directories are the previous layers (see
//! [`crate::snapshot`]): there the kernel turns each deletion into an overlayfs whiteout in the
//! new layer's upper directory. [`unpack_layer_over`] writes into the upper directory itself and
//! makes the whiteouts (0/0 character devices, `trusted.overlay.opaque`) on its own, giving up
//! where only the merged view would resolve a path the same way. As the OCI image spec
//! requires, whiteouts only hide content of lower layers, never entries of the same layer.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, futimens, mknodat};
use nix::sys::stat::{makedev, mkdirat};
use nix::sys::time::TimeSpec;
use nix::unistd::{UnlinkatFlags, linkat, symlinkat, unlinkat};
use oci_spec::image::{Digest, MediaType};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

mod decode;
mod metadata;
pub(crate) mod resolve;
mod whiteout;

use decode::unpack_stream_with;
use metadata::{Meta, read_pax};
use whiteout::{OPAQUE_WHITEOUT, WHITEOUT_PREFIX, is_whiteout, present_in};
/// Size of the buffers between file, decompressor, hasher and tar parser, and of file copies.
const BUF_SIZE: usize = 256 * 1024;

/// Errors while unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The media type names no layer format this module can decompress.
    #[error("unsupported layer media type {0}")]
    UnsupportedMediaType(String),
    /// The layer blob could not be opened.
    #[error("cannot open layer blob {path}")]
    OpenBlob {
        /// The blob file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The destination directory could not be opened.
    #[error("cannot open unpack destination {path}")]
    OpenDestination {
        /// The destination directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The stream is not a valid (compressed) tar archive, or reading it failed.
    #[error("cannot read layer stream")]
    Read(#[source] io::Error),
    /// The uncompressed layer is larger than the configured limit (a tar bomb).
    #[error("layer exceeds the limit of {limit} uncompressed bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The layer has more entries than the configured limit (a tar bomb).
    #[error("layer exceeds the limit of {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// An entry is malformed or cannot be applied safely.
    #[error("layer entry {entry}: {reason}")]
    Invalid {
        /// The entry's path as written in the tar.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file-system operation for an entry failed.
    #[error("layer entry {entry}: cannot {op}")]
    Apply {
        /// The entry's path as written in the tar.
        entry: String,
        /// The operation that failed (`create file`, `set owner`, ...).
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Limits that stop a hostile layer (a tar bomb) from filling the disk or the inode table.
///
/// Defaults are generous: real runner images stay far below them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Maximum size of the uncompressed tar stream, in bytes.
    pub max_bytes: u64,
    /// Maximum number of tar entries.
    pub max_entries: u64,
    /// Resolve paths with the userspace walk that stands in for `openat2` on kernels older
    /// than 5.6, even where `openat2` exists (for tests). Off by default.
    pub path_walk: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            max_bytes: 32 << 30,
            max_entries: 2_000_000,
            path_walk: false,
        }
    }
}

/// What unpacking a layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// sha256 of the uncompressed tar stream: the layer's diff ID.
    pub diff_id: Digest,
    /// Uncompressed size in bytes.
    pub bytes: u64,
    /// Number of tar entries applied (including whiteouts).
    pub entries: u64,
    /// Paths the unpack took to be absent from every lower layer because the lowers were
    /// not there yet ([`unpack_stream_before_lowers`]); empty otherwise. The result holds
    /// only if [`lowers_lack`] confirms it once they are.
    pub assumed_absent: Vec<Vec<u8>>,
}

/// The compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (possibly several concatenated members).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Chooses the decompressor for a layer media type: the OCI ones (also non-distributable)
    /// and Docker's `rootfs.diff.tar[.gzip]` and `rootfs.foreign.diff.tar.gzip`.
    pub fn from_media_type(media_type: &MediaType) -> Result<Self, UnpackError> {
        match media_type {
            MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Ok(Self::None),
            MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => Ok(Self::Gzip),
            MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => Ok(Self::Zstd),
            MediaType::Other(other) => match other.as_str() {
                "application/vnd.docker.image.rootfs.diff.tar" => Ok(Self::None),
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
                | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Self::Gzip),
                "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(Self::Zstd),
                _ => Err(UnpackError::UnsupportedMediaType(other.clone())),
            },
            other => Err(UnpackError::UnsupportedMediaType(other.to_string())),
        }
    }
}

/// Unpacks the layer blob at `blob` (compressed as `media_type` says) into the existing
/// directory `dest` and returns its computed diff ID.
///
/// Caveats: the caller compares the diff ID with the image config's `diff_ids` (the tree is
/// already written when the digest is known, so unpack into a scratch directory); ownership is
/// only applied when running as root; device nodes are skipped with a warning otherwise.
pub fn unpack_layer(
    blob: &Path,
    media_type: &MediaType,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let compression = Compression::from_media_type(media_type)?;
    let file = File::open(blob).map_err(|source| UnpackError::OpenBlob {
        path: blob.to_owned(),
        source,
    })?;
    unpack_stream(file, compression, dest, opts)
}

/// Unpacks a layer straight into `upper`, an empty directory that becomes its overlayfs diff
/// over the snapshot directories `lowers` (bottom first), without mounting anything: whiteouts
/// become 0/0 character devices and opaque whiteouts `trusted.overlay.opaque=y`, as the
/// kernel would have written them (this is how containerd's overlay snapshotter applies
/// layers). Needs root (mknod, trusted xattrs).
///
/// Caveat: it gives up with an error wherever the result could differ from unpacking into the
/// merged view of an overlay mount — a parent directory this layer does not list but a lower
/// layer has (its metadata or a symlink there would matter), a hard link to a lower file, an
/// entry that replaces a whiteout of the same layer — and on any other failure: the caller
/// then unpacks the layer again through an overlay mount ([`unpack_layer`] into the merged
/// view), which also reports the real error of a malformed layer.
pub fn unpack_layer_over(
    blob: &Path,
    media_type: &MediaType,
    upper: &Path,
    lowers: &[PathBuf],
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let compression = Compression::from_media_type(media_type)?;
    let file = File::open(blob).map_err(|source| UnpackError::OpenBlob {
        path: blob.to_owned(),
        source,
    })?;
    // Top first: the first lower that has a path is the one overlayfs would show.
    let lowers = lowers
        .iter()
        .rev()
        .map(|l| open_root(l))
        .collect::<Result<Vec<_>, _>>()?;
    unpack_stream_with(file, compression, upper, LowerView::Open(lowers), opts)
}

/// Unpacks a layer read from `reader` into the existing directory `dest`; see [`unpack_layer`].
pub fn unpack_stream<R: Read + Send>(
    reader: R,
    compression: Compression,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    unpack_stream_with(reader, compression, dest, LowerView::Open(Vec::new()), opts)
}

/// Unpacks a layer read from `reader` into `upper` over the snapshot directories `lowers`
/// (bottom first); see [`unpack_layer_over`], whose caveats apply: it may give up where only
/// an overlay mount would resolve the layer the same way, and the caller then unpacks the
/// layer again from its blob.
pub fn unpack_stream_over<R: Read + Send>(
    reader: R,
    compression: Compression,
    upper: &Path,
    lowers: &[PathBuf],
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let lowers = lowers
        .iter()
        .rev()
        .map(|l| open_root(l))
        .collect::<Result<Vec<_>, _>>()?;
    unpack_stream_with(reader, compression, upper, LowerView::Open(lowers), opts)
}

/// Unpacks a layer read from `reader` into `upper` like [`unpack_stream_over`], before
/// the lower snapshots exist (they are being unpacked meanwhile, from their own
/// downloads). Where the unpack would look into the lowers, it takes the path to be
/// absent and records it in [`UnpackStats::assumed_absent`]: the upper is right only if
/// [`lowers_lack`] all of them, else the caller unpacks the layer again over the lowers.
/// Typical layers list their directories, and the list stays short.
pub fn unpack_stream_before_lowers<R: Read + Send>(
    reader: R,
    compression: Compression,
    upper: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    unpack_stream_with(reader, compression, upper, LowerView::Deferred, opts)
}

/// Whether none of the snapshot directories `lowers` has any of `paths` (as
/// [`UnpackStats::assumed_absent`] lists them), by the same lookup the unpack makes. A
/// lower that cannot be opened counts as having them all (the conservative answer).
pub fn lowers_lack(paths: &[Vec<u8>], lowers: &[PathBuf]) -> bool {
    let Ok(lowers) = lowers
        .iter()
        .map(|l| open_root(l))
        .collect::<Result<Vec<_>, _>>()
    else {
        return false;
    };
    !paths.iter().any(|path| present_in(&lowers, path))
}

/// What an unpack over lower snapshots can see of them.
enum LowerView {
    /// Their roots, top first; none for a layer unpacked on its own.
    Open(Vec<OwnedFd>),
    /// There are lowers, not unpacked yet: lookups are recorded, answered "absent".
    Deferred,
}

fn open_root(dest: &Path) -> Result<OwnedFd, UnpackError> {
    nix::fcntl::open(
        dest,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::OpenDestination {
        path: dest.to_owned(),
        source: e.into(),
    })
}

/// The process umask from `/proc/self/status` (reading it with umask(2) would change it for
/// a moment, for every thread).
fn read_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(value.trim(), 8).ok()
}

/// Lexically normalizes a tar path to components relative to the root: empty and `.`
/// components vanish, `..` pops but never above the root (as inside the container). This is
/// not the security boundary (`RESOLVE_IN_ROOT` is); it gives every entry one canonical key.
pub(crate) fn clean_path(raw: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join(&b'/')
}

/// Splits a cleaned path into its parent and its final component.
fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Applies entries to one root directory; holds the state that spans entries.
pub(crate) struct Unpacker {
    root: OwnedFd,
    /// Paths this layer created, and all their ancestors: whiteouts never remove them.
    touched: HashSet<Vec<u8>>,
    /// Directories whose mtime is set after all entries (creating children changes it).
    dir_times: Vec<(Vec<u8>, i64)>,
    /// The last resolved parent directory: consecutive entries in one directory resolve once.
    /// Also whether that directory is setgid (new files then take its group).
    parent_cache: Option<(Vec<u8>, OwnedFd, bool)>,
    is_root: bool,
    /// The process umask when unpacking started (`None` if unknown): new files whose mode
    /// it leaves intact need no chmod. Caveat: assumes nothing changes the umask meanwhile.
    umask: Option<u32>,
    /// Force the userspace path walk instead of `openat2`.
    walk: bool,
    buf: Vec<u8>,
    warned_devices: bool,
    /// Non-empty when unpacking straight into an overlayfs upper directory: the lower
    /// snapshot roots, top first (see [`unpack_layer_over`]).
    lowers: Vec<OwnedFd>,
    /// Unpacking into an upper directory whose lowers are not there yet
    /// ([`unpack_stream_before_lowers`]): lookups go to `assumed_absent`.
    deferred: bool,
    assumed_absent: std::cell::RefCell<Vec<Vec<u8>>>,
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

    fn apply_all<R: Read>(
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
struct EntryCtx<'a> {
    dir: std::os::fd::BorrowedFd<'a>,
    name: &'a OsStr,
    entry: &'a str,
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

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Removes `name` in `dir` and, if it is a directory, everything below it, without following
/// symlinks. A missing name is not an error.
pub(crate) fn remove_all(dir: std::os::fd::BorrowedFd<'_>, name: &OsStr) -> nix::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e),
    }
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let names: Vec<Vec<u8>> = d
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_bytes().to_vec())
        .filter(|n| n != b"." && n != b"..")
        .collect();
    for child in names {
        remove_all(d.as_fd(), os(&child))?;
    }
    match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

fn apply_err(entry: &str, op: &'static str, e: Errno) -> UnpackError {
    UnpackError::Apply {
        entry: entry.to_owned(),
        op,
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_contains_dot_dot_and_absolute_paths() {
        assert_eq!(clean_path(b"/etc/passwd"), b"etc/passwd");
        assert_eq!(clean_path(b"../../etc/passwd"), b"etc/passwd");
        assert_eq!(clean_path(b"a/./b/../c/"), b"a/c");
        assert_eq!(clean_path(b"./"), b"");
        assert_eq!(clean_path(b"a/../../.."), b"");
    }

    #[test]
    fn media_types_choose_the_decompressor() {
        let docker = MediaType::Other("application/vnd.docker.image.rootfs.diff.tar.gzip".into());
        assert_eq!(
            Compression::from_media_type(&docker).unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            Compression::from_media_type(&MediaType::ImageLayerZstd).unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            Compression::from_media_type(&MediaType::ImageLayer).unwrap(),
            Compression::None
        );
        let err = Compression::from_media_type(&MediaType::ImageConfig).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported layer media type application/vnd.oci.image.config.v1+json"
        );
    }
}
