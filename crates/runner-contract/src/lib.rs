//! The runner contract (`spec/CONTRACT.md`) as types, shared by the runner SDK, the
//! executor and the runners: the context document and its Go durations, where a runner
//! finds its inputs inside the container and which variables say so, the run status the
//! executor reports, and the exit codes. Pure data: nothing here does I/O.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod context;
pub mod error;
pub mod exit;
pub mod paths;
pub mod status;

pub use context::{Context, DurationError, GoDuration, OwnerReference, Platform};
pub use error::error_chain;
pub use status::RunStatus;
