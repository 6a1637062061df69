//! `executor bundle`: write an OCI bundle (rootfs + config.json + runner inputs) for an image
//! that `runc run -b DIR ID` (or any OCI runtime) can run.

use super::GlobalArgs;
use anyhow::{Context, bail};
use executor::bundle::{BindMount, Bundle, BundleOptions, Cpus, Network, Seccomp};
use executor::capabilities::CapChange;
use executor::reference::ImageSource;
use executor::snapshot::{LayerBlob, layer_blobs};
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
    /// CPU limit: a number of CPUs (`0.5`, `2`), enforced as a CFS quota per 100 ms.
    #[arg(long, value_name = "N")]
    pub cpus: Option<Cpus>,
    /// Add a capability to the default set (`NET_RAW`, `CAP_SYS_PTRACE`, `ALL`); repeatable.
    /// The seccomp filter widens with it, as in podman.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<CapChange>,
    /// Drop a capability from the default set (`ALL` for all); repeatable.
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<CapChange>,
    /// Use this seccomp profile (Docker/podman JSON, or the OCI form) instead of the
    /// built-in one.
    #[arg(long, value_name = "FILE", conflicts_with = "no_seccomp")]
    pub seccomp_profile: Option<PathBuf>,
    /// Security options as podman takes them: `seccomp=unconfined`, `seccomp=FILE`,
    /// `no-new-privileges` (always on); repeatable.
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Do not install any seccomp filter (the default one refuses namespaces, mounts,
    /// bpf, perf, the keyring, module loading and more: see the README).
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
        opts.seccomp = self.seccomp()?;
        opts.cap_add = self.cap_add.clone();
        opts.cap_drop = self.cap_drop.clone();
        // Checked here, before anything is pulled.
        executor::capabilities::resolve(&opts.cap_add, &opts.cap_drop)
            .context("--cap-add/--cap-drop")?;
        opts.cpus = self.cpus;
        opts.loopback_hook =
            Some(std::env::current_exe().context("while locating the executor binary")?);
        Ok(opts)
    }

    /// The seccomp choice of `--no-seccomp`, `--seccomp-profile` and `--security-opt`;
    /// a profile file is read (and checked) here, once.
    fn seccomp(&self) -> anyhow::Result<Seccomp> {
        let mut choice: Option<(String, Seccomp)> = None;
        let mut choose = |flag: String, seccomp: Seccomp| -> anyhow::Result<()> {
            if let Some((earlier, _)) = &choice {
                bail!("{flag} conflicts with {earlier}");
            }
            choice = Some((flag, seccomp));
            Ok(())
        };
        if self.no_seccomp {
            choose("--no-seccomp".to_owned(), Seccomp::Unconfined)?;
        }
        if let Some(path) = &self.seccomp_profile {
            choose(
                format!("--seccomp-profile {}", path.display()),
                Seccomp::from_file(path)?,
            )?;
        }
        for opt in &self.security_opt {
            match opt.split_once(['=', ':']) {
                Some(("seccomp", "unconfined")) => {
                    choose(format!("--security-opt {opt}"), Seccomp::Unconfined)?
                }
                Some(("seccomp", path)) => choose(
                    format!("--security-opt {opt}"),
                    Seccomp::from_file(Path::new(path))?,
                )?,
                // Always on; accepted so that podman command lines work unchanged.
                None if opt == "no-new-privileges" => {}
                Some(("no-new-privileges", "true")) => {}
                _ => bail!(
                    "--security-opt {opt:?} is not supported (seccomp=unconfined, \
                     seccomp=FILE and no-new-privileges are)"
                ),
            }
        }
        Ok(choice.map(|(_, s)| s).unwrap_or_default())
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
    /// `containers-policy.json` the stored image must satisfy, with the signatures kept
    /// from its pull (as for `executor run --pull never`); default: podman's search order.
    #[arg(long, value_name = "FILE")]
    pub signature_policy: Option<PathBuf>,
    #[command(flatten)]
    pub process: Box<ProcessArgs>,
}

/// Runs `executor bundle`: unpacks the image's layers into snapshots (once) and writes the
/// bundle; prints the bundle directory.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let opts = args.process.bundle_options(&args.context, &args.args)?;
    let (config, layers) = resolve_image(global, &args.image, args.signature_policy.as_deref())?;
    let snapshots = global.root().snapshots()?;
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
/// A bundle runs outside the executor's control, so the policy is checked here, once.
fn resolve_image(
    global: &GlobalArgs,
    image: &str,
    signature_policy: Option<&std::path::Path>,
) -> anyhow::Result<(ImageConfiguration, Vec<LayerBlob>)> {
    let source = ImageSource::parse(image)?;
    let store = global.root().store()?;
    let record = store.image(&source)?.with_context(|| {
        format!("image {source} is not in the store: run `executor pull {image}` first")
    })?;
    let policy =
        executor::trust::load_policy(signature_policy, &executor::trust::default_policy_paths())?;
    if let Some(policy) = &policy {
        record.verify_under(policy, &source)?;
    }
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
        .checked_shl(u32::try_from(shift).expect("a shift of 0 to 30"))
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
        assert_eq!(o.seccomp, Seccomp::Default);
        assert_eq!((o.cpus, o.cap_add.len(), o.cap_drop.len()), (None, 0, 0));
        let options = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
                .map_err(|e| e.to_string())
                .and_then(|cli| {
                    cli.p
                        .bundle_options(Path::new("/c"), Path::new("/a"))
                        .map_err(|e| format!("{e:#}"))
                })
        };
        for flags in [
            &["--no-seccomp"][..],
            &["--security-opt", "seccomp=unconfined"],
        ] {
            assert_eq!(options(flags).unwrap().seccomp, Seccomp::Unconfined);
        }
        let o = options(&[
            "--cpus",
            "1.5",
            "--cap-add",
            "net_raw",
            "--cap-drop",
            "CAP_KILL",
        ])
        .unwrap();
        assert_eq!(o.cpus.map(|c| c.millis()), Some(1500));
        assert_eq!(
            o.cap_add,
            vec![CapChange::One(oci_spec::runtime::Capability::NetRaw)]
        );
        assert_eq!(
            o.cap_drop,
            vec![CapChange::One(oci_spec::runtime::Capability::Kill)]
        );

        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("p.json");
        std::fs::write(&profile, r#"{"defaultAction":"SCMP_ACT_LOG"}"#).unwrap();
        let p = profile.to_str().unwrap();
        for flags in [
            &["--seccomp-profile", p][..],
            &["--security-opt", &format!("seccomp={p}")],
        ] {
            assert!(matches!(
                options(flags).unwrap().seccomp,
                Seccomp::Profile { .. }
            ));
        }
        for (flags, wanted) in [
            (&["--cpus", "0"][..], "not a positive number of CPUs"),
            (&["--cpus", "1.2345"], "not a positive number of CPUs"),
            (&["--cap-add", "NOPE"], "unknown capability \"NOPE\""),
            (
                &["--cap-add", "KILL", "--cap-drop", "kill"],
                "cannot be both added and dropped",
            ),
            (
                &["--seccomp-profile", p, "--no-seccomp"],
                "cannot be used with",
            ),
            (
                &["--security-opt", "seccomp=unconfined", "--no-seccomp"],
                "conflicts with --no-seccomp",
            ),
            (&["--security-opt", "label=disable"], "is not supported"),
            (
                &["--seccomp-profile", "/nonexistent.json"],
                "cannot read seccomp profile /nonexistent.json",
            ),
        ] {
            let e = options(flags).unwrap_err();
            assert!(e.contains(wanted), "{flags:?}: {e}");
        }
    }

    #[test]
    fn cpus_parse_as_podman_takes_them() {
        for (text, millis) in [("2", 2000), ("0.5", 500), (".25", 250), ("1.125", 1125)] {
            assert_eq!(text.parse::<Cpus>().unwrap().millis(), millis, "{text}");
        }
        assert_eq!("0.5".parse::<Cpus>().unwrap().quota_us(), 50_000);
        for bad in ["", ".", "-1", "1e3", "0.0", "one", "1.5.1"] {
            assert!(bad.parse::<Cpus>().is_err(), "{bad}");
        }
    }
}
