//! Reading images from a registry over the OCI distribution protocol, with `oci-client`
//! doing the HTTP, the token dance and the `Range` requests.

use super::{ByteStream, ImageReader, SourceError, verify_bytes};
use crate::auth::{self, Credentials};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_client::client::{
    BlobResponse, Certificate, CertificateEncoding, ClientConfig, ClientProtocol,
};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Descriptor, Digest};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// How to talk to registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP. Nothing else is: not even
    /// `localhost` (unlike podman), so plain HTTP is always an explicit choice.
    pub insecure_registries: Vec<String>,
    /// An auth file to use before the standard ones (see [`crate::auth`]).
    pub auth_file: Option<PathBuf>,
    /// A directory of extra CA certificates (`*.crt`, `*.pem`) to trust, like podman's
    /// `--cert-dir`.
    pub cert_dir: Option<PathBuf>,
    /// How long a connection attempt may take.
    pub connect_timeout: Option<Duration>,
    /// How long a read may wait for data before the transfer counts as stalled.
    pub read_timeout: Option<Duration>,
}

/// An image in a registry.
pub struct RegistryReader {
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
}

impl std::fmt::Debug for RegistryReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The auth (credentials) is deliberately left out.
        f.debug_struct("RegistryReader")
            .field("reference", &self.reference.to_string())
            .finish_non_exhaustive()
    }
}

impl RegistryReader {
    /// Prepares a client for the reference's registry: protocol, CA certificates and
    /// credentials. Does no network I/O.
    pub fn new(reference: Reference, opts: &RegistryOptions) -> Result<Self, SourceError> {
        let registry = reference.registry().to_owned();
        let setup = |reason: String| SourceError::Setup {
            registry: registry.clone(),
            reason,
        };
        let extra_root_certificates = match &opts.cert_dir {
            Some(dir) => read_certificates(dir).map_err(setup)?,
            None => Vec::new(),
        };
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(opts.insecure_registries.clone()),
            extra_root_certificates,
            // We pick platforms ourselves (with variants and attestation filtering).
            platform_resolver: None,
            connect_timeout: Some(opts.connect_timeout.unwrap_or(Duration::from_secs(15))),
            read_timeout: Some(opts.read_timeout.unwrap_or(Duration::from_secs(60))),
            ..ClientConfig::default()
        };
        let auth = match auth::credentials_for(&registry, opts.auth_file.as_deref())
            .map_err(|e| setup(e.to_string()))?
        {
            Some(Credentials { username, password }) => RegistryAuth::Basic(username, password),
            None => RegistryAuth::Anonymous,
        };
        tracing::debug!(
            registry = %registry,
            authenticated = !matches!(auth, RegistryAuth::Anonymous),
            "registry client ready"
        );
        Ok(RegistryReader {
            client: Client::new(config),
            reference,
            auth,
        })
    }

    fn classify(&self, what: &str, err: OciDistributionError) -> SourceError {
        classify(&self.reference, what, err)
    }
}

#[async_trait]
impl ImageReader for RegistryReader {
    async fn root_manifest(&self) -> Result<(Bytes, Digest), SourceError> {
        let what = self.reference.to_string();
        let (bytes, header_digest) = self
            .client
            .pull_manifest_raw(&self.reference, &self.auth, &super::MANIFEST_MEDIA_TYPES)
            .await
            .map_err(|e| self.classify(&what, e))?;
        let digest = match self.reference.digest() {
            Some(pinned) => {
                let pinned = parse_digest(pinned, &what)?;
                verify_bytes(&pinned, &bytes)?;
                pinned
            }
            // Trust only what we compute; the header is merely checked by oci-client.
            None => {
                let computed = super::sha256_digest(&bytes);
                tracing::debug!(reference = %what, digest = %computed, header = %header_digest, "resolved");
                computed
            }
        };
        Ok((bytes, digest))
    }

    async fn manifest(&self, digest: &Digest) -> Result<Bytes, SourceError> {
        let child = Reference::with_digest(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            digest.to_string(),
        );
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&child, &self.auth, &super::MANIFEST_MEDIA_TYPES)
            .await
            .map_err(|e| self.classify(digest.as_ref(), e))?;
        Ok(bytes)
    }

    async fn blob(
        &self,
        descriptor: &Descriptor,
        offset: u64,
    ) -> Result<(ByteStream, u64), SourceError> {
        let digest = descriptor.digest().to_string();
        let (stream, start) = if offset == 0 {
            let sized = self
                .client
                .pull_blob_stream(&self.reference, digest.as_str())
                .await
                .map_err(|e| self.classify(&digest, e))?;
            (sized.stream, 0)
        } else {
            // Resume: ask for the rest; a registry that ignores ranges sends it all.
            match self
                .client
                .pull_blob_stream_partial(&self.reference, digest.as_str(), offset, None)
                .await
                .map_err(|e| self.classify(&digest, e))?
            {
                BlobResponse::Full(sized) => (sized.stream, 0),
                BlobResponse::Partial(sized) => (sized.stream, offset),
            }
        };
        let stream = stream.map_err(move |e| io_stream_error(&digest, e)).boxed();
        Ok((stream, start))
    }
}

/// Maps an error from the middle of a blob stream: oci-client reports a digest mismatch
/// as an `io::Error` wrapping its `DigestError`; anything else mid-stream is a
/// connection problem worth retrying.
fn io_stream_error(digest: &str, err: std::io::Error) -> SourceError {
    if let Some(oci_client::errors::DigestError::VerificationError { actual, .. }) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<oci_client::errors::DigestError>())
    {
        return SourceError::DigestMismatch {
            digest: digest.to_owned(),
            actual: actual.clone(),
        };
    }
    SourceError::Transient {
        what: digest.to_owned(),
        detail: error_chain(&err),
    }
}

fn parse_digest(text: &str, what: &str) -> Result<Digest, SourceError> {
    Digest::from_str(text).map_err(|e| SourceError::Registry {
        what: what.to_owned(),
        detail: format!("bad digest {text}: {e}"),
    })
}

fn classify(reference: &Reference, what: &str, err: OciDistributionError) -> SourceError {
    let registry = reference.registry().to_owned();
    let what = what.to_owned();
    match err {
        OciDistributionError::RequestError(e) => {
            let detail = error_chain(&e);
            if e.is_connect() {
                SourceError::Unreachable { registry, detail }
            } else if e.is_timeout() || e.is_body() || e.is_request() || e.is_decode() {
                SourceError::Transient { what, detail }
            } else {
                SourceError::Registry { what, detail }
            }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => SourceError::Unauthorized {
            reference: reference.to_string(),
        },
        OciDistributionError::ImageManifestNotFoundError(detail) => SourceError::NotFound {
            reference: reference.to_string(),
            detail,
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let detail = envelope.to_string();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                SourceError::NotFound {
                    reference: reference.to_string(),
                    detail,
                }
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                SourceError::Unauthorized {
                    reference: reference.to_string(),
                }
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                SourceError::Transient { what, detail }
            } else {
                SourceError::Registry { what, detail }
            }
        }
        OciDistributionError::ServerError { code, message, .. } => {
            let detail = format!("HTTP {code}: {}", message.trim());
            match code {
                404 => SourceError::NotFound {
                    reference: reference.to_string(),
                    detail,
                },
                429 | 500..=599 => SourceError::Transient { what, detail },
                _ => SourceError::Registry { what, detail },
            }
        }
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => SourceError::DigestMismatch {
            digest: expected,
            actual,
        },
        OciDistributionError::IoError(e) => SourceError::Transient {
            what,
            detail: error_chain(&e),
        },
        other => SourceError::Registry {
            what,
            detail: error_chain(&other),
        },
    }
}

/// The error and its causes on one line (reqwest hides the useful part in sources).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn read_certificates(dir: &Path) -> Result<Vec<Certificate>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("reading cert dir {}: {e}", dir.display()))?;
    let mut certs = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("reading cert dir {}: {e}", dir.display()))?
            .path();
        let encoding = match path.extension().and_then(|e| e.to_str()) {
            Some("crt" | "pem") => CertificateEncoding::Pem,
            Some("der") => CertificateEncoding::Der,
            // Client keys and certificates (`.key`, `.cert`) are not CAs.
            _ => continue,
        };
        let data = std::fs::read(&path)
            .map_err(|e| format!("reading certificate {}: {e}", path.display()))?;
        certs.push(Certificate { encoding, data });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Reference {
        "127.0.0.1:5000/app:v1".parse().unwrap()
    }

    #[test]
    fn server_errors_classify_for_retry() {
        let err = |code| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: "m".into(),
        };
        assert!(classify(&reference(), "x", err(503)).is_transient());
        assert!(classify(&reference(), "x", err(429)).is_transient());
        assert!(matches!(
            classify(&reference(), "x", err(404)),
            SourceError::NotFound { .. }
        ));
        assert!(!classify(&reference(), "x", err(400)).is_transient());
    }

    #[test]
    fn missing_tag_says_which_reference() {
        let envelope: oci_client::errors::OciEnvelope = serde_json::from_str(
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
        )
        .unwrap();
        let err = classify(
            &reference(),
            "x",
            OciDistributionError::RegistryError {
                envelope,
                url: "u".into(),
            },
        );
        assert!(matches!(err, SourceError::NotFound { .. }));
        assert!(err.to_string().contains("127.0.0.1:5000/app:v1"), "{err}");
    }

    #[test]
    fn cert_dir_reads_only_ca_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), b"pem").unwrap();
        std::fs::write(dir.path().join("client.key"), b"secret").unwrap();
        let certs = read_certificates(dir.path()).unwrap();
        assert_eq!(certs.len(), 1);
        let err = read_certificates(&dir.path().join("missing")).unwrap_err();
        assert!(err.contains("missing"), "{err}");
    }
}
