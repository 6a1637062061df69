//! The workspace binaries under test (`executor`, `argo-runner`).
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
        .get_or_init(|| build("executor", "executor").map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Path of a freshly built `target/<profile>/argo-runner`.
pub fn argo_runner_bin() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build("argo-runner", "argo-runner").map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Builds binary `bin` of workspace package `package` in the profile the tests run in,
/// always (a no-op when it is up to date): a binary merely present may be stale.
fn build(package: &str, bin: &str) -> Result<PathBuf> {
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().context("locating the test binary")?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary is not in target/<profile>/deps")?
        .to_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "-p", package, "--bin", bin]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        command.arg("--release");
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build -p {package} failed with {status}");
    }
    let path = profile_dir.join(bin);
    if !path.is_file() {
        bail!("{} not found after building", path.display());
    }
    Ok(path)
}

/// Runs the executor binary with `--root root --log-level warn` and `args`; returns
/// (exit code, stdout, stderr), the exit code -1 when a signal ended it.
pub fn run_executor(root: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(executor_bin().expect("building the executor"))
        .arg("--root")
        .arg(root)
        .args(["--log-level", "warn"])
        .args(args)
        .output()
        .expect("running the executor");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
