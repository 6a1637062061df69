//! `executor run`: one run of a runner from a bundle to a reported outcome.
//!
//! The stages: clean what interrupted runs left (gc), take a slot of the
//! concurrent-run limit if there is one (waiting for it), create and lock this run's
//! directory, prepare the bundle in it ([`Prepare`]: pull + snapshots + bundle for
//! an image, or a bundle given as is), run the container ([`crate::lifecycle`]),
//! read the runner's status, copy `/out` artifacts out, report the outcome, and
//! remove the run directory. Whatever fails, the run directory (with the inputs
//! that may hold secrets) and the container are removed before returning.
//!
//! The prepare stage is in `prepare.rs`; the outcome and where it is reported in
//! [`report`].

use crate::error::error_chain;
use crate::lifecycle::{self, LifecycleError, LifecycleOptions, Stop};
mod prepare;
pub mod report;

use crate::runs::{RunDir, Runs, RunsError};
use crate::runtime::RuntimeKind;
pub use prepare::{ExistingBundle, ImageBundle, Prepare, PrepareError, PreparedBundle, PullPolicy};
use report::{Outcome, Reporter};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Exit code of `executor run` when the runner timed out.
pub const EXIT_TIMED_OUT: i32 = crate::error::TIMED_OUT as i32;
/// Exit code of `executor run` when the executor itself failed (podman's convention).
pub const EXIT_EXECUTOR_FAILED: i32 = crate::error::EXECUTOR_FAILED as i32;

/// Why a run failed in the executor (not in the runner).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The run directory could not be created or removed.
    #[error(transparent)]
    Runs(#[from] RunsError),
    /// Pulling the image or preparing the bundle failed.
    #[error("cannot prepare bundle")]
    Prepare(#[source] PrepareError),
    /// The signature policy does not accept the image (or cannot be applied): nothing
    /// of the image was unpacked.
    #[error(transparent)]
    Untrusted(crate::trust::TrustError),
    /// The runtime failed to run the container.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// Copying `/out` artifacts to the output directory failed.
    #[error("cannot copy artifacts from {from} to {to}")]
    CopyArtifacts {
        /// The run's out directory.
        from: PathBuf,
        /// The `--output-dir`.
        to: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reporting the outcome failed.
    #[error(transparent)]
    Report(#[from] report::ReportError),
    /// The run itself is over (and its outcome reported), but its directory or
    /// container could not be removed; `executor gc` retries.
    #[error("cannot clean up run {run}")]
    Cleanup {
        /// The run ID.
        run: String,
        /// What failed.
        source: RunsError,
    },
    /// The run was stopped before its container started.
    #[error("interrupted before the runner started")]
    Interrupted,
}

impl RunError {
    /// Wraps an error of [`Prepare`], keeping a refusal by the signature policy apart:
    /// it is the whole message, as podman prints it.
    fn from_prepare(err: PrepareError) -> RunError {
        match err {
            PrepareError::Pull(pull) => match *pull {
                crate::pull::PullError::Untrusted(trust) => RunError::Untrusted(trust),
                other => RunError::Prepare(PrepareError::Pull(Box::new(other))),
            },
            PrepareError::Untrusted(trust) => RunError::Untrusted(trust),
            other => RunError::Prepare(other),
        }
    }
}

/// How to run.
#[derive(Debug)]
pub struct RunOptions {
    /// The OCI runtime.
    pub runtime: RuntimeKind,
    /// Timeout and grace period.
    pub lifecycle: LifecycleOptions,
    /// Where `/out` artifacts are copied after the run.
    pub output_dir: Option<PathBuf>,
    /// Where the outcome goes.
    pub reporter: Reporter,
    /// At most this many runs with the same root at once, across processes
    /// (`--max-concurrent-runs`); `None` for no limit. A run above the limit waits
    /// for a slot before it pulls or prepares anything; the wait counts against
    /// neither the runner's timeout (which starts with the container) nor the
    /// stop grace period, and a stop request ends it.
    pub max_concurrent_runs: Option<NonZeroUsize>,
}

/// The result of a run whose runner ran.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// What was reported.
    pub outcome: Outcome,
    /// The exit code for `executor run`: the runner's, or 124 when it timed out.
    pub exit_code: i32,
}

/// Runs a runner: see the [module docs](self). A request on `stop` (SIGINT/SIGTERM
/// to the executor) stops the runner with SIGTERM, grace, SIGKILL; the run is still
/// reported and cleaned up.
///
/// On a failure of the executor, the outcome (exit code 125 and the error) is
/// still reported where possible, and the error returned.
pub async fn run(
    root: &Path,
    prepare: &dyn Prepare,
    opts: &RunOptions,
    stop: &Stop,
) -> Result<RunResult, RunError> {
    let runs = Runs::open(root)?;
    runs.gc().await;
    let started_at = SystemTime::now();
    // Held until the run is cleaned up: the slot bounds pulls, unpacks and
    // containers alike.
    let slot = match opts.max_concurrent_runs {
        None => Ok(None),
        Some(limit) => tokio::select! {
            slot = runs.wait_for_slot(limit) => slot.map(Some).map_err(RunError::from),
            () = stop.requested() => Err(RunError::Interrupted),
        },
    };
    let result = match slot {
        Ok(_slot) => create_and_run(&runs, prepare, opts, stop).await,
        Err(err) => Err(err),
    };
    // Report the executor's failure, unless the outcome already went out (cleanup
    // failed after it) or reporting itself is what failed.
    if let Err(err) = &result
        && !matches!(err, RunError::Report(_) | RunError::Cleanup { .. })
    {
        let outcome =
            Outcome::executor_failed(format!("executor failed: {}", error_chain(err)), started_at);
        if let Err(report_err) = opts.reporter.report(&outcome).await {
            let error = error_chain(&report_err);
            tracing::error!(%error, "cannot report the executor's failure");
        }
    }
    result
}

/// Creates the run directory, runs in it and removes it.
async fn create_and_run(
    runs: &Runs,
    prepare: &dyn Prepare,
    opts: &RunOptions,
    stop: &Stop,
) -> Result<RunResult, RunError> {
    let run_dir = runs.create(&opts.runtime)?;
    tracing::debug!(
        run = run_dir.id(),
        runtime = opts.runtime.name(),
        "run created"
    );
    let id = run_dir.id().to_owned();
    let result = run_in(&run_dir, prepare, opts, stop).await;
    let removed = run_dir.remove().await;
    match (result, removed) {
        (Ok(result), Ok(())) => Ok(result),
        (Ok(_), Err(source)) => Err(RunError::Cleanup { run: id, source }),
        (Err(err), removed) => {
            if let Err(cleanup) = removed {
                tracing::error!(run = %id, error = %error_chain(&cleanup), "cannot clean up run");
            }
            Err(err)
        }
    }
}

async fn run_in(
    run_dir: &RunDir,
    prepare: &dyn Prepare,
    opts: &RunOptions,
    stop: &Stop,
) -> Result<RunResult, RunError> {
    let prepared = tokio::select! {
        prepared = prepare.prepare(run_dir) => prepared.map_err(RunError::from_prepare)?,
        () = stop.requested() => return Err(RunError::Interrupted),
    };
    let runtime = run_dir.runtime();
    let exit = lifecycle::run_container(
        &runtime,
        &run_dir.record().container_id,
        &prepared.bundle,
        &run_dir.pid_file(),
        &opts.lifecycle,
        stop,
    )
    .await?;

    let runner_status = match &prepared.status_file {
        Some(path) => report::read_runner_status(path).unwrap_or_else(|err| {
            // A broken status file is the runner's problem; the outcome still goes out.
            tracing::warn!(error = %error_chain(&err), "ignoring the runner's status");
            None
        }),
        None => None,
    };
    if let (Some(from), Some(to)) = (&prepared.out_dir, &opts.output_dir) {
        copy_artifacts(from, to).map_err(|source| RunError::CopyArtifacts {
            from: from.clone(),
            to: to.clone(),
            source,
        })?;
    }
    let outcome = Outcome::from_exit(&exit, runner_status);
    tracing::info!(
        run = run_dir.id(),
        exit_code = outcome.exit_code,
        timed_out = outcome.timed_out,
        succeeded = outcome.succeeded,
        "run finished"
    );
    opts.reporter.report(&outcome).await?;
    let exit_code = if outcome.timed_out {
        EXIT_TIMED_OUT
    } else {
        outcome.exit_code
    };
    Ok(RunResult { outcome, exit_code })
}

/// Copies the runner's artifacts: regular files and directories under `from`
/// into `to` (created if missing; existing files replaced).
///
/// Symbolic links and special files are skipped: `from` was writable by the
/// container, and following a link it planted would copy host files (say
/// `/etc/shadow`) into the output.
pub fn copy_artifacts(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        let target = to.join(entry.file_name());
        if file_type.is_dir() {
            copy_artifacts(&entry.path(), &target)?;
        } else if file_type.is_file() {
            std::fs::copy(entry.path(), &target)?;
        } else {
            let path = entry.path();
            tracing::warn!(path = %path.display(), "skipping artifact that is not a regular file");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_copied_but_links_are_not_followed() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join("result.txt"), "42").unwrap();
        std::fs::create_dir(from.path().join("logs")).unwrap();
        std::fs::write(from.path().join("logs/run.log"), "ok").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", from.path().join("leak")).unwrap();
        let dest = to.path().join("artifacts");
        copy_artifacts(from.path(), &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("result.txt")).unwrap(),
            "42"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("logs/run.log")).unwrap(),
            "ok"
        );
        assert!(std::fs::symlink_metadata(dest.join("leak")).is_err());
    }
}
