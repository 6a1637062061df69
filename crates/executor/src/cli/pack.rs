//! `executor pack`.

use super::GlobalArgs;
use std::process::ExitCode;

/// Flags of `executor pack`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `executor pack`.
pub fn run(_global: &GlobalArgs, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("executor pack is not implemented yet")
}
