//! The confinement probe (`tests/probe/confinement.c`): a static program that runs as a
//! runner inside the container and prints, one `name=result` line each, what the kernel
//! answered to operations a runner must be refused and ones it must be allowed.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The probe's source.
pub const PROBE_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/probe/confinement.c");

/// Builds the probe with `gcc -static` (once per test process) into `dir`; returns its path.
pub fn build_probe(dir: &Path) -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| compile(dir).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn compile(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join(format!("confinement-probe-{}", std::process::id()));
    let output = Command::new("gcc")
        .args(["-static", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(PROBE_SOURCE)
        .output()
        .context("running gcc (tests/install-deps.sh installs it)")?;
    if !output.status.success() {
        bail!(
            "gcc -static {PROBE_SOURCE} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(out)
}

/// What the probe printed: its `name=result` lines as a map. Fails unless it printed both
/// its first (`probe=start`) and its last (`probe=done`) line.
pub fn parse_report(stdout: &str) -> Result<BTreeMap<String, String>> {
    let seen: BTreeMap<String, String> = stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if seen.get("probe").map(String::as_str) != Some("done") || !stdout.contains("probe=start") {
        bail!("the probe did not run to its end; it printed:\n{stdout}");
    }
    Ok(seen)
}
