//! The `argo-runner` binary as the executor runs it: inputs from the contract's
//! environment variables, the Kubernetes API through `KUBECONFIG` (the fake one),
//! the start status in `RUNNER_STATUS_PATH`, the outcome in the exit code.

use kube_fake::{FakeApiServer, Resource};
use serde_json::json;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const NS: &str = "capact-bin";
const PATIENCE: Duration = Duration::from_secs(60);

fn write_inputs(dir: &Path, server: &FakeApiServer, name: &str, dry_run: bool) {
    std::fs::write(
        dir.join("context.yaml"),
        format!(
            "name: {name}\ndryRun: {dry_run}\ntimeout: 5m\nplatform:\n  namespace: {NS}\n  \
             serviceAccountName: bin-sa\n  ownerRef:\n    apiVersion: core.capact.io/v1alpha1\n    \
             kind: Action\n    name: {name}\n    uid: 11111111-2222-4333-8444-555555555555\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("args.yaml"),
        "workflow:\n  entrypoint: main\n  templates:\n    - name: main\n      container:\n        \
         image: busybox\n        command: [\"true\"]\n",
    )
    .unwrap();
    server
        .write_kubeconfig(&dir.join("kubeconfig"), "default")
        .unwrap();
}

fn command(dir: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_argo-runner"));
    command
        .env_clear()
        .env("RUNNER_CONTEXT_PATH", dir.join("context.yaml"))
        .env("RUNNER_ARGS_PATH", dir.join("args.yaml"))
        .env("RUNNER_STATUS_PATH", dir.join("status.json"))
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn finished(child: tokio::process::Child) -> Output {
    tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("argo-runner did not exit")
        .unwrap()
}

fn finish(server: &FakeApiServer, name: &str, phase: &str, message: &str) {
    server
        .set_status(
            Resource::Workflows,
            NS,
            name,
            json!({"phase": phase, "message": message, "finishedAt": "2026-01-01T00:01:00Z"}),
        )
        .unwrap();
}

#[tokio::test]
async fn a_succeeded_workflow_exits_0_with_the_start_status_written() {
    let server = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &server, "bin-ok", false);
    let child = command(dir.path()).spawn().unwrap();
    tokio::time::timeout(PATIENCE, server.wait_for_watches(1))
        .await
        .expect("argo-runner did not watch its workflow");
    let wf = server.get(Resource::Workflows, NS, "bin-ok").unwrap();
    assert_eq!(wf["spec"]["serviceAccountName"], "bin-sa");
    assert_eq!(wf["metadata"]["ownerReferences"][0]["name"], "bin-ok");
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("status.json")).unwrap()).unwrap();
    assert_eq!(
        status,
        json!({"argoWorkflowRef": {"name": "bin-ok", "namespace": NS}})
    );
    finish(&server, "bin-ok", "Succeeded", "");
    let out = finished(child).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_failed_workflow_exits_1_with_its_message() {
    let server = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &server, "bin-fail", false);
    let child = command(dir.path()).spawn().unwrap();
    tokio::time::timeout(PATIENCE, server.wait_for_watches(1))
        .await
        .expect("argo-runner did not watch its workflow");
    finish(&server, "bin-fail", "Failed", "step main exited 3");
    let out = finished(child).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("argo-runner: failed: step main exited 3"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_dry_run_exits_0_and_creates_nothing() {
    let server = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &server, "bin-dry", true);
    let out = finished(command(dir.path()).spawn().unwrap()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.list(Resource::Workflows, NS).is_empty());
    assert!(dir.path().join("status.json").exists());
}

#[tokio::test]
async fn a_missing_kubeconfig_fails_before_anything_is_sent() {
    let server = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &server, "bin-nocfg", false);
    let out = finished(
        command(dir.path())
            .env("KUBECONFIG", dir.path().join("absent"))
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot infer kubernetes configuration"),
        "{stderr}"
    );
    assert!(server.requests().is_empty());
    assert!(!dir.path().join("status.json").exists());
}

#[tokio::test]
async fn with_the_secret_reporter_the_secret_holds_the_start_status_while_it_runs() {
    let server = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &server, "bin-secret", false);
    server
        .create(
            Resource::Secrets,
            NS,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bin-secret"}}),
        )
        .unwrap();
    let child = command(dir.path())
        .env("ARGO_RUNNER_STATUS_REPORTER", "k8s-secret")
        .spawn()
        .unwrap();
    tokio::time::timeout(PATIENCE, server.wait_for_watches(1))
        .await
        .expect("argo-runner did not watch its workflow");
    // The Secret is written before the wait begins, so the engine sees it now.
    let expected = json!({"argoWorkflowRef": {"name": "bin-secret", "namespace": NS}});
    let secret = server.get(Resource::Secrets, NS, "bin-secret").unwrap();
    assert_eq!(secret_status(&secret), expected);
    // The file the executor forwards is still written.
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("status.json")).unwrap()).unwrap();
    assert_eq!(file, expected);
    finish(&server, "bin-secret", "Succeeded", "");
    let out = finished(child).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn with_the_secret_reporter_a_missing_secret_fails_the_run() {
    let server = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &server, "bin-nosecret", false);
    let out = finished(
        command(dir.path())
            .env("ARGO_RUNNER_STATUS_REPORTER", "k8s-secret")
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("status secret {NS}/bin-nosecret does not exist")),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unknown_reporter_is_refused_before_anything_is_sent() {
    let server = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &server, "bin-badrep", false);
    let out = finished(
        command(dir.path())
            .env("ARGO_RUNNER_STATUS_REPORTER", "syslog")
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ARGO_RUNNER_STATUS_REPORTER"), "{stderr}");
    assert!(server.requests().is_empty());
}

/// The JSON under the Secret's `status` key (base64 in `data`).
fn secret_status(secret: &serde_json::Value) -> serde_json::Value {
    let encoded = secret["data"]["status"]
        .as_str()
        .unwrap_or_else(|| panic!("no status in {secret}"));
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
