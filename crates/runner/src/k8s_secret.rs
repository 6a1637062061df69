//! The Kubernetes Secret status reporter: how the Kubernetes engine learns a
//! runner's start status.
//!
//! The status JSON goes under key `status` of the Secret named after the Action
//! (`context.name`) in `context.platform.namespace`. The engine creates that
//! Secret beforehand; the reporter only updates it.

use crate::context::Context;
use crate::status::{ReportError, StatusReporter};
use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

/// Key of the Secret's `data` the status is written under.
pub const STATUS_KEY: &str = "status";

/// How many times an update is retried after a `409 Conflict` before giving up.
pub const MAX_CONFLICT_RETRIES: u32 = 5;

/// Why the status could not be written to the Secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum K8sSecretError {
    /// No Kubernetes configuration could be inferred (neither `KUBECONFIG`,
    /// `~/.kube/config` nor an in-cluster service account).
    #[error("cannot infer kubernetes configuration")]
    Config(#[source] kube::Error),
    /// The Secret the engine should have created does not exist.
    #[error("status secret {namespace}/{name} does not exist")]
    NotFound {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
    },
    /// Every attempt to update the Secret met a concurrent change.
    #[error("status secret {namespace}/{name} kept changing: gave up after {attempts} conflicts")]
    Conflicts {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// How many updates were attempted.
        attempts: u32,
    },
    /// Any other failure talking to the API server.
    #[error("cannot update status secret {namespace}/{name}")]
    Api {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The client error.
        source: kube::Error,
    },
}

impl From<K8sSecretError> for ReportError {
    fn from(error: K8sSecretError) -> Self {
        ReportError::Other(Box::new(error))
    }
}

/// Reports the status into a Kubernetes Secret: get, then replace, retrying a
/// bounded number of times when someone else changed the Secret in between.
///
/// Other keys of the Secret are kept. The status is never logged: it may carry
/// whatever the runner put in it.
#[derive(Clone)]
pub struct K8sSecretReporter {
    client: kube::Client,
}

impl std::fmt::Debug for K8sSecretReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K8sSecretReporter").finish_non_exhaustive()
    }
}

impl K8sSecretReporter {
    /// A reporter using an existing client.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    /// A reporter with the configuration `kube` infers: `KUBECONFIG` (or
    /// `~/.kube/config`), else the in-cluster service account.
    pub async fn try_default() -> Result<Self, K8sSecretError> {
        let client = kube::Client::try_default()
            .await
            .map_err(K8sSecretError::Config)?;
        Ok(Self::new(client))
    }

    async fn write(
        &self,
        namespace: &str,
        name: &str,
        status: Vec<u8>,
    ) -> Result<(), K8sSecretError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let api_error = |source| K8sSecretError::Api {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        };
        for attempt in 1..=MAX_CONFLICT_RETRIES + 1 {
            let mut secret = match secrets.get(name).await {
                Ok(secret) => secret,
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    return Err(K8sSecretError::NotFound {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                    });
                }
                Err(error) => return Err(api_error(error)),
            };
            secret
                .data
                .get_or_insert_with(Default::default)
                .insert(STATUS_KEY.to_owned(), ByteString(status.clone()));
            // The resourceVersion from the get makes the replace fail rather than
            // overwrite a concurrent change; then we read again and retry.
            match secrets.replace(name, &PostParams::default(), &secret).await {
                Ok(_) => {
                    tracing::debug!(namespace, secret = name, attempt, "status reported");
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::debug!(
                        namespace,
                        secret = name,
                        attempt,
                        "status secret conflict, retrying"
                    );
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    return Err(K8sSecretError::NotFound {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                    });
                }
                Err(error) => return Err(api_error(error)),
            }
        }
        Err(K8sSecretError::Conflicts {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            attempts: MAX_CONFLICT_RETRIES + 1,
        })
    }
}

#[async_trait]
impl StatusReporter for K8sSecretReporter {
    async fn report(
        &self,
        context: &Context,
        status: &serde_json::Value,
    ) -> Result<(), ReportError> {
        let bytes = serde_json::to_vec(status)?;
        self.write(&context.platform.namespace, &context.name, bytes)
            .await
            .map_err(ReportError::from)
    }
}
