//! SIGINT and SIGTERM to the executor, turned into stop requests.

use super::Stop;

/// Turns SIGINT and SIGTERM to this process into requests on `stop`: the first
/// asks for a graceful stop, the next one for an immediate kill.
///
/// The handlers are installed before this returns (from then on these signals no
/// longer terminate the process); the forwarding runs as a task of the current
/// tokio runtime, so it fails outside one.
pub fn forward_termination_signals(stop: &Stop) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop = stop.clone();
    tokio::spawn(async move {
        for _ in 0..2 {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if stop.is_requested() {
                tracing::warn!(signal = name, "received again, killing the runner now");
                stop.kill();
            } else {
                tracing::info!(signal = name, "received, stopping the runner");
                stop.stop();
            }
        }
    });
    Ok(())
}
