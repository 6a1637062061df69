//! `executor images`, `executor rmi`, `executor prune`.

use super::GlobalArgs;
use executor::gc::SnapshotsPruned;
use executor::reference::ImageSource;
use std::process::ExitCode;

/// Output format of `executor images`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table for people.
    Table,
    /// A JSON array of image records for machines.
    Json,
}

/// Flags of `executor images`.
#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Flags of `executor rmi`.
#[derive(Debug, clap::Args)]
pub struct RmiArgs {
    /// Image references to remove (their blobs stay until `executor prune`).
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Flags of `executor prune`.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {}

/// Runs `executor images`: lists stored images.
pub fn images(global: &GlobalArgs, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let records = global.root().store()?.images()?;
    match args.format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = records
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "reference": r.reference,
                        "digest": r.manifest_digest.to_string(),
                        "size": r.size(),
                        "platform": r.platform,
                        "verified": r.verified,
                        "record": r,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Format::Table => {
            let width = records
                .iter()
                .map(|r| r.reference.len())
                .max()
                .unwrap_or(0)
                .max("REFERENCE".len());
            println!(
                "{:<width$}  {:<71}  {:<9}  VERIFIED BY",
                "REFERENCE", "DIGEST", "SIZE"
            );
            for r in &records {
                // The key that verified its signature at the pull; `-` when no policy
                // asked for one.
                let verified = r.verified.as_ref().map_or("-", |v| v.key.as_str());
                println!(
                    "{:<width$}  {:<71}  {:<9}  {verified}",
                    r.reference,
                    r.manifest_digest.to_string(),
                    human_size(r.size())
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `executor rmi`: removes image references.
pub fn rmi(global: &GlobalArgs, args: RmiArgs) -> anyhow::Result<ExitCode> {
    let store = global.root().store()?;
    for image in &args.images {
        let source = ImageSource::parse(image)?;
        match store.remove_image(&source)? {
            Some(record) => println!("untagged {} ({})", record.reference, record.manifest_digest),
            None => anyhow::bail!("image {source} is not in the store"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `executor prune`: deletes blobs no image reference needs, then snapshots that no
/// stored image and no mounted root file system (a live run, a bundle) stacks (the
/// policy is [`executor::gc::prune`]'s).
pub fn prune(global: &GlobalArgs, _args: PruneArgs) -> anyhow::Result<ExitCode> {
    let report = super::block_on(global.root().prune())??;
    println!(
        "removed {} blobs, freed {}",
        report.blobs.blobs_removed,
        human_size(report.blobs.bytes_freed)
    );
    match report.snapshots {
        SnapshotsPruned::None => {}
        SnapshotsPruned::KeptAll { mount } => println!(
            "kept all snapshots: the overlay at {} may use them",
            mount.display()
        ),
        SnapshotsPruned::Removed {
            removed,
            only_mounted,
        } => println!(
            "removed {removed} snapshots ({only_mounted} kept only for mounted root file systems)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
