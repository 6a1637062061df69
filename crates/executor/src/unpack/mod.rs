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
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{UnlinkatFlags, unlinkat};
use oci_spec::image::{Digest, MediaType};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

mod apply;
mod decode;
mod metadata;
pub(crate) mod resolve;
mod whiteout;

pub(crate) use apply::Unpacker;
use decode::unpack_stream_with;
use whiteout::present_in;

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

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// The names in directory `d`, but `.` and `..`, read before the caller changes it.
pub(crate) fn entry_names(d: &mut nix::dir::Dir) -> Vec<Vec<u8>> {
    d.iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_bytes().to_vec())
        .filter(|n| n != b"." && n != b"..")
        .collect()
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
    let names = crate::unpack::entry_names(&mut d);
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
