//! The executor: pull a runner image, prepare an OCI bundle, run it with an OCI runtime.
#![deny(missing_docs)]

pub mod bundle;
pub mod snapshot;
pub mod unpack;
pub mod user;
