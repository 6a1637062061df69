//! Building `config.json`, the OCI runtime spec of a run, from the image config, the
//! resolved process user and the options: the process (arguments, environment, working
//! directory, user, capabilities, rlimits), the mounts (kernel file systems, the runner's
//! inputs, `/out` and `/run/runner`, extra binds), and the linux section (namespaces,
//! device cgroup and resource limits, seccomp, masked and read-only paths), with the
//! loopback hook when the runtime needs one.

use super::{
    ARGS_PATH, BundleError, BundleOptions, CONTEXT_PATH, CPU_PERIOD_US, DEFAULT_PATH,
    KUBE_FILES_DIR, KUBECONFIG_PATH, MASKED_PATHS, Network, OUT_DIR, READONLY_PATHS, STATUS_DIR,
    STATUS_PATH, Seccomp,
};
use crate::capabilities;
use crate::seccomp::{self, Profile};
use crate::user::ResolvedUser;
use oci_spec::runtime::{
    Capabilities, HookBuilder, HooksBuilder, LinuxBuilder, LinuxCapabilitiesBuilder,
    LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};
use runner_contract::paths::{ARGS_PATH_VAR, CONTEXT_PATH_VAR, STATUS_PATH_VAR};
use std::borrow::Cow;
use std::path::Path;

fn set_env(env: &mut Vec<String>, kv: &str) {
    let key = kv.split('=').next().unwrap_or(kv);
    env.retain(|e| e.split('=').next() != Some(key));
    env.push(kv.to_owned());
}

fn bind(source: &Path, destination: &str, writable: bool) -> Result<Mount, BundleError> {
    let mut options = vec!["rbind".to_owned(), "nosuid".to_owned(), "nodev".to_owned()];
    options.push(if writable { "rw" } else { "ro" }.to_owned());
    Ok(MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(options)
        .build()?)
}

fn kernel_mount(
    destination: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<Mount, BundleError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// Builds the runtime spec; pure (no I/O), so every field is unit-testable.
pub(super) fn build_spec(
    image: &oci_spec::image::Config,
    user: &ResolvedUser,
    dir: &Path,
    opts: &BundleOptions,
    kubeconfig: bool,
) -> Result<Spec, BundleError> {
    let entrypoint = opts
        .entrypoint
        .clone()
        .or_else(|| image.entrypoint().clone())
        .unwrap_or_default();
    let cmd = match (&opts.cmd, &opts.entrypoint) {
        (Some(cmd), _) => cmd.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => image.cmd().clone().unwrap_or_default(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(BundleError::NoCommand);
    }

    let mut env: Vec<String> = image.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    for kv in &opts.env {
        set_env(&mut env, kv);
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        set_env(
            &mut env,
            &format!("HOME={}", user.home.as_deref().unwrap_or("/")),
        );
    }
    // The runner contract wins over the image and the caller.
    set_env(&mut env, &format!("{CONTEXT_PATH_VAR}={CONTEXT_PATH}"));
    set_env(&mut env, &format!("{ARGS_PATH_VAR}={ARGS_PATH}"));
    set_env(&mut env, &format!("{STATUS_PATH_VAR}={STATUS_PATH}"));
    if kubeconfig {
        set_env(&mut env, &format!("KUBECONFIG={KUBECONFIG_PATH}"));
    }

    let cwd = opts
        .workdir
        .clone()
        .or_else(|| image.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_owned());

    let caps: Capabilities = capabilities::resolve(&opts.cap_add, &opts.cap_drop)?;
    let mut process_user = UserBuilder::default().uid(user.uid).gid(user.gid);
    if !user.additional_gids.is_empty() {
        process_user = process_user.additional_gids(user.additional_gids.clone());
    }
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(process_user.build()?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps.clone())
                .inheritable(Capabilities::new())
                .ambient(Capabilities::new())
                .build()?,
        )
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(1024u64)
                .hard(1024u64)
                .build()?,
        ])
        .no_new_privileges(true)
        .build()?;

    let mut mounts = vec![
        kernel_mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        kernel_mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        kernel_mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        kernel_mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        kernel_mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        kernel_mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        kernel_mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
        bind(&dir.join("inputs/context"), CONTEXT_PATH, false)?,
        bind(&dir.join("inputs/args"), ARGS_PATH, false)?,
        bind(&dir.join("out"), OUT_DIR, true)?,
        bind(&dir.join("status"), STATUS_DIR, true)?,
    ];
    if kubeconfig {
        mounts.push(bind(
            &dir.join("inputs/kubeconfig"),
            KUBECONFIG_PATH,
            false,
        )?);
        mounts.push(bind(&dir.join("inputs/kube"), KUBE_FILES_DIR, false)?);
    }
    if opts.network == Network::Host {
        for file in ["/etc/resolv.conf", "/etc/hosts"] {
            if Path::new(file).exists() {
                mounts.push(bind(Path::new(file), file, false)?);
            }
        }
    }
    for m in &opts.mounts {
        let dest = m
            .destination
            .to_str()
            .ok_or_else(|| BundleError::InvalidOption {
                field: "mounts",
                reason: format!("destination {} is not UTF-8", m.destination.display()),
            })?;
        mounts.push(bind(&m.source, dest, !m.read_only)?);
    }

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if opts.network == Network::None {
        namespaces.push(LinuxNamespaceType::Network);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()?;

    let mut devices = vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?,
    ];
    // null, zero, full, random, urandom, tty, ptmx and the pty slaves, as containerd allows.
    for (major, minor) in [
        (1, Some(3)),
        (1, Some(5)),
        (1, Some(7)),
        (1, Some(8)),
        (1, Some(9)),
        (5, Some(0)),
        (5, Some(2)),
        (136, None),
    ] {
        let mut rule = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(major)
            .access("rwm");
        if let Some(minor) = minor {
            rule = rule.minor(minor);
        }
        devices.push(rule.build()?);
    }
    let mut resources = LinuxResourcesBuilder::default().devices(devices);
    if let Some(limit) = opts.memory_limit {
        resources = resources.memory(LinuxMemoryBuilder::default().limit(limit).build()?);
    }
    if let Some(limit) = opts.pids_limit {
        resources = resources.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }
    if let Some(cpus) = opts.cpus {
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(cpus.quota_us())
                .period(CPU_PERIOD_US)
                .build()?,
        );
    }
    let mut linux = LinuxBuilder::default();
    let profile = match &opts.seccomp {
        Seccomp::Default => Some(Cow::Owned(Profile::default_profile())),
        Seccomp::Profile { profile, .. } => Some(Cow::Borrowed(profile.as_ref())),
        Seccomp::Unconfined => None,
    };
    if let Some(profile) = profile {
        let filter = profile.resolve(&caps, &seccomp::Target::host())?;
        linux = linux.seccomp(opts.seccomp_dialect.adapt(filter));
    }
    let linux = linux
        .namespaces(namespaces)
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .resources(resources.build()?)
        .build()?;

    let mut spec = SpecBuilder::default();
    if let (Network::None, Some(executor)) = (opts.network, &opts.loopback_hook) {
        spec = spec.hooks(
            HooksBuilder::default()
                .create_runtime(vec![
                    HookBuilder::default()
                        .path(executor)
                        .args(
                            ["executor", "hook", "loopback-up"]
                                .map(String::from)
                                .to_vec(),
                        )
                        .timeout(10)
                        .build()?,
                ])
                .build()?,
        );
    }
    Ok(spec
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(opts.readonly_rootfs)
                .build()?,
        )
        .hostname(opts.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(json: serde_json::Value) -> oci_spec::image::Config {
        serde_json::from_value(json).unwrap()
    }

    fn root() -> ResolvedUser {
        ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            home: None,
        }
    }

    fn args_of(image_json: serde_json::Value, opts: &BundleOptions) -> Vec<String> {
        let spec = build_spec(&image(image_json), &root(), Path::new("/b"), opts, false).unwrap();
        spec.process().as_ref().unwrap().args().clone().unwrap()
    }

    #[test]
    fn entrypoint_and_cmd_follow_docker_override_rules() {
        let img = serde_json::json!({"Entrypoint": ["/runner"], "Cmd": ["--flag"]});
        let mut opts = BundleOptions::new("/c", "/a");
        assert_eq!(args_of(img.clone(), &opts), ["/runner", "--flag"]);
        opts.cmd = Some(vec!["--other".into()]);
        assert_eq!(args_of(img.clone(), &opts), ["/runner", "--other"]);
        opts.cmd = None;
        opts.entrypoint = Some(vec!["/bin/sh".into()]);
        assert_eq!(
            args_of(img.clone(), &opts),
            ["/bin/sh"],
            "new entrypoint drops Cmd"
        );
        let opts = BundleOptions::new("/c", "/a");
        assert_eq!(
            args_of(serde_json::json!({"Cmd": ["/bin/true"]}), &opts),
            ["/bin/true"]
        );
        let err = build_spec(
            &image(serde_json::json!({})),
            &root(),
            Path::new("/b"),
            &opts,
            false,
        )
        .unwrap_err();
        assert!(matches!(err, BundleError::NoCommand));
    }

    #[test]
    fn defaults_path_home_and_workdir() {
        let opts = BundleOptions::new("/c", "/a");
        let spec = build_spec(
            &image(serde_json::json!({"Cmd": ["x"]})),
            &root(),
            Path::new("/b"),
            &opts,
            false,
        )
        .unwrap();
        let p = spec.process().as_ref().unwrap();
        let env = p.env().as_ref().unwrap();
        assert_eq!(env[0], DEFAULT_PATH);
        assert!(env.contains(&"HOME=/".to_owned()));
        assert_eq!(p.cwd(), Path::new("/"));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
        let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert!(
            res.memory().is_none() && res.pids().is_none(),
            "no limits unless asked"
        );
    }
}
