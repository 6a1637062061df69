//! `executor runtime`: the embedded OCI runtime CLI (hidden).

use super::GlobalArgs;
use std::process::ExitCode;

/// Flags of `executor runtime`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `executor runtime`.
pub fn run(_global: &GlobalArgs, _args: Args) -> ExitCode {
    eprintln!("executor runtime is not implemented yet");
    ExitCode::from(super::EXIT_EXECUTOR_FAILED)
}
