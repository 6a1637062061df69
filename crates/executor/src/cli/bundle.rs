//! `executor bundle`: write an OCI bundle (rootfs + config.json + runner inputs) for an image
//! that `runc run -b DIR ID` (or any OCI runtime) can run.

use super::GlobalArgs;
use anyhow::{Context, bail};
use executor::bundle::{BindMount, Bundle, BundleOptions, Network};
use executor::reference::ImageSource;
use executor::snapshot::{LayerBlob, Snapshotter, layer_blobs};
use executor::store::Store;
use oci_spec::image::ImageConfiguration;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Network choice on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkArg {
    /// A private network namespace with loopback only.
    None,
    /// The host's network (for runners that reach an API server).
    Host,
}

/// Flags that shape the container process; shared by the commands that make bundles.
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessArgs {
    /// Replace the image's Entrypoint: a program, or a JSON array (`["/bin/sh","-c"]`).
    /// Also drops the image's Cmd, as with Docker.
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// Set an environment variable (`KEY=VALUE`); repeatable.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Run as this user: `name`, `uid`, `name:group`, `uid:gid` (resolved in the image).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Working directory in the container (absolute).
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// Network: `none` (private namespace) or `host`.
    #[arg(long, value_enum, default_value_t = NetworkArg::None)]
    pub network: NetworkArg,
    /// Mount the root file system read-only (`/out` and the status dir stay writable).
    #[arg(long)]
    pub read_only: bool,
    /// Memory limit: bytes, or with a `k`, `m` or `g` suffix.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Maximum number of processes in the container.
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<i64>,
    /// Bind mount `HOST:CONTAINER[:ro]`; repeatable.
    #[arg(long = "mount", value_name = "SRC:DST[:ro]")]
    pub mounts: Vec<String>,
    /// Kubeconfig to hand to the runner (its certificate files are copied too).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Host name of the container.
    #[arg(long, default_value = "runner")]
    pub hostname: String,
    /// Do not install the default seccomp filter (it denies module loading, bpf, mount,
    /// unshare and similar syscalls).
    #[arg(long)]
    pub no_seccomp: bool,
    /// Command replacing the image's Cmd (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl ProcessArgs {
    /// The library's bundle options for these flags and the two runner input files.
    pub fn bundle_options(&self, context: &Path, args: &Path) -> anyhow::Result<BundleOptions> {
        let mut opts = BundleOptions::new(context, args);
        opts.entrypoint = match &self.entrypoint {
            None => None,
            Some(e) if e.trim_start().starts_with('[') => Some(
                serde_json::from_str(e)
                    .with_context(|| format!("--entrypoint {e:?} is not a JSON string array"))?,
            ),
            Some(e) => Some(vec![e.clone()]),
        };
        opts.cmd = (!self.command.is_empty()).then(|| self.command.clone());
        opts.env = self.env.clone();
        opts.user = self.user.clone();
        opts.workdir = self.workdir.clone();
        opts.network = match self.network {
            NetworkArg::None => Network::None,
            NetworkArg::Host => Network::Host,
        };
        opts.readonly_rootfs = self.read_only;
        opts.memory_limit = self
            .memory
            .as_deref()
            .map(parse_size)
            .transpose()
            .context("--memory")?;
        opts.pids_limit = self.pids_limit;
        opts.mounts = self
            .mounts
            .iter()
            .map(|m| {
                let mount = parse_mount(m)?;
                // Checked here, before anything is pulled or created: the runtimes only
                // fail later, with messages that do not name the mount.
                if let Err(e) = std::fs::metadata(&mount.source) {
                    bail!(
                        "--mount {m:?}: source {} is not usable: {e}",
                        mount.source.display()
                    );
                }
                Ok(mount)
            })
            .collect::<anyhow::Result<_>>()?;
        opts.kubeconfig = self.kubeconfig.clone();
        opts.hostname = self.hostname.clone();
        opts.seccomp = !self.no_seccomp;
        Ok(opts)
    }
}

/// Flags of `executor bundle`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image, as pulled before (`executor pull`): `[REGISTRY/]REPO[:TAG|@DIGEST]` or
    /// `oci-layout:PATH[:TAG|@DIGEST]`.
    pub image: String,
    /// Runner context file (YAML), mounted read-only at /runner-context.
    #[arg(long, value_name = "FILE")]
    pub context: PathBuf,
    /// Runner args file, mounted read-only at /runner-args.
    #[arg(long, value_name = "FILE")]
    pub args: PathBuf,
    /// Bundle directory to create (absent or empty). Its rootfs stays mounted: remove it
    /// with `umount DIR/rootfs && rm -r DIR`.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: PathBuf,
    #[command(flatten)]
    pub process: Box<ProcessArgs>,
}

/// Runs `executor bundle`: unpacks the image's layers into snapshots (once) and writes the
/// bundle; prints the bundle directory.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let opts = args.process.bundle_options(&args.context, &args.args)?;
    let (config, layers) = resolve_image(global, &args.image)?;
    let snapshots = Snapshotter::new(global.root.join("snapshots")).with_context(|| {
        format!(
            "while opening the snapshots under {}",
            global.root.display()
        )
    })?;
    let lowers = snapshots
        .prepare(&layers)
        .with_context(|| format!("while unpacking {}", args.image))?;
    let output = std::path::absolute(&args.output)
        .with_context(|| format!("while resolving {}", args.output.display()))?;
    let bundle = Bundle::prepare(&config, &lowers, &output, &opts)
        .with_context(|| format!("while writing the bundle {}", output.display()))?;
    tracing::info!(image = %args.image, bundle = %bundle.dir().display(), "bundle written");
    // The rootfs mount must outlive this process: that is what the bundle is for.
    println!("{}", bundle.detach().display());
    Ok(ExitCode::SUCCESS)
}

/// The image config and its layer blobs from the content store.
fn resolve_image(
    global: &GlobalArgs,
    image: &str,
) -> anyhow::Result<(ImageConfiguration, Vec<LayerBlob>)> {
    let source = ImageSource::parse(image)?;
    let store = Store::open(&global.root)
        .with_context(|| format!("while opening the store at {}", global.root.display()))?;
    let record = store.image(&source)?.with_context(|| {
        format!("image {source} is not in the store: run `executor pull {image}` first")
    })?;
    let config = store
        .read_config(&record)
        .with_context(|| format!("while reading the config of {source}"))?;
    let layers = layer_blobs(&config, &record.layers, |digest| store.blob_path(digest))
        .with_context(|| format!("image {source}"))?;
    Ok((config, layers))
}

/// `512`, `64k`, `256m`, `2g` (powers of 1024) to bytes.
fn parse_size(text: &str) -> anyhow::Result<i64> {
    let t = text.trim().to_ascii_lowercase();
    let (digits, shift) = match t.strip_suffix(['k', 'm', 'g']) {
        Some(d) => (
            d,
            10 * (1 + "kmg".find(t.chars().last().unwrap_or('k')).unwrap_or(0)),
        ),
        None => (t.as_str(), 0),
    };
    let n: i64 = digits
        .trim_end_matches('b')
        .parse()
        .with_context(|| format!("{text:?} is not a size like 512m"))?;
    match n
        .checked_shl(shift as u32)
        .filter(|v| *v > 0 && v >> shift == n)
    {
        Some(v) => Ok(v),
        None => bail!("{text:?} is not a positive size"),
    }
}

/// `SRC:DST[:ro|:rw]`.
fn parse_mount(text: &str) -> anyhow::Result<BindMount> {
    let parts: Vec<&str> = text.split(':').collect();
    let (src, dst, read_only) = match parts.as_slice() {
        [s, d] => (*s, *d, false),
        [s, d, "ro"] => (*s, *d, true),
        [s, d, "rw"] => (*s, *d, false),
        _ => bail!("--mount {text:?} is not SRC:DST[:ro]"),
    };
    if src.is_empty() || !dst.starts_with('/') {
        bail!("--mount {text:?} needs a source and an absolute destination");
    }
    Ok(BindMount {
        source: std::path::absolute(src).with_context(|| format!("--mount source {src}"))?,
        destination: dst.into(),
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert!(parse_size("0").is_err());
        assert!(parse_size("-5m").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999g").is_err(), "overflow");
    }

    #[test]
    fn mounts_parse_and_reject_relative_destinations() {
        let m = parse_mount("/data:/in:ro").unwrap();
        assert_eq!(
            (m.source, m.destination, m.read_only),
            ("/data".into(), "/in".into(), true)
        );
        assert!(!parse_mount("/data:/in").unwrap().read_only);
        assert!(parse_mount("/data:in").is_err());
        assert!(parse_mount("/data").is_err());
        assert!(parse_mount("/a:/b:maybe").is_err());
    }

    #[test]
    fn process_flags_map_to_bundle_options() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            p: ProcessArgs,
        }
        let cli = Cli::parse_from([
            "x",
            "--entrypoint",
            r#"["/bin/sh","-c"]"#,
            "-e",
            "A=1",
            "--network",
            "host",
            "--read-only",
            "--memory",
            "64m",
            "--pids-limit",
            "10",
            "--",
            "echo",
            "hi",
        ]);
        let o = cli
            .p
            .bundle_options(Path::new("/c"), Path::new("/a"))
            .unwrap();
        assert_eq!(o.entrypoint, Some(vec!["/bin/sh".into(), "-c".into()]));
        assert_eq!(o.cmd, Some(vec!["echo".into(), "hi".into()]));
        assert_eq!(o.env, vec!["A=1".to_owned()]);
        assert_eq!(o.network, Network::Host);
        assert!(o.readonly_rootfs);
        assert_eq!(o.memory_limit, Some(64 << 20));
        assert_eq!(o.pids_limit, Some(10));
        assert_eq!(o.context_file, Path::new("/c"));
        let cli = Cli::parse_from(["x", "--entrypoint", "/runner"]);
        let o = cli
            .p
            .bundle_options(Path::new("/c"), Path::new("/a"))
            .unwrap();
        assert_eq!(o.entrypoint, Some(vec!["/runner".into()]));
        assert_eq!(o.cmd, None);
        assert_eq!(o.network, Network::None);
        assert!(o.seccomp);
        let cli = Cli::parse_from(["x", "--no-seccomp"]);
        assert!(
            !cli.p
                .bundle_options(Path::new("/c"), Path::new("/a"))
                .unwrap()
                .seccomp
        );
    }
}
