//! The `argo-runner` binary: the Argo Workflow runner as a runner image's entrypoint.
//!
//! Configuration and exit codes are the runner SDK's (see `spec/CONTRACT.md`);
//! the Kubernetes API is found through `KUBECONFIG` or the in-cluster service
//! account. `ARGO_RUNNER_STATUS_REPORTER=k8s-secret` also reports the start status
//! to the Action's Secret (see [`argo_runner::status`]).
#![forbid(unsafe_code)]

use argo_runner::ArgoRunner;
use argo_runner::status::{REPORTER_VAR, ReporterChoice, SecretAndFile};
use runner::k8s_secret::K8sSecretReporter;

fn main() -> std::process::ExitCode {
    let runner = ArgoRunner::infer();
    let connect = runner.clone();
    runner::main_with(runner, |manager, config| async move {
        let choice = ReporterChoice::parse(std::env::var(REPORTER_VAR).ok().as_deref())?;
        // Fail before reading the inputs when no cluster configuration can be found.
        let client = connect.client().await?;
        Ok(match choice {
            ReporterChoice::File => manager,
            ReporterChoice::K8sSecret => manager.with_reporter(SecretAndFile::new(
                K8sSecretReporter::new(client),
                config.status_path,
            )),
        })
    })
}
