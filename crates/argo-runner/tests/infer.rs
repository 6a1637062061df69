//! `ArgoRunner::infer` finds the API server through `KUBECONFIG`, as the binary does.
//!
//! Its own test binary: it changes the process environment.

use argo_runner::ArgoRunner;
use kube_fake::{FakeApiServer, Resource};
use runner::{Context, Ctx, GoDuration, OwnerReference, Platform, Runner, StartInput};
use serde_json::json;

#[tokio::test]
// set_var is unsafe since edition 2024: this test binary sets it before any thread reads it.
#[allow(unsafe_code)]
async fn infer_reads_kubeconfig_from_the_environment() {
    let server = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig, "default").unwrap();
    // SAFETY: the only test of this binary, on a single-threaded runtime; no other
    // thread reads or writes the environment meanwhile.
    unsafe { std::env::set_var("KUBECONFIG", &kubeconfig) };
    let context = Context {
        name: "inferred".into(),
        dry_run: false,
        timeout: GoDuration::default(),
        platform: Platform {
            namespace: "ns-a".into(),
            service_account_name: "sa".into(),
            owner_ref: OwnerReference {
                api_version: "core.capact.io/v1alpha1".into(),
                kind: "Action".into(),
                name: "inferred".into(),
                uid: "uid".into(),
                controller: None,
                block_owner_deletion: None,
            },
        },
    };
    let args = json!({"workflow": {"entrypoint": "main",
        "templates": [{"name": "main", "suspend": {}}]}});
    let ctx = Ctx {
        deadline: None,
        span: tracing::Span::none(),
    };
    ArgoRunner::infer()
        .start(&ctx, StartInput { context, args })
        .await
        .unwrap();
    assert!(
        server
            .get(Resource::Workflows, "ns-a", "inferred")
            .is_some()
    );
}
