//! `executor run`.

use super::GlobalArgs;
use std::process::ExitCode;

/// Flags of `executor run`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `executor run`.
pub fn run(_global: &GlobalArgs, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("executor run is not implemented yet")
}
