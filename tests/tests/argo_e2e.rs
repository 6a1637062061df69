//! Issue 6 end to end: the Argo runner packed as an image by `executor pack`, pushed
//! to a real registry, pulled and run by `executor run` (host network, a kubeconfig
//! naming the fake API server on 127.0.0.1), with the test acting as the Argo
//! controller.
//!
//! The runner reports its start status to the Action's Secret itself
//! (`ARGO_RUNNER_STATUS_REPORTER=k8s-secret`, so the engine sees it while the
//! Workflow runs) and to `RUNNER_STATUS_PATH`, which the executor forwards in the
//! outcome (`--status-reporter file:...` here, and the executor's own
//! `--status-reporter k8s-secret`, which replaces it with the outcome at the end).

use integration_tests::{ManifestFormat, Registry, executor_bin, push_layout};
use kube_fake::{FakeApiServer, Resource};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const NS: &str = "capact-e2e";
const SERVICE_ACCOUNT: &str = "e2e-runner-sa";
const OWNER_UID: &str = "6f1b1d9e-7c55-4b3a-9d8e-0a1b2c3d4e5f";
/// Generous: a loaded 2-core machine pulls, unpacks and starts a 25 MB binary.
const PATIENCE: Duration = Duration::from_secs(180);

/// `target/<profile>/argo-runner`, built if `cargo test --workspace` did not build it.
fn argo_runner_bin() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .ok_or("test binary is not in target/<profile>/deps")?;
            let bin = profile_dir.join("argo-runner");
            if !bin.is_file() {
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let status = Command::new(cargo)
                    .args([
                        "build",
                        "--quiet",
                        "-p",
                        "argo-runner",
                        "--bin",
                        "argo-runner",
                    ])
                    .status()
                    .map_err(|e| e.to_string())?;
                if !status.success() || !bin.is_file() {
                    return Err(format!("cargo build -p argo-runner failed: {status}"));
                }
            }
            Ok(bin)
        })
        .clone()
        .expect("argo-runner binary")
}

/// A scratch directory on the tmpfs (creating files on `/` is slow here).
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("argo-e2e-")
        .tempdir_in("/dev/shm")
        .unwrap()
}

/// Everything one test runs against: a registry holding the packed runner image,
/// the fake API server, an executor root and the runner's inputs.
struct Setup {
    server: FakeApiServer,
    _registry: Registry,
    image: String,
    registry_addr: String,
    root: tempfile::TempDir,
    work: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let registry = Registry::start().unwrap();
        let work = scratch();
        let layout = work.path().join("layout");
        // The debug binary is dynamically linked: --add-binary brings its libraries.
        let packed = Command::new(executor_bin().unwrap())
            .args([
                "pack",
                "--tag",
                "e2e",
                "--entrypoint",
                "/argo-runner",
                "--layout",
            ])
            .arg(&layout)
            .arg("--add-binary")
            .arg(format!("{}:/argo-runner", argo_runner_bin().display()))
            // As bundles/argo-runner/build.sh does: kube's TLS client needs CA roots.
            .args([
                "--add",
                "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt",
            ])
            .output()
            .unwrap();
        assert!(packed.status.success(), "executor pack: {packed:?}");
        push_layout(
            &layout,
            "e2e",
            &registry,
            "runners/argo-runner:e2e",
            ManifestFormat::Oci,
            None,
        )
        .unwrap();
        let server = FakeApiServer::start().await.unwrap();
        server
            .write_kubeconfig(&work.path().join("kubeconfig"), "default")
            .unwrap();
        Setup {
            image: format!("{}/runners/argo-runner:e2e", registry.addr()),
            registry_addr: registry.addr().to_owned(),
            _registry: registry,
            server,
            root: scratch(),
            work,
        }
    }

    /// Writes the context and args of Action `name` and creates its status Secret,
    /// as the engine does before it runs the runner.
    fn action(&self, name: &str, dry_run: bool) {
        std::fs::write(
            self.work.path().join("context.yaml"),
            format!(
                "name: {name}\ndryRun: {dry_run}\ntimeout: 10m\nplatform:\n  namespace: {NS}\n  \
                 serviceAccountName: {SERVICE_ACCOUNT}\n  ownerRef:\n    apiVersion: core.capact.io/v1alpha1\n    \
                 kind: Action\n    name: {name}\n    uid: {OWNER_UID}\n    controller: true\n    \
                 blockOwnerDeletion: true\n"
            ),
        )
        .unwrap();
        std::fs::write(
            self.work.path().join("args.yaml"),
            "workflow:\n  entrypoint: main\n  serviceAccountName: overridden\n  templates:\n    \
             - name: main\n      container:\n        image: busybox\n        command: [\"true\"]\n",
        )
        .unwrap();
        self.server
            .create(
                Resource::Secrets,
                NS,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                       "stringData": {"engine": "kept"}}),
            )
            .unwrap();
    }

    /// Rewrites the kubeconfig to name a CA certificate file and a token file, as
    /// kubeconfigs of real clusters do: the executor must mount both for the
    /// runner, which fails to build its client when either is missing.
    fn kubeconfig_naming_files(&self) {
        let files = self.work.path().join("kube-files");
        std::fs::create_dir(&files).unwrap();
        let openssl = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=e2e test CA", "-keyout"])
            .arg(files.join("ca.key"))
            .arg("-out")
            .arg(files.join("ca.crt"))
            .output()
            .unwrap();
        assert!(openssl.status.success(), "{openssl:?}");
        std::fs::write(files.join("token"), "e2e-token\n").unwrap();
        let path = self.work.path().join("kubeconfig");
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config["clusters"][0]["cluster"]["certificate-authority"] =
            json!(files.join("ca.crt").to_str().unwrap());
        config["users"][0]["user"]["token-file"] = json!(files.join("token").to_str().unwrap());
        std::fs::write(&path, config.to_string()).unwrap();
    }

    fn outcome_path(&self) -> PathBuf {
        self.work.path().join("outcome.json")
    }

    /// `executor run` of the image on `runtime` with the Action's inputs.
    fn run(&self, runtime: &str) -> tokio::process::Child {
        let reporter = format!("file:{}", self.outcome_path().display());
        self.run_reporting_to(runtime, &reporter)
    }

    /// `executor run` with `--status-reporter REPORTER`.
    fn run_reporting_to(&self, runtime: &str, reporter: &str) -> tokio::process::Child {
        let work = self.work.path();
        let mut command = tokio::process::Command::new(executor_bin().unwrap());
        command
            .env_remove("EXECUTOR_ROOT")
            .arg("--root")
            .arg(self.root.path())
            .args([
                "run",
                &self.image,
                "--runtime",
                runtime,
                "--network",
                "host",
            ])
            .args(["--insecure-registry", &self.registry_addr])
            .arg("--context")
            .arg(work.join("context.yaml"))
            .arg("--args")
            .arg(work.join("args.yaml"))
            .arg("--kubeconfig")
            .arg(work.join("kubeconfig"))
            .args(["--env", "ARGO_RUNNER_STATUS_REPORTER=k8s-secret"])
            .args(["--status-reporter", reporter])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command.spawn().unwrap()
    }

    /// Waits until the runner watches its Workflow (it was created and the start
    /// status reported by then); fails at once with the executor's stderr when
    /// `executor run` exits first.
    async fn runner_is_waiting(&self, child: &mut tokio::process::Child) {
        tokio::select! {
            waited = tokio::time::timeout(PATIENCE, self.server.wait_for_watches(1)) => {
                waited.expect("the runner never watched its workflow");
            }
            status = child.wait() => {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    use tokio::io::AsyncReadExt as _;
                    let _ = pipe.read_to_string(&mut stderr).await;
                }
                panic!("executor run exited with {status:?} before the runner watched its workflow: {stderr}");
            }
        }
    }

    /// Acts as the Argo controller: the Workflow finishes with `phase`.
    fn finish(&self, name: &str, phase: &str, message: &str) {
        self.server
            .set_status(
                Resource::Workflows,
                NS,
                name,
                json!({"phase": phase, "message": message,
                       "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:01:00Z"}),
            )
            .unwrap();
    }

    fn secret_status(&self, name: &str) -> Value {
        use base64::Engine as _;
        let secret = self.server.get(Resource::Secrets, NS, name).unwrap();
        assert_eq!(
            secret["data"]["engine"], "a2VwdA==",
            "the engine's own keys are kept"
        );
        let encoded = secret["data"]["status"]
            .as_str()
            .unwrap_or_else(|| panic!("no status in secret {name}: {secret}"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn outcome(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.outcome_path()).unwrap()).unwrap()
    }

    /// Nothing of the run is left under the executor's root.
    fn assert_cleaned_up(&self) {
        let runs: Vec<_> = std::fs::read_dir(self.root.path().join("runs"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        assert!(runs.is_empty(), "run directories left: {runs:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = self.root.path().to_string_lossy().into_owned();
        assert!(
            !mounts.contains(&root),
            "mounts left under {root}:\n{mounts}"
        );
    }
}

async fn exited(child: tokio::process::Child) -> Output {
    tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("executor run did not exit")
        .unwrap()
}

fn start_status(name: &str) -> Value {
    json!({"argoWorkflowRef": {"name": name, "namespace": NS}})
}

async fn a_completed_workflow_succeeds(runtime: &str, kubeconfig_files: bool) {
    let setup = Setup::new().await;
    if kubeconfig_files {
        setup.kubeconfig_naming_files();
    }
    let name = format!("e2e-ok-{runtime}-{kubeconfig_files}");
    setup.action(&name, false);
    let mut child = setup.run(runtime);
    setup.runner_is_waiting(&mut child).await;

    let workflow = setup.server.get(Resource::Workflows, NS, &name).unwrap();
    assert_eq!(workflow["apiVersion"], "argoproj.io/v1alpha1");
    assert_eq!(workflow["kind"], "Workflow");
    assert_eq!(
        workflow["metadata"]["labels"]["runner.capact.io/created-by"],
        "argo-runner"
    );
    let owners = workflow["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        owners[0],
        json!({"apiVersion": "core.capact.io/v1alpha1", "kind": "Action", "name": name,
               "uid": OWNER_UID, "controller": true, "blockOwnerDeletion": true})
    );
    assert_eq!(workflow["spec"]["serviceAccountName"], SERVICE_ACCOUNT);
    assert_eq!(workflow["spec"]["entrypoint"], "main");
    // The engine finds the running Workflow through the Secret before the run ends.
    assert_eq!(setup.secret_status(&name), start_status(&name));

    setup.finish(&name, "Succeeded", "all steps done");
    let out = exited(child).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let outcome = setup.outcome();
    assert_eq!(outcome["succeeded"], true, "{outcome}");
    assert_eq!(outcome["exitCode"], 0);
    assert_eq!(outcome["runnerStatus"], start_status(&name));
    setup.assert_cleaned_up();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completed_workflow_succeeds_on_the_embedded_runtime() {
    a_completed_workflow_succeeds("embedded", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kubeconfig_naming_a_ca_file_and_a_token_file_reaches_the_runner() {
    a_completed_workflow_succeeds("embedded", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completed_workflow_succeeds_on_runc() {
    a_completed_workflow_succeeds("runc", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_workflow_fails_the_run_with_its_message() {
    let setup = Setup::new().await;
    let name = "e2e-failed";
    setup.action(name, false);
    let mut child = setup.run("embedded");
    setup.runner_is_waiting(&mut child).await;
    assert_eq!(setup.secret_status(name), start_status(name));
    setup.finish(name, "Failed", "step main exited with code 3");
    let out = exited(child).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("argo-runner: failed: step main exited with code 3"),
        "{stderr}"
    );
    let outcome = setup.outcome();
    assert_eq!(outcome["succeeded"], false, "{outcome}");
    assert_eq!(outcome["exitCode"], 1);
    assert_eq!(outcome["runnerStatus"], start_status(name));
    setup.assert_cleaned_up();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_workflow_fails_the_run() {
    let setup = Setup::new().await;
    let name = "e2e-deleted";
    setup.action(name, false);
    let mut child = setup.run("embedded");
    setup.runner_is_waiting(&mut child).await;
    setup.server.delete(Resource::Workflows, NS, name).unwrap();
    let out = exited(child).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("deleted"), "{stderr}");
    assert_eq!(setup.outcome()["succeeded"], false);
    setup.assert_cleaned_up();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_succeeds_and_creates_nothing() {
    let setup = Setup::new().await;
    let name = "e2e-dry";
    setup.action(name, true);
    let out = exited(setup.run("embedded")).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(setup.server.list(Resource::Workflows, NS).is_empty());
    // The server validated it: the create went out with dryRun=All.
    let dry_creates = setup
        .server
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST" && r.path.contains("/workflows") && r.query.contains("dryRun=All")
        })
        .count();
    assert_eq!(dry_creates, 1);
    assert_eq!(setup.secret_status(name), start_status(name));
    let outcome = setup.outcome();
    assert_eq!(outcome["succeeded"], true, "{outcome}");
    assert_eq!(outcome["runnerStatus"], start_status(name));
    setup.assert_cleaned_up();
}

/// The executor's own `--status-reporter k8s-secret`: once the run is over, the
/// Secret holds the outcome, whose `runnerStatus` is the runner's start status.
#[tokio::test(flavor = "multi_thread")]
async fn the_executor_reports_the_outcome_to_the_secret() {
    let setup = Setup::new().await;
    let name = "e2e-executor-secret";
    setup.action(name, false);
    let mut child = setup.run_reporting_to("embedded", "k8s-secret");
    setup.runner_is_waiting(&mut child).await;
    // While the runner runs, the Secret holds its start status.
    assert_eq!(setup.secret_status(name), start_status(name));
    setup.finish(name, "Succeeded", "");
    let out = exited(child).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let outcome = setup.secret_status(name);
    assert_eq!(outcome["succeeded"], true, "{outcome}");
    assert_eq!(outcome["exitCode"], 0);
    assert_eq!(outcome["runnerStatus"], start_status(name));
    setup.assert_cleaned_up();
}
