//! Runner SDK: the Rust twin of Capact's `pkg/runner`.
//!
//! A runner is a program that executes one Capact Action. It is started with two
//! files, the runner context and the runner args (see `spec/CONTRACT.md`), starts
//! the work, reports a start status and waits for the work to complete. This crate
//! gives runner authors:
//!
//! - [`Runner`]: the trait a runner implements;
//! - [`Manager`]: reads the inputs from the environment, drives a [`Runner`] under
//!   the context's timeout and SIGINT/SIGTERM, and reports its status;
//! - [`main`]: the whole process in one call (configuration, logging, manager, exit code),
//!   and [`main_with`] to adjust the manager first (for example its status reporter);
//! - [`Context`]: the runner context document;
//! - [`StatusReporter`]s: where the start status goes.
//!
//! ```no_run
//! use runner::{BoxError, Ctx, Runner, StartInput, StartOutput, WaitInput, WaitOutput};
//!
//! struct Hello;
//!
//! #[async_trait::async_trait]
//! impl Runner for Hello {
//!     fn name(&self) -> &str {
//!         "hello"
//!     }
//!
//!     async fn start(&self, _ctx: &Ctx, input: StartInput) -> Result<StartOutput, BoxError> {
//!         let who = input.args["who"].as_str().ok_or("args field `who` must be a string")?;
//!         println!("hello, {who}");
//!         Ok(StartOutput { status: serde_json::json!({ "greeted": who }) })
//!     }
//!
//!     async fn wait_for_completion(&self, _ctx: &Ctx, _input: WaitInput) -> Result<WaitOutput, BoxError> {
//!         Ok(WaitOutput { succeeded: true, message: "greeted".into() })
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     runner::main(Hello)
//! }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
/// The runner context and Go durations, from the contract crate.
pub use runner_contract::context;
pub mod input;
#[cfg(feature = "k8s")]
pub mod k8s_secret;
pub mod logging;
pub mod manager;
pub mod runner;
pub mod status;

pub use config::{Config, ConfigError};
pub use context::{Context, DurationError, GoDuration, OwnerReference, Platform};
pub use input::{InputError, InputKind};
pub use manager::{Manager, ManagerError, Signal};
pub use runner::{BoxError, Ctx, Runner, StartInput, StartOutput, WaitInput, WaitOutput};
pub use status::{FileReporter, NoopReporter, ReportError, RunStatus, StatusReporter};

use std::process::ExitCode;

/// Runs `runner` as the whole process: reads the configuration from the
/// environment, sets up logging, drives the runner with a [`Manager`] (file status
/// reporter when `RUNNER_STATUS_PATH` is set) and returns the exit code.
///
/// Exit codes: 0 when the runner succeeded; 1 when it failed (its message goes to
/// stderr as one line) or hit an error; 2 for a bad configuration or input file;
/// 124 when the context timeout elapsed; 130/143 when stopped by SIGINT/SIGTERM.
pub fn main<R: Runner>(runner: R) -> ExitCode {
    main_with(runner, |manager, _config| async { Ok(manager) })
}

/// Like [`main`], with a `setup` step that may adjust the [`Manager`] or refuse to
/// run before the inputs are read: for example install the Kubernetes Secret
/// reporter (`Manager::with_reporter`), whose client needs the async runtime
/// `setup` runs in, or check the runner's own environment. A `setup` error exits 1
/// with `NAME: cannot set up runner NAME: ERROR`.
pub fn main_with<R, F, Fut>(runner: R, setup: F) -> ExitCode
where
    R: Runner,
    F: FnOnce(Manager<R>, Config) -> Fut,
    Fut: std::future::Future<Output = Result<Manager<R>, BoxError>>,
{
    let name = runner.name().to_owned();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            logging::init(false);
            return fail(&name, &ManagerError::from(err));
        }
    };
    logging::init(config.logger_dev_mode);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("{name}: cannot start the async runtime: {err}");
            return ExitCode::from(manager::EXIT_FAILED);
        }
    };
    let result = rt.block_on(async {
        let manager = setup(Manager::for_config(runner, &config), config.clone())
            .await
            .map_err(|error| ManagerError::Setup {
                runner: name.clone(),
                error,
            })?;
        manager.run(&config).await
    });
    match result {
        Ok(out) if out.succeeded => ExitCode::SUCCESS,
        Ok(out) => {
            eprintln!("{name}: failed: {}", one_line(&out.message));
            ExitCode::from(manager::EXIT_FAILED)
        }
        Err(err) => fail(&name, &err),
    }
}

fn fail(name: &str, err: &ManagerError) -> ExitCode {
    // The whole chain: input and reporter errors keep their causes as sources.
    eprintln!("{name}: {}", one_line(&runner_contract::error_chain(err)));
    ExitCode::from(err.exit_code())
}

/// Keeps the final error on one line even when a runner's message spans several.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Compiles the README's Rust example as a doctest, so the README cannot drift
/// from the SDK.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
