//! `executor gc`: clean what interrupted runs left behind.

use super::GlobalArgs;
use std::process::ExitCode;

/// Flags of `executor gc`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `executor gc`: for every run whose executor is gone, kills and deletes its
/// container, unmounts what it mounted and removes its directory; also clears what
/// killed pulls and unpacks left in the store and snapshot cache. Live runs and
/// live pulls are left alone. Fails when some run could not be cleaned (a later gc retries it).
pub fn run(global: &GlobalArgs, _args: Args) -> anyhow::Result<ExitCode> {
    let report = super::block_on(global.root().gc())??;
    for id in &report.removed {
        println!("removed {id}");
    }
    match report.failed.first() {
        None => Ok(ExitCode::SUCCESS),
        Some((id, err)) => anyhow::bail!(
            "cannot clean up {} interrupted run(s); first: {id}: {err}",
            report.failed.len()
        ),
    }
}
