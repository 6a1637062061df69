//! Whether to trust an image: a `containers-policy.json(5)` ([`policy`]) names what each
//! image needs, and cosign signatures ([`cosign`]) verified with public keys ([`key`])
//! satisfy it, as podman and CRI-O do.
//!
//! The pull checks the policy once it knows the manifest digest and before it fetches a
//! blob ([`crate::pull`]): a `reject` refuses before any request, a `sigstoreSigned`
//! requirement fetches the signatures and needs one, by one of its keys, whose payload
//! names that digest (the index's or the platform manifest's) and an identity the rule
//! accepts. The signatures are kept in the image record, so a run that finds the image
//! already stored verifies them again under its own policy ([`verify_stored`]) with no
//! network; an image stored without them is pulled again.
//!
//! Where no policy file exists, everything is accepted (podman's default policy).

pub mod cosign;
pub mod key;
pub mod policy;

use crate::reference::ImageSource;
use cosign::Signature;
use key::PublicKey;
use oci_spec::image::Digest;
use policy::{DockerName, KeySource, Policy, PolicyError, Requirement, SignedIdentity};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Why an image is refused or the policy cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The policy file is missing, unreadable or invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A key the policy names cannot be read or is no public key.
    #[error("signature policy {policy}: key {key}: {reason}")]
    Key {
        /// The policy file.
        policy: PathBuf,
        /// The key (its path, or `keyData`).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The policy does not accept the image.
    #[error("image {image} is not trusted: {reason} (policy {})", .policy.display())]
    Untrusted {
        /// The image reference.
        image: String,
        /// Which requirement failed, and how.
        reason: String,
        /// The policy file.
        policy: PathBuf,
    },
}

/// The standard policy files, in podman's order: `$HOME/.config/containers/policy.json`,
/// then `/etc/containers/policy.json`.
pub fn default_policy_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        paths.push(PathBuf::from(home).join(".config/containers/policy.json"));
    }
    paths.push(PathBuf::from("/etc/containers/policy.json"));
    paths
}

/// Loads the policy: `explicit` (`--signature-policy`, which must exist), else the first
/// of `defaults` that exists; `None` when none does (everything is accepted).
pub fn load_policy(
    explicit: Option<&Path>,
    defaults: &[PathBuf],
) -> Result<Option<Policy>, TrustError> {
    if let Some(path) = explicit {
        return Ok(Some(Policy::load(path)?));
    }
    for path in defaults {
        match std::fs::metadata(path) {
            Ok(_) => return Ok(Some(Policy::load(path)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(PolicyError::Read {
                    path: path.clone(),
                    source,
                }
                .into());
            }
        }
    }
    tracing::debug!(searched = ?defaults, "no signature policy: accepting any image");
    Ok(None)
}

/// How an image was accepted, as the image record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// The key that verified a signature: its path, or `keyData`.
    pub key: String,
    /// `sha256:` of the key's DER encoding.
    pub fingerprint: String,
    /// The identity the signature named.
    pub identity: String,
}

/// What the policy needs of an image before its manifest is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: accepted whatever it is.
    Nothing,
    /// Signatures, to be fetched and verified.
    Signatures,
}

/// The image's requirements before any request: refuses a `reject` (and the GPG
/// `signedBy` the executor cannot verify) at once.
pub fn precheck(policy: &Policy, image: &ImageSource) -> Result<Needs, TrustError> {
    let mut needs = Needs::Nothing;
    for requirement in policy.requirements_for(image) {
        match requirement {
            Requirement::InsecureAcceptAnything => {}
            Requirement::Reject => {
                return Err(untrusted(policy, image, "the policy rejects it".into()));
            }
            Requirement::SignedBy => {
                return Err(untrusted(
                    policy,
                    image,
                    "the policy requires a GPG signature (signedBy), which the executor cannot verify; use sigstoreSigned".into(),
                ));
            }
            Requirement::SigstoreSigned { .. } => needs = Needs::Signatures,
        }
    }
    Ok(needs)
}

/// Checks every requirement of the policy for `image` against `signatures`, for a
/// manifest that is `digests` (the platform manifest's, and the index's when there is
/// one: a signature of either binds the image). `Ok(None)` when accepted with no
/// signature needed.
pub fn verify(
    policy: &Policy,
    image: &ImageSource,
    digests: &[&Digest],
    signatures: &[Signature],
) -> Result<Option<Verified>, TrustError> {
    precheck(policy, image)?;
    let mut verified = None;
    for requirement in policy.requirements_for(image) {
        if let Requirement::SigstoreSigned { keys, identity } = requirement {
            let keys = load_keys(policy, keys)?;
            let found = satisfy(image, digests, signatures, &keys, identity)
                .map_err(|reason| untrusted(policy, image, reason))?;
            verified.get_or_insert(found);
        }
    }
    Ok(verified)
}

/// Re-verifies, under `policy`, the signatures an image record kept from its pull (of
/// the manifest `manifest_digest`, picked from the index `index_digest`). An error means
/// the record alone cannot show the image trusted: the caller pulls again (the
/// signatures may be new) or, when it must not, reports the error.
pub fn verify_stored(
    policy: &Policy,
    image: &ImageSource,
    manifest_digest: &Digest,
    index_digest: Option<&Digest>,
    signatures: &[Signature],
) -> Result<Option<Verified>, TrustError> {
    let mut digests = vec![manifest_digest];
    digests.extend(index_digest);
    verify(policy, image, &digests, signatures)
}

fn untrusted(policy: &Policy, image: &ImageSource, reason: String) -> TrustError {
    TrustError::Untrusted {
        image: image.to_string(),
        reason,
        policy: policy.path.clone(),
    }
}

fn load_keys(policy: &Policy, keys: &[KeySource]) -> Result<Vec<(String, PublicKey)>, TrustError> {
    keys.iter()
        .map(|source| {
            let name = source.to_string();
            let key_error = |reason: String| TrustError::Key {
                policy: policy.path.clone(),
                key: name.clone(),
                reason,
            };
            let pem = match source {
                KeySource::Path(path) => {
                    std::fs::read(path).map_err(|e| key_error(e.to_string()))?
                }
                KeySource::Data(data) => data.clone(),
            };
            let key = PublicKey::from_pem(&pem).map_err(key_error)?;
            Ok((name, key))
        })
        .collect()
}

/// Finds a signature that satisfies one `sigstoreSigned` requirement; else says why
/// none does, naming the closest miss (a signature by the key for another digest or
/// identity says more than "no signature").
fn satisfy(
    image: &ImageSource,
    digests: &[&Digest],
    signatures: &[Signature],
    keys: &[(String, PublicKey)],
    rule: &SignedIdentity,
) -> Result<Verified, String> {
    let names: Vec<&str> = keys.iter().map(|(name, _)| name.as_str()).collect();
    let mut closest = None;
    for signature in signatures {
        let Some((payload, raw)) = signature.decode() else {
            continue;
        };
        let Some((name, key)) = keys.iter().find(|(_, key)| key.verifies(&payload, &raw)) else {
            continue;
        };
        let claims = match cosign::claims(&payload) {
            Ok(claims) => claims,
            Err(reason) => {
                closest = Some(format!("the signature by key {name}: {reason}"));
                continue;
            }
        };
        if !digests.iter().any(|d| d.as_ref() == claims.manifest_digest) {
            closest = Some(format!(
                "the signature by key {name} is for manifest {}, not {}",
                claims.manifest_digest, digests[0]
            ));
            continue;
        }
        if let Err(reason) = identity_matches(image, &claims.docker_reference, rule) {
            closest = Some(format!("the signature by key {name} {reason}"));
            continue;
        }
        return Ok(Verified {
            key: name.clone(),
            fingerprint: key.fingerprint().to_owned(),
            identity: claims.docker_reference,
        });
    }
    Err(closest.unwrap_or_else(|| format!("no signature by key {}", names.join(", "))))
}

/// Whether the identity a signature names is acceptable for `image` under `rule`; the
/// error completes "the signature by key K ...".
fn identity_matches(
    image: &ImageSource,
    signed: &str,
    rule: &SignedIdentity,
) -> Result<(), String> {
    let signed_name = policy::parse_docker_reference(signed)
        .map_err(|e| format!("names an invalid identity {signed:?}: {e}"))?;
    let refuse = |wanted: &str| {
        Err(format!(
            "names {signed:?}, which {} does not accept for {wanted:?}{}",
            rule_name(rule),
            if signed_name.suffix.is_none()
                && matches!(
                    rule,
                    SignedIdentity::MatchRepoDigestOrExact | SignedIdentity::MatchExact
                )
            {
                " (cosign signs the repository only: use signedIdentity matchRepository)"
            } else {
                ""
            }
        ))
    };
    let image_name = match image {
        ImageSource::Registry(reference) => Some(policy::image_name(reference)),
        ImageSource::Layout { .. } => None,
    };
    match rule {
        SignedIdentity::ExactReference(wanted) => {
            if &signed_name.whole() == wanted {
                Ok(())
            } else {
                refuse(wanted)
            }
        }
        SignedIdentity::ExactRepository(wanted) => {
            if &signed_name.repository == wanted {
                Ok(())
            } else {
                refuse(wanted)
            }
        }
        other => {
            let Some(name) = image_name else {
                return Err(format!(
                    "cannot be matched by {}: an oci-layout image has no registry reference (use exactReference or exactRepository)",
                    rule_name(other)
                ));
            };
            let name = match other {
                SignedIdentity::RemapIdentity {
                    prefix,
                    signed_prefix,
                } => remap(&name, prefix, signed_prefix),
                _ => name,
            };
            if accepts(other, &name, &signed_name) {
                Ok(())
            } else {
                refuse(&name.whole())
            }
        }
    }
}

/// The reference-relative rules: `image` (as pulled, or remapped) against `signed`.
fn accepts(rule: &SignedIdentity, image: &DockerName, signed: &DockerName) -> bool {
    let by_digest = image.suffix.as_deref().is_some_and(|s| s.starts_with('@'));
    match rule {
        SignedIdentity::MatchRepository => image.repository == signed.repository,
        SignedIdentity::MatchExact => !by_digest && image.whole() == signed.whole(),
        // remapIdentity then compares as matchRepoDigestOrExact does.
        _ if by_digest => image.repository == signed.repository,
        _ => image.whole() == signed.whole(),
    }
}

/// The image's name with `prefix` (a host, namespace or repository, matched at a path
/// boundary) replaced by `signed_prefix`; unchanged when the prefix does not apply.
fn remap(name: &DockerName, prefix: &str, signed_prefix: &str) -> DockerName {
    let whole = name.whole();
    let Some(rest) = whole.strip_prefix(prefix) else {
        return name.clone();
    };
    if !(rest.is_empty() || rest.starts_with(['/', ':', '@'])) {
        return name.clone();
    }
    policy::parse_docker_reference(&format!("{signed_prefix}{rest}"))
        .unwrap_or_else(|_| name.clone())
}

fn rule_name(rule: &SignedIdentity) -> &'static str {
    match rule {
        SignedIdentity::MatchRepoDigestOrExact => "matchRepoDigestOrExact",
        SignedIdentity::MatchExact => "matchExact",
        SignedIdentity::MatchRepository => "matchRepository",
        SignedIdentity::ExactReference(_) => "exactReference",
        SignedIdentity::ExactRepository(_) => "exactRepository",
        SignedIdentity::RemapIdentity { .. } => "remapIdentity",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> DockerName {
        policy::parse_docker_reference(text).unwrap()
    }

    fn image(text: &str) -> ImageSource {
        ImageSource::parse(text).unwrap()
    }

    const DIGEST: &str = "sha256:42499e1108a76547ccadac8bcdf21a79970853078dfd210d46d8a7ab256e863a";

    #[test]
    fn identity_rules_compare_as_podman_does() {
        let by_tag = image("reg.io/team/app:v1");
        let by_digest = image(&format!("reg.io/team/app@{DIGEST}"));
        let repo_only = "reg.io/team/app";
        use SignedIdentity::*;
        // cosign signs the repository: only matchRepository takes it for a tag.
        assert!(identity_matches(&by_tag, repo_only, &MatchRepoDigestOrExact).is_err());
        assert!(identity_matches(&by_tag, "reg.io/team/app:v1", &MatchRepoDigestOrExact).is_ok());
        assert!(identity_matches(&by_digest, repo_only, &MatchRepoDigestOrExact).is_ok());
        assert!(identity_matches(&by_tag, repo_only, &MatchRepository).is_ok());
        assert!(identity_matches(&by_tag, "reg.io/team/other", &MatchRepository).is_err());
        assert!(
            identity_matches(
                &by_digest,
                &format!("reg.io/team/app@{DIGEST}"),
                &MatchExact
            )
            .is_err()
        );
        assert!(identity_matches(&by_tag, "reg.io/team/app:v1", &MatchExact).is_ok());
        assert!(identity_matches(&by_tag, "reg.io/team/app:v2", &MatchExact).is_err());
        let exact = ExactRepository("reg.io/signed/app".into());
        assert!(identity_matches(&by_tag, "reg.io/signed/app", &exact).is_ok());
        assert!(identity_matches(&by_tag, repo_only, &exact).is_err());
        let layout = image("oci-layout:/srv/l:v1");
        assert!(identity_matches(&layout, "reg.io/signed/app", &exact).is_ok());
        let err = identity_matches(&layout, repo_only, &MatchRepository).unwrap_err();
        assert!(err.contains("no registry reference"), "{err}");
        let err = identity_matches(&by_tag, repo_only, &MatchRepoDigestOrExact).unwrap_err();
        assert!(err.contains("use signedIdentity matchRepository"), "{err}");
    }

    #[test]
    fn remap_identity_rewrites_at_a_path_boundary() {
        let rule = SignedIdentity::RemapIdentity {
            prefix: "mirror.local/hub".into(),
            signed_prefix: "docker.io/library".into(),
        };
        let pulled = image(&format!("mirror.local/hub/busybox@{DIGEST}"));
        assert!(identity_matches(&pulled, "docker.io/library/busybox", &rule).is_ok());
        assert!(identity_matches(&pulled, "docker.io/library/alpine", &rule).is_err());
        // `mirror.local/hubx` is not under `mirror.local/hub`.
        assert_eq!(
            remap(
                &name("mirror.local/hubx/a:1"),
                "mirror.local/hub",
                "docker.io/library"
            ),
            name("mirror.local/hubx/a:1")
        );
        assert_eq!(
            remap(
                &name("mirror.local/hub/a:1"),
                "mirror.local/hub",
                "docker.io/library"
            ),
            name("docker.io/library/a:1")
        );
    }

    #[test]
    fn no_policy_file_accepts_and_an_explicit_one_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.json");
        assert!(
            load_policy(None, std::slice::from_ref(&missing))
                .unwrap()
                .is_none()
        );
        let err = load_policy(Some(&missing), &[]).unwrap_err().to_string();
        assert!(err.starts_with("cannot read signature policy"), "{err}");
        let present = dir.path().join("policy.json");
        std::fs::write(&present, r#"{"default": [{"type": "reject"}]}"#).unwrap();
        let policy = load_policy(None, &[missing, present.clone()])
            .unwrap()
            .unwrap();
        assert_eq!(policy.path, present);
        let err = precheck(&policy, &image("busybox"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "image docker.io/library/busybox:latest is not trusted: the policy rejects it (policy {})",
                present.display()
            )
        );
    }
}
