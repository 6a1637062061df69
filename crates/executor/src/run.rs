//! `executor run`: one run of a runner from a bundle to a reported outcome.
//!
//! The stages: clean what interrupted runs left (gc), take a slot of the
//! concurrent-run limit if there is one (waiting for it), create and lock this run's
//! directory, prepare the bundle in it ([`Prepare`]: pull + snapshots + bundle for
//! an image, or a bundle given as is), run the container ([`crate::lifecycle`]),
//! read the runner's status, copy `/out` artifacts out, report the outcome, and
//! remove the run directory. Whatever fails, the run directory (with the inputs
//! that may hold secrets) and the container are removed before returning.

use crate::error::error_chain;
use crate::lifecycle::{self, LifecycleError, LifecycleOptions, Stop};
use crate::report::{self, Outcome, Reporter};
use crate::runs::{RunDir, Runs, RunsError};
use crate::runtime::RuntimeKind;
use async_trait::async_trait;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Exit code of `executor run` when the runner timed out.
pub const EXIT_TIMED_OUT: i32 = crate::error::TIMED_OUT as i32;
/// Exit code of `executor run` when the executor itself failed (podman's convention).
pub const EXIT_EXECUTOR_FAILED: i32 = crate::error::EXECUTOR_FAILED as i32;

/// Why a bundle could not be prepared: the runner did not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// Pulling the image failed (its signature refused included).
    #[error(transparent)]
    Pull(Box<crate::pull::PullError>),
    /// The signature policy does not accept the stored image.
    #[error(transparent)]
    Untrusted(#[from] crate::trust::TrustError),
    /// `--pull never`, and the image is not in the store.
    #[error("image {0} is not in the store and --pull is never")]
    NotStored(String),
    /// Reading the image record or its config from the content store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Unpacking or mounting the layers failed.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// Writing the bundle failed.
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    /// A bundle given as is (`--bundle DIR`) cannot be used.
    #[error("bundle {}: {reason}", .path.display())]
    BadBundle {
        /// The bundle directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The blocking task that unpacks and mounts did not finish.
    #[error("the task preparing the bundle failed")]
    Task(#[from] tokio::task::JoinError),
}

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

/// A bundle ready to run, as the prepare stage made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedBundle {
    /// The bundle directory (config.json + rootfs).
    pub bundle: PathBuf,
    /// Host path of the file the runner writes its status to, if the bundle has one.
    pub status_file: Option<PathBuf>,
    /// Host path of the directory mounted at `/out`, if the bundle has one.
    pub out_dir: Option<PathBuf>,
}

/// The stage that turns a run directory into a runnable bundle.
///
/// Anything it mounts or writes must live under `run.bundle_dir()` (or elsewhere
/// under `run.path()`): removing the run unmounts and deletes all of it, also after
/// an executor crash.
#[async_trait]
pub trait Prepare: Send + Sync {
    /// Prepares the bundle for `run`.
    async fn prepare(&self, run: &RunDir) -> Result<PreparedBundle, PrepareError>;
}

/// A bundle directory given as is (`executor run --bundle DIR`), for debugging
/// and for testing runtimes. Its `out/` (if present) holds the artifacts and
/// `status/status.json` the runner's status. The directory is the caller's: the run does
/// not remove it.
#[derive(Debug, Clone)]
pub struct ExistingBundle(pub PathBuf);

#[async_trait]
impl Prepare for ExistingBundle {
    async fn prepare(&self, _run: &RunDir) -> Result<PreparedBundle, PrepareError> {
        let bundle = std::path::absolute(&self.0).map_err(|e| PrepareError::BadBundle {
            path: self.0.clone(),
            reason: e.to_string(),
        })?;
        if !bundle.join("config.json").is_file() {
            return Err(PrepareError::BadBundle {
                path: bundle,
                reason: "no config.json".into(),
            });
        }
        let out = bundle.join("out");
        Ok(PreparedBundle {
            status_file: Some(bundle.join("status").join("status.json")),
            out_dir: out.is_dir().then_some(out),
            bundle,
        })
    }
}

impl From<crate::pull::PullError> for PrepareError {
    fn from(err: crate::pull::PullError) -> Self {
        PrepareError::Pull(Box::new(err))
    }
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

/// When to pull the image before a run (`--pull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Always pull: a tag is resolved again, blobs already stored are not fetched.
    Always,
    /// Pull only when the store has no record of the image.
    #[default]
    Missing,
    /// Never pull: the image must already be in the store.
    Never,
}

/// The image pipeline: pull (per the policy) into the content store, unpack the
/// layers into cached snapshots, and write the bundle (overlay rootfs, config.json,
/// inputs, out, status) into the run directory.
pub struct ImageBundle {
    /// The content store.
    pub store: crate::store::Store,
    /// The snapshot cache.
    pub snapshots: crate::snapshot::Snapshotter,
    /// The image.
    pub source: crate::reference::ImageSource,
    /// When to pull it.
    pub pull: PullPolicy,
    /// How to pull it.
    pub pull_options: crate::pull::PullOptions,
    /// How to shape the bundle (inputs, env, mounts, network, kubeconfig).
    pub bundle: crate::bundle::BundleOptions,
}

impl std::fmt::Debug for ImageBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The bundle options name input files only; registry credentials are never
        // held here (they are read from auth files at pull time).
        f.debug_struct("ImageBundle")
            .field("source", &self.source.to_string())
            .field("pull", &self.pull)
            .finish_non_exhaustive()
    }
}

impl ImageBundle {
    async fn image(&self) -> Result<crate::store::ImageRecord, PrepareError> {
        let stored = match self.pull {
            PullPolicy::Always => None,
            PullPolicy::Missing | PullPolicy::Never => self.store.image(&self.source)?,
        };
        // A stored image is trusted under this run's policy only if the signatures its
        // pull kept verify now; else it is pulled again, which fetches them afresh.
        let stored = match (stored, self.pull_options.policy.as_deref()) {
            (Some(record), Some(policy)) => match record.verify_under(policy, &self.source) {
                Ok(_) => Some(record),
                Err(e) if self.pull == PullPolicy::Never => return Err(e.into()),
                Err(e) => {
                    tracing::debug!(image = %self.source, reason = %e, "stored image not verified under this policy; pulling");
                    None
                }
            },
            (stored, _) => stored,
        };
        match (stored, self.pull) {
            (Some(record), _) => Ok(record),
            (None, PullPolicy::Never) => Err(PrepareError::NotStored(self.source.to_string())),
            (None, _) => {
                tracing::debug!(image = %self.source, "pulling");
                // Layers are unpacked as they download; `prepare` then finds them.
                Ok(crate::pull::pull_and_unpack(
                    &self.store,
                    &self.snapshots,
                    &self.source,
                    &self.pull_options,
                )
                .await?)
            }
        }
    }
}

#[async_trait]
impl Prepare for ImageBundle {
    async fn prepare(&self, run: &RunDir) -> Result<PreparedBundle, PrepareError> {
        let record = self.image().await?;
        let config = self.store.read_config(&record)?;
        let layers = crate::snapshot::layer_blobs(&config, &record.layers, |digest| {
            self.store.blob_path(digest)
        })?;
        let snapshots = self.snapshots.clone();
        let bundle_opts = self.bundle.clone();
        let dir = run.bundle_dir();
        // Unpacking and mounting are blocking file system work.
        let bundle = tokio::task::spawn_blocking(move || -> Result<_, PrepareError> {
            let lowers = snapshots.prepare(&layers)?;
            Ok(crate::bundle::Bundle::prepare(
                &config,
                &lowers,
                &dir,
                &bundle_opts,
            )?)
        })
        .await??;
        tracing::info!(image = %self.source, digest = %record.manifest_digest, "bundle prepared");
        // The rootfs stays mounted for the run; removing the run directory unmounts it.
        Ok(PreparedBundle {
            bundle: bundle.dir().to_path_buf(),
            status_file: Some(bundle.status_file()),
            out_dir: Some(bundle.out_dir()),
        })
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
