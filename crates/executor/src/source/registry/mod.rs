//! Reading images from a registry over the OCI distribution protocol.
//!
//! `oci-client` resolves manifests and does the token dance. Blobs are fetched with a
//! small `reqwest` client of our own (using oci-client's token) because oci-client does
//! not expose response headers on errors: we need `Retry-After` on 429/503, and
//! `Content-Range` to be sure a resumed download continues where ours stopped.
//!
//! An image may be reachable at several endpoints: the mirrors `registries.conf` names
//! for it, then its primary location ([`crate::source::registries_conf`]). They are tried in
//! that order, as containers-image does: the first that serves the manifest is used for
//! the rest of the pull, and any failure (unreachable, 5xx, 404, refused credentials, a
//! manifest that does not match a pinned digest) moves on to the next endpoint, for the
//! manifest and for each blob alike. When all fail, the error names each endpoint with
//! its error. Nothing a mirror sends is trusted: blobs and manifests are verified
//! against their digests as always.
//!
//! Every HTTP client built here takes its proxy from [`crate::source::proxy`], never from
//! reqwest's own reading of the environment.

mod certs;
mod classify;
mod endpoint;

use super::{ByteStream, EndpointFailure, ImageReader, SourceError};
use crate::source::proxy::ProxyConfig;
use crate::source::registries_conf::RegistriesConf;
use async_trait::async_trait;
use bytes::Bytes;
use certs::read_certificates;
use endpoint::EndpointReader;
use oci_client::Reference;
use oci_spec::image::{Descriptor, Digest};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How to talk to registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP. Nothing else is: not even
    /// `localhost` (unlike podman), so plain HTTP is always an explicit choice.
    pub insecure_registries: Vec<String>,
    /// An auth file to use before the standard ones (see [`crate::source::auth`]).
    pub auth_file: Option<PathBuf>,
    /// A directory of extra CA certificates (`*.crt`, `*.pem`, `*.der`) to trust, like podman's
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
