//! Layer blobs and chain IDs: which layers an image stacks, and the keys their snapshots
//! are stored under.

use super::SnapshotError;
#[cfg(doc)]
use super::Snapshotter;
use oci_spec::image::{Descriptor, Digest, ImageConfiguration, MediaType};
use std::path::PathBuf;
use std::str::FromStr;

/// One layer of an image, as the snapshotter needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// The blob's digest (manifest layer descriptor); names the layer in errors.
    pub digest: Digest,
    /// The uncompressed digest from the image config's `rootfs.diff_ids`.
    pub diff_id: Digest,
    /// The layer media type; chooses the decompressor.
    pub media_type: MediaType,
    /// Where the (verified) blob is stored.
    pub path: PathBuf,
}

/// Pairs an image manifest's layer descriptors (base first) with the image config's
/// `rootfs.diff_ids` into what [`Snapshotter::prepare`] takes; `blob_path` says where the
/// content store keeps a blob. Fails if the counts differ (a malformed image).
pub fn layer_blobs(
    config: &ImageConfiguration,
    layers: &[Descriptor],
    blob_path: impl Fn(&Digest) -> PathBuf,
) -> Result<Vec<LayerBlob>, SnapshotError> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != layers.len() {
        return Err(SnapshotError::LayerCount {
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    layers
        .iter()
        .zip(diff_ids)
        .map(|(layer, diff_id)| {
            let diff_id = Digest::from_str(diff_id).map_err(|e| SnapshotError::BadDiffId {
                diff_id: diff_id.clone(),
                reason: e.to_string(),
            })?;
            Ok(LayerBlob {
                digest: layer.digest().clone(),
                diff_id,
                media_type: layer.media_type().clone(),
                path: blob_path(layer.digest()),
            })
        })
        .collect()
}

/// Computes the chain IDs of a layer stack, bottom first.
pub fn chain_ids<'a>(diff_ids: impl IntoIterator<Item = &'a Digest>) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::new();
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => crate::digest::sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}
