//! Test bundles for the runtime tests: a rootfs with a static busybox and a minimal
//! config.json built with oci-spec (terminal false), in a temp dir on /dev/shm.
#![allow(dead_code)]

use executor::runtime::RuntimeKind;
use oci_spec::runtime::{MountBuilder, Spec};
use std::path::{Path, PathBuf};

/// Applets the test commands use.
const APPLETS: &[&str] = &[
    "sh", "sleep", "echo", "cat", "true", "false", "kill", "mkdir",
];

/// A bundle: `dir/config.json`, `dir/rootfs`, `dir/out` (bind-mounted at /out) and
/// `dir/status` (bind-mounted at /status, `RUNNER_STATUS_PATH=/status/status.json`).
pub struct TestBundle {
    pub dir: tempfile::TempDir,
}

impl TestBundle {
    /// A bundle whose process is `sh -c SCRIPT`.
    pub fn shell(script: &str) -> Self {
        Self::with_args(&["/bin/sh", "-c", script])
    }

    /// A bundle whose process runs `args`.
    pub fn with_args(args: &[&str]) -> Self {
        let dir = scratch_dir();
        let rootfs = dir.path().join("rootfs");
        for sub in ["bin", "proc", "dev", "sys", "tmp", "out", "status"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        for sub in ["out", "status"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let mut spec = Spec::default();
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        process.set_terminal(Some(false));
        let mut env = process.env().clone().unwrap_or_default();
        env.push("RUNNER_STATUS_PATH=/status/status.json".into());
        process.set_env(Some(env));
        spec.set_process(Some(process));
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for sub in ["out", "status"] {
            mounts.push(
                MountBuilder::default()
                    .destination(format!("/{sub}"))
                    .typ("bind")
                    .source(dir.path().join(sub))
                    .options(vec!["rbind".into(), "rw".into()])
                    .build()
                    .unwrap(),
            );
        }
        spec.set_mounts(Some(mounts));
        spec.save(dir.path().join("config.json")).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A temp dir on /dev/shm (creating files on / is slow and erratic here).
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("executor-test-")
        .tempdir_in("/dev/shm")
        .unwrap()
}

/// The embedded runtime, running the executor binary built for these tests.
pub fn embedded() -> RuntimeKind {
    RuntimeKind::Embedded(PathBuf::from(env!("CARGO_BIN_EXE_executor")))
}

/// Whether crun can run here (it is installed).
pub fn have_crun() -> bool {
    std::process::Command::new("crun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Mount points under `dir` in /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    executor::runs::mounts_under(dir)
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Live processes whose command line mentions `needle` (zombies excluded).
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
                && process_alive(*pid)
        })
        .collect()
}

/// Polls `cond` every 50ms for up to 60s (generous: the machine is loaded).
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Builds an OCI image layout at `layout` with tag `t`: a static busybox (with the
/// applets the tests use) whose command is `sh -c SCRIPT`. Uses Debian's umoci.
pub fn build_image(layout: &Path, script: &str) {
    let umoci = |args: &[&str]| {
        let out = std::process::Command::new("umoci")
            .args(args)
            .output()
            .expect("umoci is installed (tests/install-deps.sh)");
        assert!(out.status.success(), "umoci {args:?}: {out:?}");
    };
    let layout_arg = layout.to_str().unwrap();
    let image = format!("{layout_arg}:t");
    let work = scratch_dir();
    let unpacked = work.path().join("b");
    let unpacked_arg = unpacked.to_str().unwrap();
    umoci(&["init", "--layout", layout_arg]);
    umoci(&["new", "--image", &image]);
    umoci(&["unpack", "--image", &image, unpacked_arg]);
    let bin = unpacked.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    umoci(&["repack", "--image", &image, unpacked_arg]);
    umoci(&[
        "config",
        "--image",
        &image,
        "--config.cmd",
        "/bin/sh",
        "--config.cmd",
        "-c",
        "--config.cmd",
        script,
    ]);
}

/// A valid runner context (YAML): a dry run named `action-1` with a 10 minute
/// timeout; the file the integration tests' `RUNNER_CONTEXT` reads too.
pub const CONTEXT: &str = include_str!("../../../../tests/fixtures/runner-context.yaml");
