//! Issue 13, confinement proven from inside the container, on every runtime (embedded,
//! runc, crun, youki): the static probe of `tests/probe/confinement.c` runs as the
//! runner, tries each operation the default confinement refuses (user namespaces through
//! `clone`, `clone3` and `unshare`, the old and new mount API, also inside a new user
//! namespace, `userfaultfd`, `bpf`, `perf_event_open`, the keyring, modules, kexec,
//! io_uring, ptrace and signals to a host process, writes to `/proc/sys`, `/sys` and
//! `/proc/sysrq-trigger`, raw and packet sockets, `mknod` of a block device, host and
//! domain name changes) and the ordinary work a runner needs (threads, fork and exec,
//! loopback TCP, `/out` writes, HTTP to the host's 127.0.0.1 with `--network host`), and
//! prints what the kernel answered. Each test asserts the errno it saw.
//!
//! Every runtime also runs the probe unconfined (`--no-seccomp`) as a control: what the
//! seccomp filter alone refuses must then succeed, so a filter that was silently not
//! installed fails the test. `--cap-add`, `--seccomp-profile` and `--cpus` are checked
//! the same way, from inside.

use integration_tests::{Entry, ImageSpec, LayerSpec, build_probe, executor_bin, parse_report};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `CapEff` of podman's 11 default capabilities (CHOWN, DAC_OVERRIDE, FOWNER, FSETID,
/// KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, SETFCAP).
const DEFAULT_CAP_MASK: &str = "00000000800405fb";

/// What the probe must see under the default confinement, on every runtime.
const CONFINED: &[(&str, &str)] = &[
    ("clone_newuser", "EPERM"),
    ("clone_newns", "EPERM"),
    ("clone_newnet", "EPERM"),
    ("clone_newpid", "EPERM"),
    ("clone3", "ENOSYS"),
    ("unshare_newuser", "EPERM"),
    ("unshare_newns", "EPERM"),
    ("setns", "EPERM"),
    ("mount", "EPERM"),
    ("umount2", "EPERM"),
    ("pivot_root", "EPERM"),
    ("fsopen", "EPERM"),
    ("fsconfig", "EPERM"),
    ("fsmount", "EPERM"),
    ("fspick", "EPERM"),
    ("open_tree", "EPERM"),
    ("move_mount", "EPERM"),
    ("mount_setattr", "EPERM"),
    ("userns_fsopen", "EPERM"),
    ("userfaultfd", "EPERM"),
    ("bpf", "EPERM"),
    ("perf_event_open", "EPERM"),
    ("keyctl", "EPERM"),
    ("add_key", "EPERM"),
    ("request_key", "EPERM"),
    ("init_module", "EPERM"),
    ("finit_module", "EPERM"),
    ("kexec_load", "EPERM"),
    ("io_uring_setup", "EPERM"),
    ("personality_query", "ok"),
    ("personality_read_implies_exec", "EPERM"),
    ("ptrace_host", "ESRCH"),
    ("kill_host", "ESRCH"),
    ("write_proc_sys", "EROFS"),
    ("write_sys", "EROFS"),
    ("raw_socket", "EPERM"),
    ("packet_socket", "EPERM"),
    ("mknod_block", "EPERM"),
    ("mknod_char_null", "EPERM"),
    ("open_block", "not tried"),
    ("sethostname", "EPERM"),
    ("setdomainname", "EPERM"),
    ("thread", "ok"),
    ("fork_exec", "ok"),
    ("loopback_tcp", "ok"),
    ("out_write", "ok"),
    ("status_NoNewPrivs", "1"),
    ("status_Seccomp", "2"),
    ("status_CapEff", DEFAULT_CAP_MASK),
];

/// [`CONFINED`], and `/proc/sysrq-trigger` read-only where the kernel has one (some
/// kernels, as this machine's, are built without magic SysRq).
fn confined() -> Vec<(&'static str, &'static str)> {
    let mut wanted = CONFINED.to_vec();
    wanted.push((
        "write_sysrq_trigger",
        if Path::new("/proc/sysrq-trigger").exists() {
            "EROFS"
        } else {
            "ENOENT"
        },
    ));
    wanted
}

/// What the seccomp filter alone refuses: with `--no-seccomp` the kernel lets each of these
/// through (the container is root in its own namespaces; unprivileged user namespaces are
/// on), so the probe must see them succeed in the control run.
const SECCOMP_ONLY: &[&str] = &[
    "clone_newuser",
    "clone3",
    "unshare_newuser",
    "userns_fsopen",
    "keyctl",
    "add_key",
    "personality_read_implies_exec",
];

struct Probe {
    work: tempfile::TempDir,
    root: tempfile::TempDir,
    image: String,
}

impl Probe {
    fn new() -> Probe {
        let work = tempfile::Builder::new()
            .prefix("probe-")
            .tempdir_in("/dev/shm")
            .unwrap();
        let probe = build_probe(Path::new(env!("CARGO_TARGET_TMPDIR"))).unwrap();
        let mut spec = ImageSpec::host(vec![LayerSpec {
            entries: vec![
                Entry::executable("probe", std::fs::read(probe).unwrap()),
                Entry::Dir {
                    path: "tmp".to_owned(),
                    mode: 0o1777,
                },
            ],
            compression: integration_tests::Compression::Gzip,
        }]);
        spec.config["Entrypoint"] = json!(["/probe"]);
        spec.config["Cmd"] = json!([]);
        let layout = work.path().join("layout");
        integration_tests::write_image(&layout, "probe", &spec).unwrap();
        let image = format!("oci-layout:{}:probe", layout.display());
        std::fs::write(
            work.path().join("context.yaml"),
            integration_tests::RUNNER_CONTEXT,
        )
        .unwrap();
        std::fs::write(work.path().join("args.yaml"), "probe: {}\n").unwrap();
        Probe {
            work,
            root: tempfile::Builder::new()
                .prefix("probe-root-")
                .tempdir_in("/dev/shm")
                .unwrap(),
            image,
        }
    }

    /// Runs the probe on `runtime` with `extra` flags; what it printed, as a map.
    fn run(&self, runtime: &str, extra: &[&str]) -> BTreeMap<String, String> {
        let out = self.work.path().join(format!("out-{}", rand_suffix()));
        let output = Command::new(executor_bin().unwrap())
            .env_remove("EXECUTOR_ROOT")
            .env_remove("RUST_LOG")
            .arg("--root")
            .arg(self.root.path())
            .args(["run", &self.image, "--runtime", runtime])
            .arg("--context")
            .arg(self.work.path().join("context.yaml"))
            .arg("--args")
            .arg(self.work.path().join("args.yaml"))
            .arg("--output-dir")
            .arg(&out)
            .args(["--env", &format!("PROBE_HOST_PID={}", std::process::id())])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{runtime} {extra:?}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let seen = parse_report(&stdout).unwrap();
        if seen.get("out_write").map(String::as_str) == Some("ok") {
            assert_eq!(
                std::fs::read_to_string(out.join("probe.txt")).unwrap(),
                "written by the probe\n",
                "the /out artifact came back"
            );
        }
        seen
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap()
}

/// The differences between what the probe saw and what it should have.
fn mismatches(seen: &BTreeMap<String, String>, wanted: &[(&str, &str)]) -> Vec<String> {
    wanted
        .iter()
        .filter(|(k, v)| seen.get(*k).map_or("not tried", String::as_str) != *v)
        .map(|(k, v)| format!("{k}: wanted {v}, saw {:?}", seen.get(*k)))
        .collect()
}

/// The default confinement and the unconfined control on one runtime.
fn check_runtime(runtime: &str) {
    let probe = Probe::new();
    let host_name = hostname();
    let seen = probe.run(runtime, &[]);
    eprintln!("{runtime} confined: {seen:?}");
    let wrong = mismatches(&seen, &confined());
    assert!(wrong.is_empty(), "{runtime}: {wrong:#?}");
    let pids: u32 = seen["visible_pids"].parse().unwrap();
    assert!(pids <= 2, "{runtime}: the container sees {pids} processes");
    assert_eq!(hostname(), host_name, "the host's name changed");

    let control = probe.run(runtime, &["--no-seccomp"]);
    eprintln!("{runtime} unconfined: {control:?}");
    for name in SECCOMP_ONLY {
        assert_eq!(
            control.get(*name).map(String::as_str),
            Some("ok"),
            "{runtime}: {name} without seccomp: the probe cannot tell the filter is there"
        );
    }
    assert_eq!(control.get("status_Seccomp").map(String::as_str), Some("0"));
    // What capabilities and read-only mounts refuse stays refused without seccomp.
    let still: Vec<(&str, &str)> = confined()
        .into_iter()
        .filter(|(k, _)| {
            [
                "write_proc_sys",
                "write_sysrq_trigger",
                "write_sys",
                "raw_socket",
                "mknod_block",
                "sethostname",
                "ptrace_host",
                "thread",
                "fork_exec",
                "loopback_tcp",
                "out_write",
            ]
            .contains(k)
        })
        .collect();
    let wrong = mismatches(&control, &still);
    assert!(wrong.is_empty(), "{runtime} unconfined: {wrong:#?}");
    assert_eq!(hostname(), host_name, "the host's name changed");
}

#[test]
fn the_probe_is_confined_on_the_embedded_runtime() {
    check_runtime("embedded");
}

#[test]
fn the_probe_is_confined_on_runc() {
    check_runtime("runc");
}

#[test]
fn the_probe_is_confined_on_crun() {
    check_runtime("crun");
}

#[test]
fn the_probe_is_confined_on_youki() {
    check_runtime("youki");
}

/// A one-request HTTP server on the host's loopback; returns its port and the token its
/// answer carries.
fn serve_once() -> (u16, String, std::thread::JoinHandle<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let token = format!("token-{}", rand_suffix());
    let body = token.clone();
    let server = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let Ok((mut conn, _)) = listener.accept() else {
            return false;
        };
        let mut request = [0u8; 1024];
        let n = conn.read(&mut request).unwrap_or(0);
        let ok = request[..n].starts_with(b"GET /probe ");
        let _ = write!(
            conn,
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        ok
    });
    (port, token, server)
}

#[test]
fn runner_work_reaches_the_hosts_loopback_with_host_networking_on_every_runtime() {
    let probe = Probe::new();
    for runtime in ["embedded", "runc", "crun", "youki"] {
        let (port, token, server) = serve_once();
        let seen = probe.run(
            runtime,
            &[
                "--network",
                "host",
                "--env",
                &format!("PROBE_HTTP_PORT={port}"),
                "--env",
                &format!("PROBE_HTTP_TOKEN={token}"),
            ],
        );
        assert_eq!(
            seen.get("http_host").map(String::as_str),
            Some("ok"),
            "{runtime}: {seen:?}"
        );
        assert!(
            server.join().unwrap(),
            "{runtime}: the request was not the probe's"
        );
        // Host networking opens the network, not the rest.
        let wrong = mismatches(&seen, &confined());
        assert!(wrong.is_empty(), "{runtime} with host network: {wrong:#?}");
    }
}

#[test]
fn added_capabilities_widen_the_filter_and_the_device_cgroup_still_holds() {
    let probe = Probe::new();
    let mut wrong_all = Vec::new();
    for runtime in ["embedded", "runc", "crun", "youki"] {
        let seen = probe.run(
            runtime,
            &[
                "--cap-add",
                "NET_RAW",
                "--cap-add",
                "mknod",
                "--cap-drop",
                "KILL",
            ],
        );
        let wrong = mismatches(
            &seen,
            &[
                ("raw_socket", "ok"),
                ("mknod_char_null", "ok"),
                // CAP_MKNOD makes the node, but the device cgroup refuses to open it.
                ("mknod_block", "ok"),
                ("open_block", "EPERM"),
                // KILL (bit 5) dropped; NET_RAW (13) and MKNOD (27) added.
                ("status_CapEff", "00000000880425db"),
                ("clone_newuser", "EPERM"),
            ],
        );
        wrong_all.extend(wrong.into_iter().map(|w| format!("{runtime}: {w}")));
        // CAP_SYS_ADMIN opens namespaces and mounts in the filter, as in Docker; the
        // container's own mount namespace is what a mount then changes.
        let admin = probe.run(runtime, &["--cap-add", "SYS_ADMIN"]);
        let wrong = mismatches(
            &admin,
            &[
                ("unshare_newns", "ok"),
                ("clone_newns", "ok"),
                ("mount", "ok"),
                ("keyctl", "EPERM"),
                ("userfaultfd", "EPERM"),
            ],
        );
        wrong_all.extend(
            wrong
                .into_iter()
                .map(|w| format!("{runtime} with SYS_ADMIN: {w}")),
        );
    }
    assert!(wrong_all.is_empty(), "{wrong_all:#?}");
}

#[test]
fn a_custom_seccomp_profile_replaces_the_default_one() {
    let probe = Probe::new();
    let profile: PathBuf = probe.work.path().join("profile.json");
    std::fs::write(
        &profile,
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
        })
        .to_string(),
    )
    .unwrap();
    let flag = format!("seccomp={}", profile.display());
    for runtime in ["embedded", "runc"] {
        for args in [
            vec!["--seccomp-profile", profile.to_str().unwrap()],
            vec!["--security-opt", &flag],
        ] {
            let seen = probe.run(runtime, &args);
            let wrong = mismatches(
                &seen,
                &[
                    ("keyctl", "EACCES"),
                    ("clone_newuser", "ok"),
                    ("status_Seccomp", "2"),
                ],
            );
            assert!(wrong.is_empty(), "{runtime} {args:?}: {wrong:#?}");
        }
    }
}

#[test]
fn cpus_set_a_cfs_quota_the_container_sees() {
    let probe = Probe::new();
    for runtime in ["embedded", "runc", "crun", "youki"] {
        let seen = probe.run(runtime, &["--cpus", "0.5"]);
        let quota = seen.get("cpu_quota").map(String::as_str);
        // cgroup v1 shows the quota alone, v2 `quota period`.
        assert!(
            matches!(quota, Some("50000") | Some("50000 100000")),
            "{runtime}: cpu quota {quota:?}"
        );
        let unlimited = probe.run(runtime, &[]);
        let quota = unlimited.get("cpu_quota").map(String::as_str);
        assert!(
            matches!(quota, Some("-1") | Some("max 100000")),
            "{runtime}: cpu quota without --cpus {quota:?}"
        );
    }
}
