//! `executor bundle`.

use super::GlobalArgs;
use std::process::ExitCode;

/// Flags of `executor bundle`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `executor bundle`.
pub fn run(_global: &GlobalArgs, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("executor bundle is not implemented yet")
}
