//! Reading images from where they come from: a registry ([`registry`]) or a local OCI
//! image layout ([`layout`]), behind one trait so that [`crate::pull`] treats both alike.
//!
//! Also the pure parts of resolving an image: recognising manifest kinds and picking a
//! platform from an index.

pub mod auth;
pub mod layout;
pub mod proxy;
pub mod registries_conf;
pub mod registry;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest, MediaType};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Bytes of a blob as they arrive.
pub type ByteStream = BoxStream<'static, Result<Bytes, SourceError>>;

/// Docker's media type of a schema2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's media type of a manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Every manifest media type the executor accepts, for `Accept` headers.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// The largest manifest or index accepted (4 MiB, as Distribution and containerd): manifests
/// are held in memory, so a hostile registry or layout must not make them arbitrary large.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// The largest image config accepted (8 MiB): it is read into memory to build the bundle.
pub const MAX_CONFIG_SIZE: u64 = 8 << 20;

/// Config media types of container images (OCI and Docker); anything else is an artifact.
pub const CONFIG_MEDIA_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Layer media types the executor can unpack (tar, tar+gzip, tar+zstd; OCI and Docker).
pub const LAYER_MEDIA_TYPES: [&str; 6] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];

/// Errors from reading an image source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The registry has no such tag, digest or repository.
    #[error("image {reference} not found: {detail}")]
    NotFound {
        /// The reference asked for.
        reference: String,
        /// What the registry said.
        detail: String,
    },
    /// The registry cannot be reached at all (connection refused, DNS, TLS handshake).
    #[error("registry {registry} is unreachable: {detail}")]
    Unreachable {
        /// The registry host.
        registry: String,
        /// The underlying error, flattened to text.
        detail: String,
    },
    /// The registry refused the credentials, or asked for some and none were found.
    #[error("not authorized to pull {reference} (check --authfile or registry credentials)")]
    Unauthorized {
        /// The reference asked for.
        reference: String,
    },
    /// A fault that may go away on retry: connection reset, 5xx, 429, a stall. Shown
    /// to users only once the retries are used up, hence no "transient" in the message.
    #[error("fetching {what} failed: {detail}")]
    Transient {
        /// What was being fetched (a reference or a digest).
        what: String,
        /// The underlying error, flattened to text.
        detail: String,
        /// How long the registry asked us to wait (`Retry-After`), if it did.
        retry_after: Option<Duration>,
    },
    /// Any other registry error.
    #[error("registry error fetching {what}: {detail}")]
    Registry {
        /// What was being fetched (a reference or a digest).
        what: String,
        /// The underlying error, flattened to text.
        detail: String,
    },
    /// Content did not hash to its digest.
    #[error("digest mismatch for {digest}: content hashes to {actual}")]
    DigestMismatch {
        /// The expected digest.
        digest: String,
        /// What the content hashes to.
        actual: String,
    },
    /// A manifest is not one of the supported kinds or does not parse.
    #[error("manifest {digest}: {reason}")]
    BadManifest {
        /// The manifest's digest.
        digest: Digest,
        /// What is wrong with it.
        reason: String,
    },
    /// No manifest in an index matches the wanted platform.
    #[error("no image for platform {wanted} in {reference}; available: {}", .available.join(", "))]
    NoMatchingPlatform {
        /// The reference asked for.
        reference: String,
        /// The wanted platform.
        wanted: Platform,
        /// The platforms the index offers.
        available: Vec<String>,
    },
    /// Reading an OCI image layout failed.
    #[error("OCI layout {path}: {reason}")]
    Layout {
        /// The layout directory or file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `registries.conf` refuses the reference (blocked) or maps it to no valid one.
    #[error(transparent)]
    Config(crate::source::registries_conf::RegistriesConfError),
    /// Every endpoint of the image (its mirrors, then its primary location) failed.
    #[error("every endpoint failed: {}", .failures.iter().map(|f| format!("{}: {}", f.endpoint, f.error)).collect::<Vec<_>>().join("; "))]
    AllEndpointsFailed {
        /// Each endpoint tried, in order, with its error.
        failures: Vec<EndpointFailure>,
    },
    /// Setting up the registry client failed (certificates, credentials).
    #[error("setting up registry client for {registry}: {reason}")]
    Setup {
        /// The registry host.
        registry: String,
        /// What went wrong.
        reason: String,
    },
}

/// One endpoint's failure, in [`SourceError::AllEndpointsFailed`].
#[derive(Debug)]
pub struct EndpointFailure {
    /// `mirror REFERENCE` or `primary REFERENCE`: the endpoint and what was asked of it.
    pub endpoint: String,
    /// What went wrong there.
    pub error: Box<SourceError>,
}

impl SourceError {
    /// Whether retrying the same request may succeed: for failed endpoints, when one of
    /// them failed transiently.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Transient { .. } => true,
            SourceError::AllEndpointsFailed { failures } => {
                failures.iter().any(|f| f.error.is_transient())
            }
            _ => false,
        }
    }

    /// The delay the server asked for before retrying (`Retry-After`), if any (the
    /// longest any endpoint asked for).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SourceError::Transient { retry_after, .. } => *retry_after,
            SourceError::AllEndpointsFailed { failures } => {
                failures.iter().filter_map(|f| f.error.retry_after()).max()
            }
            _ => None,
        }
    }
}

/// One place an image is read from.
#[async_trait]
pub trait ImageReader: Send + Sync {
    /// The manifest or index the source's reference names: raw bytes and digest. When
    /// the reference pins a digest, the bytes are verified against it.
    async fn root_manifest(&self) -> Result<(Bytes, Digest), SourceError>;

    /// A manifest by digest (a child of an index); the caller verifies the bytes.
    async fn manifest(&self, digest: &Digest) -> Result<Bytes, SourceError>;

    /// A blob's content from byte `offset` on. Returns the stream and the offset it
    /// actually starts at (0 when the source ignored the range and sends everything).
    async fn blob(
        &self,
        descriptor: &Descriptor,
        offset: u64,
    ) -> Result<(ByteStream, u64), SourceError>;

    /// The manifest or index tagged `tag` beside the image (in its repository, or its
    /// layout's `index.json`), where cosign keeps signatures; `None` when there is no
    /// such tag. Not verified against anything: a signature proves itself.
    async fn tagged_manifest(&self, tag: &str) -> Result<Option<Bytes>, SourceError>;

    /// The OCI 1.1 referrers of the manifest `digest` as an index, where the source
    /// answers the referrers API (a layout: the signature manifests `cosign save` listed
    /// in it); `None` where it does not, and the caller falls back to the referrers tag.
    async fn referrers(&self, digest: &Digest) -> Result<Option<Bytes>, SourceError>;
}

/// The reader for an image: its registry's endpoints (mirrors first, with `opts`), or
/// its OCI layout. Does no I/O.
pub fn reader_for(
    source: &crate::reference::ImageSource,
    opts: &registry::RegistryOptions,
) -> Result<Box<dyn ImageReader>, SourceError> {
    use crate::reference::ImageSource;
    Ok(match source {
        ImageSource::Registry(reference) => {
            Box::new(registry::RegistryReader::new(reference.clone(), opts)?)
        }
        ImageSource::Layout {
            path,
            tag_or_digest,
        } => Box::new(layout::LayoutReader::new(path, tag_or_digest)),
    })
}

/// An OS/architecture[/variant] triple, as `--platform` takes it (`linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture in Go's naming (`amd64`, `arm64`).
    pub architecture: String,
    /// Architecture variant (`v7`, `v8`), if any.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this machine, in Go's naming as image indexes use it.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
        }
    }

    /// Whether an index entry's platform satisfies this one. A wanted platform with no
    /// variant accepts any variant; `arm64` treats no variant and `v8` as the same.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        if self.os != os || self.architecture != architecture {
            return false;
        }
        let normalize = |v: Option<&str>| match (architecture, v) {
            ("arm64", None | Some("v8")) => None,
            (_, v) => v.map(str::to_owned),
        };
        match &self.variant {
            None => true,
            Some(wanted) => normalize(Some(wanted)) == normalize(variant),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// A `--platform` value that is not `os/arch[/variant]`.
#[derive(Debug, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant], for example linux/amd64")]
pub struct PlatformParseError(String);

impl FromStr for Platform {
    type Err = PlatformParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric());
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
            return Err(PlatformParseError(s.to_owned()));
        }
        Ok(Platform {
            os: parts[0].to_owned(),
            architecture: parts[1].to_owned(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
        })
    }
}

/// A parsed manifest: an image manifest or an index of them.
#[derive(Debug)]
pub enum Manifest {
    /// An image index or Docker manifest list.
    Index(Box<ImageIndex>),
    /// An image manifest (OCI or Docker schema2), with its media type.
    Image(Box<ImageManifest>, MediaType),
}

/// Parses manifest bytes, telling index from image by `mediaType` (or, when it is
/// absent as OCI allows, by the fields present).
pub fn parse_manifest(digest: &Digest, bytes: &[u8]) -> Result<Manifest, SourceError> {
    // Parser messages quote the (untrusted) document: keep the error on one line.
    let bad = |reason: String| SourceError::BadManifest {
        digest: digest.clone(),
        reason: one_line(&reason),
    };
    if bytes.len() > MAX_MANIFEST_SIZE {
        return Err(bad(format!(
            "{} bytes, more than the {} bytes a manifest may have",
            bytes.len(),
            MAX_MANIFEST_SIZE
        )));
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    if value.get("schemaVersion").and_then(|v| v.as_i64()) != Some(2) {
        return Err(bad(
            "unsupported schema version (Docker schema1 images are not supported)".into(),
        ));
    }
    let media_type = value.get("mediaType").and_then(|v| v.as_str());
    let is_index = match media_type {
        Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) => return Err(bad(format!("unsupported media type {other:?}"))),
        None => value.get("manifests").is_some(),
    };
    if is_index {
        let index = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        Ok(Manifest::Index(Box::new(index)))
    } else {
        let media_type = MediaType::from(media_type.unwrap_or(OCI_MANIFEST));
        let manifest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        Ok(Manifest::Image(Box::new(manifest), media_type))
    }
}

/// `text` with control characters (newlines, escapes) escaped, so that text from a
/// registry cannot break an error message over lines or into terminal control codes.
fn one_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Picks the manifest for `wanted` from an index, skipping attestation manifests
/// (BuildKit's `vnd.docker.reference.type=attestation-manifest`, platform
/// `unknown/unknown`). The error lists the platforms the index does offer.
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    wanted: &Platform,
    reference: &str,
) -> Result<&'a Descriptor, SourceError> {
    let images = index.manifests().iter().filter(|d| !is_attestation(d));
    let mut available = Vec::new();
    for descriptor in images {
        let Some(platform) = descriptor.platform() else {
            continue;
        };
        let (os, arch) = (
            platform.os().to_string(),
            platform.architecture().to_string(),
        );
        let variant = platform.variant().as_deref();
        if wanted.matches(&os, &arch, variant) {
            return Ok(descriptor);
        }
        available.push(match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        });
    }
    Err(SourceError::NoMatchingPlatform {
        reference: reference.to_owned(),
        wanted: wanted.clone(),
        available,
    })
}

fn is_attestation(descriptor: &Descriptor) -> bool {
    let annotated = descriptor.annotations().as_ref().is_some_and(|a| {
        a.get("vnd.docker.reference.type")
            .is_some_and(|t| t == "attestation-manifest")
    });
    let unknown = descriptor
        .platform()
        .as_ref()
        .is_some_and(|p| p.os().to_string() == "unknown");
    annotated || unknown
}

pub use crate::digest::sha256_digest;

/// Checks that bytes hash to `digest` (sha256 only).
pub fn verify_bytes(digest: &Digest, bytes: &[u8]) -> Result<(), SourceError> {
    let actual = sha256_digest(bytes);
    if &actual != digest {
        return Err(SourceError::DigestMismatch {
            digest: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &str) -> ImageIndex {
        let text =
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{entries}]}}"#);
        match parse_manifest(&sha256_digest(text.as_bytes()), text.as_bytes()).unwrap() {
            Manifest::Index(index) => *index,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn entry(n: u8, os: &str, arch: &str, variant: Option<&str>, extra: &str) -> String {
        let variant = variant
            .map(|v| format!(r#","variant":"{v}""#))
            .unwrap_or_default();
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","size":100,"digest":"sha256:{}",
               "platform":{{"os":"{os}","architecture":"{arch}"{variant}}}{extra}}}"#,
            format!("{n:x}").repeat(64)
        )
    }

    #[test]
    fn platform_parse_and_display() {
        let p: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(p.variant.as_deref(), Some("v7"));
        assert_eq!(p.to_string(), "linux/arm/v7");
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            let err = bad.parse::<Platform>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn selects_the_wanted_platform_and_skips_attestations() {
        let index = index(
            &[
                entry(1, "unknown", "unknown", None, ""),
                entry(
                    2,
                    "linux",
                    "amd64",
                    None,
                    r#","annotations":{"vnd.docker.reference.type":"attestation-manifest"}"#,
                ),
                entry(3, "linux", "amd64", None, ""),
                entry(4, "linux", "arm", Some("v7"), ""),
                entry(5, "linux", "arm64", Some("v8"), ""),
            ]
            .join(","),
        );
        let pick = |p: &str| {
            select_platform(&index, &p.parse().unwrap(), "r")
                .unwrap()
                .digest()
                .digest()
                .chars()
                .next()
                .unwrap()
        };
        assert_eq!(pick("linux/amd64"), '3');
        assert_eq!(pick("linux/arm/v7"), '4');
        assert_eq!(pick("linux/arm"), '4');
        assert_eq!(pick("linux/arm64"), '5');
        let err = select_platform(&index, &"linux/s390x".parse().unwrap(), "reg/img:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux/s390x"), "{err}");
        assert!(err.contains("reg/img:1"), "{err}");
        assert!(
            err.contains("available: linux/amd64, linux/arm/v7, linux/arm64/v8"),
            "{err}"
        );
        assert!(
            select_platform(&index, &"linux/arm/v6".parse().unwrap(), "r").is_err(),
            "a different variant must not match"
        );
    }

    #[test]
    fn recognises_docker_and_oci_manifests() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
               "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,
                          "digest":"sha256:{a}"}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip",
                          "size":3,"digest":"sha256:{a}"}}]}}"#,
            a = "a".repeat(64)
        );
        match parse_manifest(&sha256_digest(docker.as_bytes()), docker.as_bytes()).unwrap() {
            Manifest::Image(m, media_type) => {
                assert_eq!(media_type.to_string(), DOCKER_MANIFEST);
                assert_eq!(m.layers().len(), 1);
            }
            other => panic!("{other:?}"),
        }
        let list =
            format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[]}}"#);
        assert!(matches!(
            parse_manifest(&sha256_digest(list.as_bytes()), list.as_bytes()).unwrap(),
            Manifest::Index(_)
        ));
        let schema1 = br#"{"schemaVersion":1,"name":"x"}"#;
        let err = parse_manifest(&sha256_digest(schema1), schema1).unwrap_err();
        assert!(err.to_string().contains("schema1"), "{err}");
    }

    #[test]
    fn verify_bytes_names_both_digests() {
        let expected = sha256_digest(b"a");
        let err = verify_bytes(&expected, b"b").unwrap_err().to_string();
        assert!(err.contains(&expected.to_string()), "{err}");
        assert!(err.contains(&sha256_digest(b"b").to_string()), "{err}");
        verify_bytes(&expected, b"a").unwrap();
    }
}
