//! Building test images as OCI image layouts, from a list of files.
//!
//! The layouts are what `skopeo copy ... oci:DIR:TAG` reads and writes, so they can be
//! pushed to a registry with [`crate::push_layout`] or pulled directly as
//! `oci-layout:DIR:TAG`. Tars are deterministic (mtime 0, uid 0), so the same spec
//! always gives the same digests.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// One entry of a layer tar.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A regular file.
    File {
        /// Path inside the image, relative (`bin/tool`).
        path: String,
        /// Content.
        data: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
    /// A directory.
    Dir {
        /// Path inside the image.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link.
    Symlink {
        /// Path inside the image.
        path: String,
        /// Link target.
        target: String,
    },
}

impl Entry {
    /// A regular file with mode 0644.
    pub fn file(path: &str, data: impl Into<Vec<u8>>) -> Entry {
        Entry::File {
            path: path.to_owned(),
            data: data.into(),
            mode: 0o644,
        }
    }

    /// An executable file with mode 0755.
    pub fn executable(path: &str, data: impl Into<Vec<u8>>) -> Entry {
        Entry::File {
            path: path.to_owned(),
            data: data.into(),
            mode: 0o755,
        }
    }
}

/// `len` incompressible bytes (xorshift) from `seed`, so that layer sizes are what they
/// say; the same seed gives the same bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// How a layer is compressed (each in its OCI media type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// tar+gzip.
    Gzip,
    /// tar+zstd.
    Zstd,
}

impl Compression {
    fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// One layer: entries and compression.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// The tar entries, in order.
    pub entries: Vec<Entry>,
    /// The compression.
    pub compression: Compression,
}

/// An image: layers (base first), platform and the config's `config` section.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Layers, base first.
    pub layers: Vec<LayerSpec>,
    /// `os` of the config and the index entry.
    pub os: String,
    /// `architecture` (Go naming: amd64, arm64).
    pub architecture: String,
    /// `variant`, if any.
    pub variant: Option<String>,
    /// The runtime config (`Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User`).
    pub config: Value,
}

impl ImageSpec {
    /// An image for this machine's platform with the given layers and a `sh` command.
    pub fn host(layers: Vec<LayerSpec>) -> ImageSpec {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        ImageSpec {
            layers,
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
            config: json!({
                "Cmd": ["/bin/sh"],
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            }),
        }
    }
}

/// What [`write_image`] or [`write_index`] produced.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Digest (`sha256:...`) of the manifest (or index) that the tag points to.
    pub digest: String,
    /// Digests of the layer blobs, base first (for a single image).
    pub layers: Vec<String>,
    /// Digest of the config blob (for a single image).
    pub config: String,
}

/// A layer with a static busybox at `bin/busybox` and `bin/sh` linking to it: a small
/// base that runs shell scripts.
pub fn busybox_layer(compression: Compression) -> Result<LayerSpec> {
    let busybox =
        std::fs::read("/bin/busybox").context("reading /bin/busybox (install busybox-static)")?;
    let mut entries = vec![
        Entry::Dir {
            path: "bin".into(),
            mode: 0o755,
        },
        Entry::executable("bin/busybox", busybox),
    ];
    for applet in ["sh", "cat", "echo", "ls", "sleep", "env", "true", "false"] {
        entries.push(Entry::Symlink {
            path: format!("bin/{applet}"),
            target: "busybox".into(),
        });
    }
    for dir in ["tmp", "etc", "out", "proc", "dev", "sys"] {
        entries.push(Entry::Dir {
            path: dir.into(),
            mode: 0o755,
        });
    }
    Ok(LayerSpec {
        entries,
        compression,
    })
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn tar_bytes(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::File { path, data, mode } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, data.as_slice())?;
            }
            Entry::Dir { path, mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder.append_data(&mut header, path, std::io::empty())?;
            }
            Entry::Symlink { path, target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target)?;
            }
        }
    }
    Ok(builder.into_inner()?)
}

fn compress(data: &[u8], compression: Compression) -> Result<Vec<u8>> {
    Ok(match compression {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(data)?;
            encoder.finish()?
        }
        Compression::Zstd => zstd::encode_all(data, 3)?,
    })
}

fn write_blob(layout: &Path, data: &[u8]) -> Result<String> {
    let digest = sha256(data);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(&digest["sha256:".len()..]);
    std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    Ok(digest)
}

/// Writes one image's blobs; returns (manifest descriptor JSON, built image).
fn write_image_blobs(layout: &Path, spec: &ImageSpec) -> Result<(Value, BuiltImage)> {
    let mut layer_descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    for layer in &spec.layers {
        let tar = tar_bytes(&layer.entries)?;
        diff_ids.push(sha256(&tar));
        let blob = compress(&tar, layer.compression)?;
        let digest = write_blob(layout, &blob)?;
        layer_descriptors.push(json!({
            "mediaType": layer.compression.media_type(),
            "digest": digest,
            "size": blob.len(),
        }));
        layers.push(digest);
    }
    let mut config = json!({
        "architecture": spec.architecture,
        "os": spec.os,
        "config": spec.config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [],
    });
    if let Some(variant) = &spec.variant {
        config["variant"] = json!(variant);
    }
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = write_blob(layout, &config_bytes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": layer_descriptors,
    });
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = write_blob(layout, &manifest_bytes)?;
    let mut platform = json!({"os": spec.os, "architecture": spec.architecture});
    if let Some(variant) = &spec.variant {
        platform["variant"] = json!(variant);
    }
    let descriptor = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest,
        "size": manifest_bytes.len(),
        "platform": platform,
    });
    Ok((
        descriptor,
        BuiltImage {
            digest: manifest_digest,
            layers,
            config: config_digest,
        },
    ))
}

/// Adds `descriptor` to the layout's `index.json` under `tag` (replacing that tag).
fn tag_in_layout(layout: &Path, tag: &str, mut descriptor: Value) -> Result<()> {
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let index_path = layout.join("index.json");
    let mut index: Value = match std::fs::read(&index_path) {
        Ok(data) => serde_json::from_slice(&data)?,
        Err(_) => json!({"schemaVersion": 2, "manifests": []}),
    };
    descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let Some(manifests) = index["manifests"].as_array_mut() else {
        bail!("{} has no manifests array", index_path.display());
    };
    manifests.retain(|d| d["annotations"]["org.opencontainers.image.ref.name"] != json!(tag));
    manifests.push(descriptor);
    std::fs::write(&index_path, serde_json::to_vec(&index)?)?;
    Ok(())
}

/// Writes a single-platform image into the OCI layout at `layout` (created if needed)
/// and tags it `tag`.
pub fn write_image(layout: &Path, tag: &str, spec: &ImageSpec) -> Result<BuiltImage> {
    let (mut descriptor, built) = write_image_blobs(layout, spec)?;
    if let Some(object) = descriptor.as_object_mut() {
        object.remove("platform");
    }
    tag_in_layout(layout, tag, descriptor)?;
    Ok(built)
}

/// Writes a multi-platform image: one image per spec and an OCI index over them (with an
/// extra BuildKit-style attestation entry, which pullers must skip), tagged `tag`.
/// Returns the index digest and, per platform, the manifest digests.
pub fn write_index(
    layout: &Path,
    tag: &str,
    specs: &[ImageSpec],
) -> Result<(BuiltImage, Vec<BuiltImage>)> {
    let mut descriptors = Vec::new();
    let mut images = Vec::new();
    for spec in specs {
        let (descriptor, built) = write_image_blobs(layout, spec)?;
        descriptors.push(descriptor);
        images.push(built);
    }
    if let Some(first) = images.first() {
        // An attestation manifest pointing at the first image's manifest, as BuildKit
        // writes them: platform unknown/unknown and a reference-type annotation.
        let attestation = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": first.config, "size": std::fs::metadata(layout.join("blobs/sha256").join(&first.config["sha256:".len()..]))?.len()},
            "layers": [],
        }))?;
        let digest = write_blob(layout, &attestation)?;
        descriptors.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": attestation.len(),
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {
                "vnd.docker.reference.type": "attestation-manifest",
                "vnd.docker.reference.digest": first.digest,
            },
        }));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": descriptors,
    }))?;
    let digest = write_blob(layout, &index)?;
    tag_in_layout(
        layout,
        tag,
        json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": index.len(),
        }),
    )?;
    Ok((
        BuiltImage {
            digest,
            layers: Vec::new(),
            config: String::new(),
        },
        images,
    ))
}
