//! The executor: pull a runner image, prepare an OCI bundle, run it with an OCI runtime.
#![deny(missing_docs)]

pub mod auth;
pub mod pull;
pub mod reference;
pub mod source;
pub mod store;

pub mod lifecycle;
pub mod report;
pub mod run;
pub mod runs;
pub mod runtime;
