//! The outcome of a run and where it goes.
//!
//! The outcome is the runner's own status (the JSON the SDK's file reporter wrote
//! to the status file, if it wrote one) plus what the executor saw: succeeded,
//! a message, the exit code, whether it timed out, and the start and finish times
//! (RFC 3339). A [`Reporter`] sends it to the engine.

use crate::lifecycle::{Exit, StopReason};
use crate::time::rfc3339;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

/// Why the outcome could not be reported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The `--status-reporter` value is not one of the known forms.
    #[error("unknown status reporter {0:?}: expected none, stdout, file:PATH or k8s-secret")]
    UnknownReporter(String),
    /// The outcome file could not be written.
    #[error("cannot write outcome to {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The runner's status file exists but could not be read.
    #[error("cannot read runner status {path}")]
    ReadStatus {
        /// The status file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The runner's status file is not JSON.
    #[error("runner status {path} is not JSON")]
    InvalidStatus {
        /// The status file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The outcome could not be serialized.
    #[error("cannot serialize outcome")]
    Serialize(#[from] serde_json::Error),
    /// A runner SDK reporter (the Kubernetes Secret) failed.
    #[error("cannot report outcome")]
    Sdk(#[from] runner::ReportError),
    /// The directory of a `file:PATH` reporter's file does not exist: found before the
    /// run, not after it.
    #[error("status reporter file:{}: directory {} does not exist", .path.display(), .dir.display())]
    MissingStatusDir {
        /// The status file.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
    },
    /// The Kubernetes Secret reporter names its Secret after the context, which is missing.
    #[error("the k8s-secret status reporter needs the runner context (--context)")]
    NeedsContext,
    /// The kubeconfig for the Kubernetes Secret reporter cannot be read or used.
    #[error("invalid kubeconfig {}", .path.display())]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// kube's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No Kubernetes client could be made (no kubeconfig, no in-cluster configuration).
    #[error("cannot create the Kubernetes client")]
    KubeClient(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What happened in a run, as reported to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Whether the runner exited with 0 on its own.
    pub succeeded: bool,
    /// One line for people: what happened.
    pub message: String,
    /// The runner's exit code (128+N when killed by signal N); for a run that
    /// failed before the runner ran, the executor's exit code, 125.
    pub exit_code: i32,
    /// Whether the run's timeout stopped the runner.
    pub timed_out: bool,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// When the run finished (RFC 3339, UTC).
    pub finished_at: String,
    /// The status the runner itself reported, when it wrote one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_status: Option<serde_json::Value>,
}

impl Outcome {
    /// The outcome of a container that ran, with the runner's status if any.
    pub fn from_exit(exit: &Exit, runner_status: Option<serde_json::Value>) -> Self {
        let code = exit.exit_code;
        let how = match code {
            0 => "exited with code 0".to_owned(),
            129..=159 => match nix::sys::signal::Signal::try_from(code - 128) {
                Ok(signal) => format!("was killed by {signal} (exit code {code})"),
                Err(_) => format!("exited with code {code}"),
            },
            _ => format!("exited with code {code}"),
        };
        let message = match exit.stopped {
            None if code == 0 => "runner succeeded".to_owned(),
            None => format!("runner failed: it {how}"),
            Some(StopReason::Timeout) => format!("runner timed out and was stopped: it {how}"),
            Some(StopReason::Interrupted) => {
                format!("runner was stopped because the executor was interrupted: it {how}")
            }
        };
        Self {
            succeeded: code == 0 && exit.stopped.is_none(),
            message,
            exit_code: code,
            timed_out: exit.timed_out(),
            started_at: rfc3339(exit.started_at),
            finished_at: rfc3339(exit.finished_at),
            runner_status,
        }
    }

    /// The outcome of a run that failed before or around the runner (pull, bundle,
    /// runtime failure): not succeeded, exit code 125, `message` says why.
    pub fn executor_failed(message: String, started_at: SystemTime) -> Self {
        Self {
            succeeded: false,
            message,
            exit_code: 125,
            timed_out: false,
            started_at: rfc3339(started_at),
            finished_at: rfc3339(SystemTime::now()),
            runner_status: None,
        }
    }
}

/// Reads the status the runner's SDK wrote; `None` when the runner wrote none.
pub fn read_runner_status(path: &Path) -> Result<Option<serde_json::Value>, ReportError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ReportError::ReadStatus {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| ReportError::InvalidStatus {
            path: path.to_path_buf(),
            source,
        })
}

/// Which reporter the `--status-reporter` flag chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReporterKind {
    /// Report nowhere.
    None,
    /// Write the outcome JSON to this file (atomically).
    File(PathBuf),
    /// Print the outcome JSON as one line on stdout, after the runner's output.
    Stdout,
    /// The runner SDK's Kubernetes Secret reporter (Secret named after the
    /// context's `name` in its `platform.namespace`, key `status`).
    K8sSecret,
}

impl FromStr for ReporterKind {
    type Err = ReportError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "none" => Ok(Self::None),
            "stdout" => Ok(Self::Stdout),
            "k8s-secret" => Ok(Self::K8sSecret),
            _ => match value.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(Self::File(PathBuf::from(path))),
                _ => Err(ReportError::UnknownReporter(value.to_owned())),
            },
        }
    }
}

/// Sends an [`Outcome`] somewhere.
pub enum Reporter {
    /// Reports nothing.
    None,
    /// Writes the outcome JSON to a file: a temporary file next to it, renamed over
    /// it, so a reader never sees half an outcome.
    File(PathBuf),
    /// Prints the outcome JSON as one line on stdout.
    Stdout,
    /// A runner SDK reporter (the Kubernetes Secret reporter): it gets the outcome
    /// as the status, for the Action named in `context`.
    Sdk {
        /// The SDK reporter.
        reporter: Box<dyn runner::StatusReporter>,
        /// The runner context of the run.
        context: runner::Context,
    },
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Stdout => f.write_str("Stdout"),
            Self::Sdk { context, .. } => f
                .debug_struct("Sdk")
                .field("action", &context.name)
                .finish(),
        }
    }
}

impl Reporter {
    /// The reporter `kind` names, ready to report: a `file:PATH` reporter's directory
    /// must exist; the Kubernetes Secret reporter needs the runner `context` (it names
    /// the Secret) and talks to the API server of `kubeconfig` if given, else of the usual
    /// inference (`KUBECONFIG`, `~/.kube/config`, in-cluster).
    pub async fn build(
        kind: ReporterKind,
        context: Option<runner_contract::Context>,
        kubeconfig: Option<&Path>,
    ) -> Result<Reporter, ReportError> {
        use runner::k8s_secret::K8sSecretReporter;
        Ok(match kind {
            ReporterKind::None => Reporter::None,
            ReporterKind::Stdout => Reporter::Stdout,
            ReporterKind::File(path) => {
                let dir = match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir,
                    _ => Path::new("."),
                };
                if !dir.is_dir() {
                    return Err(ReportError::MissingStatusDir {
                        dir: dir.to_owned(),
                        path,
                    });
                }
                Reporter::File(path)
            }
            ReporterKind::K8sSecret => {
                let context = context.ok_or(ReportError::NeedsContext)?;
                let reporter = match kubeconfig {
                    Some(path) => {
                        let invalid = |source: Box<dyn std::error::Error + Send + Sync>| {
                            ReportError::Kubeconfig {
                                path: path.to_owned(),
                                source,
                            }
                        };
                        let config = kube::config::Kubeconfig::read_from(path)
                            .map_err(|e| invalid(Box::new(e)))?;
                        let config =
                            kube::Config::from_custom_kubeconfig(config, &Default::default())
                                .await
                                .map_err(|e| invalid(Box::new(e)))?;
                        let client = kube::Client::try_from(config)
                            .map_err(|e| ReportError::KubeClient(Box::new(e)))?;
                        K8sSecretReporter::new(client)
                    }
                    None => K8sSecretReporter::try_default()
                        .await
                        .map_err(|e| ReportError::KubeClient(Box::new(e)))?,
                };
                Reporter::Sdk {
                    reporter: Box::new(reporter),
                    context,
                }
            }
        })
    }

    /// Reports `outcome`.
    pub async fn report(&self, outcome: &Outcome) -> Result<(), ReportError> {
        match self {
            Self::None => Ok(()),
            Self::Stdout => {
                let line = serde_json::to_string(outcome)?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}")
                    .and_then(|()| out.flush())
                    .map_err(|source| ReportError::Write {
                        path: PathBuf::from("/dev/stdout"),
                        source,
                    })
            }
            Self::File(path) => write_atomic(path, &serde_json::to_vec_pretty(outcome)?),
            Self::Sdk { reporter, context } => {
                let status = serde_json::to_value(outcome)?;
                reporter.report(context, &status).await?;
                Ok(())
            }
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    // tempfile's errors name its temp file; the user knows only `path`.
    let err = |source: std::io::Error| ReportError::Write {
        path: path.to_path_buf(),
        source: source
            .raw_os_error()
            .map_or(source, std::io::Error::from_raw_os_error),
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn exit(code: i32, stopped: Option<StopReason>) -> Exit {
        let started_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        Exit {
            exit_code: code,
            stopped,
            started_at,
            finished_at: started_at + Duration::from_secs(61),
        }
    }

    #[test]
    fn outcome_of_a_success() {
        let outcome =
            Outcome::from_exit(&exit(0, None), Some(serde_json::json!({"phase": "done"})));
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "succeeded": true,
                "message": "runner succeeded",
                "exitCode": 0,
                "timedOut": false,
                "startedAt": "2027-01-15T08:00:00Z",
                "finishedAt": "2027-01-15T08:01:01Z",
                "runnerStatus": {"phase": "done"},
            })
        );
    }

    #[test]
    fn outcome_messages_name_what_happened() {
        let failed = Outcome::from_exit(&exit(3, None), None);
        assert!(!failed.succeeded);
        assert_eq!(failed.message, "runner failed: it exited with code 3");
        let killed = Outcome::from_exit(&exit(137, None), None);
        assert_eq!(
            killed.message,
            "runner failed: it was killed by SIGKILL (exit code 137)"
        );
        let timed_out = Outcome::from_exit(&exit(137, Some(StopReason::Timeout)), None);
        assert!(timed_out.timed_out && !timed_out.succeeded);
        assert!(
            timed_out.message.starts_with("runner timed out"),
            "{}",
            timed_out.message
        );
        // Exiting 0 after a stop request is still not a success: the work was cut short.
        let stopped = Outcome::from_exit(&exit(0, Some(StopReason::Interrupted)), None);
        assert!(!stopped.succeeded && !stopped.timed_out);
    }

    #[test]
    fn reporter_flag_values() {
        assert_eq!("none".parse::<ReporterKind>().unwrap(), ReporterKind::None);
        assert_eq!(
            "stdout".parse::<ReporterKind>().unwrap(),
            ReporterKind::Stdout
        );
        assert_eq!(
            "k8s-secret".parse::<ReporterKind>().unwrap(),
            ReporterKind::K8sSecret
        );
        assert_eq!(
            "file:/tmp/o.json".parse::<ReporterKind>().unwrap(),
            ReporterKind::File("/tmp/o.json".into())
        );
        for bad in ["file:", "syslog", ""] {
            let err = bad.parse::<ReporterKind>().unwrap_err();
            assert!(
                err.to_string().starts_with("unknown status reporter"),
                "{err}"
            );
        }
    }

    #[test]
    fn runner_status_is_optional_but_must_be_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        assert_eq!(read_runner_status(&path).unwrap(), None);
        std::fs::write(&path, "{\"ok\":true}").unwrap();
        assert_eq!(
            read_runner_status(&path).unwrap(),
            Some(serde_json::json!({"ok": true}))
        );
        std::fs::write(&path, "not json").unwrap();
        let err = read_runner_status(&path).unwrap_err();
        assert!(err.to_string().contains("is not JSON"), "{err}");
    }

    #[tokio::test]
    async fn file_reporter_replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outcome.json");
        std::fs::write(&path, "old").unwrap();
        let outcome = Outcome::from_exit(&exit(2, None), None);
        Reporter::File(path.clone()).report(&outcome).await.unwrap();
        let written: Outcome = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written, outcome);
        // Only the outcome is left in the directory: no temporary files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn file_reporter_names_a_missing_directory() {
        let outcome = Outcome::from_exit(&exit(0, None), None);
        let err = Reporter::File("/nonexistent-dir/outcome.json".into())
            .report(&outcome)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-dir/outcome.json"),
            "{err}"
        );
    }
}
