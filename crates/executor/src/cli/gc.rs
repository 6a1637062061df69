//! `executor gc`.

use super::GlobalArgs;
use std::process::ExitCode;

/// Flags of `executor gc`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `executor gc`.
pub fn run(_global: &GlobalArgs, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("executor gc is not implemented yet")
}
