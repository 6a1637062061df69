//! The [`Runner`] trait and its inputs and outputs.

use crate::context::Context;
use async_trait::async_trait;

/// The error type runners return: any error, sent across tasks.
///
/// `anyhow::Error` and every `std::error::Error + Send + Sync` convert into it with `?`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error and its causes on one line, `outer: inner: root`, because runner
/// errors (often `anyhow` ones) keep the useful detail in their causes.
pub(crate) use runner_contract::error_chain;

/// Input of [`Runner::start`].
#[derive(Debug, Clone)]
pub struct StartInput {
    /// The runner context.
    pub context: Context,
    /// The runner args: whatever the runner's Interface defines, as parsed from YAML.
    pub args: serde_json::Value,
}

/// Output of [`Runner::start`].
#[derive(Debug, Clone, PartialEq)]
pub struct StartOutput {
    /// Status reported to the engine once the runner has started, for example a
    /// reference to what it created.
    pub status: serde_json::Value,
}

/// Input of [`Runner::wait_for_completion`].
#[derive(Debug, Clone)]
pub struct WaitInput {
    /// The runner context.
    pub context: Context,
}

/// Output of [`Runner::wait_for_completion`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitOutput {
    /// Whether the work succeeded.
    pub succeeded: bool,
    /// A message for people, on failure the reason.
    pub message: String,
}

/// What the [`crate::Manager`] passes to every runner call.
///
/// The Manager enforces the deadline and cancellation itself by dropping the
/// runner's future; the context lets a runner see them, for example to bound a
/// request it makes.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// When the whole execution must end; `None` when the context's timeout is zero.
    pub deadline: Option<std::time::Instant>,
    /// The span the runner logs under (Capact's `LoggerInjector`): fields for the
    /// runner name and the Action name are already on it.
    pub span: tracing::Span,
}

/// A runner: starts the work of one Action and waits for it to finish.
#[async_trait]
pub trait Runner: Send + Sync {
    /// Name of the runner, used in logs.
    fn name(&self) -> &str;

    /// Starts the work and returns the status to report to the engine.
    async fn start(&self, ctx: &Ctx, input: StartInput) -> Result<StartOutput, BoxError>;

    /// Waits until the work has finished.
    async fn wait_for_completion(
        &self,
        ctx: &Ctx,
        input: WaitInput,
    ) -> Result<WaitOutput, BoxError>;
}
