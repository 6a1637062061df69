//! Test harness: starts real parts (a registry, runtimes) and builds test images.
#![deny(missing_docs)]
