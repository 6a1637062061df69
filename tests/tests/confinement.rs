//! Issue 8, the runner's confinement: a busybox image started by `executor run`
//! runs a probe script that prints what it sees from inside, and the test checks
//! it: no host processes, read-only inputs (mode 0600) and kubeconfig, the 11
//! default capabilities only, `NoNewPrivs`, masked `/proc` paths, a read-only
//! `/proc/sys`, loopback only without host networking. From the host: the inputs
//! are gone after the run, and neither a registry password nor the args' content
//! ever reach the executor's output, even at `--log-level trace`.

use integration_tests::{
    Compression, Entry, ImageSpec, LayerSpec, ManifestFormat, Registry, RegistryConfig,
    busybox_layer, executor_bin, push_layout, write_image,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `CapEff` of the 11 default capabilities (CHOWN, DAC_OVERRIDE, FOWNER, FSETID,
/// KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, SETFCAP): podman's
/// default set, Docker's and containerd's without NET_RAW, MKNOD and AUDIT_WRITE.
const DEFAULT_CAP_MASK: &str = "00000000800405fb";

/// Masked paths runc and the executor hide, as the probe checks them.
const MASKED_FILES: [&str; 4] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
];
const MASKED_DIRS: [&str; 3] = ["/proc/acpi", "/proc/scsi", "/sys/firmware"];

/// Prints `key=value` lines about the container it runs in; never prints the args.
const PROBE: &str = r#"
b=/bin/busybox
echo "pid1=$($b cat /proc/1/comm)"
echo "pids=$($b ls /proc | $b grep -cE '^[0-9]+$')"
for f in /runner-context /runner-args; do
    if ( echo overwritten > "$f" ) 2>/dev/null; then echo "write$f=ok"; else echo "write$f=refused"; fi
    echo "mode$f=$($b stat -c %a "$f")"
done
if [ -n "$KUBECONFIG" ]; then
    echo "kubeconfig=$KUBECONFIG"
    if ( echo overwritten > "$KUBECONFIG" ) 2>/dev/null; then echo "write/kubeconfig=ok"; else echo "write/kubeconfig=refused"; fi
    echo "server=$($b grep -o 'http://[0-9.:]*' "$KUBECONFIG")"
fi
# Read-only /proc/sys: the hostname of the container's own UTS namespace, so a
# failure of confinement changes nothing on the host.
if ( echo probe > /proc/sys/kernel/hostname ) 2>/dev/null; then echo "write/proc/sys=ok"; else echo "write/proc/sys=refused"; fi
echo "capeff=$($b grep '^CapEff:' /proc/self/status | $b tr -d ' \t' | $b cut -d: -f2)"
echo "nonewprivs=$($b grep '^NoNewPrivs:' /proc/self/status | $b tr -d ' \t' | $b cut -d: -f2)"
for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do
    if [ -e "$f" ]; then echo "masked$f=$($b stat -c '%F %t:%T' "$f")"; fi
done
for d in /proc/acpi /proc/scsi /sys/firmware; do
    if [ -e "$d" ]; then echo "entries$d=$($b ls -A "$d" | $b wc -l)"; fi
done
echo "netdevs=$($b tail -n +3 /proc/net/dev | $b cut -d: -f1 | $b tr -d ' ' | $b tr '\n' ',')"
$b sleep "${PROBE_SLEEP:-0}"
"#;

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("confinement-")
        .tempdir_in("/dev/shm")
        .unwrap()
}

/// The probe image, written to `layout` under tag `probe`.
fn probe_image(layout: &Path) {
    let mut spec = ImageSpec::host(vec![
        busybox_layer(Compression::Gzip).unwrap(),
        LayerSpec {
            entries: vec![Entry::executable("probe.sh", PROBE)],
            compression: Compression::Gzip,
        },
    ]);
    spec.config["Entrypoint"] = json!(["/bin/sh", "/probe.sh"]);
    spec.config["Cmd"] = json!([]);
    write_image(layout, "probe", &spec).unwrap();
}

const ARGS_MARKER: &str = "args-content-7f3e9b2a-never-logged";

/// Writes the context and args; the args hold a marker that must not leak.
fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let context = dir.join("context.yaml");
    let args = dir.join("args.yaml");
    std::fs::write(
        &context,
        "name: probe\ndryRun: false\ntimeout: 10m\nplatform:\n  namespace: default\n  \
         serviceAccountName: runner\n  ownerRef:\n    apiVersion: core.capact.io/v1alpha1\n    \
         kind: Action\n    name: probe\n    uid: 0c8a3e51\n",
    )
    .unwrap();
    std::fs::write(&args, format!("workflow:\n  token: {ARGS_MARKER}\n")).unwrap();
    (context, args)
}

struct Probe {
    work: tempfile::TempDir,
    root: tempfile::TempDir,
    image: String,
}

impl Probe {
    fn new() -> Probe {
        let work = scratch();
        probe_image(&work.path().join("layout"));
        let image = format!("oci-layout:{}:probe", work.path().join("layout").display());
        Probe {
            work,
            root: scratch(),
            image,
        }
    }

    fn command(&self, runtime: &str, extra: &[&str]) -> Command {
        let (context, args) = inputs(self.work.path());
        let mut command = Command::new(executor_bin().unwrap());
        command
            .env_remove("EXECUTOR_ROOT")
            .env_remove("RUST_LOG")
            .arg("--root")
            .arg(self.root.path())
            .args(["run", &self.image, "--runtime", runtime])
            .arg("--context")
            .arg(context)
            .arg("--args")
            .arg(args)
            .args(extra)
            .stdin(Stdio::null());
        command
    }

    /// Runs the probe; returns what it printed as a map, and the whole output.
    fn run(&self, runtime: &str, extra: &[&str]) -> (BTreeMap<String, String>, Output) {
        let output = self.command(runtime, extra).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        let seen = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        (seen, output)
    }

    fn run_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root.path().join("runs"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    }
}

fn check_confined(runtime: &str, extra: &[&str]) {
    let probe = Probe::new();
    // A kubeconfig goes in read-only, as the inputs do.
    let kubeconfig = probe.work.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        json!({"apiVersion": "v1", "kind": "Config",
               "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:6443"}}],
               "users": [{"name": "u", "user": {}}],
               "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
               "current-context": "x"})
        .to_string(),
    )
    .unwrap();
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let mut extra = extra.to_vec();
    extra.extend(["--kubeconfig", &kubeconfig]);
    let (seen, _) = probe.run(runtime, &extra);
    eprintln!("{runtime} probe saw {seen:?}");
    let get = |key: &str| {
        seen.get(key)
            .unwrap_or_else(|| panic!("probe printed no {key}: {seen:?}"))
            .as_str()
    };
    // Its own PID namespace: the probe's shell is PID 1 and only a handful of
    // processes (the shell and its pipeline) exist, whatever runs on the host.
    assert_eq!(get("pid1"), "sh");
    let pids: usize = get("pids").parse().unwrap();
    assert!(pids <= 5, "the container sees {pids} processes");
    for input in ["/runner-context", "/runner-args"] {
        assert_eq!(
            get(&format!("write{input}")),
            "refused",
            "{input} is writable"
        );
        assert_eq!(get(&format!("mode{input}")), "600", "{input}");
    }
    assert_eq!(get("kubeconfig"), "/etc/runner/kubeconfig");
    assert_eq!(get("server"), "http://127.0.0.1:6443");
    assert_eq!(
        get("write/kubeconfig"),
        "refused",
        "the kubeconfig is writable"
    );
    assert_eq!(get("write/proc/sys"), "refused", "/proc/sys is writable");
    assert_eq!(get("capeff"), DEFAULT_CAP_MASK);
    assert_eq!(get("nonewprivs"), "1");
    // Masked files are /dev/null (character device 1:3); only those this kernel has.
    let mut checked = 0;
    for file in MASKED_FILES.iter().filter(|f| Path::new(f).exists()) {
        assert_eq!(
            get(&format!("masked{file}")),
            "character special file 1:3",
            "{file} is not masked"
        );
        checked += 1;
    }
    for dir in MASKED_DIRS.iter().filter(|d| Path::new(d).exists()) {
        assert_eq!(get(&format!("entries{dir}")), "0", "{dir} is not masked");
        checked += 1;
    }
    assert!(checked >= 2, "no masked path exists on this host to check");
    // Network none (asked for, or the default): loopback only.
    assert_eq!(get("netdevs"), "lo,");
    // After the run, nothing of it is left on the host: no run directory, so no
    // copy of the inputs.
    assert!(probe.run_dirs().is_empty(), "{:?}", probe.run_dirs());
    assert!(
        !tree_contains(probe.root.path(), ARGS_MARKER.as_bytes()),
        "a copy of the args is left under the executor root"
    );
}

#[test]
fn the_runner_is_confined_on_the_embedded_runtime() {
    check_confined("embedded", &["--network", "none"]);
}

#[test]
fn the_runner_is_confined_on_runc() {
    // No --network flag: none is the default.
    check_confined("runc", &[]);
}

#[test]
fn host_networking_shows_more_than_loopback() {
    // The counterpart of the loopback check: the probe does see host interfaces.
    let probe = Probe::new();
    let (seen, _) = probe.run("embedded", &["--network", "host"]);
    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    let host_devs = host.lines().skip(2).count();
    let netdevs = &seen["netdevs"];
    assert_eq!(
        netdevs.split(',').filter(|d| !d.is_empty()).count(),
        host_devs,
        "{netdevs}"
    );
}

#[test]
fn the_inputs_are_0600_on_the_host_while_the_runner_runs() {
    let probe = Probe::new();
    let mut child = probe
        .command(
            "embedded",
            &["--env", "PROBE_SLEEP=30", "--stop-timeout", "1s"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the run directory and its inputs, then check them from the host.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let inputs = loop {
        let found: Vec<PathBuf> = probe
            .run_dirs()
            .iter()
            .flat_map(|run| walk(run))
            .filter(|p| std::fs::read(p).is_ok_and(|d| contains(&d, ARGS_MARKER.as_bytes())))
            .collect();
        if !found.is_empty() {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no run directory with the args appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    use std::os::unix::fs::PermissionsExt;
    for input in &inputs {
        let mode = std::fs::metadata(input).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", input.display());
    }
    // Stopped by SIGTERM, the executor still removes the run.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    assert!(probe.run_dirs().is_empty(), "{:?}", probe.run_dirs());
    for input in &inputs {
        assert!(!input.exists(), "{} left behind", input.display());
    }
}

#[test]
fn secrets_never_reach_the_executor_output_at_any_log_level() {
    let (user, password) = ("prober", "registry-pw-5d1c0a77e4");
    let registry = Registry::start_with(&RegistryConfig {
        basic_auth: Some((user.into(), password.into())),
        ..RegistryConfig::default()
    })
    .unwrap();
    let probe = Probe::new();
    push_layout(
        &probe.work.path().join("layout"),
        "probe",
        &registry,
        "confinement/probe:v1",
        ManifestFormat::Oci,
        Some(&format!("{user}:{password}")),
    )
    .unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let authfile = probe.work.path().join("auth.json");
    std::fs::write(
        &authfile,
        json!({"auths": {registry.addr(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let image = format!("{}/confinement/probe:v1", registry.addr());
    let authfile = authfile.to_string_lossy().into_owned();
    let run = |format: &str, authfile: &str| {
        let (context, args) = inputs(probe.work.path());
        Command::new(executor_bin().unwrap())
            .env_remove("EXECUTOR_ROOT")
            .env_remove("RUST_LOG")
            .arg("--root")
            .arg(probe.root.path())
            .args(["--log-level", "trace", "--log-format", format])
            .args(["run", &image, "--pull", "always", "--runtime", "embedded"])
            .args([
                "--insecure-registry",
                registry.addr(),
                "--authfile",
                authfile,
            ])
            .arg("--context")
            .arg(context)
            .arg("--args")
            .arg(args)
            .args(["--status-reporter", "stdout"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let mut outputs = Vec::new();
    for format in ["text", "json"] {
        let output = run(format, &authfile);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        outputs.push(output);
    }
    // A refused login fails the run without echoing what was tried.
    let wrong = probe.work.path().join("wrong-auth.json");
    let wrong_password = "wrong-pw-93c2e1f07b";
    let wrong_auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{wrong_password}"));
    std::fs::write(
        &wrong,
        json!({"auths": {registry.addr(): {"auth": wrong_auth}}}).to_string(),
    )
    .unwrap();
    let refused = run("text", &wrong.to_string_lossy());
    assert_eq!(refused.status.code(), Some(125), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not authorized to pull"), "{stderr}");
    for secret in [wrong_password, wrong_auth.as_str()] {
        assert!(
            !contains(&refused.stderr, secret.as_bytes())
                && !contains(&refused.stdout, secret.as_bytes()),
            "a refused password appears in the executor's output"
        );
    }
    assert!(
        !contains(&refused.stderr, ARGS_MARKER.as_bytes()),
        "the args appear in a failed run's output"
    );
    for output in &outputs {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Trace logging really is on (the check below is not vacuous).
        assert!(
            stderr.contains("TRACE") || stderr.contains("\"level\":\"TRACE\""),
            "{stderr}"
        );
        for (what, secret) in [
            ("password", password),
            ("credentials", auth.as_str()),
            ("args", ARGS_MARKER),
        ] {
            for (stream, text) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
                assert!(
                    !contains(text, secret.as_bytes()),
                    "the {what} appear in the executor's {stream}"
                );
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir` (not following symlinks).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files
}

fn tree_contains(dir: &Path, needle: &[u8]) -> bool {
    walk(dir)
        .iter()
        .any(|f| std::fs::read(f).is_ok_and(|d| contains(&d, needle)))
}
