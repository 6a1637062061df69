//! Status reporters: where a runner's start status goes.

use crate::context::Context;
use crate::runner::BoxError;
use async_trait::async_trait;

/// Why a status could not be reported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The status could not be written to the file reporter's path.
    #[error("cannot write status file {path}")]
    Write {
        /// The status file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The status is not serializable as JSON.
    #[error("cannot serialize status")]
    Serialize(#[from] serde_json::Error),
    /// A reporter-specific failure (for example from the Kubernetes API); the
    /// message includes its causes.
    #[error("{}", crate::runner::error_chain(.0.as_ref()))]
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

pub use runner_contract::status::RunStatus;

/// A reporter that drops the status: for runners whose engine does not collect one.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopReporter;

#[async_trait]
impl StatusReporter for NoopReporter {
    async fn report(
        &self,
        context: &Context,
        _status: &serde_json::Value,
    ) -> Result<(), ReportError> {
        tracing::debug!(action = %context.name, "no status reporter configured, status dropped");
        Ok(())
    }
}

/// A reporter that writes the status as JSON to a file (the executor passes the
/// path in `RUNNER_STATUS_PATH` and forwards the file to the engine).
///
/// The write is atomic: a temporary file in the same directory is written, synced
/// and renamed over the path, so a reader never sees a half-written status, and a
/// failed write leaves no temporary file behind. The directory must exist. A
/// second report replaces the first.
#[derive(Debug, Clone)]
pub struct FileReporter {
    path: std::path::PathBuf,
}

impl FileReporter {
    /// A reporter writing to `path`.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        FileReporter { path: path.into() }
    }

    /// The status file this reporter writes.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

#[async_trait]
impl StatusReporter for FileReporter {
    async fn report(
        &self,
        context: &Context,
        status: &serde_json::Value,
    ) -> Result<(), ReportError> {
        let mut body = serde_json::to_vec(status)?;
        body.push(b'\n');
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || write_atomically(&path, &body))
            .await
            .map_err(|e| ReportError::Other(Box::new(e)))?;
        written.map_err(|source| ReportError::Write {
            path: self.path.clone(),
            source,
        })?;
        tracing::debug!(action = %context.name, path = %self.path.display(), "status written");
        Ok(())
    }
}

/// Writes `body` to `path` through a synced temporary file in the same directory
/// and a rename, then syncs the directory so the rename survives a crash.
fn write_atomically(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if path.file_name().is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "path names no file",
        ));
    }
    // The temporary file is removed when dropped, so an error on any step below
    // leaves nothing behind.
    let mut tmp = tempfile::Builder::new()
        .prefix(".status-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(body)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{OwnerReference, Platform};

    fn context() -> Context {
        Context {
            name: "action-1".into(),
            dry_run: false,
            timeout: Default::default(),
            platform: Platform {
                namespace: "ns".into(),
                service_account_name: "sa".into(),
                owner_ref: OwnerReference {
                    api_version: "core.capact.io/v1alpha1".into(),
                    kind: "Action".into(),
                    name: "action-1".into(),
                    uid: "uid-1".into(),
                    controller: Some(true),
                    block_owner_deletion: None,
                },
            },
        }
    }

    #[tokio::test]
    async fn file_reporter_writes_the_status_and_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        let reporter = FileReporter::new(&path);
        reporter
            .report(&context(), &serde_json::json!({"ref": {"name": "a"}}))
            .await
            .unwrap();
        let first: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(first, serde_json::json!({"ref": {"name": "a"}}));
        reporter
            .report(&context(), &serde_json::json!("second"))
            .await
            .unwrap();
        let second: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(second, serde_json::json!("second"));
        // Only the status file: no temporary file is left next to it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("status.json")]);
    }

    #[tokio::test]
    async fn file_reporter_names_the_path_it_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("status.json");
        let err = FileReporter::new(&path)
            .report(&context(), &serde_json::json!({}))
            .await
            .unwrap_err();
        assert!(matches!(err, ReportError::Write { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    #[tokio::test]
    async fn file_reporter_leaves_no_temporary_file_when_rename_fails() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the status file should go: the rename onto it fails.
        let path = dir.path().join("status.json");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), b"x").unwrap();
        let err = FileReporter::new(&path)
            .report(&context(), &serde_json::json!({}))
            .await
            .unwrap_err();
        assert!(matches!(err, ReportError::Write { .. }), "{err:?}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("status.json")]);
    }
}
