//! The Argo Workflow runner.
#![deny(missing_docs)]
