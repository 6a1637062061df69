//! The Argo Workflow runner: submits the Action's workflow as an Argo `Workflow`
//! and waits until Argo has finished it.
//!
//! - [`ArgoRunner::start`] validates `args.workflow` as Argo's submit does
//!   ([`validate`]), then creates the Workflow named after the Action (a
//!   server-side dry run when the context says so) and reports
//!   `{"argoWorkflowRef": {"name", "namespace"}}`.
//! - [`ArgoRunner::wait_for_completion`] watches that one Workflow until
//!   `status.finishedAt` is set ([`wait`]).
//!
//! The Kubernetes configuration comes from `KUBECONFIG` or the in-cluster
//! service account, as `kube` infers it ([`ArgoRunner::infer`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod status;
pub mod validate;
pub mod wait;
pub mod workflow;

use async_trait::async_trait;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use runner::{BoxError, Ctx, Runner, StartInput, StartOutput, WaitInput, WaitOutput};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Name of the runner, as it appears in logs.
pub const NAME: &str = "argo-runner";

/// Why the runner failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArgoError {
    /// No Kubernetes configuration could be inferred.
    #[error("cannot infer kubernetes configuration: {0}")]
    Config(#[source] kube::Error),
    /// The runner args are not a valid workflow.
    #[error(transparent)]
    Args(#[from] workflow::ArgsError),
    /// A Workflow of that name already exists (the Action ran before, or a name clash).
    #[error("workflow {namespace}/{name} already exists")]
    AlreadyExists {
        /// Namespace of the Workflow.
        namespace: String,
        /// Name of the Workflow.
        name: String,
    },
    /// The API server refused or failed the create.
    #[error("cannot create workflow {namespace}/{name}: {source}")]
    Create {
        /// Namespace of the Workflow.
        namespace: String,
        /// Name of the Workflow.
        name: String,
        /// The client error.
        source: kube::Error,
    },
    /// The Workflow object could not be turned into a request.
    #[error("cannot encode workflow {namespace}/{name}: {source}")]
    Encode {
        /// Namespace of the Workflow.
        namespace: String,
        /// Name of the Workflow.
        name: String,
        /// The serialization error.
        source: serde_json::Error,
    },
    /// Waiting for the Workflow failed.
    #[error(transparent)]
    Wait(#[from] wait::WaitError),
}

/// The Argo Workflow runner.
///
/// Cheap to clone: clones share the Kubernetes client.
#[derive(Clone)]
pub struct ArgoRunner {
    /// Set at construction, or inferred on first use (which needs a runtime).
    client: Arc<OnceCell<kube::Client>>,
}

impl std::fmt::Debug for ArgoRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgoRunner").finish_non_exhaustive()
    }
}

impl ArgoRunner {
    /// A runner using an existing client.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client: Arc::new(OnceCell::new_with(Some(client))),
        }
    }

    /// A runner that infers its configuration on first use, as `kube` does:
    /// `KUBECONFIG` (or `~/.kube/config`), else the in-cluster service account.
    ///
    /// Needs no async runtime to construct, so a `main` can build it before the
    /// SDK starts one; a missing configuration surfaces as the first call's error.
    pub fn infer() -> Self {
        Self {
            client: Arc::new(OnceCell::new()),
        }
    }

    /// Infers the Kubernetes configuration now rather than on first use, so that
    /// a missing one is reported before any work starts.
    pub async fn connect(&self) -> Result<(), ArgoError> {
        self.client().await.map(drop)
    }

    /// The Kubernetes client, inferred now if it was not yet (for reporters that
    /// share it).
    pub async fn client(&self) -> Result<kube::Client, ArgoError> {
        self.client
            .get_or_try_init(|| async {
                kube::Client::try_default().await.map_err(ArgoError::Config)
            })
            .await
            .cloned()
    }

    /// The Workflows of one namespace.
    pub async fn workflows(&self, namespace: &str) -> Result<Api<DynamicObject>, ArgoError> {
        Ok(workflows(self.client().await?, namespace))
    }

    /// Validates and creates the Workflow; see the crate documentation.
    pub async fn submit(&self, input: &StartInput) -> Result<StartOutput, ArgoError> {
        let context = &input.context;
        let (namespace, name) = (&context.platform.namespace, &context.name);
        let object = workflow::build(context, &input.args)?;
        let object: DynamicObject =
            serde_json::from_value(object).map_err(|source| ArgoError::Encode {
                namespace: namespace.clone(),
                name: name.clone(),
                source,
            })?;
        let params = PostParams {
            dry_run: context.dry_run,
            ..Default::default()
        };
        match self
            .workflows(namespace)
            .await?
            .create(&params, &object)
            .await
        {
            Ok(_) => {
                tracing::info!(
                    workflow = %name,
                    namespace = %namespace,
                    dry_run = context.dry_run,
                    "workflow submitted"
                );
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                return Err(ArgoError::AlreadyExists {
                    namespace: namespace.clone(),
                    name: name.clone(),
                });
            }
            Err(source) => {
                return Err(ArgoError::Create {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source,
                });
            }
        }
        Ok(StartOutput {
            status: json!({"argoWorkflowRef": {"name": name, "namespace": namespace}}),
        })
    }
}

/// The Workflows of one namespace, as arbitrary JSON objects.
pub fn workflows(client: kube::Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(workflow::GROUP, workflow::VERSION, workflow::KIND);
    Api::namespaced_with(client, namespace, &ApiResource::from_gvk(&gvk))
}

#[async_trait]
impl Runner for ArgoRunner {
    fn name(&self) -> &str {
        NAME
    }

    async fn start(&self, _ctx: &Ctx, input: StartInput) -> Result<StartOutput, BoxError> {
        Ok(self.submit(&input).await?)
    }

    async fn wait_for_completion(
        &self,
        _ctx: &Ctx,
        input: WaitInput,
    ) -> Result<WaitOutput, BoxError> {
        let context = &input.context;
        let (namespace, name) = (&context.platform.namespace, &context.name);
        if context.dry_run {
            return Ok(WaitOutput {
                succeeded: true,
                message: format!(
                    "dry run: workflow {namespace}/{name} was validated by the server, nothing was created"
                ),
            });
        }
        let api = self.workflows(namespace).await?;
        let outcome = wait::until_finished(&api, namespace, name)
            .await
            .map_err(ArgoError::from)?;
        tracing::info!(workflow = %name, namespace = %namespace, phase = %outcome.phase, "workflow finished");
        let message = if !outcome.message.is_empty() {
            outcome.message
        } else {
            format!(
                "workflow {namespace}/{name} finished with phase {}",
                outcome.phase
            )
        };
        Ok(WaitOutput {
            succeeded: outcome.succeeded,
            message,
        })
    }
}
