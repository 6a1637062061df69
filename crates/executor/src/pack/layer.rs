//! Writing the layer: the entries streamed as a reproducible tar (uid and gid 0, one
//! modification time) through gzip into a blob, hashed on the way for the diff ID and the
//! blob digest.

use super::entries::Entry;
use super::layout::persist_blob;
use super::{PackError, read_error};
use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    fn finish(self) -> (W, Digest, u64) {
        let digest = crate::digest::from_sha256_sum(self.hasher.finalize());
        (self.inner, digest, self.written)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Streams the entries as tar through gzip into a blob; returns the blob's
/// digest, its size and the diff ID.
pub(super) fn write_layer(
    blobs: &Path,
    entries: &BTreeMap<String, Entry>,
    epoch: u64,
) -> Result<(Digest, u64, Digest), PackError> {
    let write_error = |source| PackError::Write {
        path: blobs.to_owned(),
        source,
    };
    let tmp = tempfile::Builder::new()
        .prefix(".layer-")
        .tempfile_in(blobs)
        .map_err(write_error)?;
    let file = tmp.reopen().map_err(write_error)?;
    let compressed = Hashing::new(std::io::BufWriter::new(file));
    // A fixed gzip header (no name, mtime 0) keeps the blob reproducible.
    let gzip = flate2::GzBuilder::new()
        .mtime(0)
        .write(compressed, flate2::Compression::default());
    let mut tar = tar::Builder::new(Hashing::new(gzip));
    tar.mode(tar::HeaderMode::Deterministic);
    for (path, entry) in entries {
        append_entry(&mut tar, path, entry, epoch)?;
    }
    let uncompressed = tar.into_inner().map_err(write_error)?;
    let (gzip, diff_id, _) = uncompressed.finish();
    let compressed = gzip.finish().map_err(write_error)?;
    let (buffered, digest, size) = compressed.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| write_error(e.into_error()))?;
    file.sync_all().map_err(write_error)?;
    drop(file);
    persist_blob(tmp, blobs, &digest)?;
    Ok((digest, size, diff_id))
}

fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    entry: &Entry,
    epoch: u64,
) -> Result<(), PackError> {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(epoch);
    let write_error = |source| PackError::Write {
        path: PathBuf::from(format!("/{path}")),
        source,
    };
    match entry {
        Entry::Dir { mode } => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(*mode);
            header.set_size(0);
            tar.append_data(&mut header, format!("{path}/"), std::io::empty())
                .map_err(write_error)
        }
        Entry::File { host, mode } => {
            let file = std::fs::File::open(host).map_err(read_error(host))?;
            let size = file.metadata().map_err(read_error(host))?.len();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(*mode);
            header.set_size(size);
            // `take` guards against a file growing while it is packed, which
            // would corrupt the archive.
            tar.append_data(&mut header, path, std::io::Read::take(file, size))
                .map_err(|source| PackError::Read {
                    path: host.clone(),
                    source,
                })
        }
        Entry::Symlink { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, path, target)
                .map_err(write_error)
        }
    }
}
