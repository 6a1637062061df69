//! The runner context: what the engine tells a runner about the Action it runs.
//!
//! Pure data, no I/O. Field names are camelCase on the wire, as in Capact.

pub use crate::duration::GoDuration;
use serde::{Deserialize, Serialize};

/// The runner context document, read from `RUNNER_CONTEXT_PATH`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Context {
    /// Name of the Action; runners name what they create after it.
    pub name: String,
    /// When true the runner validates and reports but creates nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Bound on the whole execution; zero means no timeout.
    #[serde(default)]
    pub timeout: GoDuration,
    /// Where the runner runs and who owns what it creates.
    pub platform: Platform,
}

/// Platform settings of the Kubernetes engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Platform {
    /// Namespace the runner creates its resources in.
    pub namespace: String,
    /// Service account the runner's workloads run as.
    pub service_account_name: String,
    /// Owner of everything the runner creates.
    pub owner_ref: OwnerReference,
}

/// A Kubernetes owner reference (`metav1.OwnerReference`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    /// API version of the owner, for example `core.capact.io/v1alpha1`.
    pub api_version: String,
    /// Kind of the owner, for example `Action`.
    pub kind: String,
    /// Name of the owner.
    pub name: String,
    /// UID of the owner.
    pub uid: String,
    /// Whether the owner is the managing controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    /// Whether the owner cannot be deleted before this object is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}
