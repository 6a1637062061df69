//! Reading images from a registry over the OCI distribution protocol.
//!
//! `oci-client` resolves manifests and does the token dance. Blobs are fetched with a
//! small `reqwest` client of our own (using oci-client's token) because oci-client does
//! not expose response headers on errors: we need `Retry-After` on 429/503, and
//! `Content-Range` to be sure a resumed download continues where ours stopped.
//!
//! An image may be reachable at several endpoints: the mirrors `registries.conf` names
//! for it, then its primary location ([`crate::registries_conf`]). They are tried in
//! that order, as containers-image does: the first that serves the manifest is used for
//! the rest of the pull, and any failure (unreachable, 5xx, 404, refused credentials, a
//! manifest that does not match a pinned digest) moves on to the next endpoint, for the
//! manifest and for each blob alike. When all fail, the error names each endpoint with
//! its error. Nothing a mirror sends is trusted: blobs and manifests are verified
//! against their digests as always.
//!
//! Every HTTP client built here takes its proxy from [`crate::proxy`], never from
//! reqwest's own reading of the environment.

use super::{ByteStream, EndpointFailure, ImageReader, SourceError, verify_bytes};
use crate::auth::{self, Credentials};
use crate::error::error_chain;
use crate::proxy::ProxyConfig;
use crate::registries_conf::{PullSource, RegistriesConf};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use oci_spec::image::{Descriptor, Digest};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Mirrors, blocked registries and per-endpoint plain HTTP from `registries.conf`.
    pub registries: Arc<RegistriesConf>,
    /// The proxies to use (the CLI reads them from the environment; the default is none).
    pub proxy: Arc<ProxyConfig>,
}

/// An image in a registry, read from the first of its endpoints (mirrors, then the
/// primary) that serves it.
pub struct RegistryReader {
    /// The reference as asked for (before any mirror rewriting).
    reference: Reference,
    /// In the order to try them; never empty.
    endpoints: Vec<EndpointReader>,
    /// The endpoint that served the root manifest: later requests start there.
    selected: AtomicUsize,
}

/// The image at one endpoint.
struct EndpointReader {
    /// `mirror` or `primary`, for messages.
    role: &'static str,
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
    http: reqwest::Client,
    /// `scheme://host/v2/repository`.
    base_url: String,
    /// How blob requests authenticate, found on first use (a token may be renewed).
    blob_auth: tokio::sync::Mutex<Option<BlobAuth>>,
}

/// What a blob request carries. Never logged.
#[derive(Clone)]
enum BlobAuth {
    None,
    Basic(String, String),
    Bearer(String),
}

impl std::fmt::Debug for RegistryReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The auth (credentials) is deliberately left out.
        let endpoints: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| e.reference.to_string())
            .collect();
        f.debug_struct("RegistryReader")
            .field("reference", &self.reference.to_string())
            .field("endpoints", &endpoints)
            .finish_non_exhaustive()
    }
}

/// The `NO_PROXY` list given to oci-client for an endpoint reached directly, with a
/// proxy that no host therefore uses: with no proxy configured at all, reqwest would
/// read the environment itself, by other rules than [`crate::proxy`]'s. (reqwest's `*`
/// does not cover IP addresses, hence the two networks.)
const NO_HOST: &str = "*,0.0.0.0/0,::/0";

impl RegistryReader {
    /// Prepares a client per endpoint of the reference (its mirrors from
    /// [`RegistryOptions::registries`], then its primary location): protocol, CA
    /// certificates, proxy and credentials. Refuses a blocked reference. Does no network
    /// I/O.
    pub fn new(reference: Reference, opts: &RegistryOptions) -> Result<Self, SourceError> {
        let sources = opts
            .registries
            .pull_sources(&reference)
            .map_err(SourceError::Config)?;
        let certificates = match &opts.cert_dir {
            Some(dir) => read_certificates(dir).map_err(|reason| SourceError::Setup {
                registry: reference.registry().to_owned(),
                reason,
            })?,
            None => Vec::new(),
        };
        let endpoints = sources
            .into_iter()
            .map(|source| EndpointReader::new(source, opts, &certificates))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.len() > 1 {
            let names: Vec<String> = endpoints.iter().map(|e| e.reference.to_string()).collect();
            tracing::debug!(image = %reference, endpoints = ?names, "endpoints to try");
        }
        Ok(RegistryReader {
            reference,
            endpoints,
            selected: AtomicUsize::new(0),
        })
    }

    /// Runs `op` on the endpoints from `first` on, until one succeeds. When only one
    /// endpoint was tried its error is returned as is; else every endpoint's error, in one.
    async fn first_success<'a, T, F, Fut>(
        &'a self,
        first: usize,
        what: &str,
        op: F,
    ) -> Result<(usize, T), SourceError>
    where
        F: Fn(&'a EndpointReader) -> Fut,
        Fut: Future<Output = Result<T, SourceError>>,
    {
        let mut failures = Vec::new();
        for (index, endpoint) in self.endpoints.iter().enumerate().skip(first) {
            match op(endpoint).await {
                Ok(value) => return Ok((index, value)),
                Err(error) if index + 1 == self.endpoints.len() && failures.is_empty() => {
                    return Err(error);
                }
                Err(error) => {
                    tracing::info!(image = %self.reference, what, endpoint = %endpoint.reference, role = endpoint.role, error = %error, "endpoint failed; trying the next");
                    failures.push(EndpointFailure {
                        endpoint: format!("{} {}", endpoint.role, endpoint.reference),
                        error: Box::new(error),
                    });
                }
            }
        }
        Err(SourceError::AllEndpointsFailed { failures })
    }

    fn start(&self) -> usize {
        self.selected.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl ImageReader for RegistryReader {
    async fn root_manifest(&self) -> Result<(Bytes, Digest), SourceError> {
        let (index, found) = self
            .first_success(0, "manifest", |e| e.root_manifest())
            .await?;
        self.selected.store(index, Ordering::Relaxed);
        if self.endpoints.len() > 1 {
            let endpoint = &self.endpoints[index];
            tracing::info!(image = %self.reference, endpoint = %endpoint.reference, role = endpoint.role, "pulling from");
        }
        Ok(found)
    }

    async fn manifest(&self, digest: &Digest) -> Result<Bytes, SourceError> {
        let (_, bytes) = self
            .first_success(self.start(), digest.as_ref(), |e| e.manifest(digest))
            .await?;
        Ok(bytes)
    }

    async fn blob(
        &self,
        descriptor: &Descriptor,
        offset: u64,
    ) -> Result<(ByteStream, u64), SourceError> {
        let what = descriptor.digest().to_string();
        let (_, found) = self
            .first_success(self.start(), &what, |e| e.blob(descriptor, offset))
            .await?;
        Ok(found)
    }

    // Signatures are read from the endpoint that served the image, as containers-image
    // reads them from where it pulled: a mirror that lacks them makes the image unsigned,
    // never signed by something else, since a signature proves itself anyway.
    async fn tagged_manifest(&self, tag: &str) -> Result<Option<Bytes>, SourceError> {
        self.endpoints[self.start()].tagged_manifest(tag).await
    }

    async fn referrers(&self, digest: &Digest) -> Result<Option<Bytes>, SourceError> {
        self.endpoints[self.start()].referrers(digest).await
    }
}

impl EndpointReader {
    /// A client for one endpoint. `certificates` are the extra CAs, read once.
    fn new(
        source: PullSource,
        opts: &RegistryOptions,
        certificates: &[Certificate],
    ) -> Result<Self, SourceError> {
        let reference = source.reference;
        let registry = reference.registry().to_owned();
        let setup = |reason: String| SourceError::Setup {
            registry: registry.clone(),
            reason,
        };
        let extra_root_certificates = certificates.to_vec();
        let connect_timeout = opts.connect_timeout.unwrap_or(Duration::from_secs(15));
        let read_timeout = opts.read_timeout.unwrap_or(Duration::from_secs(60));
        let roots = extra_root_certificates
            .iter()
            .map(reqwest::Certificate::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| setup(format!("bad CA certificate: {e}")))?;
        let insecure = source.insecure || opts.insecure_registries.iter().any(|r| r == &registry);
        let scheme = if insecure { "http" } else { "https" };
        let host = reference.resolve_registry().to_owned();
        let base_url = format!("{scheme}://{host}/v2/{}", reference.repository());
        // oci-client takes proxies as strings for all its requests (the registry's and its
        // token service's): give it the decision for the registry host.
        let proxy = reqwest::Url::parse(&format!("{scheme}://{host}/"))
            .ok()
            .and_then(|url| opts.proxy.proxy_for(&url).cloned());
        if let Some(proxy) = &proxy {
            tracing::debug!(registry = %registry, proxy = %proxy.host_str().unwrap_or_default(), "through proxy");
        }
        let (https_proxy, http_proxy, no_proxy) = match (&proxy, insecure) {
            (Some(p), false) => (Some(p.to_string()), None, None),
            (Some(p), true) => (None, Some(p.to_string()), None),
            (None, _) => (
                Some("http://0.0.0.0:9".to_owned()),
                None,
                Some(NO_HOST.to_owned()),
            ),
        };
        let config = ClientConfig {
            protocol: if insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates,
            // We pick platforms ourselves (with variants and attestation filtering).
            platform_resolver: None,
            connect_timeout: Some(connect_timeout),
            read_timeout: Some(read_timeout),
            https_proxy,
            http_proxy,
            no_proxy,
            ..ClientConfig::default()
        };
        let proxy_config = opts.proxy.clone();
        let auth = match auth::credentials_for(&registry, opts.auth_file.as_deref())
            .map_err(|e| setup(e.to_string()))?
        {
            Some(Credentials { username, password }) => RegistryAuth::Basic(username, password),
            None => RegistryAuth::Anonymous,
        };
        // Each client loads the system's CA certificates (about 2 ms), and oci-client
        // builds two: build ours on a second thread meanwhile.
        let (http, client) = std::thread::scope(|scope| {
            let http = scope.spawn(|| {
                // Our decision per request URL (blob redirects to object storage included).
                let mut builder = reqwest::Client::builder().no_proxy();
                if !proxy_config.is_empty() {
                    builder = builder.proxy(reqwest::Proxy::custom(move |url| {
                        proxy_config.proxy_for(url).cloned()
                    }));
                }
                builder
                    .connect_timeout(connect_timeout)
                    .read_timeout(read_timeout)
                    .tls_certs_merge(roots)
                    .user_agent(concat!("executor/", env!("CARGO_PKG_VERSION")))
                    .build()
            });
            let client = Client::new(config);
            let http = http
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (http, client)
        });
        let http = http.map_err(|e| setup(error_chain(&e)))?;
        tracing::debug!(
            registry = %registry,
            authenticated = !matches!(auth, RegistryAuth::Anonymous),
            "registry client ready"
        );
        Ok(EndpointReader {
            role: if source.mirror { "mirror" } else { "primary" },
            client,
            reference,
            auth,
            http,
            base_url,
            blob_auth: tokio::sync::Mutex::new(None),
        })
    }

    /// The authorization for blob requests: a bearer token from the registry's token
    /// service (via oci-client), else basic credentials, else nothing. Cached; `renew`
    /// drops the cached one first (an expired token).
    async fn blob_auth(&self, renew: bool) -> Result<BlobAuth, SourceError> {
        let mut cached = self.blob_auth.lock().await;
        if renew {
            *cached = None;
        }
        if let Some(auth) = cached.as_ref() {
            return Ok(auth.clone());
        }
        let token = self
            .client
            .auth(&self.reference, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| self.classify(&self.reference.to_string(), e))?;
        let auth = match (token, &self.auth) {
            (Some(token), _) => BlobAuth::Bearer(token),
            (None, RegistryAuth::Basic(user, password)) => {
                BlobAuth::Basic(user.clone(), password.clone())
            }
            (None, RegistryAuth::Bearer(token)) => BlobAuth::Bearer(token.clone()),
            (None, RegistryAuth::Anonymous) => BlobAuth::None,
        };
        *cached = Some(auth.clone());
        Ok(auth)
    }

    async fn blob_request(
        &self,
        digest: &str,
        offset: u64,
        renew_auth: bool,
    ) -> Result<reqwest::Response, SourceError> {
        let url = format!("{}/blobs/{digest}", self.base_url);
        let mut request = self.http.get(&url);
        // Redirects to another host (object storage) drop the Authorization header:
        // reqwest strips it on cross-origin redirects, so credentials do not leak.
        request = match self.blob_auth(renew_auth).await? {
            BlobAuth::None => request,
            BlobAuth::Basic(user, password) => request.basic_auth(user, Some(password)),
            BlobAuth::Bearer(token) => request.bearer_auth(token),
        };
        if offset > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        request
            .send()
            .await
            .map_err(|e| classify_reqwest(self.reference.registry(), digest, e))
    }

    fn classify(&self, what: &str, err: OciDistributionError) -> SourceError {
        classify(&self.reference, what, err)
    }
}

impl EndpointReader {
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

    async fn tagged_manifest(&self, tag: &str) -> Result<Option<Bytes>, SourceError> {
        let tagged = Reference::with_tag(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            tag.to_owned(),
        );
        match self
            .client
            .pull_manifest_raw(&tagged, &self.auth, &super::MANIFEST_MEDIA_TYPES)
            .await
            .map_err(|e| self.classify(&tagged.to_string(), e))
        {
            Ok((bytes, _)) => Ok(Some(bytes)),
            Err(SourceError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v2/<name>/referrers/<digest>`; a registry without the API answers 404
    /// (Distribution 2.8) or 400/405.
    async fn referrers(&self, digest: &Digest) -> Result<Option<Bytes>, SourceError> {
        let what = format!("referrers of {digest}");
        let url = format!("{}/referrers/{digest}", self.base_url);
        let request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, super::OCI_INDEX);
        let request = match self.blob_auth(false).await? {
            BlobAuth::None => request,
            BlobAuth::Basic(user, password) => request.basic_auth(user, Some(password)),
            BlobAuth::Bearer(token) => request.bearer_auth(token),
        };
        let response = request
            .send()
            .await
            .map_err(|e| classify_reqwest(self.reference.registry(), &what, e))?;
        match response.status().as_u16() {
            200 => {}
            400 | 404 | 405 => return Ok(None),
            401 | 403 => {
                return Err(SourceError::Unauthorized {
                    reference: self.reference.to_string(),
                });
            }
            code => {
                return Err(SourceError::Registry {
                    what,
                    detail: format!("HTTP {code}"),
                });
            }
        }
        if response
            .content_length()
            .is_some_and(|n| n > super::MAX_MANIFEST_SIZE as u64)
        {
            return Err(SourceError::Registry {
                what,
                detail: "a referrers index larger than a manifest may be".into(),
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| classify_reqwest(self.reference.registry(), &what, e))?;
        if bytes.len() > super::MAX_MANIFEST_SIZE {
            return Err(SourceError::Registry {
                what,
                detail: "a referrers index larger than a manifest may be".into(),
            });
        }
        Ok(Some(bytes))
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
        let mut response = self.blob_request(&digest, offset, false).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            // Tokens expire during long pulls: get a fresh one once.
            response = self.blob_request(&digest, offset, true).await?;
        }
        let status = response.status();
        let start = match status.as_u16() {
            200 => 0,
            206 => {
                let range = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(content_range_start);
                if range != Some(offset) {
                    return Err(SourceError::Registry {
                        what: digest,
                        detail: format!("asked for bytes from {offset}, got range {range:?}"),
                    });
                }
                offset
            }
            // Nothing left to send from there (or ranges unsupported): start over.
            416 if offset > 0 => return Box::pin(self.blob(descriptor, 0)).await,
            401 | 403 => {
                return Err(SourceError::Unauthorized {
                    reference: self.reference.to_string(),
                });
            }
            404 => {
                return Err(SourceError::NotFound {
                    reference: self.reference.to_string(),
                    detail: format!("blob {digest} is missing from the registry"),
                });
            }
            code => {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                let body = response.text().await.unwrap_or_default();
                let detail = format!("HTTP {code} for blob {digest}: {}", body.trim());
                return Err(if code == 429 || (500..600).contains(&code) {
                    SourceError::Transient {
                        what: digest,
                        detail,
                        retry_after,
                    }
                } else {
                    SourceError::Registry {
                        what: digest,
                        detail,
                    }
                });
            }
        };
        let stream = response
            .bytes_stream()
            .map_err(move |e| SourceError::Transient {
                what: digest.clone(),
                detail: error_chain(&e),
                retry_after: None,
            })
            .boxed();
        Ok((stream, start))
    }
}

/// A `Retry-After` value: delay seconds, or an HTTP date (IMF-fixdate,
/// `Sun, 06 Nov 1994 08:49:37 GMT`) turned into the time left until then.
fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // IMF-fixdate is RFC 2822's form with `GMT`; chrono reads both.
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let left = at.signed_duration_since(chrono::DateTime::<chrono::Utc>::from(now));
    // A date in the past means: now.
    Some(left.to_std().unwrap_or(Duration::ZERO))
}

/// The first byte position of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range_start(value: &str) -> Option<u64> {
    value
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

fn classify_reqwest(registry: &str, what: &str, e: reqwest::Error) -> SourceError {
    let detail = error_chain(&e);
    if e.is_connect() {
        SourceError::Unreachable {
            registry: registry.to_owned(),
            detail,
        }
    } else {
        // Timeouts, resets, truncated bodies: worth another try.
        SourceError::Transient {
            what: what.to_owned(),
            detail,
            retry_after: None,
        }
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
                SourceError::Transient {
                    what,
                    detail,
                    retry_after: None,
                }
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
                SourceError::Transient {
                    what,
                    detail,
                    retry_after: None,
                }
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
                429 | 500..=599 => SourceError::Transient {
                    what,
                    detail,
                    retry_after: None,
                },
                _ => SourceError::Registry { what, detail },
            }
        }
        // oci-client checks a manifest against `Docker-Content-Digest` (or the pinned
        // digest). A mismatch is most often a body cut short or mangled on the way, so
        // it is retried; a registry that keeps lying still fails, naming both digests.
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => SourceError::Transient {
            what,
            detail: format!(
                "manifest digest mismatch: expected {expected}, content hashes to {actual}"
            ),
            retry_after: None,
        },
        OciDistributionError::IoError(e) => SourceError::Transient {
            what,
            detail: error_chain(&e),
            retry_after: None,
        },
        other => SourceError::Registry {
            what,
            detail: error_chain(&other),
        },
    }
}

/// The error and its causes on one line (reqwest hides the useful part in sources).
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
    fn retry_after_takes_seconds_or_a_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_767); // 08:49:27
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(10))
        );
        // A date in the past means: now.
        assert_eq!(
            parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn content_range_start_is_parsed() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/1"), Some(0));
        assert_eq!(content_range_start("bytes */200"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
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
