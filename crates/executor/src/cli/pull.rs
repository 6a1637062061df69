//! `executor pull`.

use super::GlobalArgs;
use executor::pull::{PullOptions, pull, pull_and_unpack};
use executor::reference::ImageSource;
use executor::source::Platform;
use executor::source::proxy::ProxyConfig;
use executor::source::registries_conf::RegistriesConf;
use executor::source::registry::RegistryOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Registry flags shared by the commands that pull (`pull`, `run`).
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Registry (`HOST:PORT`) to reach over plain HTTP instead of HTTPS; repeatable, or
    /// comma-separated in `EXECUTOR_INSECURE_REGISTRIES`. Nothing is plain HTTP unless
    /// listed, not even localhost.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST:PORT",
        env = "EXECUTOR_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// `containers-registries.conf` file to read (only it) for mirrors, blocked
    /// registries and `insecure = true` (plain HTTP) registries; default:
    /// `~/.config/containers/registries.conf` if it exists, else
    /// `/etc/containers/registries.conf`, plus the `registries.conf.d` drop-ins.
    #[arg(long, value_name = "FILE", env = "CONTAINERS_REGISTRIES_CONF")]
    pub registries_conf: Option<PathBuf>,
    /// Auth file (podman's auth.json or docker's config.json) to read credentials from
    /// before `REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json` and
    /// `~/.docker/config.json`.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Directory of extra CA certificates (`*.crt`, `*.pem`) to trust for HTTPS.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Platform to pick from a multi-platform image, `os/arch[/variant]`; default: this machine.
    #[arg(long)]
    pub platform: Option<Platform>,
    /// How many layers download at once (each unpacked as it arrives, for `run`).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_downloads: u16,
    /// `containers-policy.json` file saying which images to trust (signatures by which
    /// keys); default: `~/.config/containers/policy.json` if it exists, else
    /// `/etc/containers/policy.json`; with neither, any image is accepted.
    #[arg(long, value_name = "FILE")]
    pub signature_policy: Option<PathBuf>,
}

impl RegistryArgs {
    /// The library's pull options for these flags and the registries configuration.
    pub fn pull_options(&self) -> anyhow::Result<PullOptions> {
        let conf_paths = match &self.registries_conf {
            Some(path) => vec![path.clone()],
            None => executor::source::registries_conf::default_paths(),
        };
        let registries = RegistriesConf::load(&conf_paths)?;
        // The environment is read here, once, by the rules of `executor::source::proxy`.
        let proxy = ProxyConfig::from_env()?;
        let policy = executor::trust::load_policy(
            self.signature_policy.as_deref(),
            &executor::trust::default_policy_paths(),
        )?;
        Ok(PullOptions {
            platform: self.platform.clone(),
            registry: RegistryOptions {
                insecure_registries: self.insecure_registries.clone(),
                auth_file: self.authfile.clone(),
                cert_dir: self.cert_dir.clone(),
                registries: Arc::new(registries),
                proxy: Arc::new(proxy),
                ..RegistryOptions::default()
            },
            max_concurrent_downloads: usize::from(self.max_concurrent_downloads),
            policy: policy.map(Arc::new),
            progress: super::progress::bars(),
            ..PullOptions::default()
        })
    }
}

/// Flags of `executor pull`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image to pull: `[REGISTRY/]REPO[:TAG|@DIGEST]` or `oci-layout:PATH[:TAG|@DIGEST]`.
    pub image: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Also unpack the layers into snapshots while they download, as `executor run` does
    /// (a later `run` or `bundle` then unpacks nothing).
    #[arg(long)]
    pub unpack: bool,
}

/// Runs `executor pull`: pulls the image and prints its manifest digest.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let source = ImageSource::parse(&args.image)?;
    let store = global.root().store()?;
    let opts = args.registry.pull_options()?;
    let record = if args.unpack {
        let snapshots = global.root().snapshots()?;
        super::block_on(pull_and_unpack(&store, &snapshots, &source, &opts))??
    } else {
        super::block_on(pull(&store, &source, &opts))??
    };
    println!("{}", record.manifest_digest);
    Ok(ExitCode::SUCCESS)
}
