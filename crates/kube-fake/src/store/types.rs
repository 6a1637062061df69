//! The store's vocabulary: API errors (as `Status` bodies), watch events, field
//! selectors, recorded requests.

use crate::resource::Resource;
use serde_json::{Value, json};

/// An error the fake answers with: serialized as a Kubernetes `Status` body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code, for example 409.
    pub code: u16,
    /// Machine-readable reason, for example `AlreadyExists`.
    pub reason: String,
    /// Message for people, worded as the real server words it.
    pub message: String,
    /// Name of the object the error is about, if any.
    pub name: Option<String>,
    /// Resource (plural) and group of the object the error is about, if any.
    pub resource: Option<Resource>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_owned(),
            message: message.into(),
            name: None,
            resource: None,
        }
    }

    pub(super) fn about(mut self, resource: Resource, name: &str) -> Self {
        self.resource = Some(resource);
        self.name = Some(name.to_owned());
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(super) fn not_found(resource: Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", resource.qualified()),
        )
        .about(resource, name)
    }

    pub(super) fn invalid(resource: Resource, name: &str, cause: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {cause}",
                resource.qualified_kind()
            ),
        )
        .about(resource, name)
    }

    pub(super) fn conflict(resource: Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                resource.qualified()
            ),
        )
        .about(resource, name)
    }

    /// The `Status` object the real API server sends for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(name), Some(resource)) = (&self.name, self.resource) {
            status["details"] = json!({
                "name": name,
                "group": resource.group(),
                "kind": resource.plural(),
            });
        }
        status
    }
}

/// What happened to an object, as a watch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One entry of the watch history.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) rv: u64,
    pub(crate) resource: Resource,
    pub(crate) namespace: String,
    pub(crate) kind: EventType,
    pub(crate) object: Value,
}

/// A parsed field selector: only what the real server supports for every resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    name: Option<String>,
    namespace: Option<String>,
}

impl FieldSelector {
    /// Parses `metadata.name=x,metadata.namespace=y` (`==` also accepted).
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        let mut selector = Self::default();
        for term in text.split(',').filter(|t| !t.is_empty()) {
            let (field, value) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .filter(|(f, _)| !f.ends_with('!'))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid field selector: unsupported operator in {term:?}"
                    ))
                })?;
            match field {
                "metadata.name" => selector.name = Some(value.to_owned()),
                "metadata.namespace" => selector.namespace = Some(value.to_owned()),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "field label not supported: {other}"
                    )));
                }
            }
        }
        Ok(selector)
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        self.name.as_deref().is_none_or(|n| meta["name"] == n)
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| meta["namespace"] == n)
    }
}

pub(super) type Key = (Resource, String, String);

/// One HTTP request as the server saw it, for tests that count requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, for example `PUT`.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Query string, percent-decoded (`fieldSelector=metadata.name=x&watch=true`),
    /// empty when there was none.
    pub query: String,
}
