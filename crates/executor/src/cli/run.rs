//! `executor run`.

use super::GlobalArgs;
use anyhow::Context as _;
use executor::bundle::InputBytes;
use executor::lifecycle::{self, LifecycleOptions};
use executor::reference::ImageSource;
use executor::run::report::{Reporter, ReporterKind};
use executor::run::{ExistingBundle, ImageBundle, Prepare, RunOptions};
use executor::runtime::RuntimeKind;
use runner_contract::{Context, GoDuration};
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
    #[arg(long, value_name = "DIR", conflicts_with_all = ["ProcessArgs", "RegistryArgs"])]
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
    /// Stop the runner after this long: whole seconds (`90`, as podman takes them) or
    /// a Go duration (`90s`, `1h30m`); `0` for none. Overrides the context's `timeout`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<GoDuration>,
    /// Grace period between SIGTERM and SIGKILL when stopping the runner: whole
    /// seconds (`10`, as podman's `--stop-timeout`) or a Go duration (`10s`, `500ms`).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    stop_timeout: GoDuration,
    /// Where the outcome goes: `none`, `stdout` (JSON), `file:PATH`, `k8s-secret`.
    #[arg(long, default_value = "none")]
    status_reporter: ReporterKind,
    /// Run at most N runs with this --root at once, across executor processes; a
    /// run above the limit waits (logged) for a slot before it pulls anything. The
    /// wait counts against neither --timeout nor --stop-timeout; SIGINT/SIGTERM end
    /// it. A killed executor's slot frees itself. `0`: no limit.
    #[arg(
        long,
        value_name = "N",
        env = "EXECUTOR_MAX_CONCURRENT_RUNS",
        default_value_t = 0
    )]
    max_concurrent_runs: usize,
    /// When to pull the image.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing, conflicts_with = "bundle")]
    pull: PullPolicy,
    #[command(flatten)]
    registry: Box<super::pull::RegistryArgs>,
    #[command(flatten)]
    process: Box<super::bundle::ProcessArgs>,
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

/// A duration flag: a bare integer is whole seconds, as podman's `--stop-timeout`
/// and `--timeout` take them; anything else is a Go duration. Only the flags accept
/// the bare form: the runner context's `timeout` stays a Go duration by contract.
fn parse_duration(value: &str) -> Result<GoDuration, String> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    let parsed = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // Through the Go parser so that the same upper bound applies.
        GoDuration::parse(&format!("{digits}s"))
    } else {
        GoDuration::parse(value)
    };
    parsed.map_err(|e| {
        format!("{e}: expected whole seconds (`30`) or a Go duration (`90s`, `1h30m`)")
    })
}

fn parse_runtime(value: &str) -> Result<RuntimeKind, String> {
    RuntimeKind::parse(value).map_err(|e| e.to_string())
}

/// Runs `executor run`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    // Read once: the typed context (the timeout, the Secret's name) and the bytes the
    // bundle hands the runner come from the same read.
    let context_bytes = args
        .context
        .as_deref()
        .map(|path| {
            std::fs::read(path)
                .map(|bytes| InputBytes(bytes.into()))
                .with_context(|| format!("while reading runner context {}", path.display()))
        })
        .transpose()?;
    let context = match (&context_bytes, args.context.as_deref()) {
        (Some(bytes), Some(path)) => Some(
            serde_norway::from_slice::<Context>(&bytes.0)
                .with_context(|| format!("invalid runner context {}", path.display()))?,
        ),
        _ => None,
    };
    let timeout = args
        .timeout
        .or(context.as_ref().map(|c| c.timeout))
        .and_then(GoDuration::as_limit);
    let reporter_kind = args.status_reporter.clone();
    let kubeconfig = args.process.kubeconfig.clone();
    let mut opts = RunOptions {
        runtime: args.runtime.clone(),
        lifecycle: LifecycleOptions {
            timeout,
            stop_timeout: args.stop_timeout.0,
        },
        output_dir: args.output_dir.clone(),
        reporter: Reporter::None,
        max_concurrent_runs: std::num::NonZeroUsize::new(args.max_concurrent_runs),
    };
    let prepare: Box<dyn Prepare> = match (&args.bundle, &args.image) {
        (Some(bundle), _) => Box::new(ExistingBundle(bundle.clone())),
        (None, Some(image)) => Box::new(image_bundle(global, &args, image, context_bytes)?),
        (None, None) => anyhow::bail!("an image or --bundle DIR is required"),
    };
    let root = global.root.clone();
    let result = super::block_on(async move {
        opts.reporter = Reporter::build(reporter_kind, context, kubeconfig.as_deref()).await?;
        let stop = lifecycle::Stop::new();
        lifecycle::forward_termination_signals(&stop)
            .context("while installing signal handlers")?;
        executor::run::run(&root, prepare.as_ref(), &opts, &stop)
            .await
            .map_err(|e| match e {
                // The refusal is the whole story: `image REF is not trusted: ...`.
                executor::run::RunError::Untrusted(trust) => anyhow::Error::new(trust),
                other => anyhow::Error::new(other).context("run failed"),
            })
    })??;
    // Exit statuses are one byte; runner exit codes and 124 already fit.
    Ok(ExitCode::from(
        u8::try_from(result.exit_code & 0xff).expect("masked to one byte"),
    ))
}

/// The pull + snapshot + bundle stages for `image`, from the flags.
fn image_bundle(
    global: &GlobalArgs,
    args: &Args,
    image: &str,
    context_bytes: Option<InputBytes>,
) -> anyhow::Result<ImageBundle> {
    let source = ImageSource::parse(image)?;
    let (Some(context), Some(runner_args)) = (&args.context, &args.args) else {
        anyhow::bail!("running an image needs --context FILE and --args FILE");
    };
    let mut bundle = args.process.bundle_options(context, runner_args)?;
    bundle.context_bytes = context_bytes;
    bundle.seccomp_dialect = args.runtime.seccomp_dialect();
    let store = global.root().store()?;
    let snapshots = global.root().snapshots()?;
    Ok(ImageBundle {
        store,
        snapshots,
        source,
        pull: match args.pull {
            PullPolicy::Always => executor::run::PullPolicy::Always,
            PullPolicy::Missing => executor::run::PullPolicy::Missing,
            PullPolicy::Never => executor::run::PullPolicy::Never,
        },
        pull_options: args.registry.pull_options()?,
        bundle,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn duration_flags_take_whole_seconds_and_go_durations() {
        for (input, want) in [
            ("2", Duration::from_secs(2)),
            ("0", Duration::ZERO),
            ("+5", Duration::from_secs(5)),
            ("3600", Duration::from_secs(3600)),
            ("2s", Duration::from_secs(2)),
            ("500ms", Duration::from_millis(500)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
        ] {
            assert_eq!(parse_duration(input).map(|d| d.0), Ok(want), "{input}");
        }
    }

    #[test]
    fn duration_flags_reject_what_is_neither() {
        for input in ["", "-2", "2.5", "5parsecs", "s", "99999999999999999999"] {
            let err = parse_duration(input).expect_err(input);
            assert!(err.contains("whole seconds"), "{input}: {err}");
            assert!(!err.contains('\n'), "{input}: {err}");
        }
    }
}
