//! `executor images`, `executor rmi`, `executor prune`.

use super::GlobalArgs;
use std::process::ExitCode;

/// Flags of `executor images`.
#[derive(Debug, clap::Args)]
pub struct ImagesArgs {}

/// Flags of `executor rmi`.
#[derive(Debug, clap::Args)]
pub struct RmiArgs {}

/// Flags of `executor prune`.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {}

/// Runs `executor images`.
pub fn images(_global: &GlobalArgs, _args: ImagesArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("executor images is not implemented yet")
}

/// Runs `executor rmi`.
pub fn rmi(_global: &GlobalArgs, _args: RmiArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("executor rmi is not implemented yet")
}

/// Runs `executor prune`.
pub fn prune(_global: &GlobalArgs, _args: PruneArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("executor prune is not implemented yet")
}
