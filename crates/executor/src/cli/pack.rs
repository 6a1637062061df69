//! `executor pack`: pack files (a runner binary) into an image in an OCI layout.

use super::GlobalArgs;
use anyhow::Context as _;
use executor::pack::{FileMapping, PackOptions, pack};
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `executor pack`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// OCI image layout directory to write to (created when missing).
    #[arg(long, value_name = "DIR")]
    pub layout: PathBuf,
    /// Tag of the image in the layout (an existing tag is moved).
    #[arg(long)]
    pub tag: String,
    /// A host file or directory and its absolute path in the image.
    #[arg(long = "add", value_name = "HOST:IMAGE_PATH", value_parser = parse_mapping)]
    pub add: Vec<FileMapping>,
    /// A dynamically linked binary: added with the shared libraries and loader
    /// `ldd` lists, at their host paths. Runs `ldd`: only for binaries you trust.
    #[arg(long = "add-binary", value_name = "HOST:IMAGE_PATH", value_parser = parse_mapping)]
    pub add_binary: Vec<FileMapping>,
    /// Entrypoint; repeat for each argument.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub entrypoint: Vec<String>,
    /// Default arguments; repeat for each argument.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub cmd: Vec<String>,
    /// Environment entry; repeat for each.
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(long, value_name = "PATH")]
    pub workdir: Option<String>,
    /// User (uid, uid:gid or a name the image knows).
    #[arg(long)]
    pub user: Option<String>,
}

fn parse_mapping(arg: &str) -> Result<FileMapping, String> {
    FileMapping::parse(arg).map_err(|e| e.to_string())
}

/// Runs `executor pack`: prints the manifest digest on stdout.
pub fn run(_global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    // Reproducible builds name their timestamp in SOURCE_DATE_EPOCH.
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) if !value.is_empty() => Some(value.parse::<u64>().with_context(|| {
            format!("invalid SOURCE_DATE_EPOCH {value:?}: expected seconds since the epoch")
        })?),
        _ => None,
    };
    let opts = PackOptions {
        layout: args.layout,
        tag: args.tag,
        files: args.add,
        binaries: args.add_binary,
        entrypoint: args.entrypoint,
        cmd: args.cmd,
        env: args.env,
        workdir: args.workdir,
        user: args.user,
        source_date_epoch,
    };
    let packed = pack(&opts)
        .with_context(|| format!("while packing {}:{}", opts.layout.display(), opts.tag))?;
    println!("{}", packed.manifest.digest());
    Ok(ExitCode::SUCCESS)
}
