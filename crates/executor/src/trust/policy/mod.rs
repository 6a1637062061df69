//! `containers-policy.json(5)`: which images to trust, as podman and CRI-O read it.
//!
//! A policy maps each image to a list of requirements, all of which must hold: the most
//! specific scope of the image's transport wins (`docker`: `host/repo:tag`, `host/repo`,
//! its namespaces, `host`, then `*.domain` wildcards; `oci`: `DIR:TAG`, `DIR`, its
//! parent directories), then the transport's `""` entry, then `default`. The parser is
//! as strict as podman's: an unknown field, requirement type or transport is an error
//! naming it and the file, because a typo in a trust policy must not silently accept.
//! This module is pure data: reading keys and signatures is [`super`]'s. Parsing one
//! requirement is in `requirement.rs`, scopes in `scope.rs`, reference names in
//! `name.rs`.

use crate::reference::ImageSource;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod name;
mod requirement;
mod scope;

pub use name::{DockerName, image_name, parse_docker_reference};
use requirement::requirements;
use scope::{check_scope, docker_scopes, oci_scopes};

/// Errors in a policy file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read signature policy {path}: {source}")]
    Read {
        /// The policy file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error("invalid signature policy {path}: {reason}")]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// What is wrong, naming the field, requirement or scope.
        reason: String,
    },
}

/// A parsed policy file.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file it was read from, for messages.
    pub path: PathBuf,
    default: Vec<Requirement>,
    /// Scopes per transport (`docker`, `oci`); other transports podman knows are parsed
    /// and checked, then kept here too although the executor never reads through them.
    transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

/// One requirement on an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// Anything is accepted, signed or not.
    InsecureAcceptAnything,
    /// Nothing is accepted.
    Reject,
    /// GPG simple signing (`signedBy`): parsed so that a policy written for podman
    /// loads, refused when it would apply (the executor verifies sigstore signatures only).
    SignedBy,
    /// A cosign (sigstore) signature by one of the keys.
    SigstoreSigned {
        /// The public keys, any of which may have signed.
        keys: Vec<KeySource>,
        /// Which signed identity is accepted for the image.
        identity: SignedIdentity,
    },
}

/// Where a public key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A PEM file (`keyPath`, `keyPaths`).
    Path(PathBuf),
    /// PEM bytes, given base64-encoded in the policy (`keyData`, `keyDatas`).
    Data(Vec<u8>),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Path(path) => write!(f, "{}", path.display()),
            KeySource::Data(_) => f.write_str("keyData"),
        }
    }
}

/// The `signedIdentity` rules: how the signature's `docker-reference` must relate to
/// the image being pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    /// The default: for an image pulled by digest the repositories match; by tag, the
    /// references match exactly.
    MatchRepoDigestOrExact,
    /// The references match exactly (a pull by digest never matches).
    MatchExact,
    /// The repositories match, whatever the tag.
    MatchRepository,
    /// The signature names exactly this reference.
    ExactReference(String),
    /// The signature names this repository (any tag or digest).
    ExactRepository(String),
    /// The image's reference with `prefix` replaced by `signed_prefix`, then as
    /// [`SignedIdentity::MatchRepoDigestOrExact`] (mirrors re-hosting signed images).
    RemapIdentity {
        /// The prefix of the pulled image's reference.
        prefix: String,
        /// What the signatures name instead.
        signed_prefix: String,
    },
}

/// The transports a policy may name (those of containers/image): only `docker` and
/// `oci` apply to the executor, the others are accepted so that a podman policy loads.
const KNOWN_TRANSPORTS: [&str; 11] = [
    "docker",
    "oci",
    "atomic",
    "containers-storage",
    "dir",
    "docker-archive",
    "docker-daemon",
    "oci-archive",
    "ostree",
    "sif",
    "tarball",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    default: Vec<serde_json::Value>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<serde_json::Value>>>,
}

impl Policy {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let data = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Policy::parse(path, &data)
    }

    /// Parses a policy; `path` names it in errors.
    pub fn parse(path: &Path, data: &[u8]) -> Result<Policy, PolicyError> {
        let invalid = |reason: String| PolicyError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let file: PolicyFile = serde_json::from_slice(data).map_err(|e| invalid(e.to_string()))?;
        if file.default.is_empty() {
            return Err(invalid(
                "\"default\" is empty: it needs at least one requirement".into(),
            ));
        }
        let default = requirements(&file.default, "default").map_err(invalid)?;
        let mut transports = BTreeMap::new();
        for (transport, scopes) in file.transports {
            if !KNOWN_TRANSPORTS.contains(&transport.as_str()) {
                return Err(invalid(format!("unknown transport {transport:?}")));
            }
            let mut parsed = BTreeMap::new();
            for (scope, list) in scopes {
                let place = format!("transports.{transport}.{scope:?}");
                if list.is_empty() {
                    return Err(invalid(format!("{place} has no requirements")));
                }
                check_scope(&transport, &scope).map_err(|e| invalid(format!("{place}: {e}")))?;
                parsed.insert(scope, requirements(&list, &place).map_err(invalid)?);
            }
            transports.insert(transport, parsed);
        }
        Ok(Policy {
            path: path.to_owned(),
            default,
            transports,
        })
    }

    /// The requirements for `image`: those of its most specific scope.
    pub fn requirements_for(&self, image: &ImageSource) -> &[Requirement] {
        let (transport, candidates) = match image {
            ImageSource::Registry(reference) => ("docker", docker_scopes(reference)),
            ImageSource::Layout {
                path,
                tag_or_digest,
            } => ("oci", oci_scopes(path, tag_or_digest)),
        };
        let Some(scopes) = self.transports.get(transport) else {
            return &self.default;
        };
        candidates
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(""))
            .find_map(|scope| scopes.get(scope))
            .map_or(&self.default, Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("/etc/containers/policy.json"), text.as_bytes())
    }

    fn image(text: &str) -> ImageSource {
        ImageSource::parse(text).unwrap()
    }

    const SIGNED: &str = r#"{"type": "sigstoreSigned", "keyPath": "/k.pub"}"#;

    #[test]
    fn the_most_specific_scope_wins() {
        let p = policy(&format!(
            r#"{{"default": [{{"type": "reject"}}],
               "transports": {{"docker": {{
                 "reg.example.com/team/app:v1": [{{"type": "insecureAcceptAnything"}}],
                 "reg.example.com/team": [{SIGNED}],
                 "*.example.com": [{{"type": "reject"}}, {{"type": "reject"}}],
                 "": [{{"type": "insecureAcceptAnything"}}]
               }}}}}}"#
        ))
        .unwrap();
        let accept = [Requirement::InsecureAcceptAnything];
        assert_eq!(
            p.requirements_for(&image("reg.example.com/team/app:v1")),
            accept
        );
        assert!(matches!(
            p.requirements_for(&image("reg.example.com/team/app:v2")),
            [Requirement::SigstoreSigned { .. }]
        ));
        assert!(matches!(
            p.requirements_for(&image("reg.example.com/team/sub/app@sha256:0000000000000000000000000000000000000000000000000000000000000000")),
            [Requirement::SigstoreSigned { .. }]
        ));
        assert_eq!(p.requirements_for(&image("a.example.com/x")).len(), 2);
        assert_eq!(p.requirements_for(&image("busybox")), accept);
        assert_eq!(
            p.requirements_for(&image("oci-layout:/srv/layout:v1")),
            [Requirement::Reject]
        );
    }

    #[test]
    fn oci_scopes_are_directories() {
        let p = policy(&format!(
            r#"{{"default": [{{"type": "insecureAcceptAnything"}}],
               "transports": {{"oci": {{"/srv/images": [{SIGNED}], "/srv/images/a:v2": [{{"type": "reject"}}]}}}}}}"#
        ))
        .unwrap();
        assert!(matches!(
            p.requirements_for(&image("oci-layout:/srv/images/a:v1")),
            [Requirement::SigstoreSigned { .. }]
        ));
        assert_eq!(
            p.requirements_for(&image("oci-layout:/srv/images/a:v2")),
            [Requirement::Reject]
        );
        assert_eq!(
            p.requirements_for(&image("oci-layout:/srv/other:v1")),
            [Requirement::InsecureAcceptAnything]
        );
    }

    #[test]
    fn strictness_names_what_is_wrong() {
        let cases = [
            (r#"{"default": []}"#, "\"default\" is empty"),
            (
                r#"{"default": [{"type": "reject"}], "extra": 1}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"default": [{"type": "rejectt"}]}"#,
                "unknown requirement type \"rejectt\"",
            ),
            (
                r#"{"default": [{"type": "reject", "keyPath": "/k"}]}"#,
                "default[0]: reject: unknown field `keyPath`",
            ),
            (
                r#"{"default": [{"type": "sigstoreSigned", "keyPth": "/k"}]}"#,
                "unknown field `keyPth`",
            ),
            (
                r#"{"default": [{"type": "sigstoreSigned"}]}"#,
                "exactly one of keyPath",
            ),
            (
                r#"{"default": [{"type": "sigstoreSigned", "keyPath": "/k", "keyData": "AA=="}]}"#,
                "exactly one of keyPath",
            ),
            (
                r#"{"default": [{"type": "sigstoreSigned", "keyPath": "/k", "signedIdentity": {"type": "matchAll"}}]}"#,
                "unknown signedIdentity type \"matchAll\"",
            ),
            (
                r#"{"default": [{"type": "sigstoreSigned", "keyPath": "/k", "signedIdentity": {"type": "exactReference", "dockerReference": "docker.io/a/b"}}]}"#,
                "needs a tag or digest",
            ),
            (
                r#"{"default": [{"type": "sigstoreSigned", "keyPath": "/k", "fulcio": {}}]}"#,
                "keyless",
            ),
            (
                r#"{"default": [{"type": "reject"}], "transports": {"dockr": {}}}"#,
                "unknown transport \"dockr\"",
            ),
            (
                r#"{"default": [{"type": "reject"}], "transports": {"docker": {"busybox": [{"type": "reject"}]}}}"#,
                "does not start with a registry host",
            ),
            (
                r#"{"default": [{"type": "reject"}], "transports": {"docker": {"*.a/b": [{"type": "reject"}]}}}"#,
                "not a valid wildcard",
            ),
            (
                r#"{"default": [{"type": "reject"}], "transports": {"oci": {"rel/dir": [{"type": "reject"}]}}}"#,
                "absolute directory",
            ),
            (r#"{"default": [{"type": "reject"}"#, "EOF"),
        ];
        for (text, expected) in cases {
            let err = policy(text).unwrap_err().to_string();
            assert!(
                err.starts_with("invalid signature policy /etc/containers/policy.json: ")
                    && err.contains(expected),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn podmans_default_policy_loads() {
        // /etc/containers/policy.json as Debian's golang-github-containers-common ships it.
        let p = policy(
            r#"{"default": [{"type": "insecureAcceptAnything"}],
                "transports": {"docker-daemon": {"": [{"type": "insecureAcceptAnything"}]}}}"#,
        )
        .unwrap();
        assert_eq!(
            p.requirements_for(&image("busybox")),
            [Requirement::InsecureAcceptAnything]
        );
    }

    #[test]
    fn identities_and_keys_parse() {
        let p = policy(
            r#"{"default": [{"type": "sigstoreSigned", "keyDatas": ["LS0t", "LS0tLQ=="],
                 "signedIdentity": {"type": "remapIdentity", "prefix": "mirror.local/hub", "signedPrefix": "docker.io/library"}}]}"#,
        )
        .unwrap();
        let [Requirement::SigstoreSigned { keys, identity }] = p.requirements_for(&image("x.io/a"))
        else {
            panic!("not one sigstoreSigned requirement");
        };
        assert_eq!(
            keys,
            &[
                KeySource::Data(b"---".to_vec()),
                KeySource::Data(b"----".to_vec())
            ]
        );
        assert_eq!(
            identity,
            &SignedIdentity::RemapIdentity {
                prefix: "mirror.local/hub".into(),
                signed_prefix: "docker.io/library".into()
            }
        );
    }
}
