//! `executor pull`.

use super::GlobalArgs;
use std::process::ExitCode;

/// Flags of `executor pull`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `executor pull`.
pub fn run(_global: &GlobalArgs, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("executor pull is not implemented yet")
}
