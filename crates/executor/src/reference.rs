//! Image references: where an image comes from, parsed and normalized.
//!
//! Two kinds of source exist. A registry reference follows Docker's grammar and is
//! normalized the way podman and docker do it when no short-name aliases are
//! configured: `busybox` becomes `docker.io/library/busybox:latest`. A local OCI image
//! layout (the directory `skopeo copy ... oci:DIR` writes) is named
//! `oci-layout:PATH[:TAG|@DIGEST]`, so that images can run with no registry at all.
//!
//! This module does no I/O except turning a relative layout path into an absolute one.

use oci_spec::distribution::Reference;
use oci_spec::image::Digest;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The prefix that marks a local OCI image layout source.
pub const LAYOUT_PREFIX: &str = "oci-layout:";

/// Errors from parsing an image reference.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The registry reference does not follow Docker's reference grammar.
    #[error("invalid image reference {reference:?}")]
    Invalid {
        /// The text as given.
        reference: String,
        /// What the parser objected to.
        #[source]
        source: oci_spec::distribution::ParseError,
    },
    /// The reference is empty.
    #[error("empty image reference")]
    Empty,
    /// An `oci-layout:` source names no directory.
    #[error("invalid image reference {reference:?}: the OCI layout path is empty")]
    EmptyLayoutPath {
        /// The text as given.
        reference: String,
    },
    /// An `oci-layout:` source has a malformed `@DIGEST` part.
    #[error("invalid image reference {reference:?}: bad digest {digest:?}: {reason}")]
    LayoutDigest {
        /// The text as given.
        reference: String,
        /// The digest part.
        digest: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An `oci-layout:` path without a tag or digest that would read back differently
    /// (it has `@`, or a `:` after its last `/`), or that holds control characters or
    /// ends in white space.
    #[error(
        "invalid image reference {reference:?}: the OCI layout path {path:?} is ambiguous or invalid; name the image with :TAG or @DIGEST"
    )]
    LayoutPathAmbiguous {
        /// The text as given.
        reference: String,
        /// The absolute path it resolved to.
        path: PathBuf,
    },
    /// An `oci-layout:` source has a malformed `:TAG` part.
    #[error("invalid image reference {reference:?}: bad tag {tag:?}")]
    LayoutTag {
        /// The text as given.
        reference: String,
        /// The tag part.
        tag: String,
    },
    /// The current directory is needed to make a relative layout path absolute.
    #[error("cannot make OCI layout path {path} absolute")]
    LayoutPath {
        /// The path as given.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Which image inside an OCI image layout is meant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LayoutTarget {
    /// No tag or digest given: the layout's index must hold exactly one image.
    Only,
    /// The image whose `org.opencontainers.image.ref.name` annotation equals this tag.
    Tag(String),
    /// The manifest (or index) with this digest.
    Digest(Digest),
}

/// Where an image comes from: a registry or a local OCI image layout.
///
/// `Display` gives the normalized form, which the content store uses as the image's key
/// (`docker.io/library/busybox:latest`, `oci-layout:/abs/dir:tag`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageSource {
    /// An image in a registry. When the text named both a tag and a digest, the digest
    /// wins and the tag is dropped (what is pulled is then exactly that digest).
    Registry(Reference),
    /// An image in an OCI image layout directory.
    Layout {
        /// The layout directory, absolute (not canonicalized: symlinks are kept).
        path: PathBuf,
        /// Which image in the layout.
        tag_or_digest: LayoutTarget,
    },
}

impl ImageSource {
    /// Parses and normalizes an image reference.
    ///
    /// Caveat for layouts: a path that itself contains `:` or `@` must be given with an
    /// explicit tag or digest, because the last `:`/`@` separates it.
    pub fn parse(text: &str) -> Result<ImageSource, ReferenceError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ReferenceError::Empty);
        }
        match text.strip_prefix(LAYOUT_PREFIX) {
            Some(rest) => parse_layout(text, rest),
            None => parse_registry(text),
        }
    }

    /// The registry reference, if this is a registry source.
    pub fn registry_reference(&self) -> Option<&Reference> {
        match self {
            ImageSource::Registry(reference) => Some(reference),
            ImageSource::Layout { .. } => None,
        }
    }
}

impl FromStr for ImageSource {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageSource::parse(s)
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageSource::Registry(reference) => write!(f, "{reference}"),
            ImageSource::Layout {
                path,
                tag_or_digest,
            } => {
                write!(f, "{LAYOUT_PREFIX}{}", path.display())?;
                match tag_or_digest {
                    LayoutTarget::Only => Ok(()),
                    LayoutTarget::Tag(tag) => write!(f, ":{tag}"),
                    LayoutTarget::Digest(digest) => write!(f, "@{digest}"),
                }
            }
        }
    }
}

fn parse_registry(text: &str) -> Result<ImageSource, ReferenceError> {
    let invalid = |source| ReferenceError::Invalid {
        reference: text.to_owned(),
        source,
    };
    let reference = match fast_parse(text) {
        Some(reference) => reference,
        None => Reference::try_from(text).map_err(invalid)?,
    };
    // The grammar lets a first component without `.`/`:` carry uppercase letters and
    // then files it under docker.io as part of the repository, which no registry
    // accepts (and the normalized text would not parse back). Docker would take such a
    // component for a registry host; refusing it is clearer. Found by fuzzing.
    if reference
        .repository()
        .chars()
        .any(|c| c.is_ascii_uppercase())
    {
        return Err(invalid(
            oci_spec::distribution::ParseError::NameContainsUppercase,
        ));
    }
    // `Reference` accepts a digest of any supported algorithm by its length only; the
    // store keys blobs by `oci_spec` digests, so make sure it parses as one too.
    if let Some(digest) = reference.digest() {
        Digest::from_str(digest)
            .map_err(|_| invalid(oci_spec::distribution::ParseError::DigestInvalidFormat))?;
        // Digest wins over tag: `repo:tag@sha256:...` pulls exactly that digest.
        if reference.tag().is_some() {
            return Ok(ImageSource::Registry(Reference::with_digest(
                reference.registry().to_owned(),
                reference.repository().to_owned(),
                digest.to_owned(),
            )));
        }
    }
    Ok(ImageSource::Registry(reference))
}

/// Parses the common forms of a registry reference (`[host[:port]/]path[:tag][@sha256:hex]`,
/// lowercase ASCII path components) without `Reference::try_from`, whose regex takes some
/// 30 ms to compile: a tenth of a warm `executor run`. Returns `None` for anything else,
/// which then takes the regex path; where it returns a reference, it is the one the regex
/// path gives (see the tests).
fn fast_parse(text: &str) -> Option<Reference> {
    let (name_tag, digest) = match text.split_once('@') {
        Some((name_tag, digest)) => {
            let hex = digest.strip_prefix("sha256:")?;
            let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
            if hex.len() != 64 || !hex.bytes().all(lower_hex) {
                return None;
            }
            (name_tag, Some(digest))
        }
        None => (text, None),
    };
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => {
            let (name, tag) = name_tag.split_at(last_slash + i);
            (name, Some(&tag[1..]))
        }
        None => (name_tag, None),
    };
    if let Some(tag) = tag {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let bytes = tag.as_bytes();
        if bytes.is_empty()
            || bytes.len() > 128
            || !word(bytes[0])
            || !bytes.iter().all(|b| word(*b) || *b == b'.' || *b == b'-')
        {
            return None;
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let domain = match parts.as_slice() {
        [first, _, ..] if first.contains(['.', ':']) || *first == "localhost" => {
            if !is_host(first) {
                return None;
            }
            let first = parts.remove(0);
            if first == "index.docker.io" {
                "docker.io"
            } else {
                first
            }
        }
        _ => "docker.io",
    };
    if !parts.iter().all(|p| is_path_component(p)) {
        return None;
    }
    let mut repository = parts.join("/");
    if domain == "docker.io" && parts.len() == 1 {
        repository = format!("library/{repository}");
    }
    if repository.len() > 255 {
        return None;
    }
    let (domain, repository) = (domain.to_owned(), repository);
    Some(match (tag, digest) {
        (None, None) => Reference::with_tag(domain, repository, "latest".to_owned()),
        (Some(tag), None) => Reference::with_tag(domain, repository, tag.to_owned()),
        (None, Some(digest)) => Reference::with_digest(domain, repository, digest.to_owned()),
        (Some(_), Some(_)) => return None,
    })
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn is_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(&bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(&bytes[i]) {
            i += 1;
        }
        let sep = &part[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

/// `label(.label)*(:port)?`, labels of ASCII letters, digits and inner `-`.
fn is_host(host: &str) -> bool {
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    name.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

fn parse_layout(text: &str, rest: &str) -> Result<ImageSource, ReferenceError> {
    let (path, target) = if let Some((path, digest)) = rest.rsplit_once('@') {
        let parsed = Digest::from_str(digest).map_err(|e| ReferenceError::LayoutDigest {
            reference: text.to_owned(),
            digest: digest.to_owned(),
            reason: e.to_string(),
        })?;
        (path, LayoutTarget::Digest(parsed))
    } else {
        match rest.rsplit_once(':') {
            // A `:` followed by a `/` belongs to the path, not to a tag.
            Some((path, tag)) if !tag.contains('/') => {
                if !valid_tag(tag) {
                    return Err(ReferenceError::LayoutTag {
                        reference: text.to_owned(),
                        tag: tag.to_owned(),
                    });
                }
                (path, LayoutTarget::Tag(tag.to_owned()))
            }
            _ => (rest, LayoutTarget::Only),
        }
    };
    if path.is_empty() {
        return Err(ReferenceError::EmptyLayoutPath {
            reference: text.to_owned(),
        });
    }
    let path = std::path::absolute(path).map_err(|source| ReferenceError::LayoutPath {
        path: PathBuf::from(path),
        source,
    })?;
    // The normalized form must parse back to the same source (it keys the store): a bare
    // path whose absolute form ends in `:x` or holds `@` would read as a tag or digest.
    // Found by fuzzing.
    let printed = path.to_string_lossy();
    let ambiguous = matches!(target, LayoutTarget::Only)
        && (printed.contains('@')
            || printed
                .rsplit_once(':')
                .is_some_and(|(_, after)| !after.contains('/')));
    // Control characters and trailing white space would not survive either (references
    // are trimmed), and no sane layout directory has them.
    let garbled = printed.chars().any(char::is_control) || printed.trim_end() != printed;
    if ambiguous || garbled {
        return Err(ReferenceError::LayoutPathAmbiguous {
            reference: text.to_owned(),
            path,
        });
    }
    Ok(ImageSource::Layout {
        path,
        tag_or_digest: target,
    })
}

/// A tag as the distribution grammar allows: `[\w][\w.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    first_ok
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn fast_parse_agrees_with_the_regex() {
        let digest = format!("sha256:{}", "a1".repeat(32));
        let inputs = [
            "busybox".to_owned(),
            "busybox:1.36".to_owned(),
            "library/busybox".to_owned(),
            "docker.io/busybox".to_owned(),
            "index.docker.io/library/busybox:latest".to_owned(),
            "quay.io/org/sub/repo:v1.2-rc_3".to_owned(),
            "127.0.0.1:5000/bench/large:v1".to_owned(),
            "localhost/x".to_owned(),
            "localhost:5000/a__b/c---d/e.f".to_owned(),
            "my-registry.example.com:443/team/runner".to_owned(),
            format!("registry.local/repo@{digest}"),
            format!("repo@{digest}"),
            "test.com:5000".to_owned(),
            "a/b/c/d/e/f".to_owned(),
        ];
        for input in &inputs {
            let fast = fast_parse(input).unwrap_or_else(|| panic!("{input}: no fast parse"));
            assert_eq!(
                Some(fast),
                Reference::try_from(input.as_str()).ok(),
                "{input}"
            );
        }
        // Outside the fast path: the regex decides.
        let others = [
            "Upper/case".to_owned(),
            "a..b".to_owned(),
            "a/-b".to_owned(),
            "a/b_".to_owned(),
            "-host.com/x".to_owned(),
            "host.com:/x".to_owned(),
            "x:".to_owned(),
            "x:-tag".to_owned(),
            format!("x:t@{digest}"),
            format!("x@sha512:{}", "a".repeat(128)),
            "x@sha256:ABC".to_owned(),
            "a/b:t/c".to_owned(),
            "xn--bcher-kva.example/ä".to_owned(),
        ];
        for input in &others {
            assert_eq!(fast_parse(input), None, "{input}");
        }
    }

    fn normalized(text: &str) -> String {
        ImageSource::parse(text).unwrap().to_string()
    }

    #[test]
    fn short_names_normalize_like_podman() {
        assert_eq!(normalized("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalized("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(normalized("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            normalized("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn registry_host_and_port_are_kept() {
        let source = ImageSource::parse("127.0.0.1:5000/runners/argo:v1").unwrap();
        let reference = source.registry_reference().unwrap();
        assert_eq!(reference.registry(), "127.0.0.1:5000");
        assert_eq!(reference.repository(), "runners/argo");
        assert_eq!(reference.tag(), Some("v1"));
        assert_eq!(normalized("localhost/app"), "localhost/app:latest");
        assert_eq!(normalized("quay.io/a/b"), "quay.io/a/b:latest");
    }

    #[test]
    fn digest_wins_over_tag() {
        assert_eq!(
            normalized(&format!("busybox@{DIGEST}")),
            format!("docker.io/library/busybox@{DIGEST}")
        );
        let source = ImageSource::parse(&format!("busybox:1.36@{DIGEST}")).unwrap();
        let reference = source.registry_reference().unwrap();
        assert_eq!(reference.tag(), None);
        assert_eq!(reference.digest(), Some(DIGEST));
        assert_eq!(
            source.to_string(),
            format!("docker.io/library/busybox@{DIGEST}")
        );
    }

    #[test]
    fn invalid_references_are_rejected_with_the_text() {
        for bad in [
            "Busybox",
            "busybox:",
            "busybox@sha256:abc",
            "busybox@md5:0123456789abcdef0123456789abcdef",
            "a b",
            "-x/y",
        ] {
            let err = ImageSource::parse(bad).unwrap_err();
            assert!(
                err.to_string().contains(bad),
                "error for {bad:?} does not name it: {err}"
            );
        }
        assert!(matches!(
            ImageSource::parse("  "),
            Err(ReferenceError::Empty)
        ));
    }

    #[test]
    fn layout_sources() {
        let only = ImageSource::parse("oci-layout:/srv/images/argo").unwrap();
        assert_eq!(
            only,
            ImageSource::Layout {
                path: "/srv/images/argo".into(),
                tag_or_digest: LayoutTarget::Only
            }
        );
        assert_eq!(only.to_string(), "oci-layout:/srv/images/argo");

        let tagged = ImageSource::parse("oci-layout:/srv/argo:v1.2").unwrap();
        assert_eq!(tagged.to_string(), "oci-layout:/srv/argo:v1.2");
        assert!(matches!(
            tagged,
            ImageSource::Layout { tag_or_digest: LayoutTarget::Tag(ref t), .. } if t == "v1.2"
        ));

        let pinned = ImageSource::parse(&format!("oci-layout:/srv/argo@{DIGEST}")).unwrap();
        assert_eq!(pinned.to_string(), format!("oci-layout:/srv/argo@{DIGEST}"));
        assert!(pinned.registry_reference().is_none());
    }

    #[test]
    fn relative_layout_paths_become_absolute() {
        let source = ImageSource::parse("oci-layout:images/argo:latest").unwrap();
        let ImageSource::Layout { path, .. } = source else {
            panic!("not a layout source");
        };
        assert!(path.is_absolute());
        assert!(path.ends_with("images/argo"));
    }

    #[test]
    fn bad_layout_sources_are_rejected() {
        assert!(matches!(
            ImageSource::parse("oci-layout:"),
            Err(ReferenceError::EmptyLayoutPath { .. })
        ));
        assert!(matches!(
            ImageSource::parse("oci-layout::tag"),
            Err(ReferenceError::EmptyLayoutPath { .. })
        ));
        let err = ImageSource::parse("oci-layout:/x@sha256:nothex").unwrap_err();
        assert!(err.to_string().contains("sha256:nothex"), "{err}");
        let err = ImageSource::parse("oci-layout:/x:bad!tag").unwrap_err();
        assert!(err.to_string().contains("bad!tag"), "{err}");
    }
}
