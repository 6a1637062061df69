//! cosign signatures where cosign stores them, and what they say.
//!
//! `cosign sign` pushes, to the image's repository, a manifest tagged
//! `sha256-<hex>.sig` whose layers are *simple signing* payloads
//! (`application/vnd.dev.cosign.simplesigning.v1+json`), each with its signature in the
//! `dev.cosignproject.cosign/signature` annotation (base64). With
//! `--registry-referrers-mode=oci-1-1` it pushes the same layers in a manifest whose
//! `subject` is the image, found through the OCI 1.1 referrers API or, on registries
//! without it, the referrers tag `sha256-<hex>` (an index of the referrers). `cosign save`
//! writes an OCI layout whose `index.json` lists the signature manifest with the
//! annotation `kind: dev.cosignproject.cosign/sigs`. All three are read here.
//!
//! Nothing fetched is trusted for what it is: payloads are checked against their layer
//! digests, and a payload counts only once its signature verifies ([`super`]). Sizes and
//! counts are bounded, so a hostile registry cannot make the executor read without end.

use crate::source::layout::{COSIGN_KIND_ANNOTATION, COSIGN_KIND_SIGNATURES};
use crate::source::{ImageReader, SourceError, verify_bytes};
use base64::Engine as _;
use futures::TryStreamExt;
use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};

/// The media type of a simple signing payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The artifact type of cosign's OCI 1.1 signature manifests.
pub const SIGNATURE_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// The largest payload read (cosign's are a few hundred bytes).
const MAX_PAYLOAD: u64 = 64 << 10;
/// The most signatures looked at per image.
const MAX_SIGNATURES: usize = 64;
/// The most referrer manifests looked at per image.
const MAX_REFERRERS: usize = 16;

/// A signature and the payload it signs, as fetched (not yet verified). Kept in the
/// image record so that a later run re-verifies it under the policy of that run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The simple signing payload, base64.
    pub payload: String,
    /// The signature, base64, as cosign's annotation carries it.
    pub signature: String,
}

impl Signature {
    /// The decoded payload and signature; `None` when either is not base64.
    pub fn decode(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let b64 = base64::engine::general_purpose::STANDARD;
        Some((
            b64.decode(&self.payload).ok()?,
            b64.decode(&self.signature).ok()?,
        ))
    }
}

/// What a simple signing payload claims (`critical`; `optional` is not trusted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `critical.identity.docker-reference`.
    pub docker_reference: String,
    /// `critical.image.docker-manifest-digest`.
    pub manifest_digest: String,
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Reads the claims of a payload whose signature verified.
pub fn claims(payload: &[u8]) -> Result<Claims, String> {
    let parsed: Payload = serde_json::from_slice(payload)
        .map_err(|e| format!("the signed payload is not a simple signing payload: {e}"))?;
    // containers/image and cosign both insist on the type, so that a signature made for
    // another purpose with the same key is not taken for an image signature.
    if parsed.critical.kind != "cosign container image signature"
        && parsed.critical.kind != "atomic container signature"
    {
        return Err(format!(
            "the signed payload has type {:?}, not an image signature",
            parsed.critical.kind
        ));
    }
    Ok(Claims {
        docker_reference: parsed.critical.identity.docker_reference,
        manifest_digest: parsed.critical.image.docker_manifest_digest,
    })
}

/// Every cosign signature the source holds for the manifest `digest`: from the `.sig`
/// tag, then from its referrers (API, else the referrers tag).
pub async fn fetch(
    reader: &dyn ImageReader,
    digest: &Digest,
) -> Result<Vec<Signature>, SourceError> {
    let tag = format!("{}-{}", digest.algorithm().as_ref(), digest.digest());
    let mut manifests = Vec::new();
    if let Some(bytes) = reader.tagged_manifest(&format!("{tag}.sig")).await? {
        manifests.push(parse_manifest(&bytes, &format!("signature tag {tag}.sig"))?);
    }
    let referrers = match reader.referrers(digest).await? {
        Some(index) => Some(index),
        None => reader.tagged_manifest(&tag).await?,
    };
    if let Some(bytes) = referrers {
        // The referrers tag may hold something else on an old registry: only an index counts.
        if let Ok(index) = serde_json::from_slice::<ImageIndex>(&bytes) {
            for descriptor in index
                .manifests()
                .iter()
                .filter(|d| is_signature_referrer(d))
                .take(MAX_REFERRERS)
            {
                let bytes = reader.manifest(descriptor.digest()).await?;
                verify_bytes(descriptor.digest(), &bytes)?;
                manifests.push(parse_manifest(
                    &bytes,
                    &format!("signature manifest {}", descriptor.digest()),
                )?);
            }
        }
    }
    let mut signatures = Vec::new();
    for layer in manifests
        .iter()
        .flat_map(|m| m.layers())
        .filter(|l| l.media_type().to_string() == SIMPLE_SIGNING)
        .take(MAX_SIGNATURES)
    {
        let Some(signature) = layer
            .annotations()
            .as_ref()
            .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        else {
            continue;
        };
        let payload = payload(reader, layer).await?;
        let signature = Signature {
            payload: base64::engine::general_purpose::STANDARD.encode(&payload),
            signature: signature.clone(),
        };
        if !signatures.contains(&signature) {
            signatures.push(signature);
        }
    }
    Ok(signatures)
}

fn is_signature_referrer(descriptor: &Descriptor) -> bool {
    let annotated = descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(COSIGN_KIND_ANNOTATION))
        .is_some_and(|kind| kind == COSIGN_KIND_SIGNATURES);
    let typed = descriptor
        .artifact_type()
        .as_ref()
        .is_some_and(|t| t.to_string() == SIGNATURE_ARTIFACT);
    annotated || typed
}

fn parse_manifest(bytes: &[u8], what: &str) -> Result<ImageManifest, SourceError> {
    serde_json::from_slice(bytes).map_err(|e| SourceError::Registry {
        what: what.to_owned(),
        detail: format!("not an image manifest: {e}"),
    })
}

/// Reads a payload layer whole and checks it against its digest.
async fn payload(reader: &dyn ImageReader, layer: &Descriptor) -> Result<Vec<u8>, SourceError> {
    if layer.size() > MAX_PAYLOAD {
        return Err(SourceError::Registry {
            what: layer.digest().to_string(),
            detail: format!(
                "a signature payload of {} bytes, more than the {MAX_PAYLOAD} accepted",
                layer.size()
            ),
        });
    }
    let (stream, _) = reader.blob(layer, 0).await?;
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await?;
    let data = chunks.concat();
    if data.len() as u64 != layer.size() {
        return Err(SourceError::Registry {
            what: layer.digest().to_string(),
            detail: format!(
                "a signature payload of {} bytes, its descriptor says {}",
                data.len(),
                layer.size()
            ),
        });
    }
    verify_bytes(layer.digest(), &data)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_claims_cosign_writes() {
        // What cosign 2.5 pushed for an image in a test registry.
        let payload = br#"{"critical":{"identity":{"docker-reference":"127.0.0.1:5055/t/img"},"image":{"docker-manifest-digest":"sha256:42499e1108a76547ccadac8bcdf21a79970853078dfd210d46d8a7ab256e863a"},"type":"cosign container image signature"},"optional":null}"#;
        assert_eq!(
            claims(payload).unwrap(),
            Claims {
                docker_reference: "127.0.0.1:5055/t/img".into(),
                manifest_digest:
                    "sha256:42499e1108a76547ccadac8bcdf21a79970853078dfd210d46d8a7ab256e863a".into()
            }
        );
    }

    #[test]
    fn other_payloads_are_refused_with_a_reason() {
        let other = br#"{"critical":{"identity":{"docker-reference":"a"},"image":{"docker-manifest-digest":"b"},"type":"an attestation"}}"#;
        assert!(
            claims(other)
                .unwrap_err()
                .contains("not an image signature")
        );
        assert!(
            claims(b"{}")
                .unwrap_err()
                .contains("not a simple signing payload")
        );
    }
}
