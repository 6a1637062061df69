//! The OCI image layout on disk: content-addressed blobs in `blobs/sha256/`, each written
//! to a temporary file and renamed to its digest, and `oci-layout` and `index.json`,
//! replaced atomically.

use super::{PackError, spec_error, to_json};
use oci_spec::image::{
    ANNOTATION_REF_NAME, Descriptor, Digest, ImageIndex, ImageIndexBuilder, MediaType,
};
use std::io::Write;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Writes a small blob (config, manifest) and returns its digest and size.
pub(super) fn write_blob(blobs: &Path, body: &[u8]) -> Result<(Digest, u64), PackError> {
    let write_error = |source| PackError::Write {
        path: blobs.to_owned(),
        source,
    };
    let digest = crate::digest::sha256_digest(body);
    let mut tmp = tempfile::Builder::new()
        .prefix(".blob-")
        .tempfile_in(blobs)
        .map_err(write_error)?;
    tmp.write_all(body).map_err(write_error)?;
    tmp.as_file().sync_all().map_err(write_error)?;
    persist_blob(tmp, blobs, &digest)?;
    Ok((digest, body.len() as u64))
}

/// Moves a finished blob to its digest's name (blobs are content-addressed, so
/// an existing one is identical and kept).
pub(super) fn persist_blob(
    tmp: tempfile::NamedTempFile,
    blobs: &Path,
    digest: &Digest,
) -> Result<(), PackError> {
    let path = blobs.join(digest.digest());
    if path.exists() {
        return Ok(());
    }
    // Blobs are read-only, as content-addressed files should be.
    let perms = std::fs::Permissions::from_mode(0o444);
    tmp.as_file()
        .set_permissions(perms)
        .map_err(|source| PackError::Write {
            path: path.clone(),
            source,
        })?;
    tmp.persist(&path).map_err(|e| PackError::Write {
        path,
        source: e.error,
    })?;
    Ok(())
}

pub(super) fn write_file_atomically(path: &Path, body: &[u8]) -> Result<(), PackError> {
    let write_error = |source| PackError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(write_error)?;
    tmp.write_all(body).map_err(write_error)?;
    tmp.as_file().sync_all().map_err(write_error)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(write_error)?;
    tmp.persist(path).map_err(|e| write_error(e.error))?;
    Ok(())
}

/// Adds (or moves) `tag` in the layout's `index.json`.
pub(super) fn tag_in_index(
    layout: &Path,
    tag: &str,
    descriptor: Descriptor,
) -> Result<(), PackError> {
    let path = layout.join("index.json");
    let mut manifests = match std::fs::read(&path) {
        Ok(bytes) => {
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| PackError::Index {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            index.manifests().clone()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(PackError::Read { path, source }),
    };
    manifests.retain(|m| {
        m.annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REF_NAME))
            .is_none_or(|name| name != tag)
    });
    manifests.push(descriptor);
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| spec_error("image index", e))?;
    write_file_atomically(&path, &to_json("image index", &index)?)
}
