//! Helpers shared by the tests that call `executor::pull` in-process. They live here, not
//! in the harness library, because only the tests depend on the `executor` crate.
// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use executor::pull::{PullOptions, pull};
use executor::reference::ImageSource;
use executor::source::registry::RegistryOptions;
use executor::store::Store;
use std::time::Duration;

/// Pull options for a plain-HTTP test registry (or proxy) at `addr`: short backoff, two
/// retries, no progress output.
pub fn pull_options(addr: &str) -> PullOptions {
    PullOptions {
        registry: RegistryOptions {
            insecure_registries: vec![addr.to_owned()],
            ..RegistryOptions::default()
        },
        initial_backoff: Duration::from_millis(50),
        retries: 2,
        progress: None,
        ..PullOptions::default()
    }
}

/// The error and its causes joined with `: `, as the CLI prints them.
pub use executor::error::error_chain;

/// Pulls `reference`, which must fail; returns the error chain.
pub async fn pull_error(store: &Store, reference: &ImageSource, options: &PullOptions) -> String {
    match pull(store, reference, options).await {
        Ok(record) => panic!("pull succeeded: {}", record.manifest_digest),
        Err(e) => error_chain(&e),
    }
}

/// Parses an image reference of a test.
pub fn source(text: &str) -> ImageSource {
    ImageSource::parse(text).unwrap()
}

/// A fresh store in a fresh temp dir (removed when the returned dir drops).
pub fn empty_store() -> (tempfile::TempDir, Store) {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    (root, store)
}

/// Whether the store's `tmp/` is empty: no temp file left behind.
pub fn tmp_is_empty(root: &std::path::Path) -> bool {
    std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .next()
        .is_none()
}
