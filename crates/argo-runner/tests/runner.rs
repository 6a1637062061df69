//! The Argo runner against the fake API server; the tests act as the Argo controller.

use argo_runner::ArgoRunner;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_fake::{FakeApiServer, Resource};
use runner::{
    Context, Ctx, GoDuration, OwnerReference, Platform, Runner, StartInput, WaitInput, WaitOutput,
};
use serde_json::{Value, json};
use std::time::Duration;

const NS: &str = "capact-actions";
/// Generous bound for anything that should happen at once, on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

async fn runner(server: &FakeApiServer) -> ArgoRunner {
    let kubeconfig: Kubeconfig = serde_json::from_str(&server.kubeconfig(NS)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    ArgoRunner::new(kube::Client::try_from(config).unwrap())
}

fn ctx() -> Ctx {
    Ctx {
        deadline: None,
        span: tracing::Span::none(),
    }
}

fn context(name: &str, dry_run: bool) -> Context {
    Context {
        name: name.to_owned(),
        dry_run,
        timeout: GoDuration::default(),
        platform: Platform {
            namespace: NS.to_owned(),
            service_account_name: "action-runner".to_owned(),
            owner_ref: OwnerReference {
                api_version: "core.capact.io/v1alpha1".to_owned(),
                kind: "Action".to_owned(),
                name: name.to_owned(),
                uid: "5f8a2c1e-0000-4000-8000-000000000001".to_owned(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        },
    }
}

fn args() -> Value {
    json!({"workflow": {
        "entrypoint": "main",
        "serviceAccountName": "from-args",
        "templates": [
            {"name": "main", "steps": [[{"name": "say", "template": "echo"}]]},
            {"name": "echo", "container": {"image": "busybox", "command": ["echo", "hi"]}},
        ],
    }})
}

async fn start(runner: &ArgoRunner, name: &str, dry_run: bool) -> Result<Value, String> {
    let input = StartInput {
        context: context(name, dry_run),
        args: args(),
    };
    runner
        .start(&ctx(), input)
        .await
        .map(|out| out.status)
        .map_err(|e| e.to_string())
}

/// Runs `wait_for_completion` in a task, so the test can act as the controller meanwhile.
fn spawn_wait(
    runner: &ArgoRunner,
    name: &str,
) -> tokio::task::JoinHandle<Result<WaitOutput, String>> {
    let runner = runner.clone();
    let input = WaitInput {
        context: context(name, false),
    };
    tokio::spawn(async move {
        runner
            .wait_for_completion(&ctx(), input)
            .await
            .map_err(|e| e.to_string())
    })
}

async fn joined(
    handle: tokio::task::JoinHandle<Result<WaitOutput, String>>,
) -> Result<WaitOutput, String> {
    tokio::time::timeout(PATIENCE, handle)
        .await
        .expect("wait_for_completion did not return")
        .unwrap()
}

async fn watches(server: &FakeApiServer, count: usize) {
    tokio::time::timeout(PATIENCE, server.wait_for_watches(count))
        .await
        .expect("the runner did not open the expected watch");
}

fn finish(server: &FakeApiServer, name: &str, phase: &str, message: &str) {
    server
        .set_status(
            Resource::Workflows,
            NS,
            name,
            json!({"phase": phase, "message": message, "startedAt": "2026-01-01T00:00:00Z",
                   "finishedAt": "2026-01-01T00:01:00Z"}),
        )
        .unwrap();
}

fn count(server: &FakeApiServer, method: &str, query_part: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.method == method && r.query.contains(query_part))
        .count()
}

#[tokio::test]
async fn start_creates_the_workflow_with_labels_owner_and_service_account() {
    let server = FakeApiServer::start().await.unwrap();
    let runner = runner(&server).await;
    let status = start(&runner, "action-create", false).await.unwrap();
    assert_eq!(
        status,
        json!({"argoWorkflowRef": {"name": "action-create", "namespace": NS}})
    );
    let wf = server
        .get(Resource::Workflows, NS, "action-create")
        .expect("workflow stored");
    assert_eq!(
        wf["metadata"]["labels"]["runner.capact.io/created-by"],
        "argo-runner"
    );
    let owner = &wf["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Action");
    assert_eq!(owner["name"], "action-create");
    assert_eq!(owner["uid"], "5f8a2c1e-0000-4000-8000-000000000001");
    assert_eq!(owner["controller"], true);
    assert_eq!(wf["spec"]["serviceAccountName"], "action-runner");
    assert_eq!(
        wf["spec"]["templates"][1]["container"]["command"],
        json!(["echo", "hi"])
    );
}

#[tokio::test]
async fn an_existing_workflow_is_an_error() {
    let server = FakeApiServer::start().await.unwrap();
    let runner = runner(&server).await;
    start(&runner, "action-dup", false).await.unwrap();
    let error = start(&runner, "action-dup", false).await.unwrap_err();
    assert_eq!(error, format!("workflow {NS}/action-dup already exists"));
    // A dry run meets the same conflict, as on a real server.
    let error = start(&runner, "action-dup", true).await.unwrap_err();
    assert_eq!(error, format!("workflow {NS}/action-dup already exists"));
}

#[tokio::test]
async fn dry_run_creates_nothing_and_waits_for_nothing() {
    let server = FakeApiServer::start().await.unwrap();
    let runner = runner(&server).await;
    let status = start(&runner, "action-dry", true).await.unwrap();
    assert_eq!(status["argoWorkflowRef"]["name"], "action-dry");
    assert!(server.get(Resource::Workflows, NS, "action-dry").is_none());
    assert_eq!(count(&server, "POST", "dryRun=All"), 1);
    let input = WaitInput {
        context: context("action-dry", true),
    };
    let out = runner.wait_for_completion(&ctx(), input).await.unwrap();
    assert!(out.succeeded);
    assert!(
        out.message.contains("nothing was created"),
        "{}",
        out.message
    );
    assert_eq!(
        server.requests().len(),
        1,
        "waiting in dry run asks the server nothing"
    );
}

#[tokio::test]
async fn an_invalid_workflow_is_refused_before_any_request() {
    let server = FakeApiServer::start().await.unwrap();
    let runner = runner(&server).await;
    let cases = [
        (
            json!({"workflow": {"entrypoint": "main", "templates": [
                {"name": "main", "steps": [[{"name": "s", "template": "missing"}]]}]}}),
            "templates.main.steps[0].s.template \"missing\" not found",
        ),
        (
            json!({"workflow": {"entrypoint": "main", "templates": [{"name": "main"}]}}),
            "templates.main has no template type",
        ),
        (json!({"other": 1}), "runner args: missing field workflow"),
    ];
    for (args, expected) in cases {
        for dry_run in [false, true] {
            let input = StartInput {
                context: context("action-invalid", dry_run),
                args: args.clone(),
            };
            let error = runner.start(&ctx(), input).await.unwrap_err().to_string();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn a_succeeded_workflow_succeeds_with_its_message() {
    let server = FakeApiServer::start().await.unwrap();
    let runner = runner(&server).await;
    start(&runner, "action-ok", false).await.unwrap();
    let wait = spawn_wait(&runner, "action-ok");
    watches(&server, 1).await;
    server
        .set_status(
            Resource::Workflows,
            NS,
            "action-ok",
            json!({"phase": "Running"}),
        )
        .unwrap();
    finish(&server, "action-ok", "Succeeded", "all good");
    let out = joined(wait).await.unwrap();
    assert_eq!(
        out,
        WaitOutput {
            succeeded: true,
            message: "all good".into()
        }
    );
}

#[tokio::test]
async fn a_failed_workflow_fails_with_its_message() {
    let server = FakeApiServer::start().await.unwrap();
    let runner = runner(&server).await;
    start(&runner, "action-fail", false).await.unwrap();
    let wait = spawn_wait(&runner, "action-fail");
    watches(&server, 1).await;
    finish(&server, "action-fail", "Failed", "child 'say' failed");
    let out = joined(wait).await.unwrap();
    assert!(!out.succeeded);
    assert_eq!(out.message, "child 'say' failed");
}

#[tokio::test]
async fn a_phase_without_finished_at_is_not_the_end() {
    let server = FakeApiServer::start().await.unwrap();
    let runner = runner(&server).await;
    start(&runner, "action-err", false).await.unwrap();
    let wait = spawn_wait(&runner, "action-err");
    watches(&server, 1).await;
    // Argo sets the phase before finishedAt; only finishedAt ends the wait.
    server
        .set_status(
            Resource::Workflows,
            NS,
            "action-err",
            json!({"phase": "Error"}),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!wait.is_finished());
    finish(&server, "action-err", "Error", "");
    let out = joined(wait).await.unwrap();
    assert!(!out.succeeded);
    assert_eq!(
        out.message,
        format!("workflow {NS}/action-err finished with phase Error")
    );
}

#[tokio::test]
async fn a_deleted_workflow_is_an_error() {
    let server = FakeApiServer::start().await.unwrap();
    let runner = runner(&server).await;
    start(&runner, "action-del", false).await.unwrap();
    let wait = spawn_wait(&runner, "action-del");
    watches(&server, 1).await;
    server
        .delete(Resource::Workflows, NS, "action-del")
        .unwrap();
    let error = joined(wait).await.unwrap_err();
    assert_eq!(
        error,
        format!("workflow {NS}/action-del was deleted before it finished")
    );
}

#[tokio::test]
async fn a_missing_workflow_is_an_error() {
    let server = FakeApiServer::start().await.unwrap();
    let runner = runner(&server).await;
    let error = joined(spawn_wait(&runner, "action-none"))
        .await
        .unwrap_err();
    assert_eq!(error, format!("workflow {NS}/action-none not found"));
}

#[tokio::test]
async fn an_already_finished_workflow_returns_without_watching() {
    let server = FakeApiServer::start().await.unwrap();
    let runner = runner(&server).await;
    start(&runner, "action-done", false).await.unwrap();
    finish(&server, "action-done", "Succeeded", "done early");
    let out = joined(spawn_wait(&runner, "action-done")).await.unwrap();
    assert!(out.succeeded);
    assert_eq!(out.message, "done early");
    assert_eq!(server.watches_opened(), 0);
}

#[tokio::test]
async fn a_closed_watch_is_resumed_without_listing_again() {
    let server = FakeApiServer::start().await.unwrap();
    let runner = runner(&server).await;
    start(&runner, "action-close", false).await.unwrap();
    let wait = spawn_wait(&runner, "action-close");
    watches(&server, 1).await;
    server.close_watches();
    watches(&server, 2).await;
    finish(&server, "action-close", "Succeeded", "after reconnect");
    let out = joined(wait).await.unwrap();
    assert_eq!(out.message, "after reconnect");
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && !r.query.contains("watch=true"))
        .count();
    assert_eq!(lists, 1);
}

#[tokio::test]
async fn a_410_gone_watch_lists_again() {
    let server = FakeApiServer::start().await.unwrap();
    let runner = runner(&server).await;
    start(&runner, "action-gone", false).await.unwrap();
    let wait = spawn_wait(&runner, "action-gone");
    watches(&server, 1).await;
    // In one step (the test runtime is single-threaded): a change the open watch
    // has not seen, then its history compacted away, so the watch gets 410.
    server
        .set_status(
            Resource::Workflows,
            NS,
            "action-gone",
            json!({"phase": "Running"}),
        )
        .unwrap();
    server.compact();
    watches(&server, 2).await;
    finish(&server, "action-gone", "Succeeded", "after relist");
    let out = joined(wait).await.unwrap();
    assert_eq!(out.message, "after relist");
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && !r.query.contains("watch=true"))
        .count();
    assert_eq!(lists, 2, "the 410 made the runner list again");
}

#[tokio::test]
async fn a_transport_failure_while_watching_is_retried() {
    let server = FakeApiServer::start().await.unwrap();
    let runner = runner(&server).await;
    start(&runner, "action-flaky", false).await.unwrap();
    let wait = spawn_wait(&runner, "action-flaky");
    watches(&server, 1).await;
    // The watch ends and the server hangs up on the next request (the re-watch).
    server.drop_connections(1);
    server.close_watches();
    watches(&server, 2).await;
    finish(&server, "action-flaky", "Succeeded", "survived");
    let out = joined(wait).await.unwrap();
    assert_eq!(out.message, "survived");
}
