//! Waiting for one Workflow to finish, robust to what trips Argo's own clients.
//!
//! List first (the Workflow may have finished before we look), then watch from
//! the list's resourceVersion with a field selector on the name. A watch that
//! ends is resumed from the last resourceVersion seen (events and bookmarks);
//! `410 Gone`/`Expired` means that history is lost, so we list again. Transport
//! errors are retried a bounded number of times in a row.
//!
//! There is no overall timeout here: the runner SDK's Manager bounds the run.

use crate::workflow::{Outcome, outcome};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use std::time::Duration;

/// Server-side bound of one watch request; under `kube`'s 295 s read timeout.
pub const WATCH_TIMEOUT_SECS: u32 = 290;

/// How many transport failures in a row are retried before giving up.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 5;

/// Why waiting for the Workflow failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The Workflow is not there (never created, or deleted before we looked).
    #[error("workflow {namespace}/{name} not found")]
    NotFound {
        /// Namespace of the Workflow.
        namespace: String,
        /// Name of the Workflow.
        name: String,
    },
    /// The Workflow was deleted before it finished.
    #[error("workflow {namespace}/{name} was deleted before it finished")]
    Deleted {
        /// Namespace of the Workflow.
        namespace: String,
        /// Name of the Workflow.
        name: String,
    },
    /// The API server refused the list or watch, or kept failing.
    #[error("cannot watch workflow {namespace}/{name}: {source}")]
    Api {
        /// Namespace of the Workflow.
        namespace: String,
        /// Name of the Workflow.
        name: String,
        /// The last client error.
        source: kube::Error,
    },
}

/// What one watch request ended with.
enum WatchEnd {
    /// The Workflow finished.
    Finished(Outcome),
    /// The stream ended normally: watch again from the last resourceVersion.
    Closed,
    /// The resourceVersion is too old: list again.
    Expired,
}

/// Waits until the Workflow `name` in the namespace of `api` has `status.finishedAt`.
pub async fn until_finished(
    api: &Api<DynamicObject>,
    namespace: &str,
    name: &str,
) -> Result<Outcome, WaitError> {
    let waiter = Waiter {
        api,
        namespace,
        name,
        selector: format!("metadata.name={name}"),
    };
    let mut failures = 0;
    loop {
        match waiter.list_then_watch().await {
            Ok(outcome) => return Ok(outcome),
            Err(Failure::Fatal(error)) => return Err(error),
            Err(Failure::Transient(source)) => {
                failures += 1;
                if failures >= MAX_CONSECUTIVE_FAILURES {
                    return Err(waiter.api_error(source));
                }
                tracing::warn!(
                    workflow = %name,
                    namespace = %namespace,
                    error = %source,
                    failures,
                    "watching the workflow failed, retrying"
                );
                tokio::time::sleep(Duration::from_secs(u64::from(failures))).await;
            }
        }
    }
}

enum Failure {
    Fatal(WaitError),
    Transient(kube::Error),
}

struct Waiter<'a> {
    api: &'a Api<DynamicObject>,
    namespace: &'a str,
    name: &'a str,
    selector: String,
}

impl Waiter<'_> {
    fn api_error(&self, source: kube::Error) -> WaitError {
        WaitError::Api {
            namespace: self.namespace.to_owned(),
            name: self.name.to_owned(),
            source,
        }
    }

    /// Sorts client errors: API answers are final, transport trouble is retried.
    fn classify(&self, error: kube::Error) -> Failure {
        match error {
            kube::Error::Api(_) => Failure::Fatal(self.api_error(error)),
            other => Failure::Transient(other),
        }
    }

    async fn list_then_watch(&self) -> Result<Outcome, Failure> {
        loop {
            let list = self
                .api
                .list(&ListParams::default().fields(&self.selector))
                .await
                .map_err(|e| self.classify(e))?;
            let Some(workflow) = list.items.first() else {
                return Err(Failure::Fatal(WaitError::NotFound {
                    namespace: self.namespace.to_owned(),
                    name: self.name.to_owned(),
                }));
            };
            if let Some(outcome) = outcome(&workflow.data) {
                return Ok(outcome);
            }
            let mut version = list.metadata.resource_version.unwrap_or_default();
            loop {
                match self.watch_once(&mut version).await? {
                    WatchEnd::Finished(outcome) => return Ok(outcome),
                    WatchEnd::Closed => {
                        tracing::debug!(workflow = %self.name, %version, "watch closed, resuming")
                    }
                    WatchEnd::Expired => {
                        tracing::debug!(workflow = %self.name, "watch expired, listing again");
                        break;
                    }
                }
            }
        }
    }

    async fn watch_once(&self, version: &mut String) -> Result<WatchEnd, Failure> {
        // Bookmarks are on by default: they keep `version` fresh on a quiet Workflow.
        let params = WatchParams::default()
            .fields(&self.selector)
            .timeout(WATCH_TIMEOUT_SECS);
        let stream = match self.api.watch(&params, version).await {
            Ok(stream) => stream,
            Err(kube::Error::Api(status)) if status.code == 410 => return Ok(WatchEnd::Expired),
            Err(error) => return Err(self.classify(error)),
        };
        let mut stream = stream.boxed();
        while let Some(event) = stream.try_next().await.map_err(|e| self.classify(e))? {
            match event {
                WatchEvent::Added(workflow) | WatchEvent::Modified(workflow) => {
                    if let Some(outcome) = outcome(&workflow.data) {
                        return Ok(WatchEnd::Finished(outcome));
                    }
                    if let Some(rv) = workflow.metadata.resource_version {
                        *version = rv;
                    }
                }
                WatchEvent::Deleted(_) => {
                    return Err(Failure::Fatal(WaitError::Deleted {
                        namespace: self.namespace.to_owned(),
                        name: self.name.to_owned(),
                    }));
                }
                WatchEvent::Bookmark(bookmark) => *version = bookmark.metadata.resource_version,
                WatchEvent::Error(status) if status.code == 410 => return Ok(WatchEnd::Expired),
                WatchEvent::Error(status) => {
                    return Err(Failure::Fatal(self.api_error(kube::Error::Api(status))));
                }
            }
        }
        Ok(WatchEnd::Closed)
    }
}
