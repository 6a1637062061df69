//! The executor: pull a runner image, prepare an OCI bundle, run it with an OCI runtime.
#![deny(missing_docs)]

pub mod bundle;
pub mod capabilities;
pub mod digest;
pub mod error;
pub mod gc;
pub mod network;
pub mod pack;
pub mod pull;
pub mod reference;
pub mod root;
pub mod seccomp;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod sys;
pub mod time;
pub mod trust;
pub mod unpack;
pub mod user;

pub mod lifecycle;
pub mod mount;
pub mod run;
pub mod runs;
pub mod runtime;
