//! Consistency checks of an executor store after faults, run from the outside (reading
//! files only), so that they do not trust the code under test.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// What [`verify_store`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreReport {
    /// Blobs whose content hashes to their file name.
    pub blobs: usize,
    /// Image records.
    pub images: usize,
}

/// Checks a store root: every file under `blobs/sha256/` hashes to its name, `tmp/` is
/// empty (no temp file left behind), no half-written image record (`images/*.tmp`), and
/// every blob an image record names is present. Fails naming the first problem.
pub fn verify_store(root: &Path) -> Result<StoreReport> {
    check_store(root, false)
}

/// [`verify_store`] right after a `kill -9`: temp files of the killed writer may still be
/// there (the next start of the executor removes them), everything else must hold.
pub fn verify_store_after_crash(root: &Path) -> Result<StoreReport> {
    check_store(root, true)
}

fn check_store(root: &Path, temp_files_allowed: bool) -> Result<StoreReport> {
    let mut report = StoreReport::default();
    let blobs = root.join("blobs/sha256");
    if blobs.is_dir() {
        for entry in
            std::fs::read_dir(&blobs).with_context(|| format!("listing {}", blobs.display()))?
        {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let actual = sha256_file(&path)?;
            if actual != name {
                bail!(
                    "corrupt blob {}: content hashes to {actual}",
                    path.display()
                );
            }
            report.blobs += 1;
        }
    }
    let tmp = root.join("tmp");
    if tmp.is_dir() && !temp_files_allowed {
        let left: Vec<_> = std::fs::read_dir(&tmp)?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        if !left.is_empty() {
            bail!("temp files left in {}: {left:?}", tmp.display());
        }
    }
    let images = root.join("images");
    if images.is_dir() {
        for entry in std::fs::read_dir(&images)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if temp_files_allowed && name.starts_with('.') && name.ends_with(".tmp") {
                continue;
            }
            if path.extension().is_some_and(|e| e != "json") {
                bail!("half-written image record {}", path.display());
            }
            let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)
                .with_context(|| format!("parsing {}", path.display()))?;
            let mut needed = vec![
                record["manifest_digest"].clone(),
                record["config"]["digest"].clone(),
            ];
            if let Some(layers) = record["layers"].as_array() {
                needed.extend(layers.iter().map(|l| l["digest"].clone()));
            }
            for digest in needed {
                let digest = digest.as_str().unwrap_or_default();
                let hex = digest.trim_start_matches("sha256:");
                if hex.is_empty() || !blobs.join(hex).is_file() {
                    bail!("{} names blob {digest:?}, which is missing", path.display());
                }
            }
            report.images += 1;
        }
    }
    Ok(report)
}

/// The hex sha256 of a file's content.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
