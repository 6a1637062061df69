//! Where a runner finds its inputs inside the container, and the environment variables
//! that say so (the executor sets them; a Kubernetes Job sets them too).

/// The runner context file, read-only, inside the container.
pub const CONTEXT_PATH: &str = "/runner-context";
/// The runner args file, read-only, inside the container.
pub const ARGS_PATH: &str = "/runner-args";
/// The directory whose files are copied back to the host as artifacts.
pub const OUT_DIR: &str = "/out";

/// Variable naming the runner context file (YAML).
pub const CONTEXT_PATH_VAR: &str = "RUNNER_CONTEXT_PATH";
/// Variable naming the runner args file (YAML).
pub const ARGS_PATH_VAR: &str = "RUNNER_ARGS_PATH";
/// Variable switching to human-readable debug logs (`true`) instead of JSON at info.
pub const LOGGER_DEV_MODE_VAR: &str = "RUNNER_LOGGER_DEV_MODE";
/// Variable naming the file the file status reporter writes; unset or empty means
/// the status is not written to a file.
pub const STATUS_PATH_VAR: &str = "RUNNER_STATUS_PATH";
