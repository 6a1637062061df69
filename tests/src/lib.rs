//! Test harness: starts real parts (a registry, runtimes) and builds test images.
#![deny(missing_docs)]

pub mod binary;
pub mod check;
pub mod forward_proxy;
pub mod image;
pub mod probe;
pub mod proxy;
pub mod registry;
pub mod tmpfs;
pub mod token;

pub use binary::{argo_runner_bin, executor_bin, run_executor};
pub use check::{StoreReport, verify_store, verify_store_after_crash};
pub use forward_proxy::ForwardProxy;
pub use image::{
    BuiltImage, Compression, Entry, ImageSpec, LayerSpec, busybox_layer, noise, write_image,
    write_index,
};
pub use probe::{build_probe, parse_report};
pub use proxy::{Fault, FaultProxy, Times};
pub use registry::{
    ManifestFormat, Registry, RegistryConfig, TokenAuth, push_layout, push_marked_image,
};
pub use tmpfs::Tmpfs;
pub use token::TokenServer;

/// A valid runner context (YAML) for tests that run an image: a dry run named
/// `action-1` with a 10 minute timeout.
pub const RUNNER_CONTEXT: &str = include_str!("../fixtures/runner-context.yaml");
