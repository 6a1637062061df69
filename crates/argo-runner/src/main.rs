//! The `argo-runner` binary: the Argo Workflow runner as a runner image's entrypoint.
//!
//! Configuration and exit codes are the runner SDK's (see `spec/CONTRACT.md`);
//! the Kubernetes API is found through `KUBECONFIG` or the in-cluster service
//! account.

use argo_runner::ArgoRunner;

fn main() -> std::process::ExitCode {
    let runner = ArgoRunner::infer();
    let connect = runner.clone();
    runner::main_with(runner, |manager, _config| async move {
        // Fail before reading the inputs when no cluster configuration can be found.
        connect.connect().await?;
        Ok(manager)
    })
}
