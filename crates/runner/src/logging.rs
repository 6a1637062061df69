//! Logging set-up for runner processes.

use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber, writing to stderr so that stdout
/// stays the runner's own output.
///
/// `dev_mode` (`RUNNER_LOGGER_DEV_MODE=true`) gives human-readable lines at debug
/// level; otherwise one JSON object per line at info level, for machines. `RUST_LOG`,
/// when set and valid, overrides the level. Returns `false` (and changes nothing)
/// when a subscriber is already installed, for example by a test.
pub fn init(dev_mode: bool) -> bool {
    let default_level = if dev_mode { "debug" } else { "info" };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if dev_mode {
        // Colours only for a person at a terminal, not in the executor's captured logs.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        builder.with_ansi(ansi).try_init().is_ok()
    } else {
        builder.json().with_current_span(true).try_init().is_ok()
    }
}
