//! The Kubernetes Secret status reporter against the fake API server.
#![cfg(feature = "k8s")]

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_fake::{FakeApiServer, Resource};
use runner::k8s_secret::{K8sSecretError, K8sSecretReporter, MAX_CONFLICT_RETRIES};
use runner::{Context, GoDuration, OwnerReference, Platform, ReportError, StatusReporter};
use serde_json::json;

const NS: &str = "capact-system";

async fn reporter(server: &FakeApiServer) -> K8sSecretReporter {
    let kubeconfig: Kubeconfig = serde_json::from_str(&server.kubeconfig(NS)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    K8sSecretReporter::new(kube::Client::try_from(config).unwrap())
}

fn context(name: &str) -> Context {
    Context {
        name: name.to_owned(),
        dry_run: false,
        timeout: GoDuration::default(),
        platform: Platform {
            namespace: NS.to_owned(),
            service_account_name: "runner-sa".to_owned(),
            owner_ref: OwnerReference {
                api_version: "core.capact.io/v1alpha1".to_owned(),
                kind: "Action".to_owned(),
                name: name.to_owned(),
                uid: "0000-1111".to_owned(),
                controller: Some(true),
                block_owner_deletion: None,
            },
        },
    }
}

fn create_secret(server: &FakeApiServer, name: &str) {
    server
        .create(
            Resource::Secrets,
            NS,
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name},
                "stringData": {"other": "kept"},
            }),
        )
        .unwrap();
}

fn stored_status(server: &FakeApiServer, name: &str) -> serde_json::Value {
    use base64::Engine as _;
    let secret = server.get(Resource::Secrets, NS, name).unwrap();
    let encoded = secret["data"]["status"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn status_lands_under_key_status_and_other_keys_stay() {
    let server = FakeApiServer::start().await.unwrap();
    create_secret(&server, "action-a");
    let status = json!({"argoWorkflowRef": {"name": "action-a", "namespace": NS}});
    reporter(&server)
        .await
        .report(&context("action-a"), &status)
        .await
        .unwrap();
    assert_eq!(stored_status(&server, "action-a"), status);
    let secret = server.get(Resource::Secrets, NS, "action-a").unwrap();
    assert_eq!(secret["data"]["other"], "a2VwdA==");
}

#[tokio::test]
async fn missing_secret_is_a_clear_error() {
    let server = FakeApiServer::start().await.unwrap();
    let error = reporter(&server)
        .await
        .report(&context("absent"), &json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("status secret {NS}/absent does not exist")
    );
    assert!(server.get(Resource::Secrets, NS, "absent").is_none());
}

#[tokio::test]
async fn conflicts_are_retried() {
    let server = FakeApiServer::start().await.unwrap();
    create_secret(&server, "action-c");
    server.inject_conflicts(Resource::Secrets, NS, "action-c", 2);
    reporter(&server)
        .await
        .report(&context("action-c"), &json!({"ok": true}))
        .await
        .unwrap();
    assert_eq!(stored_status(&server, "action-c"), json!({"ok": true}));
    let puts = server
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    assert_eq!(puts, 3, "two conflicts, then success");
}

#[tokio::test]
async fn endless_conflicts_give_up() {
    let server = FakeApiServer::start().await.unwrap();
    create_secret(&server, "action-e");
    server.inject_conflicts(Resource::Secrets, NS, "action-e", u32::MAX);
    let error = reporter(&server)
        .await
        .report(&context("action-e"), &json!({"ok": true}))
        .await
        .unwrap_err();
    let ReportError::Other(inner) = &error else {
        panic!("unexpected error {error:?}");
    };
    assert!(
        matches!(
            inner.downcast_ref::<K8sSecretError>(),
            Some(K8sSecretError::Conflicts { attempts, .. }) if *attempts == MAX_CONFLICT_RETRIES + 1
        ),
        "{error}"
    );
    let secret = server.get(Resource::Secrets, NS, "action-e").unwrap();
    assert!(secret["data"].get("status").is_none());
}
