//! A fake Kubernetes API server for tests.
#![deny(missing_docs)]
