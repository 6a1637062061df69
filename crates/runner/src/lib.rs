//! Runner SDK: the Rust twin of Capact's `pkg/runner`.
#![deny(missing_docs)]
