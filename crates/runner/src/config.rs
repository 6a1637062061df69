//! The runner's configuration, read from the environment the executor (or the
//! Kubernetes Job) sets up.

use std::path::PathBuf;

pub use runner_contract::paths::{
    ARGS_PATH_VAR, CONTEXT_PATH_VAR, LOGGER_DEV_MODE_VAR, STATUS_PATH_VAR,
};

/// Why the configuration could not be read from the environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    /// A variable is set to something that is not valid for it.
    #[error("environment variable {var} has invalid value {value:?}: {reason}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },
}

/// Where a runner finds its inputs and sends its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The runner context file, from `RUNNER_CONTEXT_PATH`.
    pub context_path: PathBuf,
    /// The runner args file, from `RUNNER_ARGS_PATH`.
    pub args_path: PathBuf,
    /// Human-readable debug logs instead of JSON, from `RUNNER_LOGGER_DEV_MODE`.
    pub logger_dev_mode: bool,
    /// The status file for the file reporter, from `RUNNER_STATUS_PATH`; `None`
    /// reports nowhere unless the runner installs its own reporter.
    pub status_path: Option<PathBuf>,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Reads the configuration through `lookup` (a variable name to its value),
    /// so that it can be tested without touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let non_empty = |var: &str| lookup(var).filter(|v| !v.is_empty());
        let required = |var: &'static str| {
            non_empty(var)
                .map(PathBuf::from)
                .ok_or(ConfigError::Missing(var))
        };
        let logger_dev_mode = match non_empty(LOGGER_DEV_MODE_VAR) {
            None => false,
            Some(value) => parse_bool(&value).ok_or(ConfigError::Invalid {
                var: LOGGER_DEV_MODE_VAR,
                value,
                reason: "expected true or false",
            })?,
        };
        Ok(Config {
            context_path: required(CONTEXT_PATH_VAR)?,
            args_path: required(ARGS_PATH_VAR)?,
            logger_dev_mode,
            status_path: non_empty(STATUS_PATH_VAR).map(PathBuf::from),
        })
    }
}

/// Parses a boolean the way Go's `strconv.ParseBool` does, as Capact's runners did.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn reads_paths_dev_mode_and_status_path() {
        let config = Config::from_lookup(lookup(&[
            (CONTEXT_PATH_VAR, "/runner-context"),
            (ARGS_PATH_VAR, "/runner-args"),
            (LOGGER_DEV_MODE_VAR, "true"),
            (STATUS_PATH_VAR, "/status/status.json"),
        ]))
        .unwrap();
        assert_eq!(
            config,
            Config {
                context_path: "/runner-context".into(),
                args_path: "/runner-args".into(),
                logger_dev_mode: true,
                status_path: Some("/status/status.json".into()),
            }
        );
    }

    #[test]
    fn optional_settings_default_to_json_logs_and_no_status_file() {
        let config = Config::from_lookup(lookup(&[
            (CONTEXT_PATH_VAR, "/c"),
            (ARGS_PATH_VAR, "/a"),
            (STATUS_PATH_VAR, ""),
        ]))
        .unwrap();
        assert!(!config.logger_dev_mode);
        assert_eq!(config.status_path, None);
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = Config::from_lookup(lookup(&[(ARGS_PATH_VAR, "/a")])).unwrap_err();
        assert_eq!(err, ConfigError::Missing(CONTEXT_PATH_VAR));
        assert_eq!(
            err.to_string(),
            "environment variable RUNNER_CONTEXT_PATH is not set"
        );
        let err = Config::from_lookup(lookup(&[(CONTEXT_PATH_VAR, "/c"), (ARGS_PATH_VAR, "")]))
            .unwrap_err();
        assert_eq!(err, ConfigError::Missing(ARGS_PATH_VAR));
    }

    #[test]
    fn an_invalid_dev_mode_is_named_with_its_value() {
        let err = Config::from_lookup(lookup(&[
            (CONTEXT_PATH_VAR, "/c"),
            (ARGS_PATH_VAR, "/a"),
            (LOGGER_DEV_MODE_VAR, "yes please"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable RUNNER_LOGGER_DEV_MODE has invalid value \"yes please\": expected true or false"
        );
    }
}
