//! Command-line interface: one module per subcommand, each a thin layer over the library.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

mod bundle;
mod gc;
mod images;
mod pack;
mod progress;
mod pull;
mod run;
mod runtime;

/// Exit code when the executor itself failed (podman's convention).
pub const EXIT_EXECUTOR_FAILED: u8 = executor::error::EXECUTOR_FAILED;

/// Pull runner images, prepare OCI bundles and run them with an OCI runtime.
#[derive(Debug, Parser)]
#[command(name = "executor", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Root of the executor's state: content store, snapshots, runs.
    #[arg(
        long,
        global = true,
        env = "EXECUTOR_ROOT",
        default_value = "/var/lib/executor"
    )]
    pub root: PathBuf,
    /// Log format: `text` for people, `json` for machines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or filter (`info`, `debug`, `executor=trace`); `RUST_LOG` also works.
    /// Default for `text`: `info`, one line per stage (pull, bundle, start, finish).
    /// Default for `json`: `info,executor=debug`, every event the executor logs,
    /// each blob fetched and each layer unpacked too.
    #[arg(long, global = true, env = "EXECUTOR_LOG", value_name = "FILTER")]
    pub log_level: Option<String>,
}

impl GlobalArgs {
    /// The executor's state directory.
    pub fn root(&self) -> executor::root::Root {
        executor::root::Root::new(&self.root)
    }
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull an image into the content store.
    Pull(pull::Args),
    /// List stored images.
    Images(images::ImagesArgs),
    /// Remove an image reference from the store.
    Rmi(images::RmiArgs),
    /// Delete blobs and snapshots that no image reference needs.
    Prune(images::PruneArgs),
    /// Write an OCI bundle (rootfs + config.json) for an image.
    Bundle(bundle::Args),
    /// Run a runner image: pull, bundle, run, report, clean up.
    Run(run::Args),
    /// Pack files (a runner binary) into an image in an OCI image layout.
    Pack(pack::Args),
    /// Clean up what interrupted runs left behind.
    Gc(gc::Args),
    /// The embedded OCI runtime (youki's libcontainer) as a runtime CLI; used by
    /// the executor itself, which re-executes into it so that it forks from a
    /// single-threaded process.
    #[command(hide = true)]
    Runtime(runtime::Args),
    /// OCI hooks the executor's bundles name; runtimes run them, not users.
    #[command(hide = true, subcommand)]
    Hook(Hook),
}

/// The hooks of `executor hook`.
#[derive(Debug, Subcommand)]
pub enum Hook {
    /// `createRuntime`: bring up `lo` in the container's network namespace (the OCI
    /// state arrives on stdin).
    LoopbackUp,
}

/// Runs a hook; errors are one line on stderr, which the runtime passes on.
fn hook(hook: Hook) -> ExitCode {
    let Hook::LoopbackUp = hook;
    let mut state = Vec::new();
    let result = std::io::Read::read_to_end(&mut std::io::stdin(), &mut state)
        .map_err(anyhow::Error::from)
        .and_then(|_| Ok(executor::network::hook_pid(&state)?))
        .and_then(|pid| Ok(executor::network::loopback_up(pid)?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("executor hook loopback-up: {err:#}");
            ExitCode::from(EXIT_EXECUTOR_FAILED)
        }
    }
}

/// Parses the command line, runs the subcommand and maps errors to exit code 125.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    // The embedded runtime must stay single-threaded: no logging threads, no tokio.
    let command = match cli.command {
        Command::Runtime(args) => return runtime::run(&cli.global, args),
        Command::Hook(h) => return hook(h),
        other => other,
    };
    init_logging(&cli.global);
    let result = match command {
        Command::Pull(args) => pull::run(&cli.global, args),
        Command::Images(args) => images::images(&cli.global, args),
        Command::Rmi(args) => images::rmi(&cli.global, args),
        Command::Prune(args) => images::prune(&cli.global, args),
        Command::Bundle(args) => bundle::run(&cli.global, args),
        Command::Run(args) => run::run(&cli.global, args),
        Command::Pack(args) => pack::run(&cli.global, args),
        Command::Gc(args) => gc::run(&cli.global, args),
        Command::Runtime(_) | Command::Hook(_) => unreachable!("handled above"),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One line, the whole chain of causes: `executor: while pulling X: ...`.
            eprintln!("executor: {err:#}");
            ExitCode::from(EXIT_EXECUTOR_FAILED)
        }
    }
}

/// Help and version go to stdout with exit 0, as clap prints them; a usage error is
/// an executor failure like any other (podman's convention): exit 125 and one line
/// naming the flag and the value, instead of clap's exit 2 and multi-line usage.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => err.exit(),
        _ => {
            let rendered = err.to_string();
            let mut lines = rendered.lines();
            let first = lines.next().unwrap_or_default();
            let mut message = first.strip_prefix("error: ").unwrap_or(first).to_owned();
            // A list follows on indented lines ("required arguments were not
            // provided:"): it is the point of the message, so it joins the line.
            if message.ends_with(':') {
                let items: Vec<&str> = lines
                    .take_while(|l| l.starts_with("  "))
                    .map(str::trim)
                    .collect();
                message = format!("{message} {}", items.join(", "));
            }
            eprintln!("executor: {message} (see --help)");
            ExitCode::from(EXIT_EXECUTOR_FAILED)
        }
    }
}

fn init_logging(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    // libcontainer, which the embedded runtime calls in this process, logs its
    // failures itself; they reach the user as the executor's one-line error, so
    // its own lines stay off unless RUST_LOG asks for them.
    let level = global
        .log_level
        .as_deref()
        .unwrap_or(default_log_level(global.log_format));
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},libcontainer=off,libcgroups=off")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: escape codes in a log file or a pipe are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match global.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The log filter when neither `--log-level`, `EXECUTOR_LOG` nor `RUST_LOG` names one.
/// People get one line per stage; machines get every event, down to each blob and
/// layer (logged at debug so that the text stays short).
fn default_log_level(format: LogFormat) -> &'static str {
    match format {
        LogFormat::Text => "info",
        LogFormat::Json => "info,executor=debug",
    }
}

/// Runs a future on a fresh multi-threaded tokio runtime.
pub fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start async runtime: {e}"))?;
    Ok(rt.block_on(future))
}
