//! Where the Argo runner reports its start status.
//!
//! By default the SDK's choice: the file in `RUNNER_STATUS_PATH` (which the
//! executor forwards when the run is over), else nowhere. With
//! `ARGO_RUNNER_STATUS_REPORTER=k8s-secret` the start status also goes to the
//! Action's Secret as soon as the Workflow is created, as Capact's Argo runner
//! does, so that the engine can find the running Workflow before the run ends.

use async_trait::async_trait;
use runner::k8s_secret::K8sSecretReporter;
use runner::{Context, FileReporter, ReportError, StatusReporter};
use std::path::PathBuf;

/// Variable choosing the reporter: `file` (the default) or `k8s-secret`.
pub const REPORTER_VAR: &str = "ARGO_RUNNER_STATUS_REPORTER";

/// The `ARGO_RUNNER_STATUS_REPORTER` value is not a known reporter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {REPORTER_VAR} has invalid value {0:?}: expected file or k8s-secret")]
pub struct UnknownReporter(pub String);

/// Which reporter the runner uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReporterChoice {
    /// The SDK's: the status file when `RUNNER_STATUS_PATH` is set.
    File,
    /// The Action's Kubernetes Secret, and the status file too when one is set.
    K8sSecret,
}

impl ReporterChoice {
    /// Parses the variable's value; unset or empty means [`ReporterChoice::File`].
    pub fn parse(value: Option<&str>) -> Result<Self, UnknownReporter> {
        match value.unwrap_or("") {
            "" | "file" => Ok(Self::File),
            "k8s-secret" => Ok(Self::K8sSecret),
            other => Err(UnknownReporter(other.to_owned())),
        }
    }
}

/// Reports to the Secret, then to the status file if there is one: the file is
/// what the executor forwards, so it is written even when the Secret is not.
#[derive(Debug)]
pub struct SecretAndFile {
    secret: K8sSecretReporter,
    file: Option<FileReporter>,
}

impl SecretAndFile {
    /// Reports through `secret`, and to `status_path` when given.
    pub fn new(secret: K8sSecretReporter, status_path: Option<PathBuf>) -> Self {
        Self {
            secret,
            file: status_path.map(FileReporter::new),
        }
    }
}

#[async_trait]
impl StatusReporter for SecretAndFile {
    async fn report(
        &self,
        context: &Context,
        status: &serde_json::Value,
    ) -> Result<(), ReportError> {
        let file = match &self.file {
            Some(file) => file.report(context, status).await,
            None => Ok(()),
        };
        self.secret.report(context, status).await?;
        file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reporter_values() {
        assert_eq!(ReporterChoice::parse(None), Ok(ReporterChoice::File));
        assert_eq!(ReporterChoice::parse(Some("")), Ok(ReporterChoice::File));
        assert_eq!(
            ReporterChoice::parse(Some("file")),
            Ok(ReporterChoice::File)
        );
        assert_eq!(
            ReporterChoice::parse(Some("k8s-secret")),
            Ok(ReporterChoice::K8sSecret)
        );
        let err = ReporterChoice::parse(Some("secret")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable ARGO_RUNNER_STATUS_REPORTER has invalid value \"secret\": expected file or k8s-secret"
        );
    }
}
