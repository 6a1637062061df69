//! The fake API server's semantics, checked with ordinary `kube::Api` calls.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_fake::{FakeApiServer, Resource};
use serde_json::json;
use std::time::Duration;

const NS: &str = "capact";
/// Generous bound for anything that should happen at once, on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

async fn client(server: &FakeApiServer) -> kube::Client {
    let kubeconfig: Kubeconfig = serde_json::from_str(&server.kubeconfig(NS)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn workflows(client: kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow");
    Api::namespaced_with(client, NS, &ApiResource::from_gvk(&gvk))
}

fn workflow(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name, "labels": {"app": "test"}},
        "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "busybox"}}]},
        "status": {"phase": "Succeeded"},
    }))
    .unwrap()
}

fn api_error(error: kube::Error) -> kube::core::Status {
    match error {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn create_returns_server_fields_and_drops_status() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    let created = api
        .create(&PostParams::default(), &workflow("wf-a"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some(NS));
    assert!(meta.uid.as_deref().is_some_and(|u| !u.is_empty()));
    assert!(meta.creation_timestamp.is_some());
    assert!(meta.resource_version.is_some());
    // The status subresource: a create cannot set the status.
    assert!(created.data.get("status").is_none());
    assert_eq!(created.data["spec"]["entrypoint"], "main");
    let stored = server.get(Resource::Workflows, NS, "wf-a").unwrap();
    assert_eq!(stored["metadata"]["labels"]["app"], "test");
    let fetched = api.get("wf-a").await.unwrap();
    assert_eq!(fetched.metadata.uid, meta.uid);
}

#[tokio::test]
async fn duplicate_create_is_already_exists_even_in_dry_run() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    api.create(&PostParams::default(), &workflow("wf-dup"))
        .await
        .unwrap();
    for dry_run in [false, true] {
        let params = PostParams {
            dry_run,
            ..Default::default()
        };
        let status = api_error(api.create(&params, &workflow("wf-dup")).await.unwrap_err());
        assert_eq!(status.code, 409);
        assert_eq!(status.reason, "AlreadyExists");
        assert!(
            status.message.contains("\"wf-dup\" already exists"),
            "{status:?}"
        );
    }
}

#[tokio::test]
async fn dry_run_create_stores_nothing_and_emits_nothing() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    let rv_before = server.resource_version();
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let answered = api.create(&params, &workflow("wf-dry")).await.unwrap();
    assert_eq!(answered.metadata.name.as_deref(), Some("wf-dry"));
    assert!(server.get(Resource::Workflows, NS, "wf-dry").is_none());
    assert_eq!(server.resource_version(), rv_before);
    let status = api_error(api.get("wf-dry").await.unwrap_err());
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn invalid_names_and_kinds_are_rejected() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    let status = api_error(
        api.create(&PostParams::default(), &workflow("Not_Valid"))
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(status.message.contains("metadata.name"), "{status:?}");
}

#[tokio::test]
async fn list_has_resource_version_and_honours_name_field_selector() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    for name in ["wf-1", "wf-2"] {
        api.create(&PostParams::default(), &workflow(name))
            .await
            .unwrap();
    }
    let all = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 2);
    assert_eq!(
        all.metadata.resource_version,
        Some(server.resource_version().to_string())
    );
    let one = api
        .list(&ListParams::default().fields("metadata.name=wf-2"))
        .await
        .unwrap();
    let names: Vec<_> = one
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    assert_eq!(names, ["wf-2"]);
    let status = api_error(
        api.list(&ListParams::default().fields("status.phase=Running"))
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 400);
}

#[tokio::test]
async fn watch_streams_added_modified_deleted_from_a_resource_version() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let other = server.create(
        Resource::Workflows,
        NS,
        serde_json::to_value(workflow("other")).unwrap(),
    );
    other.unwrap();
    server
        .create(
            Resource::Workflows,
            NS,
            serde_json::to_value(workflow("wf-w")).unwrap(),
        )
        .unwrap();
    let params = WatchParams::default()
        .fields("metadata.name=wf-w")
        .timeout(60);
    let mut events = api.watch(&params, &rv).await.unwrap().boxed();
    let first = tokio::time::timeout(PATIENCE, events.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, Some(WatchEvent::Added(ref o)) if o.metadata.name.as_deref() == Some("wf-w")),
        "{first:?}"
    );
    server
        .set_status(Resource::Workflows, NS, "wf-w", json!({"phase": "Running"}))
        .unwrap();
    match tokio::time::timeout(PATIENCE, events.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Modified(o)) => assert_eq!(o.data["status"]["phase"], "Running"),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    server.delete(Resource::Workflows, NS, "wf-w").unwrap();
    let last = tokio::time::timeout(PATIENCE, events.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(last, Some(WatchEvent::Deleted(_))), "{last:?}");
}

#[tokio::test]
async fn watch_from_a_compacted_resource_version_is_410_expired() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    let first = api
        .create(&PostParams::default(), &workflow("wf-old"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &workflow("wf-new"))
        .await
        .unwrap();
    server.compact();
    // Watching from now is still fine; from before the compaction is not.
    let now = server.resource_version().to_string();
    let mut live = api
        .watch(&WatchParams::default().timeout(1), &now)
        .await
        .unwrap()
        .boxed();
    let live_events: Vec<_> = tokio::time::timeout(PATIENCE, (&mut live).try_collect::<Vec<_>>())
        .await
        .unwrap()
        .unwrap();
    assert!(
        live_events
            .iter()
            .all(|e| matches!(e, WatchEvent::Bookmark(_))),
        "{live_events:?}"
    );
    let old = first.metadata.resource_version.unwrap();
    let mut events = api
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(PATIENCE, events.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(PATIENCE, events.try_next())
            .await
            .unwrap()
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn watch_ends_at_timeout_with_a_bookmark() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    let rv = server.resource_version().to_string();
    let params = WatchParams::default().timeout(1);
    let events: Vec<_> = tokio::time::timeout(
        PATIENCE,
        api.watch(&params, &rv)
            .await
            .unwrap()
            .try_collect::<Vec<_>>(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(matches!(&events[0], WatchEvent::Bookmark(b) if b.metadata.resource_version == rv));
}

#[tokio::test]
async fn close_watches_ends_open_streams() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    let mut events = api
        .watch(&WatchParams::default().timeout(600), "0")
        .await
        .unwrap()
        .boxed();
    tokio::time::timeout(PATIENCE, server.wait_for_watches(1))
        .await
        .unwrap();
    server.close_watches();
    let next = tokio::time::timeout(PATIENCE, events.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(next.is_none(), "{next:?}");
}

#[tokio::test]
async fn stale_update_is_conflict_and_status_goes_through_the_subresource() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    let created = api
        .create(&PostParams::default(), &workflow("wf-u"))
        .await
        .unwrap();
    let mut changed = created.clone();
    changed.data["spec"]["entrypoint"] = json!("other");
    changed.data["status"] = json!({"phase": "Failed"});
    let updated = api
        .replace("wf-u", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(updated.data["spec"]["entrypoint"], "other");
    // The main resource ignores status changes.
    assert!(updated.data.get("status").is_none());
    // `created` now carries a stale resourceVersion.
    let status = api_error(
        api.replace("wf-u", &PostParams::default(), &created)
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));

    let patched = api
        .patch_status(
            "wf-u",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["phase"], "Succeeded");
    assert_eq!(patched.data["spec"]["entrypoint"], "other");
    let merged = api
        .patch(
            "wf-u",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.metadata.labels.unwrap()["x"], "y");
}

#[tokio::test]
async fn injected_conflicts_fail_the_next_updates() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    api.create(&PostParams::default(), &workflow("wf-c"))
        .await
        .unwrap();
    server.inject_conflicts(Resource::Workflows, NS, "wf-c", 1);
    let patch = Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}));
    let status = api_error(
        api.patch("wf-c", &PatchParams::default(), &patch)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 409);
    api.patch("wf-c", &PatchParams::default(), &patch)
        .await
        .unwrap();
}

#[tokio::test]
async fn delete_removes_and_missing_objects_are_not_found() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    api.create(&PostParams::default(), &workflow("wf-d"))
        .await
        .unwrap();
    api.delete("wf-d", &DeleteParams::default()).await.unwrap();
    assert!(server.get(Resource::Workflows, NS, "wf-d").is_none());
    let status = api_error(
        api.delete("wf-d", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 404);
    assert!(
        status
            .message
            .contains("workflows.argoproj.io \"wf-d\" not found"),
        "{status:?}"
    );
}

#[tokio::test]
async fn secrets_keep_base64_data_and_reject_bad_base64() {
    let server = FakeApiServer::start().await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client(&server).await, NS);
    let mut secret = Secret::default();
    secret.metadata.name = Some("s".into());
    secret.data = Some([("status".to_owned(), ByteString(b"{\"a\":1}".to_vec()))].into());
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let stored = server.get(Resource::Secrets, NS, "s").unwrap();
    assert_eq!(stored["data"]["status"], "eyJhIjoxfQ==");
    let fetched = secrets.get("s").await.unwrap();
    assert_eq!(fetched.data.unwrap()["status"].0, b"{\"a\":1}");

    let bad = server.create(
        Resource::Secrets,
        NS,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"}, "data": {"k": "%%%"}}),
    );
    assert_eq!(bad.unwrap_err().code, 422);
}

#[tokio::test]
async fn requests_are_recorded() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    let _ = api.get("nothing").await;
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(
        requests[0].path,
        format!("/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows/nothing")
    );
}

#[tokio::test]
async fn dropped_connections_are_transport_errors_then_service_resumes() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    server.drop_connections(1);
    let error = api.get("any").await.unwrap_err();
    assert!(!matches!(error, kube::Error::Api(_)), "{error:?}");
    let status = api_error(api.get("any").await.unwrap_err());
    assert_eq!(status.code, 404);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn a_background_server_serves_a_blocking_caller() {
    use std::io::{Read, Write};
    let server = FakeApiServer::start_background().unwrap();
    server
        .create(
            Resource::Secrets,
            NS,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}),
        )
        .unwrap();
    // A plain blocking HTTP/1.1 client, as a child process would be.
    let addr = server.url().trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /api/v1/namespaces/{NS}/secrets/s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).ok();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains("\"name\":\"s\""), "{response}");
}

#[tokio::test]
async fn dry_run_patch_and_delete_change_nothing() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    api.create(&PostParams::default(), &workflow("wf-keep"))
        .await
        .unwrap();
    let rv = server.resource_version();
    let dry_patch = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let answered = api
        .patch(
            "wf-keep",
            &dry_patch,
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(answered.metadata.labels.unwrap()["x"], "y");
    let dry_delete = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    api.delete("wf-keep", &dry_delete).await.unwrap();
    let stored = server.get(Resource::Workflows, NS, "wf-keep").unwrap();
    assert!(stored["metadata"]["labels"].get("x").is_none());
    assert_eq!(server.resource_version(), rv);
}

#[tokio::test]
async fn unsupported_patch_types_and_foreign_namespaces_are_refused() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    api.create(&PostParams::default(), &workflow("wf-p"))
        .await
        .unwrap();
    let json_patch: Patch<()> = Patch::Json(serde_json::from_value(json!([])).unwrap());
    let status = api_error(
        api.patch("wf-p", &PatchParams::default(), &json_patch)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 415);
    let mut elsewhere = workflow("wf-x");
    elsewhere.metadata.namespace = Some("other".into());
    let status = api_error(
        api.create(&PostParams::default(), &elsewhere)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 400);
    assert!(status.message.contains("namespace"), "{status:?}");
}

#[tokio::test]
async fn delete_with_a_stale_precondition_is_conflict() {
    let server = FakeApiServer::start().await.unwrap();
    let api = workflows(client(&server).await);
    let created = api
        .create(&PostParams::default(), &workflow("wf-pre"))
        .await
        .unwrap();
    server
        .set_status(
            Resource::Workflows,
            NS,
            "wf-pre",
            json!({"phase": "Running"}),
        )
        .unwrap();
    let stale = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: created.metadata.resource_version,
            uid: None,
        }),
        ..Default::default()
    };
    let status = api_error(api.delete("wf-pre", &stale).await.unwrap_err());
    assert_eq!(status.code, 409);
    assert!(server.get(Resource::Workflows, NS, "wf-pre").is_some());
}
