//! The `executor` binary under test.
//!
//! Cargo only hands a package's tests the paths of that package's own binaries, so this
//! harness builds `executor` itself (once per test process, with the `cargo` that runs
//! the tests) and finds it next to the test executable.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Path of a freshly built `target/<profile>/executor`.
pub fn executor_bin() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build() -> Result<PathBuf> {
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().context("locating the test binary")?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary is not in target/<profile>/deps")?
        .to_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "-p", "executor", "--bin", "executor"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        command.arg("--release");
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build -p executor failed with {status}");
    }
    let bin = profile_dir.join("executor");
    if !bin.is_file() {
        bail!("{} not found after building", bin.display());
    }
    Ok(bin)
}
