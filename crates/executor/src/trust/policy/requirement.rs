//! Parsing one requirement (`insecureAcceptAnything`, `reject`, `signedBy`,
//! `sigstoreSigned`) and its `signedIdentity`, strictly: every object is read into a
//! struct that denies unknown fields, so that an error names the field.

use super::name::{explicitly_tagged_or_digested, parse_docker_reference};
use super::scope::check_docker_scope;
use super::{KeySource, Requirement, SignedIdentity};
use serde::Deserialize;
use std::path::PathBuf;

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

/// Parses a list of requirements; errors name `place` and the requirement's index.
pub(super) fn requirements(
    list: &[serde_json::Value],
    place: &str,
) -> Result<Vec<Requirement>, String> {
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
