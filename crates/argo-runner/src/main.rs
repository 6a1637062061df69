//! The `argo-runner` binary: the Argo Workflow runner as a runner image's entrypoint.
//!
//! It will hand [`argo_runner::ArgoRunner`] to the runner SDK's Manager, which
//! reads the context and args files, reports the start status and maps the
//! outcome to the exit code. Until the Manager lands, it only refuses to run.

fn main() -> std::process::ExitCode {
    eprintln!("argo-runner: not wired to the runner SDK's Manager yet");
    std::process::ExitCode::FAILURE
}
