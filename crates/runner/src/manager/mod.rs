//! The [`Manager`]: drives a [`Runner`] from its inputs to its exit code.

use crate::config::{Config, ConfigError};
use crate::context::{Context, GoDuration};
use crate::input::{self, InputError};
use crate::runner::{BoxError, Ctx, Runner, StartInput, WaitInput, WaitOutput, error_chain};
use crate::status::{FileReporter, NoopReporter, ReportError, StatusReporter};
use std::future::Future;
use tracing::Instrument as _;

/// Exit code of a runner whose work failed or that hit an error while running.
pub const EXIT_FAILED: u8 = runner_contract::exit::FAILED;
/// Exit code of a runner started with a bad configuration or bad input files.
pub const EXIT_INVALID_INPUT: u8 = runner_contract::exit::INVALID_INPUT;
/// Exit code of a runner stopped by its context timeout (as `timeout(1)` exits).
pub const EXIT_TIMED_OUT: u8 = runner_contract::exit::TIMED_OUT;

/// A signal that stops a running runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (the executor's or the kubelet's stop request).
    Terminate,
}

impl Signal {
    /// The signal number (2 or 15).
    pub fn number(self) -> u8 {
        match self {
            Signal::Interrupt => 2,
            Signal::Terminate => 15,
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// Why a runner did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The environment does not configure the runner.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An input file is missing, unreadable or invalid.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The runner's own set-up step (see [`crate::main_with`]) failed.
    #[error("cannot set up runner {runner}: {}", error_chain(error.as_ref()))]
    Setup {
        /// The runner's name.
        runner: String,
        /// The set-up error; the message includes its causes.
        error: BoxError,
    },
    /// The SIGINT/SIGTERM handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// [`Runner::start`] failed.
    #[error("runner {runner} failed to start: {}", error_chain(error.as_ref()))]
    Start {
        /// The runner's name.
        runner: String,
        /// The runner's error; the message includes its causes.
        error: BoxError,
    },
    /// The start status could not be reported.
    #[error(
        "cannot report the start status of runner {runner}: {}",
        error_chain(error)
    )]
    Report {
        /// The runner's name.
        runner: String,
        /// The reporter's error; the message includes its causes.
        error: ReportError,
    },
    /// [`Runner::wait_for_completion`] failed.
    #[error("runner {runner} failed while waiting for completion: {}", error_chain(error.as_ref()))]
    Wait {
        /// The runner's name.
        runner: String,
        /// The runner's error; the message includes its causes.
        error: BoxError,
    },
    /// The context timeout elapsed before the runner completed.
    #[error("runner {runner} timed out after {timeout} (the context timeout)")]
    TimedOut {
        /// The runner's name.
        runner: String,
        /// The context timeout.
        timeout: GoDuration,
    },
    /// SIGINT or SIGTERM stopped the runner.
    #[error("runner {runner} cancelled by {signal}")]
    Cancelled {
        /// The runner's name.
        runner: String,
        /// The signal received.
        signal: Signal,
    },
}

impl ManagerError {
    /// The process exit code for this error: 2 for bad input, 124 for a timeout,
    /// 128 + the signal number when cancelled, otherwise 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ManagerError::Config(_) | ManagerError::Input(_) => EXIT_INVALID_INPUT,
            ManagerError::TimedOut { .. } => EXIT_TIMED_OUT,
            ManagerError::Cancelled { signal, .. } => 128 + signal.number(),
            _ => EXIT_FAILED,
        }
    }
}

/// Drives one [`Runner`]: reads its inputs, starts it, reports the start status,
/// waits for completion, all under the context timeout and SIGINT/SIGTERM.
///
/// Cancellation (timeout or signal) drops the runner's in-flight future; a runner
/// that must undo something on cancellation does so in `Drop` or checks
/// [`Ctx::deadline`] itself.
pub struct Manager<R> {
    runner: R,
    reporter: Box<dyn StatusReporter>,
}

impl<R: Runner> Manager<R> {
    /// A manager that reports the start status nowhere.
    pub fn new(runner: R) -> Self {
        Manager {
            runner,
            reporter: Box::new(NoopReporter),
        }
    }

    /// A manager with the reporter `config` selects: a [`FileReporter`] when
    /// `RUNNER_STATUS_PATH` is set, otherwise none.
    pub fn for_config(runner: R, config: &Config) -> Self {
        let manager = Manager::new(runner);
        match &config.status_path {
            Some(path) => manager.with_reporter(FileReporter::new(path)),
            None => manager,
        }
    }

    /// Replaces the status reporter, for example with the Kubernetes Secret reporter.
    pub fn with_reporter(mut self, reporter: impl StatusReporter + 'static) -> Self {
        self.reporter = Box::new(reporter);
        self
    }

    /// The runner this manager drives.
    pub fn runner(&self) -> &R {
        &self.runner
    }

    /// Runs the runner with the inputs `config` names, stopping it on SIGINT or
    /// SIGTERM. Returns the runner's completion, which may say it failed.
    pub async fn run(&self, config: &Config) -> Result<WaitOutput, ManagerError> {
        use tokio::signal::unix::{SignalKind, signal};
        // Installed before anything else so that a stop request arriving while the
        // inputs are read is not lost to the default disposition.
        let mut interrupt = signal(SignalKind::interrupt()).map_err(ManagerError::Signals)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(ManagerError::Signals)?;
        let stop = async move {
            tokio::select! {
                _ = interrupt.recv() => Signal::Interrupt,
                _ = terminate.recv() => Signal::Terminate,
            }
        };
        let context = input::read_context(&config.context_path)?;
        let args = input::read_args(&config.args_path)?;
        self.execute(context, args, stop).await
    }

    /// Runs the runner with the given inputs until it completes, the context
    /// timeout elapses or `stop` resolves (the seam tests use instead of signals).
    pub async fn execute(
        &self,
        context: Context,
        args: serde_json::Value,
        stop: impl Future<Output = Signal>,
    ) -> Result<WaitOutput, ManagerError> {
        let name = self.runner.name().to_owned();
        let timeout = context.timeout;
        let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout.0);
        let span = tracing::info_span!("runner", runner = %name, action = %context.name);
        let ctx = Ctx {
            deadline: deadline.map(tokio::time::Instant::into_std),
            span: span.clone(),
        };
        tracing::info!(
            parent: &span,
            dry_run = context.dry_run,
            timeout = %timeout,
            "starting runner"
        );
        let work = self.start_and_wait(&ctx, context, args);
        let bounded = async {
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, work)
                    .await
                    .unwrap_or_else(|_| {
                        Err(ManagerError::TimedOut {
                            runner: name.clone(),
                            timeout,
                        })
                    }),
                None => work.await,
            }
        };
        let result = tokio::select! {
            result = bounded => result,
            signal = stop => Err(ManagerError::Cancelled { runner: name.clone(), signal }),
        };
        match &result {
            Ok(out) if out.succeeded => {
                tracing::info!(parent: &span, result = %out.message, "runner succeeded")
            }
            Ok(out) => tracing::warn!(parent: &span, result = %out.message, "runner failed"),
            Err(err) => tracing::error!(parent: &span, error = %err, "runner did not complete"),
        }
        result
    }

    async fn start_and_wait(
        &self,
        ctx: &Ctx,
        context: Context,
        args: serde_json::Value,
    ) -> Result<WaitOutput, ManagerError> {
        let runner = || self.runner.name().to_owned();
        let started = self
            .runner
            .start(
                ctx,
                StartInput {
                    context: context.clone(),
                    args,
                },
            )
            .instrument(ctx.span.clone())
            .await
            .map_err(|error| ManagerError::Start {
                runner: runner(),
                error,
            })?;
        tracing::debug!(parent: &ctx.span, "runner started, reporting the start status");
        self.reporter
            .report(&context, &started.status)
            .instrument(ctx.span.clone())
            .await
            .map_err(|error| ManagerError::Report {
                runner: runner(),
                error,
            })?;
        self.runner
            .wait_for_completion(ctx, WaitInput { context })
            .instrument(ctx.span.clone())
            .await
            .map_err(|error| ManagerError::Wait {
                runner: runner(),
                error,
            })
    }
}

#[cfg(test)]
mod tests;
