//! `executor runtime`: the embedded OCI runtime (youki's libcontainer) as a small
//! runc-like CLI (hidden). The executor re-executes itself into it so that
//! libcontainer forks from a single-threaded process: nothing here may start a
//! thread (no tokio, no logging subscriber).

use super::GlobalArgs;
use executor::runtime::embedded;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `executor runtime`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory holding the state of this runtime's containers.
    #[arg(long)]
    state_root: PathBuf,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, clap::Subcommand)]
enum Verb {
    /// Create a container and leave its init process waiting for `start`.
    Create {
        /// The OCI bundle (config.json + rootfs).
        #[arg(long)]
        bundle: PathBuf,
        /// Where to write the container's host pid once it exists.
        #[arg(long)]
        pid_file: PathBuf,
        /// Container ID.
        id: String,
    },
    /// Start the user process of a created container.
    Start {
        /// Container ID.
        id: String,
    },
    /// Print the container's OCI state as JSON.
    State {
        /// Container ID.
        id: String,
    },
    /// Send a signal to the container's init process.
    Kill {
        /// Container ID.
        id: String,
        /// Signal name or number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete the container.
    Delete {
        /// Kill the container first if it still runs.
        #[arg(long)]
        force: bool,
        /// Container ID.
        id: String,
    },
}

/// Runs `executor runtime`.
pub fn run(_global: &GlobalArgs, args: Args) -> ExitCode {
    let root = &args.state_root;
    let result = match &args.verb {
        Verb::Create {
            bundle,
            pid_file,
            id,
        } => embedded::ensure_sealed(root)
            .and_then(|()| embedded::create(root, id, bundle, pid_file))
            .map(|()| ExitCode::SUCCESS),
        Verb::Start { id } => embedded::start(root, id).map(|()| ExitCode::SUCCESS),
        Verb::State { id } => embedded::state(root, id).map(|state| {
            let json = serde_json::to_string(&state).unwrap_or_default();
            let _ = writeln!(std::io::stdout(), "{json}");
            ExitCode::SUCCESS
        }),
        Verb::Kill { id, signal } => embedded::kill(root, id, signal).map(|()| ExitCode::SUCCESS),
        Verb::Delete { force, id } => {
            embedded::delete(root, id, *force).map(|()| ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|err| {
        // One line with every cause: libcontainer's top-level errors ("oci spec
        // error") say little without their sources.
        let mut line = format!("executor runtime: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            // Some errors repeat their source's message in their own.
            if !line.ends_with(&cause_text) {
                line.push_str(": ");
                line.push_str(&cause_text);
            }
            source = cause.source();
        }
        eprintln!("{line}");
        ExitCode::from(super::EXIT_EXECUTOR_FAILED)
    })
}
