//! One endpoint of an image (a mirror or the primary location): its clients, set up
//! with the protocol, CA certificates, proxy and credentials it needs, and its requests
//! (manifests through oci-client; blobs and referrers through our own reqwest client,
//! with the authorization found on first use and renewed once when a token expires).

use super::RegistryOptions;
use super::classify::{
    classify, classify_reqwest, content_range_start, parse_digest, parse_retry_after,
};
use crate::error::error_chain;
use crate::source::auth::{self, Credentials};
use crate::source::registries_conf::PullSource;
use crate::source::{ByteStream, SourceError, verify_bytes};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_client::client::{Certificate, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use oci_spec::image::{Descriptor, Digest};
use std::time::Duration;

/// The image at one endpoint.
pub(super) struct EndpointReader {
    /// `mirror` or `primary`, for messages.
    pub(super) role: &'static str,
    client: Client,
    pub(super) reference: Reference,
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

/// The `NO_PROXY` list given to oci-client for an endpoint reached directly, with a
/// proxy that no host therefore uses: with no proxy configured at all, reqwest would
/// read the environment itself, by other rules than [`crate::source::proxy`]'s. (reqwest's `*`
/// does not cover IP addresses, hence the two networks.)
const NO_HOST: &str = "*,0.0.0.0/0,::/0";

impl EndpointReader {
    /// A client for one endpoint. `certificates` are the extra CAs, read once.
    pub(super) fn new(
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

    /// `request` carrying the authorization of `blob_auth` (`renew` as there), the one
    /// way blob and referrers requests get it.
    async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        renew: bool,
    ) -> Result<reqwest::RequestBuilder, SourceError> {
        Ok(match self.blob_auth(renew).await? {
            BlobAuth::None => request,
            BlobAuth::Basic(user, password) => request.basic_auth(user, Some(password)),
            BlobAuth::Bearer(token) => request.bearer_auth(token),
        })
    }

    async fn blob_request(
        &self,
        digest: &str,
        offset: u64,
        renew_auth: bool,
    ) -> Result<reqwest::Response, SourceError> {
        let url = format!("{}/blobs/{digest}", self.base_url);
        // Redirects to another host (object storage) drop the Authorization header:
        // reqwest strips it on cross-origin redirects, so credentials do not leak.
        let mut request = self.authorize(self.http.get(&url), renew_auth).await?;
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
    pub(super) async fn root_manifest(&self) -> Result<(Bytes, Digest), SourceError> {
        let what = self.reference.to_string();
        let (bytes, header_digest) = self
            .client
            .pull_manifest_raw(
                &self.reference,
                &self.auth,
                &crate::source::MANIFEST_MEDIA_TYPES,
            )
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
                let computed = crate::source::sha256_digest(&bytes);
                tracing::debug!(reference = %what, digest = %computed, header = %header_digest, "resolved");
                computed
            }
        };
        Ok((bytes, digest))
    }

    pub(super) async fn tagged_manifest(&self, tag: &str) -> Result<Option<Bytes>, SourceError> {
        let tagged = Reference::with_tag(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            tag.to_owned(),
        );
        match self
            .client
            .pull_manifest_raw(&tagged, &self.auth, &crate::source::MANIFEST_MEDIA_TYPES)
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
    pub(super) async fn referrers(&self, digest: &Digest) -> Result<Option<Bytes>, SourceError> {
        let what = format!("referrers of {digest}");
        let too_large = |what| SourceError::Registry {
            what,
            detail: "a referrers index larger than a manifest may be".into(),
        };
        let url = format!("{}/referrers/{digest}", self.base_url);
        let request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, crate::source::OCI_INDEX);
        let request = self.authorize(request, false).await?;
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
            .is_some_and(|n| n > crate::source::MAX_MANIFEST_SIZE as u64)
        {
            return Err(too_large(what));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| classify_reqwest(self.reference.registry(), &what, e))?;
        if bytes.len() > crate::source::MAX_MANIFEST_SIZE {
            return Err(too_large(what));
        }
        Ok(Some(bytes))
    }

    pub(super) async fn manifest(&self, digest: &Digest) -> Result<Bytes, SourceError> {
        let child = Reference::with_digest(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            digest.to_string(),
        );
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&child, &self.auth, &crate::source::MANIFEST_MEDIA_TYPES)
            .await
            .map_err(|e| self.classify(digest.as_ref(), e))?;
        Ok(bytes)
    }

    pub(super) async fn blob(
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
