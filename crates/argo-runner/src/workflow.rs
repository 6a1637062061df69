//! Building the Workflow object from the runner context and args, and reading
//! its outcome. Pure data, no I/O.

use crate::validate::{ValidationError, validate_spec};
use runner::Context;
use serde_json::{Value, json};

/// API group of Argo Workflows.
pub const GROUP: &str = "argoproj.io";
/// API version of Argo Workflows.
pub const VERSION: &str = "v1alpha1";
/// Kind of an Argo Workflow.
pub const KIND: &str = "Workflow";
/// Label put on every Workflow this runner creates.
pub const CREATED_BY_LABEL: &str = "runner.capact.io/created-by";
/// Value of [`CREATED_BY_LABEL`].
pub const CREATED_BY: &str = "argo-runner";

/// Why the args cannot become a Workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// The args have no `workflow` key.
    #[error("runner args: missing field workflow")]
    MissingWorkflow,
    /// `workflow` is not a mapping.
    #[error("runner args: workflow must be a mapping holding a workflow spec")]
    NotAnObject,
    /// The workflow spec fails Argo's static validation.
    #[error("runner args: invalid workflow: {0}")]
    Invalid(#[from] ValidationError),
}

/// Builds the Workflow to create: `args.workflow` as its spec (kept as arbitrary
/// JSON), named after the Action, in the context's namespace, labelled, owned
/// by the context's owner and run as the context's service account.
///
/// The spec is validated first, so nothing invalid reaches the server.
pub fn build(context: &Context, args: &Value) -> Result<Value, ArgsError> {
    let spec = args.get("workflow").ok_or(ArgsError::MissingWorkflow)?;
    if !spec.is_object() {
        return Err(ArgsError::NotAnObject);
    }
    validate_spec(spec)?;
    let mut spec = spec.clone();
    spec["serviceAccountName"] = json!(context.platform.service_account_name);
    let owner = serde_json::to_value(&context.platform.owner_ref)
        .expect("an owner reference of strings and booleans always serializes");
    Ok(json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": KIND,
        "metadata": {
            "name": context.name,
            "namespace": context.platform.namespace,
            "labels": {CREATED_BY_LABEL: CREATED_BY},
            "ownerReferences": [owner],
        },
        "spec": spec,
    }))
}

/// How a finished Workflow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether `status.phase` is `Succeeded`.
    pub succeeded: bool,
    /// `status.phase` as Argo set it.
    pub phase: String,
    /// `status.message`, empty when Argo set none.
    pub message: String,
}

/// The outcome of a Workflow object, or `None` while it runs (`status.finishedAt` unset).
pub fn outcome(workflow: &Value) -> Option<Outcome> {
    let status = workflow.get("status")?;
    match status.get("finishedAt") {
        None | Some(Value::Null) => return None,
        Some(Value::String(s)) if s.is_empty() => return None,
        Some(_) => {}
    }
    let phase = status["phase"].as_str().unwrap_or_default().to_owned();
    Some(Outcome {
        succeeded: phase == "Succeeded",
        message: status["message"].as_str().unwrap_or_default().to_owned(),
        phase,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner::{GoDuration, OwnerReference, Platform};

    fn context() -> Context {
        Context {
            name: "action-1".into(),
            dry_run: false,
            timeout: GoDuration::default(),
            platform: Platform {
                namespace: "team".into(),
                service_account_name: "runner-sa".into(),
                owner_ref: OwnerReference {
                    api_version: "core.capact.io/v1alpha1".into(),
                    kind: "Action".into(),
                    name: "action-1".into(),
                    uid: "uid-1".into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                },
            },
        }
    }

    #[test]
    fn build_keeps_unknown_fields_and_sets_identity() {
        let args = json!({"workflow": {
            "entrypoint": "main",
            "serviceAccountName": "overridden",
            "someFutureField": {"kept": [1, 2]},
            "templates": [{"name": "main", "container": {"image": "busybox"}}],
        }});
        let wf = build(&context(), &args).unwrap();
        assert_eq!(wf["metadata"]["name"], "action-1");
        assert_eq!(wf["metadata"]["namespace"], "team");
        assert_eq!(wf["metadata"]["labels"][CREATED_BY_LABEL], "argo-runner");
        assert_eq!(
            wf["metadata"]["ownerReferences"][0],
            json!({"apiVersion": "core.capact.io/v1alpha1", "kind": "Action", "name": "action-1",
                   "uid": "uid-1", "controller": true, "blockOwnerDeletion": true})
        );
        assert_eq!(wf["spec"]["serviceAccountName"], "runner-sa");
        assert_eq!(wf["spec"]["someFutureField"], json!({"kept": [1, 2]}));
    }

    #[test]
    fn build_rejects_missing_or_invalid_workflow() {
        assert_eq!(
            build(&context(), &json!({})),
            Err(ArgsError::MissingWorkflow)
        );
        assert_eq!(
            build(&context(), &json!({"workflow": "x"})),
            Err(ArgsError::NotAnObject)
        );
        let err = build(
            &context(),
            &json!({"workflow": {"entrypoint": "a", "templates": []}}),
        );
        assert_eq!(
            err.unwrap_err().to_string(),
            "runner args: invalid workflow: spec.entrypoint template \"a\" not found"
        );
    }

    #[test]
    fn outcome_needs_finished_at() {
        assert_eq!(outcome(&json!({"status": {"phase": "Running"}})), None);
        assert_eq!(outcome(&json!({})), None);
        let done = outcome(
            &json!({"status": {"phase": "Failed", "finishedAt": "2026-01-01T00:00:00Z", "message": "boom"}}),
        );
        assert_eq!(
            done,
            Some(Outcome {
                succeeded: false,
                phase: "Failed".into(),
                message: "boom".into()
            })
        );
    }
}
