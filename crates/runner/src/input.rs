//! Reading the runner's two input files: the context and the args, both YAML.

use crate::context::Context;
use std::path::{Path, PathBuf};

/// Which input file an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// The runner context (`RUNNER_CONTEXT_PATH`).
    Context,
    /// The runner args (`RUNNER_ARGS_PATH`).
    Args,
}

impl InputKind {
    /// The environment variable that names this file.
    pub fn var(self) -> &'static str {
        match self {
            InputKind::Context => crate::config::CONTEXT_PATH_VAR,
            InputKind::Args => crate::config::ARGS_PATH_VAR,
        }
    }
}

impl std::fmt::Display for InputKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InputKind::Context => "runner context",
            InputKind::Args => "runner args",
        })
    }
}

/// Why an input file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The file is missing or unreadable.
    #[error("cannot read {kind} file {path} (from {var})", var = kind.var(), path = path.display())]
    Read {
        /// Which input.
        kind: InputKind,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML or does not match the expected document; the
    /// message of `source` names the field and the line.
    #[error("invalid {kind} file {path} (from {var})", var = kind.var(), path = path.display())]
    Parse {
        /// Which input.
        kind: InputKind,
        /// The file.
        path: PathBuf,
        /// The YAML error, with the field path and location.
        source: serde_norway::Error,
    },
}

/// Reads and parses the runner context file.
pub fn read_context(path: &Path) -> Result<Context, InputError> {
    parse(path, InputKind::Context)
}

/// Reads the runner args file as an arbitrary YAML document; an empty file gives `null`.
pub fn read_args(path: &Path) -> Result<serde_json::Value, InputError> {
    parse(path, InputKind::Args)
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, kind: InputKind) -> Result<T, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Read {
        kind,
        path: path.to_owned(),
        source,
    })?;
    serde_norway::from_str(&text).map_err(|source| InputError::Parse {
        kind,
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "name: action-1
dryRun: false
timeout: 1h30m
platform:
  namespace: capact-system
  serviceAccountName: runner
  ownerRef:
    apiVersion: core.capact.io/v1alpha1
    kind: Action
    name: action-1
    uid: 5f1c7c2e-0000-4000-8000-000000000001
    controller: true
";

    fn write(contents: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input.yaml");
        std::fs::write(&path, contents).unwrap();
        (dir, path)
    }

    /// Parses a context and returns the one-line error message.
    fn context_error(contents: &str) -> String {
        let (_dir, path) = write(contents);
        let message = read_context(&path)
            .map(|_| ())
            .map_err(|e| runner_contract::error_chain(&e))
            .unwrap_err();
        assert!(!message.contains('\n'), "not one line: {message}");
        assert!(message.contains("RUNNER_CONTEXT_PATH"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        message
    }

    #[test]
    fn reads_a_valid_context() {
        let (_dir, path) = write(VALID);
        let context = read_context(&path).unwrap();
        assert_eq!(context.name, "action-1");
        assert_eq!(context.timeout.0, std::time::Duration::from_secs(5_400));
        assert_eq!(context.platform.owner_ref.controller, Some(true));
        assert_eq!(context.platform.owner_ref.block_owner_deletion, None);
    }

    #[test]
    fn reads_args_as_an_arbitrary_document() {
        let (_dir, path) = write(
            "workflow:\n  entrypoint: main\n  templates:\n  - name: main\n    container: {image: busybox}\n",
        );
        let args = read_args(&path).unwrap();
        assert_eq!(
            args,
            serde_json::json!({"workflow": {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "busybox"}}]}})
        );
        let (_dir, path) = write("");
        assert_eq!(read_args(&path).unwrap(), serde_json::Value::Null);
    }

    #[test]
    fn a_missing_file_names_the_variable_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runner-args");
        let err = read_args(&path).unwrap_err();
        assert!(matches!(
            err,
            InputError::Read {
                kind: InputKind::Args,
                ..
            }
        ));
        assert_eq!(
            runner_contract::error_chain(&err),
            format!(
                "cannot read runner args file {} (from RUNNER_ARGS_PATH): No such file or directory (os error 2)",
                path.display()
            )
        );
    }

    #[test]
    fn an_unreadable_file_is_an_error() {
        // A directory cannot be read as a file, even by root.
        let dir = tempfile::tempdir().unwrap();
        let err = read_context(dir.path()).unwrap_err();
        assert!(matches!(
            err,
            InputError::Read {
                kind: InputKind::Context,
                ..
            }
        ));
        assert!(
            runner_contract::error_chain(&err).contains("RUNNER_CONTEXT_PATH"),
            "{err}"
        );
    }

    #[test]
    fn malformed_yaml_is_an_error_with_its_line() {
        let message = context_error("name: [unclosed\n");
        assert!(message.contains("line"), "{message}");
        let (_dir, path) = write("a: b: c\n");
        let err = read_args(&path).unwrap_err();
        assert!(matches!(
            err,
            InputError::Parse {
                kind: InputKind::Args,
                ..
            }
        ));
        assert!(
            runner_contract::error_chain(&err).contains("RUNNER_ARGS_PATH"),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_field_type_names_the_field() {
        let message = context_error(&VALID.replace("dryRun: false", "dryRun: [1]"));
        assert!(message.contains("dryRun"), "{message}");
        let message = context_error(&VALID.replace("controller: true", "controller: maybe"));
        assert!(
            message.contains("platform.ownerRef.controller"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let message = context_error(&VALID.replace("  namespace: capact-system\n", ""));
        assert!(message.contains("namespace"), "{message}");
    }

    #[test]
    fn an_unknown_field_is_named() {
        let message = context_error(&VALID.replace("dryRun: false", "dryrun: false"));
        assert!(message.contains("dryrun"), "{message}");
    }

    #[test]
    fn an_unparsable_duration_names_the_field_and_value() {
        let message = context_error(&VALID.replace("1h30m", "90 minutes"));
        assert!(message.contains("timeout"), "{message}");
        assert!(message.contains("90 minutes"), "{message}");
    }
}
