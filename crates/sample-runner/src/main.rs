//! The sample runner: a small runner on the SDK that shows the runner contract
//! end to end. It echoes its context and args to stdout, writes an artifact to
//! `/out` (or `SAMPLE_RUNNER_OUT_DIR`), reports a start status and succeeds, or
//! fails when its args say so. Tests use it to exercise every path of a run.
//!
//! Args (all optional):
//!
//! ```yaml
//! greeting: hello          # written to the artifact
//! artifact: greeting.txt   # file name under the output directory
//! sleep: 0s                # Go duration to wait before completing (timeouts, signals)
//! fail: false              # complete with a failure...
//! message: why it failed   # ...and this message
//! ```
//!
//! In a dry run it writes no artifact. The args are echoed on purpose, for the
//! demo: a real runner never prints its args, which may hold secrets.
#![forbid(unsafe_code)]

use anyhow::Context as _;
use runner::{BoxError, Ctx, GoDuration, Runner, StartInput, StartOutput, WaitInput, WaitOutput};
use serde::Deserialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

/// Variable naming the directory artifacts go to; `/out` when unset.
const OUT_DIR_VAR: &str = "SAMPLE_RUNNER_OUT_DIR";

/// The sample runner's args.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    #[serde(default = "default_greeting")]
    greeting: String,
    #[serde(default = "default_artifact")]
    artifact: String,
    #[serde(default)]
    sleep: GoDuration,
    #[serde(default)]
    fail: bool,
    #[serde(default)]
    message: Option<String>,
}

fn default_greeting() -> String {
    "hello".into()
}

fn default_artifact() -> String {
    "greeting.txt".into()
}

struct SampleRunner {
    out_dir: PathBuf,
    /// The args `start` parsed, for `wait_for_completion`.
    args: Mutex<Option<Args>>,
}

#[async_trait::async_trait]
impl Runner for SampleRunner {
    fn name(&self) -> &str {
        "sample-runner"
    }

    async fn start(&self, _ctx: &Ctx, input: StartInput) -> Result<StartOutput, BoxError> {
        let context = &input.context;
        // An absent or empty args file means all defaults.
        let raw = match &input.args {
            serde_json::Value::Null => serde_json::json!({}),
            other => other.clone(),
        };
        let args: Args = serde_json::from_value(raw).context("invalid runner args")?;
        // The artifact name comes from the args: keep it a plain file name so it
        // cannot write outside the output directory (`../etc/passwd`).
        if args.artifact.is_empty()
            || args.artifact.contains('/')
            || args.artifact == "."
            || args.artifact == ".."
        {
            return Err(format!(
                "invalid runner args: artifact {:?} must be a plain file name",
                args.artifact
            )
            .into());
        }
        println!(
            "sample-runner: action {} in namespace {} (dry run: {}, timeout: {})",
            context.name, context.platform.namespace, context.dry_run, context.timeout
        );
        println!("context: {}", serde_json::to_string(context)?);
        println!("args: {}", serde_json::to_string(&input.args)?);

        let artifact = self.out_dir.join(&args.artifact);
        if context.dry_run {
            println!("dry run: not writing {}", artifact.display());
        } else {
            let body = format!("{} from action {}\n", args.greeting, context.name);
            tokio::fs::write(&artifact, body)
                .await
                .with_context(|| format!("cannot write artifact {}", artifact.display()))?;
            println!("wrote {}", artifact.display());
        }
        let status = serde_json::json!({
            "action": context.name,
            "dryRun": context.dry_run,
            "artifact": args.artifact,
        });
        *self.args.lock().map_err(|_| "args lock poisoned")? = Some(args);
        Ok(StartOutput { status })
    }

    async fn wait_for_completion(
        &self,
        _ctx: &Ctx,
        input: WaitInput,
    ) -> Result<WaitOutput, BoxError> {
        let args = self
            .args
            .lock()
            .map_err(|_| "args lock poisoned")?
            .clone()
            .ok_or("wait_for_completion called before start")?;
        if !args.sleep.is_zero() {
            tracing::info!(sleep = %args.sleep, "sleeping as the args ask");
            tokio::time::sleep(args.sleep.0).await;
        }
        if args.fail {
            return Ok(WaitOutput {
                succeeded: false,
                message: args
                    .message
                    .unwrap_or_else(|| "failed because the args say fail: true".into()),
            });
        }
        Ok(WaitOutput {
            succeeded: true,
            message: args
                .message
                .unwrap_or_else(|| format!("action {} done", input.context.name)),
        })
    }
}

fn main() -> ExitCode {
    let out_dir = std::env::var_os(OUT_DIR_VAR)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/out"), PathBuf::from);
    let runner = SampleRunner {
        out_dir: out_dir.clone(),
        args: Mutex::new(None),
    };
    runner::main_with(runner, |manager, _config| async move {
        // Fail before starting anything when the artifact cannot be written.
        if !out_dir.is_dir() {
            return Err(format!(
                "output directory {} does not exist (set {OUT_DIR_VAR} or mount /out)",
                out_dir.display()
            )
            .into());
        }
        Ok(manager)
    })
}
