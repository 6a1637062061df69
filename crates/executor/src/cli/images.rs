//! `executor images`, `executor rmi`, `executor prune`.

use super::GlobalArgs;
use anyhow::Context;
use executor::reference::ImageSource;
use executor::snapshot::{Snapshotter, chain_ids, layer_blobs, mounted_lowers};
use executor::store::{Store, StoreError};
use std::collections::HashSet;
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

fn open(global: &GlobalArgs) -> anyhow::Result<Store> {
    Store::open(&global.root)
        .with_context(|| format!("while opening the store at {}", global.root.display()))
}

/// Runs `executor images`: lists stored images.
pub fn images(global: &GlobalArgs, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let records = open(global)?.images()?;
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
    let store = open(global)?;
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
/// stored image and no mounted root file system (a live run, a bundle) stacks.
pub fn prune(global: &GlobalArgs, _args: PruneArgs) -> anyhow::Result<ExitCode> {
    let store = open(global)?;
    let report = super::block_on(store.prune())??;
    println!(
        "removed {} blobs, freed {}",
        report.blobs_removed,
        human_size(report.bytes_freed)
    );
    let snapshots_dir = global.root.join("snapshots");
    if !snapshots_dir.is_dir() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut keep = HashSet::new();
    for record in store.images()? {
        let config = match store.read_config(&record) {
            Ok(config) => config,
            // An image whose config is gone cannot be unpacked again: nothing to keep.
            Err(StoreError::MissingBlob { .. }) => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("while reading image {}", record.reference));
            }
        };
        let layers = layer_blobs(&config, &record.layers, |d| store.blob_path(d))
            .with_context(|| format!("image {}", record.reference))?;
        keep.extend(chain_ids(layers.iter().map(|l| &l.diff_id)));
    }
    let mounted = mounted_lowers()?;
    if let Some(mount) = mounted.unmapped.first() {
        tracing::warn!(
            mount = %mount.display(),
            "an overlay names its layers by file descriptor: no snapshot pruned"
        );
        println!(
            "kept all snapshots: the overlay at {} may use them",
            mount.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let snapshots = Snapshotter::new(&snapshots_dir).with_context(|| {
        format!(
            "while opening the snapshots under {}",
            global.root.display()
        )
    })?;
    let in_use = snapshots.chains_in(&mounted.dirs);
    let only_mounted = in_use.difference(&keep).count();
    keep.extend(in_use);
    let removed = snapshots.prune(&keep)?;
    println!(
        "removed {removed} snapshots ({only_mounted} kept only for mounted root file systems)"
    );
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
