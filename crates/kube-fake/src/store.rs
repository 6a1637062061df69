//! The object store: what the API server keeps and the semantics of every verb.
//!
//! No I/O here. Each write bumps one global resourceVersion (as etcd does) and
//! appends a watch event; `compact` forgets that history so that watches from an
//! older resourceVersion get `410 Expired`, as after an etcd compaction.

use crate::resource::Resource;
use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

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

    fn about(mut self, resource: Resource, name: &str) -> Self {
        self.resource = Some(resource);
        self.name = Some(name.to_owned());
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    fn not_found(resource: Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", resource.qualified()),
        )
        .about(resource, name)
    }

    fn invalid(resource: Resource, name: &str, cause: &str) -> Self {
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

    fn conflict(resource: Resource, name: &str) -> Self {
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

type Key = (Resource, String, String);

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

/// Everything the server holds.
#[derive(Debug, Default)]
pub(crate) struct Store {
    objects: BTreeMap<Key, Value>,
    /// Latest resourceVersion handed out.
    pub(crate) rv: u64,
    events: Vec<Event>,
    /// Watches must start at or after this resourceVersion.
    pub(crate) compacted: u64,
    conflicts: HashMap<Key, u32>,
    pub(crate) requests: Vec<RecordedRequest>,
    uids: u64,
}

impl Store {
    fn key(resource: Resource, namespace: &str, name: &str) -> Key {
        (resource, namespace.to_owned(), name.to_owned())
    }

    /// Gets one object.
    pub(crate) fn get(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.objects
            .get(&Self::key(resource, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))
    }

    /// Lists the objects of a namespace matching `selector`, as a `...List` object.
    pub(crate) fn list(
        &self,
        resource: Resource,
        namespace: &str,
        selector: &FieldSelector,
    ) -> Value {
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((r, ns, _), obj)| *r == resource && ns == namespace && selector.matches(obj))
            .map(|(_, obj)| obj.clone())
            .collect();
        json!({
            "apiVersion": resource.api_version(),
            "kind": format!("{}List", resource.kind()),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        })
    }

    /// Creates an object (`POST`); with `dry_run` validates it and stores nothing.
    pub(crate) fn create(
        &mut self,
        resource: Resource,
        namespace: &str,
        body: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut object = check_body(resource, namespace, body)?;
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if name.is_empty() {
            return Err(ApiError::invalid(
                resource,
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
        validate_name(resource, &name)?;
        if self
            .objects
            .contains_key(&Self::key(resource, namespace, &name))
        {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", resource.qualified()),
            )
            .about(resource, &name));
        }
        normalize(resource, &name, &mut object)?;
        if resource.has_status_subresource() {
            // With the status subresource, a create cannot set the status.
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
        }
        self.uids += 1;
        let meta = meta_mut(&mut object);
        meta.insert("namespace".into(), json!(namespace));
        meta.insert("uid".into(), json!(make_uid(self.uids)));
        meta.insert("creationTimestamp".into(), json!(rfc3339_now()));
        if resource.is_custom() {
            meta.insert("generation".into(), json!(1));
        }
        if dry_run {
            // A dry run answers with what would be stored, without a resourceVersion.
            meta.remove("resourceVersion");
            return Ok(object);
        }
        Ok(self.commit(resource, namespace, &name, object, EventType::Added))
    }

    /// Replaces an object (`PUT`) or its status (`PUT .../status`).
    pub(crate) fn replace(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        body: Value,
        status_only: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let body = check_body(resource, namespace, body)?;
        if body["metadata"]["name"] != name {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let current = self.get(resource, namespace, name)?;
        match body["metadata"]["resourceVersion"].as_str() {
            Some(rv) if !rv.is_empty() && current["metadata"]["resourceVersion"] != rv => {
                return Err(ApiError::conflict(resource, name));
            }
            Some(rv) if !rv.is_empty() => {}
            _ if resource.is_custom() => {
                return Err(ApiError::invalid(
                    resource,
                    name,
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                ));
            }
            _ => {}
        }
        let merged = self.merge_update(resource, current, body, status_only)?;
        self.finish_update(resource, namespace, name, merged, dry_run)
    }

    /// Applies a JSON merge patch (RFC 7386) to an object or its status.
    pub(crate) fn patch(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        patch: &Value,
        status_only: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if !patch.is_object() {
            return Err(ApiError::bad_request("the patch is not a JSON object"));
        }
        let current = self.get(resource, namespace, name)?;
        if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
            && current["metadata"]["resourceVersion"] != rv
        {
            return Err(ApiError::conflict(resource, name));
        }
        let mut patched = current.clone();
        merge_patch(&mut patched, patch);
        let merged = self.merge_update(resource, current, patched, status_only)?;
        self.finish_update(resource, namespace, name, merged, dry_run)
    }

    /// Combines the stored object and the requested new one the way an update does:
    /// server-owned metadata is kept, and the status subresource splits who writes what.
    fn merge_update(
        &mut self,
        resource: Resource,
        current: Value,
        mut new: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let name = current["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if resource.has_status_subresource() {
            if status_only {
                let status = new.get("status").cloned();
                new = current.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        if let Some(map) = new.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            } else {
                match current.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(map) = new.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            }
        }
        normalize(resource, &name, &mut new)?;
        let meta = meta_mut(&mut new);
        for field in [
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "generation",
        ] {
            match current["metadata"].get(field) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
        if resource.is_custom() && strip_meta_status(&current) != strip_meta_status(&new) {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            meta_mut(&mut new).insert("generation".into(), json!(generation));
        }
        Ok(new)
    }

    fn finish_update(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let key = Self::key(resource, namespace, name);
        if let Some(left) = self.conflicts.get_mut(&key)
            && *left > 0
        {
            *left -= 1;
            return Err(ApiError::conflict(resource, name));
        }
        if dry_run {
            return Ok(object);
        }
        Ok(self.commit(resource, namespace, name, object, EventType::Modified))
    }

    /// Deletes an object and returns it as it was last stored; with a
    /// `precondition` resourceVersion, only if it still is that version.
    pub(crate) fn delete(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        precondition: Option<&str>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let key = Self::key(resource, namespace, name);
        let object = self.get(resource, namespace, name)?;
        if let Some(rv) = precondition
            && object["metadata"]["resourceVersion"] != rv
        {
            return Err(ApiError::conflict(resource, name));
        }
        if dry_run {
            return Ok(object);
        }
        self.objects.remove(&key);
        self.rv += 1;
        let mut gone = object;
        meta_mut(&mut gone).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.events.push(Event {
            rv: self.rv,
            resource,
            namespace: namespace.to_owned(),
            kind: EventType::Deleted,
            object: gone.clone(),
        });
        Ok(gone)
    }

    /// Stores an object under a new resourceVersion and records the event.
    fn commit(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        mut object: Value,
        kind: EventType,
    ) -> Value {
        self.rv += 1;
        meta_mut(&mut object).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.objects
            .insert(Self::key(resource, namespace, name), object.clone());
        self.events.push(Event {
            rv: self.rv,
            resource,
            namespace: namespace.to_owned(),
            kind,
            object: object.clone(),
        });
        object
    }

    /// Events after `since` for one resource and namespace, or `None` when that
    /// history has been compacted away.
    pub(crate) fn events_since(
        &self,
        since: u64,
        resource: Resource,
        namespace: &str,
        selector: &FieldSelector,
    ) -> Option<Vec<Event>> {
        if since < self.compacted {
            return None;
        }
        Some(
            self.events
                .iter()
                .filter(|e| {
                    e.rv > since
                        && e.resource == resource
                        && e.namespace == namespace
                        && selector.matches(&e.object)
                })
                .cloned()
                .collect(),
        )
    }

    /// Current objects matching, for a watch that starts "now" (synthetic ADDED events).
    pub(crate) fn current(
        &self,
        resource: Resource,
        namespace: &str,
        selector: &FieldSelector,
    ) -> Vec<Value> {
        self.list(resource, namespace, selector)["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets the watch history up to now.
    pub(crate) fn compact(&mut self) {
        self.events.clear();
        self.compacted = self.rv;
    }

    /// Makes the next `count` updates of one object fail with `409 Conflict`.
    pub(crate) fn inject_conflicts(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        count: u32,
    ) {
        self.conflicts
            .insert(Self::key(resource, namespace, name), count);
    }
}

/// Checks what every write body must satisfy: a JSON object of the right kind and namespace.
fn check_body(resource: Resource, namespace: &str, body: Value) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    }
    if body["apiVersion"] != resource.api_version() || body["kind"] != resource.kind() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) and kind ({}) do not match the expected {}, {}",
            body["apiVersion"],
            body["kind"],
            resource.api_version(),
            resource.kind()
        )));
    }
    if let Some(ns) = body["metadata"]["namespace"].as_str()
        && !ns.is_empty()
        && ns != namespace
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if !body["metadata"].is_null() && !body["metadata"].is_object() {
        return Err(ApiError::bad_request("metadata is not an object"));
    }
    Ok(body)
}

/// Validates a name as a DNS-1123 subdomain, as the server does for these resources.
fn validate_name(resource: Resource, name: &str) -> Result<(), ApiError> {
    let valid_label = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(ApiError::invalid(
            resource,
            name,
            &format!(
                "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must \
                 consist of lower case alphanumeric characters, '-' or '.'"
            ),
        ));
    }
    Ok(())
}

/// Resource-specific defaulting and validation; for Secrets: base64 `data`, `stringData`
/// folded into `data`, type `Opaque` by default.
fn normalize(resource: Resource, name: &str, object: &mut Value) -> Result<(), ApiError> {
    meta_mut(object);
    if resource != Resource::Secrets {
        return Ok(());
    }
    let map = object.as_object_mut().expect("checked to be an object");
    let mut data = match map.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data,
        Some(_) => return Err(ApiError::invalid(resource, name, "data: must be an object")),
    };
    for (key, value) in &data {
        let valid = value
            .as_str()
            .is_some_and(|v| base64::engine::general_purpose::STANDARD.decode(v).is_ok());
        if !valid {
            return Err(ApiError::invalid(
                resource,
                name,
                &format!("data[{key}]: Invalid value: not base64-encoded bytes"),
            ));
        }
    }
    if let Some(Value::Object(string_data)) = map.remove("stringData") {
        for (key, value) in string_data {
            let text = value.as_str().unwrap_or_default();
            data.insert(
                key,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
    if !data.is_empty() {
        map.insert("data".into(), Value::Object(data));
    }
    map.entry("type").or_insert_with(|| json!("Opaque"));
    Ok(())
}

/// The object's metadata map, created when missing.
fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    let map = object.as_object_mut().expect("checked to be an object");
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("just made an object")
}

fn strip_meta_status(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

/// JSON merge patch, RFC 7386.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("just made an object");
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// A UUID-shaped unique id; unique within one process, which is all a test needs.
fn make_uid(counter: u64) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let a = nanos ^ (u128::from(std::process::id()) << 32);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (a >> 32) & 0xffff_ffff,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (counter >> 48) & 0xfff,
        counter & 0xffff_ffff_ffff
    )
}

/// Now as RFC 3339 in UTC with second precision, as `metav1.Time` serializes.
pub(crate) fn rfc3339_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn field_selector_rejects_unsupported_fields() {
        assert!(FieldSelector::parse("metadata.name=x").is_ok());
        assert!(FieldSelector::parse("metadata.name==x").is_ok());
        let err = FieldSelector::parse("status.phase=Running").unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains("status.phase"));
        assert!(FieldSelector::parse("metadata.name!=x").is_err());
    }

    #[test]
    fn timestamps_look_like_rfc_3339() {
        let now = rfc3339_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    }
}
