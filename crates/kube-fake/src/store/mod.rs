//! The object store: what the API server keeps and the semantics of every verb.
//!
//! No I/O here. Each write bumps one global resourceVersion (as etcd does) and
//! appends a watch event; `compact` forgets that history so that watches from an
//! older resourceVersion get `410 Expired`, as after an etcd compaction.
//!
//! Its vocabulary (errors, events, selectors) is in `types.rs`; what every object gets
//! (checks, metadata, merge patches) in `objects.rs`.

use crate::resource::Resource;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

mod objects;
mod types;

use objects::{
    check_body, make_uid, merge_patch, meta_mut, normalize, rfc3339_now, strip_meta_status,
    validate_name,
};
pub(crate) use types::*;
pub use types::{ApiError, RecordedRequest};

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
