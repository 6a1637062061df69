//! The run status the executor reports to the engine: the runner's own start status and
//! the outcome.

use serde::{Deserialize, Serialize};

/// The outcome of one runner execution as the executor reports it to the engine
/// (`spec/schemas/run-status.schema.json`).
///
/// Pure data. Times are RFC 3339 strings in UTC, kept as text so that this crate
/// needs no date library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunStatus {
    /// The start status the runner wrote to `RUNNER_STATUS_PATH`; `None` (JSON
    /// `null`) when it wrote none.
    pub runner_status: Option<serde_json::Value>,
    /// Whether the runner exited with code 0.
    pub succeeded: bool,
    /// For people: on failure, the reason.
    pub message: String,
    /// The runner's exit code; 124 when it timed out, 125 when the executor failed.
    pub exit_code: u8,
    /// Whether the timeout stopped the runner.
    pub timed_out: bool,
    /// When the runner was started (RFC 3339).
    pub started_at: String,
    /// When the runner finished (RFC 3339).
    pub finished_at: String,
}
