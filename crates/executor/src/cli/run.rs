//! `executor run`.

use super::GlobalArgs;
use anyhow::Context as _;
use executor::bundle::{BindMount, BundleOptions};
use executor::lifecycle::{self, LifecycleOptions};
use executor::reference::ImageSource;
use executor::report::{Reporter, ReporterKind};
use executor::run::{ExistingBundle, ImageBundle, Prepare, RunOptions};
use executor::runtime::RuntimeKind;
use executor::snapshot::Snapshotter;
use executor::store::Store;
use runner::GoDuration;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `executor run`.
///
/// Exit codes: the runner's own; 124 when it timed out; 125 when the executor
/// itself failed.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exit codes:
  N     the runner's own exit code (128+N when it was killed by signal N)
  124   the runner timed out (--timeout or the context's timeout) and was stopped
  125   the executor itself failed (pull, bundle, runtime, reporting)")]
pub struct Args {
    /// The runner image: a registry reference or `oci-layout:PATH[:TAG|@DIGEST]`.
    #[arg(required_unless_present = "bundle", conflicts_with = "bundle")]
    image: Option<String>,
    /// Run a prepared OCI bundle directory as is instead of an image (its `out/`
    /// holds artifacts, `status/status.json` the runner's status); for debugging runtimes.
    #[arg(long, value_name = "DIR")]
    bundle: Option<PathBuf>,
    /// OCI runtime: `embedded` (youki's libcontainer, built in), `runc`, `crun`,
    /// `youki`, or the path of a runc-compatible CLI.
    #[arg(long, default_value = "embedded", value_parser = parse_runtime)]
    runtime: RuntimeKind,
    /// The runner context file (YAML), mounted read-only at /runner-context.
    #[arg(long, value_name = "FILE", required_unless_present = "bundle")]
    context: Option<PathBuf>,
    /// The runner args file, mounted read-only at /runner-args.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "bundle",
        conflicts_with = "bundle"
    )]
    args: Option<PathBuf>,
    /// Copy the artifacts the runner wrote to /out into this directory.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Stop the runner after this long (Go duration: `90s`, `1h30m`; `0` for none);
    /// overrides the context's `timeout`.
    #[arg(long)]
    timeout: Option<GoDuration>,
    /// Grace period between SIGTERM and SIGKILL when stopping the runner.
    #[arg(long, default_value = "10s")]
    stop_timeout: GoDuration,
    /// Network of the runner: `none` (loopback only) or `host`.
    #[arg(long, value_enum, default_value_t = Network::None, conflicts_with = "bundle")]
    network: Network,
    /// Extra environment variable for the runner (repeatable).
    #[arg(long, value_name = "K=V", conflicts_with = "bundle")]
    env: Vec<String>,
    /// Extra bind mount for the runner (repeatable).
    #[arg(long, value_name = "SRC:DST[:ro]", conflicts_with = "bundle")]
    mount: Vec<String>,
    /// Kubeconfig for runners that talk to Kubernetes: mounted read-only with the
    /// certificate files it names, `KUBECONFIG` set.
    #[arg(long, value_name = "FILE", conflicts_with = "bundle")]
    kubeconfig: Option<PathBuf>,
    /// Where the outcome goes: `none`, `stdout` (JSON), `file:PATH`, `k8s-secret`.
    #[arg(long, default_value = "none")]
    status_reporter: ReporterKind,
    /// When to pull the image.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing, conflicts_with = "bundle")]
    pull: PullPolicy,
    #[command(flatten)]
    registry: Box<super::pull::RegistryArgs>,
}

/// The runner's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Network {
    /// A network namespace with loopback only.
    None,
    /// The host's network.
    Host,
}

/// When to pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PullPolicy {
    /// Always pull (refresh tags).
    Always,
    /// Pull only when the store has no such image.
    Missing,
    /// Never pull; fail if the image is not stored.
    Never,
}

fn parse_runtime(value: &str) -> Result<RuntimeKind, String> {
    RuntimeKind::parse(value).map_err(|e| e.to_string())
}

/// Runs `executor run`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let context = args
        .context
        .as_deref()
        .map(|path| -> anyhow::Result<runner::Context> {
            let file = std::fs::File::open(path)
                .with_context(|| format!("while reading runner context {}", path.display()))?;
            serde_norway::from_reader(file)
                .with_context(|| format!("invalid runner context {}", path.display()))
        })
        .transpose()?;
    let timeout = args
        .timeout
        .or(context.as_ref().map(|c| c.timeout))
        .and_then(GoDuration::as_limit);
    let reporter = match &args.status_reporter {
        ReporterKind::None => Reporter::None,
        ReporterKind::Stdout => Reporter::Stdout,
        ReporterKind::File(path) => Reporter::File(path.clone()),
        ReporterKind::K8sSecret => anyhow::bail!(
            "status reporter k8s-secret is not available in this build \
             (it needs the runner SDK's Kubernetes Secret reporter)"
        ),
    };
    let opts = RunOptions {
        runtime: args.runtime.clone(),
        lifecycle: LifecycleOptions {
            timeout,
            stop_timeout: args.stop_timeout.0,
        },
        output_dir: args.output_dir.clone(),
        reporter,
    };
    let prepare: Box<dyn Prepare> = match (&args.bundle, &args.image) {
        (Some(bundle), _) => Box::new(ExistingBundle(bundle.clone())),
        (None, Some(image)) => Box::new(image_bundle(global, &args, image)?),
        (None, None) => anyhow::bail!("an image or --bundle DIR is required"),
    };
    let root = global.root.clone();
    let result = super::block_on(async move {
        let stop = lifecycle::Stop::new();
        lifecycle::forward_termination_signals(&stop)
            .context("while installing signal handlers")?;
        executor::run::run(&root, prepare.as_ref(), &opts, &stop)
            .await
            .context("run failed")
    })??;
    // Exit statuses are one byte; runner exit codes and 124 already fit.
    Ok(ExitCode::from((result.exit_code & 0xff) as u8))
}

/// The pull + snapshot + bundle stages for `image`, from the flags.
fn image_bundle(global: &GlobalArgs, args: &Args, image: &str) -> anyhow::Result<ImageBundle> {
    let source = ImageSource::parse(image)?;
    let (Some(context), Some(runner_args)) = (&args.context, &args.args) else {
        anyhow::bail!("running an image needs --context FILE and --args FILE");
    };
    let mut bundle = BundleOptions::new(context, runner_args);
    bundle.env = args.env.clone();
    bundle.mounts = args
        .mount
        .iter()
        .map(|m| parse_mount(m))
        .collect::<anyhow::Result<_>>()?;
    bundle.network = match args.network {
        Network::None => executor::bundle::Network::None,
        Network::Host => executor::bundle::Network::Host,
    };
    bundle.kubeconfig = args.kubeconfig.clone();
    let store = Store::open(&global.root)
        .with_context(|| format!("while opening the store at {}", global.root.display()))?;
    let snapshots = Snapshotter::new(global.root.join("snapshots")).with_context(|| {
        format!(
            "while opening the snapshots under {}",
            global.root.display()
        )
    })?;
    Ok(ImageBundle {
        store,
        snapshots,
        source,
        pull: match args.pull {
            PullPolicy::Always => executor::run::PullPolicy::Always,
            PullPolicy::Missing => executor::run::PullPolicy::Missing,
            PullPolicy::Never => executor::run::PullPolicy::Never,
        },
        pull_options: args.registry.pull_options(),
        bundle,
    })
}

/// Parses `SRC:DST[:ro]` (`SRC:DST:rw` also accepted).
fn parse_mount(value: &str) -> anyhow::Result<BindMount> {
    let parts: Vec<&str> = value.split(':').collect();
    let (source, destination, read_only) = match parts.as_slice() {
        [src, dst] => (*src, *dst, false),
        [src, dst, "ro"] => (*src, *dst, true),
        [src, dst, "rw"] => (*src, *dst, false),
        _ => anyhow::bail!("invalid --mount {value:?}: expected SRC:DST[:ro]"),
    };
    if source.is_empty() || !destination.starts_with('/') {
        anyhow::bail!("invalid --mount {value:?}: SRC must be given and DST must be absolute");
    }
    let source = std::path::absolute(source)
        .with_context(|| format!("invalid --mount {value:?}: cannot resolve {source}"))?;
    Ok(BindMount {
        source,
        destination: PathBuf::from(destination),
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse_with_optional_read_only() {
        let m = parse_mount("/data:/in:ro").unwrap();
        assert_eq!(
            (m.source.as_path(), m.destination.as_path(), m.read_only),
            (
                std::path::Path::new("/data"),
                std::path::Path::new("/in"),
                true
            )
        );
        assert!(!parse_mount("/data:/in").unwrap().read_only);
        for bad in ["/data", "/data:in", ":/in", "/a:/b:rx", "/a:/b:ro:x"] {
            let err = parse_mount(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid --mount"), "{bad}: {err}");
        }
    }
}
