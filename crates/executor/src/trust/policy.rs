//! `containers-policy.json(5)`: which images to trust, as podman and CRI-O read it.
//!
//! A policy maps each image to a list of requirements, all of which must hold: the most
//! specific scope of the image's transport wins (`docker`: `host/repo:tag`, `host/repo`,
//! its namespaces, `host`, then `*.domain` wildcards; `oci`: `DIR:TAG`, `DIR`, its
//! parent directories), then the transport's `""` entry, then `default`. The parser is
//! as strict as podman's: an unknown field, requirement type or transport is an error
//! naming it and the file, because a typo in a trust policy must not silently accept.
//! This module is pure data: reading keys and signatures is [`super`]'s.

use crate::reference::{ImageSource, LayoutTarget};
use oci_spec::distribution::Reference;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SigstoreFields {
    key_path: Option<PathBuf>,
    key_paths: Option<Vec<PathBuf>>,
    key_data: Option<String>,
    key_datas: Option<Vec<String>>,
    fulcio: Option<serde_json::Value>,
    pki: Option<serde_json::Value>,
    rekor_public_key_path: Option<PathBuf>,
    rekor_public_key_paths: Option<Vec<PathBuf>>,
    rekor_public_key_data: Option<String>,
    rekor_public_key_datas: Option<Vec<String>>,
    signed_identity: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SignedByFields {
    key_type: String,
    key_path: Option<PathBuf>,
    key_paths: Option<Vec<PathBuf>>,
    key_data: Option<String>,
    signed_identity: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceField {
    #[serde(rename = "dockerReference")]
    docker_reference: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepositoryField {
    #[serde(rename = "dockerRepository")]
    docker_repository: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemapFields {
    prefix: String,
    #[serde(rename = "signedPrefix")]
    signed_prefix: String,
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

/// Parses a list of requirements; errors name `place` and the requirement's index.
fn requirements(list: &[serde_json::Value], place: &str) -> Result<Vec<Requirement>, String> {
    list.iter()
        .enumerate()
        .map(|(i, value)| requirement(value).map_err(|e| format!("{place}[{i}]: {e}")))
        .collect()
}

/// Splits `{"type": T, ...}` into T and the other fields.
fn typed(value: &serde_json::Value) -> Result<(String, serde_json::Value), String> {
    let mut object = value
        .as_object()
        .cloned()
        .ok_or_else(|| "not an object".to_owned())?;
    let kind = match object.remove("type") {
        Some(serde_json::Value::String(kind)) => kind,
        Some(_) => return Err("\"type\" is not a string".into()),
        None => return Err("missing field `type`".into()),
    };
    Ok((kind, serde_json::Value::Object(object)))
}

fn fields<T: serde::de::DeserializeOwned>(
    kind: &str,
    rest: serde_json::Value,
) -> Result<T, String> {
    serde_json::from_value(rest).map_err(|e| format!("{kind}: {e}"))
}

fn requirement(value: &serde_json::Value) -> Result<Requirement, String> {
    let (kind, rest) = typed(value)?;
    match kind.as_str() {
        "insecureAcceptAnything" => {
            fields::<NoFields>(&kind, rest)?;
            Ok(Requirement::InsecureAcceptAnything)
        }
        "reject" => {
            fields::<NoFields>(&kind, rest)?;
            Ok(Requirement::Reject)
        }
        "signedBy" => {
            let f: SignedByFields = fields(&kind, rest)?;
            let sources = usize::from(f.key_path.is_some())
                + usize::from(f.key_paths.is_some())
                + usize::from(f.key_data.is_some());
            if sources != 1 {
                return Err(
                    "signedBy: exactly one of keyPath, keyPaths and keyData is needed".into(),
                );
            }
            if f.key_type != "GPGKeys" {
                return Err(format!("signedBy: unknown keyType {:?}", f.key_type));
            }
            if let Some(identity) = &f.signed_identity {
                signed_identity(identity)?;
            }
            Ok(Requirement::SignedBy)
        }
        "sigstoreSigned" => sigstore(fields(&kind, rest)?),
        other => Err(format!("unknown requirement type {other:?}")),
    }
}

fn sigstore(f: SigstoreFields) -> Result<Requirement, String> {
    if f.fulcio.is_some() || f.pki.is_some() {
        return Err(
            "sigstoreSigned: fulcio and pki (keyless) are not supported; use keyPath, keyPaths or keyData"
                .into(),
        );
    }
    if f.rekor_public_key_path.is_some()
        || f.rekor_public_key_paths.is_some()
        || f.rekor_public_key_data.is_some()
        || f.rekor_public_key_datas.is_some()
    {
        return Err(
            "sigstoreSigned: rekorPublicKey* (transparency log proofs) are not supported".into(),
        );
    }
    let decode = |data: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("sigstoreSigned: keyData is not base64: {e}"))
    };
    let mut keys = Vec::new();
    let mut given = 0;
    if let Some(path) = f.key_path {
        given += 1;
        keys.push(KeySource::Path(path));
    }
    if let Some(paths) = f.key_paths {
        given += 1;
        if paths.is_empty() {
            return Err("sigstoreSigned: keyPaths is empty".into());
        }
        keys.extend(paths.into_iter().map(KeySource::Path));
    }
    if let Some(data) = f.key_data {
        given += 1;
        keys.push(KeySource::Data(decode(&data)?));
    }
    if let Some(datas) = f.key_datas {
        given += 1;
        if datas.is_empty() {
            return Err("sigstoreSigned: keyDatas is empty".into());
        }
        for data in datas {
            keys.push(KeySource::Data(decode(&data)?));
        }
    }
    if given != 1 {
        return Err(
            "sigstoreSigned: exactly one of keyPath, keyPaths, keyData and keyDatas is needed"
                .into(),
        );
    }
    let identity = match &f.signed_identity {
        Some(value) => signed_identity(value)?,
        None => SignedIdentity::MatchRepoDigestOrExact,
    };
    Ok(Requirement::SigstoreSigned { keys, identity })
}

fn signed_identity(value: &serde_json::Value) -> Result<SignedIdentity, String> {
    let (kind, rest) = typed(value).map_err(|e| format!("signedIdentity: {e}"))?;
    let place = format!("signedIdentity {kind}");
    Ok(match kind.as_str() {
        "matchRepoDigestOrExact" => {
            fields::<NoFields>(&place, rest)?;
            SignedIdentity::MatchRepoDigestOrExact
        }
        "matchExact" => {
            fields::<NoFields>(&place, rest)?;
            SignedIdentity::MatchExact
        }
        "matchRepository" => {
            fields::<NoFields>(&place, rest)?;
            SignedIdentity::MatchRepository
        }
        "exactReference" => {
            let f: ReferenceField = fields(&place, rest)?;
            let parsed =
                parse_docker_reference(&f.docker_reference).map_err(|e| format!("{place}: {e}"))?;
            if !explicitly_tagged_or_digested(&f.docker_reference) {
                return Err(format!(
                    "{place}: {:?} needs a tag or digest",
                    f.docker_reference
                ));
            }
            SignedIdentity::ExactReference(parsed.whole())
        }
        "exactRepository" => {
            let f: RepositoryField = fields(&place, rest)?;
            let parsed = parse_docker_reference(&f.docker_repository)
                .map_err(|e| format!("{place}: {e}"))?;
            SignedIdentity::ExactRepository(parsed.repository)
        }
        "remapIdentity" => {
            let f: RemapFields = fields(&place, rest)?;
            for prefix in [&f.prefix, &f.signed_prefix] {
                check_docker_scope(prefix).map_err(|e| format!("{place}: {e}"))?;
            }
            SignedIdentity::RemapIdentity {
                prefix: f.prefix,
                signed_prefix: f.signed_prefix,
            }
        }
        other => return Err(format!("unknown signedIdentity type {other:?}")),
    })
}

/// A docker reference split the way identity rules compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerName {
    /// `host/path`, normalized (`docker.io/library/busybox`).
    pub repository: String,
    /// `:tag` or `@digest`, when the text named one.
    pub suffix: Option<String>,
}

impl DockerName {
    /// The whole reference: repository and suffix.
    pub fn whole(&self) -> String {
        format!(
            "{}{}",
            self.repository,
            self.suffix.as_deref().unwrap_or("")
        )
    }
}

/// Parses a reference the way podman normalizes it, keeping whether it named a tag or
/// digest (`busybox` is `docker.io/library/busybox`, with no suffix).
pub fn parse_docker_reference(text: &str) -> Result<DockerName, String> {
    let parsed = match ImageSource::parse(text) {
        Ok(ImageSource::Registry(reference)) => reference,
        Ok(ImageSource::Layout { .. }) => {
            return Err(format!("{text:?} is not a docker reference"));
        }
        Err(e) => return Err(e.to_string()),
    };
    let repository = format!("{}/{}", parsed.registry(), parsed.repository());
    let suffix = if !explicitly_tagged_or_digested(text) {
        None
    } else if let Some(digest) = parsed.digest() {
        Some(format!("@{digest}"))
    } else {
        parsed.tag().map(|tag| format!(":{tag}"))
    };
    Ok(DockerName { repository, suffix })
}

/// Whether reference text names a tag or digest itself (not the implied `:latest`).
fn explicitly_tagged_or_digested(text: &str) -> bool {
    text.contains('@')
        || text
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
}

/// The name of a pulled registry image as the identity rules see it.
pub fn image_name(reference: &Reference) -> DockerName {
    let repository = format!("{}/{}", reference.registry(), reference.repository());
    let suffix = match (reference.digest(), reference.tag()) {
        (Some(digest), _) => Some(format!("@{digest}")),
        (None, Some(tag)) => Some(format!(":{tag}")),
        (None, None) => None,
    };
    DockerName { repository, suffix }
}

/// Scopes of a registry image, most specific first: `host/repo:tag` (or `@digest`),
/// `host/repo`, its namespaces, `host`, then `*.domain` wildcards of the host.
fn docker_scopes(reference: &Reference) -> Vec<String> {
    let name = image_name(reference);
    let mut scopes = vec![name.whole()];
    let mut repository = name.repository.as_str();
    scopes.push(repository.to_owned());
    while let Some((parent, _)) = repository.rsplit_once('/') {
        scopes.push(parent.to_owned());
        repository = parent;
    }
    // The host without a port, then its parent domains: `a.b.c` gives `*.b.c`, `*.c`.
    let host = reference.registry().split(':').next().unwrap_or_default();
    let mut rest = host;
    while let Some((_, parent)) = rest.split_once('.') {
        scopes.push(format!("*.{parent}"));
        rest = parent;
    }
    scopes
}

/// Scopes of a layout image: `DIR:TAG`, `DIR`, then each parent directory.
fn oci_scopes(path: &Path, target: &LayoutTarget) -> Vec<String> {
    let dir = path.display().to_string();
    let mut scopes = Vec::new();
    if let LayoutTarget::Tag(tag) = target {
        scopes.push(format!("{dir}:{tag}"));
    }
    scopes.extend(path.ancestors().map(|p| p.display().to_string()));
    scopes.retain(|s| !s.is_empty());
    scopes
}

fn check_scope(transport: &str, scope: &str) -> Result<(), String> {
    match transport {
        _ if scope.is_empty() => Ok(()),
        "docker" => check_docker_scope(scope),
        "oci" => {
            if scope.starts_with('/') {
                Ok(())
            } else {
                Err("an oci scope is an absolute directory, optionally with :TAG".into())
            }
        }
        _ => Ok(()),
    }
}

/// A docker scope: `*.domain`, or a host, namespace, repository or reference.
fn check_docker_scope(scope: &str) -> Result<(), String> {
    if let Some(domain) = scope.strip_prefix("*.") {
        if domain.is_empty() || domain.contains(['/', '*', ':']) {
            return Err(format!(
                "{scope:?} is not a valid wildcard (use *.example.com)"
            ));
        }
        return Ok(());
    }
    if scope.contains('*') || scope.starts_with('/') || scope.ends_with('/') || scope.contains("//")
    {
        return Err(format!("{scope:?} is not a valid scope"));
    }
    // A bare host is a valid scope; anything longer must parse as a reference with an
    // explicit host, since a scope is never normalized (`busybox` would mean nothing).
    let host = scope.split('/').next().unwrap_or_default();
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
        return Err(format!(
            "{scope:?} does not start with a registry host (as docker.io/library/busybox)"
        ));
    }
    if scope.contains('/') {
        parse_docker_reference(scope)?;
    }
    Ok(())
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

    #[test]
    fn docker_references_normalize_and_keep_their_suffix() {
        let name = parse_docker_reference("busybox").unwrap();
        assert_eq!(name.repository, "docker.io/library/busybox");
        assert_eq!(name.suffix, None);
        let name = parse_docker_reference("127.0.0.1:5000/t/img:v1").unwrap();
        assert_eq!(name.whole(), "127.0.0.1:5000/t/img:v1");
        assert_eq!(
            image_name(image("127.0.0.1:5000/t/img").registry_reference().unwrap()).whole(),
            "127.0.0.1:5000/t/img:latest"
        );
    }
}
