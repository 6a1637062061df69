//! Packing files into an image in an OCI image layout (`executor pack`).
//!
//! Writes one gzip layer, an image config and a manifest into `DIR/blobs/sha256/`,
//! and tags the manifest in `DIR/index.json` (`org.opencontainers.image.ref.name`).
//! The output is reproducible: entries are sorted, owned by uid/gid 0, and carry
//! one modification time (`SOURCE_DATE_EPOCH`, default 0), so the same inputs give
//! the same manifest digest. Files are streamed from disk through tar, gzip and
//! SHA-256 into the blob; nothing is held in memory.
//!
//! Every blob is written to a temporary file in the layout and renamed to its
//! digest, and `index.json` is replaced atomically, so a failed pack leaves no
//! partial blob and an unchanged index.

mod entries;
mod layer;
mod layout;

use entries::{add_mapping, shared_libraries};
use layer::write_layer;
use layout::{tag_in_index, write_blob, write_file_atomically};
use oci_spec::image::{
    ANNOTATION_REF_NAME, Arch, ConfigBuilder, Descriptor, Digest, HistoryBuilder,
    ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The `PATH` an image gets when `--env` sets none, as Docker images have it.
pub use crate::bundle::DEFAULT_PATH;

/// Why an image could not be packed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// A `HOST:IMAGE_PATH` argument is malformed.
    #[error("invalid file mapping {0:?}: expected HOST_PATH:/IMAGE_PATH")]
    Mapping(String),
    /// An image path is not absolute or not normalized (`..`, `.`, `//`).
    #[error("invalid image path {0:?}: must be absolute, without . or .. components")]
    ImagePath(String),
    /// The tag is not a valid OCI tag.
    #[error("invalid tag {0:?}: expected [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")]
    Tag(String),
    /// An environment entry is not `KEY=VALUE`.
    #[error("invalid environment entry {0:?}: expected KEY=VALUE")]
    Env(String),
    /// No entrypoint and no command: the image could not be run.
    #[error("the image needs an entrypoint or a command")]
    NoCommand,
    /// Two inputs map to the same image path in incompatible ways.
    #[error("image path {path} is added twice ({first} and {second})")]
    Conflict {
        /// The image path.
        path: String,
        /// What was there first.
        first: String,
        /// What was added second.
        second: String,
    },
    /// A host file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The host path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A host file is of a kind an image cannot carry (device, socket, FIFO).
    #[error("cannot pack {0}: only regular files, directories and symbolic links are supported")]
    FileType(PathBuf),
    /// `ldd` failed on a binary added with `--add-binary`.
    #[error("cannot list the shared libraries of {path} with ldd: {reason}")]
    Ldd {
        /// The binary.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The layout cannot be written.
    #[error("cannot write OCI layout {path}")]
    Write {
        /// The file or directory being written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The existing `index.json` is not an OCI image index.
    #[error("invalid image index {path}: {reason}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
    /// An OCI document could not be built or serialized.
    #[error("cannot build {what}: {reason}")]
    Spec {
        /// Which document.
        what: &'static str,
        /// The error.
        reason: String,
    },
}

/// A host file or directory and where it goes in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMapping {
    /// The host path. A top-level symbolic link is followed; links inside an added
    /// directory are kept as links.
    pub host: PathBuf,
    /// The absolute path in the image.
    pub image: String,
}

impl FileMapping {
    /// Parses `HOST:IMAGE_PATH` (split at the last colon; the image path must be absolute).
    pub fn parse(arg: &str) -> Result<FileMapping, PackError> {
        let (host, image) = arg
            .rsplit_once(':')
            .filter(|(host, image)| !host.is_empty() && image.starts_with('/'))
            .ok_or_else(|| PackError::Mapping(arg.to_owned()))?;
        normalize_image_path(image)?;
        Ok(FileMapping {
            host: PathBuf::from(host),
            image: image.to_owned(),
        })
    }
}

/// What to pack.
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// The OCI image layout directory; created when missing, otherwise the image is
    /// added to it (an existing tag of the same name is moved).
    pub layout: PathBuf,
    /// The tag (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// Files and directories to add.
    pub files: Vec<FileMapping>,
    /// Dynamically linked binaries to add together with the shared libraries and
    /// the loader `ldd` lists, at their host paths. Caveat: `ldd` may execute the
    /// binary; use it only on binaries you trust.
    pub binaries: Vec<FileMapping>,
    /// The entrypoint.
    pub entrypoint: Vec<String>,
    /// The default arguments.
    pub cmd: Vec<String>,
    /// Environment entries `KEY=VALUE`; [`DEFAULT_PATH`] is added unless one sets `PATH`.
    pub env: Vec<String>,
    /// The working directory.
    pub workdir: Option<String>,
    /// The user (`uid`, `uid:gid`, or a name the image knows).
    pub user: Option<String>,
    /// Modification time of every entry and the creation time, in seconds since
    /// the epoch (`SOURCE_DATE_EPOCH`); 0 when `None`.
    pub source_date_epoch: Option<u64>,
}

/// What [`pack`] wrote.
#[derive(Debug, Clone)]
pub struct Packed {
    /// The manifest's descriptor as recorded in `index.json`.
    pub manifest: Descriptor,
    /// The config's digest.
    pub config: Digest,
    /// The layer's digest (compressed).
    pub layer: Digest,
    /// The layer's diff ID (digest of the uncompressed tar).
    pub diff_id: Digest,
}

/// Packs the files into an image and tags it in the layout; returns what it wrote.
pub fn pack(opts: &PackOptions) -> Result<Packed, PackError> {
    validate_tag(&opts.tag)?;
    if opts.entrypoint.is_empty() && opts.cmd.is_empty() {
        return Err(PackError::NoCommand);
    }
    for entry in &opts.env {
        if entry.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            return Err(PackError::Env(entry.clone()));
        }
    }
    if let Some(workdir) = &opts.workdir {
        normalize_image_path(workdir)?;
    }
    // Collect and check every input before the layout is touched.
    let mut entries = BTreeMap::new();
    for mapping in &opts.files {
        add_mapping(&mut entries, mapping)?;
    }
    for binary in &opts.binaries {
        add_mapping(&mut entries, binary)?;
        for lib in shared_libraries(&binary.host)? {
            let image = lib.to_string_lossy().into_owned();
            add_mapping(&mut entries, &FileMapping { host: lib, image })?;
        }
    }
    let epoch = opts.source_date_epoch.unwrap_or(0);

    let blobs = opts.layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(|source| PackError::Write {
        path: blobs.clone(),
        source,
    })?;
    write_file_atomically(
        &opts.layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;

    let (layer, layer_size, diff_id) = write_layer(&blobs, &entries, epoch)?;
    tracing::debug!(layer = %layer, diff_id = %diff_id, "layer written");

    let created =
        crate::time::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch));
    let config = image_config(opts, &diff_id, &created)?;
    let config_json = to_json("image config", &config)?;
    let (config_digest, config_size) = write_blob(&blobs, &config_json)?;

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            config_digest.clone(),
        ))
        .layers(vec![Descriptor::new(
            MediaType::ImageLayerGzip,
            layer_size,
            layer.clone(),
        )])
        .build()
        .map_err(|e| spec_error("image manifest", e))?;
    let manifest_json = to_json("image manifest", &manifest)?;
    let (manifest_digest, manifest_size) = write_blob(&blobs, &manifest_json)?;
    let mut descriptor = Descriptor::new(
        MediaType::ImageManifest,
        manifest_size,
        manifest_digest.clone(),
    );
    descriptor.set_annotations(Some(HashMap::from([(
        ANNOTATION_REF_NAME.to_owned(),
        opts.tag.clone(),
    )])));
    tag_in_index(&opts.layout, &opts.tag, descriptor.clone())?;
    tracing::info!(
        layout = %opts.layout.display(),
        tag = %opts.tag,
        digest = %manifest_digest,
        "image packed"
    );
    Ok(Packed {
        manifest: descriptor,
        config: config_digest,
        layer,
        diff_id,
    })
}

fn spec_error(what: &'static str, e: impl std::fmt::Display) -> PackError {
    PackError::Spec {
        what,
        reason: e.to_string(),
    }
}

fn to_json(what: &'static str, value: &impl serde::Serialize) -> Result<Vec<u8>, PackError> {
    serde_json::to_vec(value).map_err(|e| spec_error(what, e))
}

/// OCI tags: the grammar of the distribution spec.
fn validate_tag(tag: &str) -> Result<(), PackError> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && tag.len() <= 128 {
        Ok(())
    } else {
        Err(PackError::Tag(tag.to_owned()))
    }
}

/// Checks an absolute image path and returns its components. Rejecting `..`
/// keeps every entry inside the image root, whatever unpacks it.
fn normalize_image_path(path: &str) -> Result<Vec<String>, PackError> {
    let invalid = || PackError::ImagePath(path.to_owned());
    let rest = path.strip_prefix('/').ok_or_else(invalid)?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/')
        .map(|part| match part {
            "" | "." | ".." => Err(invalid()),
            part => Ok(part.to_owned()),
        })
        .collect()
}

fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> PackError + '_ {
    move |source| PackError::Read {
        path: path.to_owned(),
        source,
    }
}

fn image_config(
    opts: &PackOptions,
    diff_id: &Digest,
    created: &str,
) -> Result<oci_spec::image::ImageConfiguration, PackError> {
    let mut env = opts.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    let mut config = ConfigBuilder::default().env(env);
    if !opts.entrypoint.is_empty() {
        config = config.entrypoint(opts.entrypoint.clone());
    }
    if !opts.cmd.is_empty() {
        config = config.cmd(opts.cmd.clone());
    }
    if let Some(workdir) = &opts.workdir {
        config = config.working_dir(workdir.clone());
    }
    if let Some(user) = &opts.user {
        config = config.user(user.clone());
    }
    let config = config.build().map_err(|e| spec_error("image config", e))?;
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(vec![diff_id.to_string()])
        .build()
        .map_err(|e| spec_error("image config", e))?;
    let history = HistoryBuilder::default()
        .created(created.to_owned())
        .created_by("executor pack".to_owned())
        .build()
        .map_err(|e| spec_error("image config", e))?;
    ImageConfigurationBuilder::default()
        .created(created.to_owned())
        .architecture(Arch::default())
        .os(Os::Linux)
        .config(config)
        .rootfs(rootfs)
        .history(vec![history])
        .build()
        .map_err(|e| spec_error("image config", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_mappings() {
        assert_eq!(
            FileMapping::parse("target/x:/bin/x").unwrap(),
            FileMapping {
                host: "target/x".into(),
                image: "/bin/x".into()
            }
        );
        assert_eq!(
            FileMapping::parse("a:b:/c").unwrap().host,
            PathBuf::from("a:b")
        );
        for bad in ["x", ":/x", "x:relative", "x:/a/../b", "x:/a//b", "x:/./a"] {
            assert!(FileMapping::parse(bad).is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn validates_tags() {
        for good in ["v1", "latest", "_x", "1.0.0-rc.1"] {
            validate_tag(good).unwrap();
        }
        for bad in ["", "-x", ".x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(validate_tag(bad).is_err(), "{bad} must be rejected");
        }
    }
}
