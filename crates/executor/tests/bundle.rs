//! Bundles: `config.json` field by field, input files, clean failure, and a real `runc run` of
//! a busybox image built from `/bin/busybox`. Needs root (overlayfs, runc).

mod layers;

use executor::bundle::{BindMount, Bundle, BundleError, BundleOptions, Network};
use executor::snapshot::Snapshotter;
use layers::{Layer, blob, is_mounted, tempdir, tree};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Capability, LinuxNamespaceType, Spec};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A busybox image: `/bin/busybox` with applet symlinks, a passwd with a non-root user.
fn busybox_layer() -> Vec<u8> {
    let busybox = fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut layer = Layer::new();
    layer
        .dir("bin/", 0o755)
        .file_with("bin/busybox", &busybox, 0o755, 0, 0, 1_600_000_000);
    for applet in ["sh", "echo", "cat", "id", "pwd", "touch", "ls", "grep"] {
        layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    layer
        .dir("etc/", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nrunner:x:1000:1000:Runner:/home/runner:/bin/sh\n",
        )
        .file(
            "etc/group",
            b"root:x:0:\nrunner:x:1000:\nkube:x:2000:runner\n",
        )
        .dir("work/", 0o755)
        .dir("home/runner/", 0o755)
        .tar()
}

struct Image {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    lowers: Vec<PathBuf>,
}

fn image() -> Image {
    let tmp = tempdir();
    let snaps = Snapshotter::new(tmp.path().join("snapshots")).unwrap();
    let lowers = snaps
        .prepare(&[blob(tmp.path(), &busybox_layer())])
        .unwrap();
    Image {
        root: tmp.path().to_owned(),
        _tmp: tmp,
        lowers,
    }
}

fn linux_of(spec: &Spec) -> &oci_spec::runtime::Linux {
    spec.linux().as_ref().unwrap()
}

fn config(json: serde_json::Value) -> ImageConfiguration {
    let mut base = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    base["config"] = json;
    serde_json::from_value(base).unwrap()
}

fn inputs(dir: &Path) -> BundleOptions {
    let context = dir.join("context.yaml");
    let args = dir.join("args.yaml");
    fs::write(&context, "name: test-run\ndryRun: false\n").unwrap();
    fs::write(&args, "workflow:\n  entrypoint: main\n").unwrap();
    BundleOptions::new(context, args)
}

#[test]
fn config_json_is_secure_and_follows_the_image_and_the_runner_contract() {
    let img = image();
    let dir = img.root.join("bundle");
    let mut opts = inputs(&img.root);
    opts.env = vec!["EXTRA=1".into(), "FOO=overridden".into()];
    opts.memory_limit = Some(64 << 20);
    opts.pids_limit = Some(100);
    opts.readonly_rootfs = true;
    opts.mounts = vec![BindMount {
        source: img.root.clone(),
        destination: "/data".into(),
        read_only: true,
    }];
    let cfg = config(serde_json::json!({
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo hi"],
        "Env": ["PATH=/bin", "FOO=bar", "RUNNER_CONTEXT_PATH=/spoofed"],
        "WorkingDir": "/work",
        "User": "runner",
    }));
    let bundle = Bundle::prepare(&cfg, &img.lowers, &dir, &opts).unwrap();
    let spec = Spec::load(dir.join("config.json")).unwrap();
    assert_eq!(&spec, bundle.spec());

    assert_eq!(spec.version(), "1.0.2");
    assert_eq!(spec.root().as_ref().unwrap().path(), Path::new("rootfs"));
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    assert_eq!(spec.hostname().as_deref(), Some("runner"));

    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.terminal(), Some(false));
    assert_eq!(p.args().as_ref().unwrap(), &["/bin/sh", "-c", "echo hi"]);
    assert_eq!(p.cwd(), Path::new("/work"));
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
    assert_eq!(p.user().additional_gids().as_ref().unwrap(), &[2000]);
    let env = p.env().as_ref().unwrap();
    for expected in [
        "PATH=/bin",
        "FOO=overridden",
        "EXTRA=1",
        "HOME=/home/runner",
        "RUNNER_CONTEXT_PATH=/runner-context",
        "RUNNER_ARGS_PATH=/runner-args",
        "RUNNER_STATUS_PATH=/run/runner/status.json",
    ] {
        assert!(env.iter().any(|e| e == expected), "{expected} in {env:?}");
    }
    assert!(!env.iter().any(|e| e == "RUNNER_CONTEXT_PATH=/spoofed"));
    assert!(!env.iter().any(|e| e.starts_with("KUBECONFIG=")));
    assert_eq!(p.no_new_privileges(), Some(true));
    let caps = p.capabilities().as_ref().unwrap();
    let default: HashSet<Capability> = executor::bundle::DEFAULT_CAPABILITIES.into_iter().collect();
    assert_eq!(default.len(), 11, "podman's default set");
    assert_eq!(caps.bounding().as_ref().unwrap(), &default);
    assert_eq!(caps.effective().as_ref().unwrap(), &default);
    assert_eq!(caps.permitted().as_ref().unwrap(), &default);
    assert!(caps.inheritable().as_ref().unwrap().is_empty());
    assert!(caps.ambient().as_ref().unwrap().is_empty());
    assert!(
        !caps
            .bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysAdmin)
    );
    for not_granted in [
        Capability::NetRaw,
        Capability::Mknod,
        Capability::AuditWrite,
    ] {
        assert!(!default.contains(&not_granted), "{not_granted:?}");
    }
    // An allow list: what no rule names is refused with EPERM.
    let seccomp = linux_of(&spec).seccomp().as_ref().unwrap();
    assert_eq!(
        seccomp.default_action(),
        oci_spec::runtime::LinuxSeccompAction::ScmpActErrno
    );
    assert_eq!(seccomp.default_errno_ret(), Some(libc::EPERM as u32));
    let allowed: HashSet<&str> = seccomp
        .syscalls()
        .iter()
        .flatten()
        .filter(|s| s.action() == oci_spec::runtime::LinuxSeccompAction::ScmpActAllow)
        .flat_map(|s| s.names().iter().map(String::as_str))
        .collect();
    assert!(allowed.contains("openat") && allowed.contains("clone"));
    for name in [
        "bpf",
        "kexec_load",
        "init_module",
        "unshare",
        "mount",
        "keyctl",
        "fsopen",
    ] {
        assert!(!allowed.contains(name), "{name} refused");
    }
    let rl = &p.rlimits().as_ref().unwrap()[0];
    assert_eq!((rl.soft(), rl.hard()), (1024, 1024));

    let mounts = spec.mounts().as_ref().unwrap();
    let find = |dest: &str| {
        mounts
            .iter()
            .find(|m| m.destination() == Path::new(dest))
            .unwrap_or_else(|| panic!("mount {dest}"))
    };
    let opts_of = |dest: &str| find(dest).options().clone().unwrap_or_default();
    for (dest, typ) in [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
        ("/sys/fs/cgroup", "cgroup"),
    ] {
        assert_eq!(find(dest).typ().as_deref(), Some(typ), "{dest}");
    }
    assert!(opts_of("/sys").contains(&"ro".to_owned()));
    for (dest, src, writable) in [
        ("/runner-context", "inputs/context", false),
        ("/runner-args", "inputs/args", false),
        ("/out", "out", true),
        ("/run/runner", "status", true),
        ("/data", "", false),
    ] {
        let m = find(dest);
        if !src.is_empty() {
            assert_eq!(
                m.source().as_deref(),
                Some(dir.join(src).as_path()),
                "{dest}"
            );
        }
        assert_eq!(m.typ().as_deref(), Some("bind"));
        let o = opts_of(dest);
        assert!(
            o.contains(&(if writable { "rw" } else { "ro" }).to_owned()),
            "{dest}: {o:?}"
        );
        assert!(o.contains(&"nosuid".to_owned()));
    }
    assert!(
        !mounts
            .iter()
            .any(|m| m.destination() == Path::new("/etc/resolv.conf"))
    );

    let linux = spec.linux().as_ref().unwrap();
    let ns: Vec<LinuxNamespaceType> = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    for t in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ] {
        assert!(ns.contains(&t), "{t:?}");
    }
    assert!(!ns.contains(&LinuxNamespaceType::User));
    let masked = linux.masked_paths().as_ref().unwrap();
    for path in [
        "/proc/kcore",
        "/proc/keys",
        "/sys/firmware",
        "/proc/timer_list",
    ] {
        assert!(masked.iter().any(|m| m == path), "{path} masked");
    }
    let ro = linux.readonly_paths().as_ref().unwrap();
    for path in [
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
    ] {
        assert!(ro.iter().any(|m| m == path), "{path} read-only");
    }
    let res = linux.resources().as_ref().unwrap();
    assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
    assert_eq!(res.pids().as_ref().unwrap().limit(), 100);
    let devices = res.devices().as_ref().unwrap();
    assert!(!devices[0].allow(), "deny all devices first");
    assert!(linux.cgroups_path().is_none(), "left to the runtime");

    // Inputs: private copies owned by the process user.
    for name in ["context", "args"] {
        let m = fs::metadata(dir.join("inputs").join(name)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{name}");
        assert_eq!((m.uid(), m.gid()), (1000, 1000), "{name}");
    }
    assert_eq!(
        fs::read_to_string(dir.join("inputs/context")).unwrap(),
        "name: test-run\ndryRun: false\n"
    );
    assert_eq!(fs::metadata(dir.join("out")).unwrap().uid(), 1000);
    let private = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(private(&dir), 0o700, "bundle dir is private");
    assert_eq!(
        private(&dir.join("config.json")),
        0o600,
        "config.json is private"
    );
    assert_eq!(bundle.status_file(), dir.join("status/status.json"));
    assert!(is_mounted(&dir.join("rootfs")));
    bundle.cleanup().unwrap();
    assert!(!dir.exists());
}

#[test]
fn host_network_and_kubeconfig() {
    let img = image();
    let dir = img.root.join("bundle");
    let kube = img.root.join("kube");
    fs::create_dir(&kube).unwrap();
    fs::write(kube.join("ca.crt"), "CA").unwrap();
    fs::write(kube.join("client.key"), "KEY").unwrap();
    fs::write(
        kube.join("config"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority: ca.crt\nusers:\n- name: u\n  user:\n    client-key: {}\n",
            kube.join("client.key").display()
        ),
    )
    .unwrap();
    let mut opts = inputs(&img.root);
    opts.network = Network::Host;
    opts.kubeconfig = Some(kube.join("config"));
    let cfg = config(serde_json::json!({"Cmd": ["/bin/true"]}));
    let bundle = Bundle::prepare(&cfg, &img.lowers, &dir, &opts).unwrap();
    let spec = bundle.spec();
    let ns: Vec<_> = spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert!(!ns.contains(&LinuxNamespaceType::Network), "host network");
    let mounts = spec.mounts().as_ref().unwrap();
    let dests: Vec<&Path> = mounts.iter().map(|m| m.destination().as_path()).collect();
    assert!(dests.contains(&Path::new("/etc/resolv.conf")));
    assert!(dests.contains(&Path::new("/etc/runner/kubeconfig")));
    let env = spec.process().as_ref().unwrap().env().as_ref().unwrap();
    assert!(env.contains(&"KUBECONFIG=/etc/runner/kubeconfig".to_owned()));
    let staged = fs::read_to_string(dir.join("inputs/kubeconfig")).unwrap();
    assert!(staged.contains("/etc/runner/kube/0-ca.crt"), "{staged}");
    assert!(staged.contains("/etc/runner/kube/1-client.key"), "{staged}");
    assert!(staged.contains("https://127.0.0.1:6443"));
    assert_eq!(
        fs::read_to_string(dir.join("inputs/kube/0-ca.crt")).unwrap(),
        "CA"
    );
    let m = fs::metadata(dir.join("inputs/kube/1-client.key")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    // A detached bundle stays mounted for whoever removes it later (gc, the CLI's user).
    let detached = bundle.detach();
    assert!(is_mounted(&detached.join("rootfs")));
    executor::snapshot::cleanup_rootfs(&detached).unwrap();
    assert!(!is_mounted(&detached.join("rootfs")));
    fs::remove_dir_all(&detached).unwrap();
}

#[test]
fn failures_leave_nothing_behind() {
    let img = image();
    let dir = img.root.join("bundle");
    let opts = inputs(&img.root);
    let err =
        Bundle::prepare(&config(serde_json::json!({})), &img.lowers, &dir, &opts).unwrap_err();
    assert!(matches!(err, BundleError::NoCommand), "{err}");
    assert!(!is_mounted(&dir.join("rootfs")));
    assert!(!dir.exists(), "the bundle dir it created is gone");
    // A directory the caller made stays, emptied.
    fs::create_dir(&dir).unwrap();

    let mut bad_user = inputs(&img.root);
    bad_user.user = Some("ghost".into());
    let cfg = config(serde_json::json!({"Cmd": ["/bin/true"]}));
    let err = Bundle::prepare(&cfg, &img.lowers, &dir, &bad_user).unwrap_err();
    assert!(format!("{:#}", anyhow::Error::new(err)).contains("user ghost not found"));
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);

    let mut missing = inputs(&img.root);
    missing.args_file = img.root.join("no-such-args");
    let err = Bundle::prepare(&cfg, &img.lowers, &dir, &missing).unwrap_err();
    assert!(err.to_string().contains("no-such-args"), "{err}");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);

    fs::write(dir.join("precious"), b"x").unwrap();
    let err = Bundle::prepare(&cfg, &img.lowers, &dir, &opts).unwrap_err();
    assert!(matches!(err, BundleError::NotEmpty(_)), "{err}");
    assert_eq!(fs::read(dir.join("precious")).unwrap(), b"x");
}

#[test]
fn runc_runs_the_bundle_with_read_only_inputs() {
    let img = image();
    let before = tree(&img.lowers[0]);
    let dir = img.root.join("bundle");
    let opts = inputs(&img.root);
    let script = "echo hello-from-image; id -u; pwd; cat /runner-context; \
        if echo x > /runner-context; then echo context-writable; else echo context-read-only; fi; \
        if echo x > /runner-args; then echo args-writable; else echo args-read-only; fi; \
        echo artifact > /out/result; echo '{\"ok\":true}' > \"$RUNNER_STATUS_PATH\"; \
        grep Seccomp: /proc/self/status; echo FOO=$FOO";
    let cfg = config(serde_json::json!({
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": [script],
        "Env": ["FOO=bar"],
        "WorkingDir": "/work",
        "User": "runner",
    }));
    let bundle = Bundle::prepare(&cfg, &img.lowers, &dir, &opts).unwrap();
    let state = img.root.join("runc-state");
    let id = format!(
        "bundle-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let output = Command::new("runc")
        .arg("--root")
        .arg(&state)
        .args(["run", "-b"])
        .arg(bundle.dir())
        .arg(&id)
        .output()
        .expect("runc is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "runc failed: {stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "hello-from-image");
    assert_eq!(lines[1], "1000", "runs as the image's user");
    assert_eq!(lines[2], "/work");
    assert_eq!(lines[3], "name: test-run");
    assert!(lines.contains(&"context-read-only"), "{stdout}");
    assert!(lines.contains(&"args-read-only"), "{stdout}");
    assert!(
        lines.contains(&"Seccomp:\t2"),
        "seccomp filter installed: {stdout}"
    );
    assert_eq!(lines.last(), Some(&"FOO=bar"));
    assert_eq!(
        fs::read_to_string(bundle.out_dir().join("result")).unwrap(),
        "artifact\n"
    );
    assert_eq!(
        fs::read_to_string(bundle.status_file()).unwrap(),
        "{\"ok\":true}\n"
    );
    // The run wrote to its root (as uid 1000 only where allowed) but never to the snapshot.
    bundle.cleanup().unwrap();
    assert!(!dir.exists());
    assert_eq!(
        tree(&img.lowers[0]),
        before,
        "snapshot unchanged by the run"
    );
}

/// `executor pull` then `executor bundle` from an OCI layout; `runc run` of the result.
#[test]
fn executor_bundle_cli_writes_a_bundle_runc_runs() {
    let tmp = tempdir();
    let layout = tmp.path().join("layout");
    layers::write_oci_layout(
        &layout,
        "v1",
        &[busybox_layer()],
        serde_json::json!({
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo cli-hello; cat /runner-args"],
        }),
    );
    let root = tmp.path().join("root");
    let image = format!("oci-layout:{}:v1", layout.display());
    let executor = |args: Vec<std::ffi::OsString>| {
        Command::new(env!("CARGO_BIN_EXE_executor"))
            .arg("--root")
            .arg(&root)
            .args(args)
            .output()
            .unwrap()
    };
    let opts = inputs(tmp.path());
    let out_dir = tmp.path().join("bundle");
    let bundle_args = |image: &str| -> Vec<std::ffi::OsString> {
        vec![
            "bundle".into(),
            image.into(),
            "--context".into(),
            opts.context_file.clone().into(),
            "--args".into(),
            opts.args_file.clone().into(),
            "--output".into(),
            out_dir.clone().into(),
        ]
    };

    // Not pulled yet: one clear line, exit 125, no bundle dir.
    let out = executor(bundle_args(&image));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("executor pull"), "{stderr}");
    assert!(!out_dir.exists());

    let out = executor(vec!["pull".into(), image.clone().into()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = executor(bundle_args(&image));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        out_dir.to_str().unwrap()
    );

    let id = format!("bundle-cli-test-{}", std::process::id());
    let run = Command::new("runc")
        .arg("--root")
        .arg(tmp.path().join("runc-state"))
        .args(["run", "-b"])
        .arg(&out_dir)
        .arg(&id)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    executor::snapshot::cleanup_rootfs(&out_dir).unwrap();
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(stdout, "cli-hello\nworkflow:\n  entrypoint: main\n");
}

/// `executor prune` removes the snapshots of removed images, keeps those of stored images
/// and those a mounted bundle stacks, and removes them once the bundle is unmounted.
#[test]
fn executor_prune_keeps_snapshots_of_stored_images_and_mounted_bundles() {
    let tmp = tempdir();
    let root = tmp.path().join("root");
    let executor = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(env!("CARGO_BIN_EXE_executor"))
            .arg("--root")
            .arg(&root)
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "executor {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let layout = |name: &str, layers: &[Vec<u8>]| {
        let dir = tmp.path().join(name);
        layers::write_oci_layout(&dir, "v1", layers, serde_json::json!({"Cmd": ["/bin/sh"]}));
        format!("oci-layout:{}:v1", dir.display())
    };
    let extra = Layer::new()
        .file("extra", b"only in the bigger image")
        .tar();
    let small = layout("small", &[busybox_layer()]);
    let big = layout("big", &[busybox_layer(), extra]);
    executor(&[OsStr::new("pull"), OsStr::new(&small)]);
    executor(&[OsStr::new("pull"), OsStr::new(&big)]);
    let opts = inputs(tmp.path());
    let out_dir = tmp.path().join("bundle");
    let bundle = |image: &str| {
        executor(&[
            OsStr::new("bundle"),
            OsStr::new(image),
            OsStr::new("--context"),
            opts.context_file.as_os_str(),
            OsStr::new("--args"),
            opts.args_file.as_os_str(),
            OsStr::new("--output"),
            out_dir.as_os_str(),
        ])
    };
    let snapshots = || -> HashSet<String> {
        fs::read_dir(root.join("snapshots/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    // An overlay with too many layers for one page of mount options (another test, another
    // process on this host) makes prune keep everything while it is mounted: wait it out.
    let prune = || {
        for _ in 0..60 {
            let out = executor(&[OsStr::new("prune")]);
            if !out.contains("kept all snapshots") {
                return out;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        panic!("an overlay named by file descriptors stayed mounted for a minute");
    };
    bundle(&big);
    executor::snapshot::cleanup_rootfs(&out_dir).unwrap();
    fs::remove_dir_all(&out_dir).unwrap();
    bundle(&small);
    let all = snapshots();
    assert_eq!(all.len(), 2, "base and base+extra");

    // Both images stored: nothing goes.
    prune();
    assert_eq!(snapshots(), all);

    // The big image removed: its top snapshot goes, the shared base stays.
    executor(&[OsStr::new("rmi"), OsStr::new(&big)]);
    let out = prune();
    assert!(out.contains("removed 1 snapshots"), "{out}");
    let base = snapshots();
    assert_eq!(base.len(), 1);
    assert!(base.is_subset(&all));

    // The small image removed while its bundle is mounted: the base stays, and the
    // bundle's root file system still reads.
    executor(&[OsStr::new("rmi"), OsStr::new(&small)]);
    let out = prune();
    assert!(
        out.contains("removed 0 snapshots (1 kept only for mounted"),
        "{out}"
    );
    assert_eq!(snapshots(), base);
    assert!(out_dir.join("rootfs/bin/busybox").is_file());

    // Unmounted: now it goes, and with it every blob.
    executor::snapshot::cleanup_rootfs(&out_dir).unwrap();
    let out = prune();
    assert!(out.contains("removed 1 snapshots"), "{out}");
    assert!(snapshots().is_empty());
    assert_eq!(fs::read_dir(root.join("blobs/sha256")).unwrap().count(), 0);
}
