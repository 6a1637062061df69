//! The prepare stage: what turns a run directory into a runnable bundle, either a
//! bundle given as is or the image pipeline (pull per the policy, snapshots, bundle).

use crate::runs::RunDir;
use async_trait::async_trait;
use std::path::PathBuf;

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
