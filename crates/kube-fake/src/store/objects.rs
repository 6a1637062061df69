//! What every stored object gets: body checks, name validation, server-set metadata,
//! JSON merge patches, uids and timestamps.

use super::ApiError;
use crate::resource::Resource;
use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

/// Checks what every write body must satisfy: a JSON object of the right kind and namespace.
pub(super) fn check_body(
    resource: Resource,
    namespace: &str,
    body: Value,
) -> Result<Value, ApiError> {
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
pub(super) fn validate_name(resource: Resource, name: &str) -> Result<(), ApiError> {
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
pub(super) fn normalize(
    resource: Resource,
    name: &str,
    object: &mut Value,
) -> Result<(), ApiError> {
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
pub(super) fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    let map = object.as_object_mut().expect("checked to be an object");
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("just made an object")
}

pub(super) fn strip_meta_status(object: &Value) -> Value {
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
pub(super) fn make_uid(counter: u64) -> String {
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
