//! Status reporters: where a runner's start status goes.

use crate::context::Context;
use crate::runner::BoxError;
use async_trait::async_trait;

/// Why a status could not be reported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The status could not be written to the file reporter's path.
    #[error("cannot write status file {path}: {source}")]
    Write {
        /// The status file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The status is not serializable as JSON.
    #[error("cannot serialize status: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A reporter-specific failure (for example from the Kubernetes API).
    #[error("{0}")]
    Other(BoxError),
}

/// Sends a runner's status to the engine.
#[async_trait]
pub trait StatusReporter: Send + Sync {
    /// Reports `status` for the Action named in `context`.
    async fn report(
        &self,
        context: &Context,
        status: &serde_json::Value,
    ) -> Result<(), ReportError>;
}
