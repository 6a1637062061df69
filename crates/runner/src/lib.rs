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
//! - [`Context`]: the runner context document;
//! - [`StatusReporter`]s: where the start status goes.
#![deny(missing_docs)]

pub mod context;
pub mod duration;
#[cfg(feature = "k8s")]
pub mod k8s_secret;
pub mod runner;
pub mod status;

pub use context::{Context, OwnerReference, Platform};
pub use duration::{GoDuration, ParseDurationError};
pub use runner::{BoxError, Ctx, Runner, StartInput, StartOutput, WaitInput, WaitOutput};
pub use status::{ReportError, StatusReporter};
