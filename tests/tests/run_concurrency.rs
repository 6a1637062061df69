//! `--max-concurrent-runs`: many `executor run`s started at once with one root
//! never have more containers alive than the limit, the others wait (and say so),
//! and all of them succeed.

use integration_tests::{
    Compression, ImageSpec, RUNNER_CONTEXT, Registry, busybox_layer, executor_bin, push_layout,
    write_image,
};
use std::process::{Child, Command, Stdio};

/// Each runner marks its start and end in a shared host file, sleeping between.
const SCRIPT: &str = "echo start >> /marks/log; sleep 2; echo end >> /marks/log";

const LIMIT: usize = 2;
const RUNS: usize = 6;

#[test]
fn concurrent_runs_stay_within_the_limit() {
    let registry = Registry::start().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("executor-concurrency-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let d = dir.path();
    let mut spec = ImageSpec::host(vec![busybox_layer(Compression::Gzip).unwrap()]);
    spec.config["Cmd"] = serde_json::json!(["/bin/sh", "-c", SCRIPT]);
    write_image(&d.join("layout"), "v1", &spec).unwrap();
    push_layout(
        &d.join("layout"),
        "v1",
        &registry,
        "runners/sleepy:v1",
        integration_tests::ManifestFormat::Oci,
        None,
    )
    .unwrap();
    std::fs::write(d.join("context.yaml"), RUNNER_CONTEXT).unwrap();
    std::fs::write(d.join("args.yaml"), "{}\n").unwrap();
    let marks = d.join("marks");
    std::fs::create_dir(&marks).unwrap();
    let image = format!("{}/runners/sleepy:v1", registry.addr());
    let run = |extra: &[&str]| -> Command {
        let mut cmd = Command::new(executor_bin().unwrap());
        cmd.env_remove("EXECUTOR_ROOT")
            .arg("--root")
            .arg(d.join("root"))
            .args(["run", &image, "--runtime", "runc"])
            .args(["--insecure-registry", registry.addr()])
            .arg("--context")
            .arg(d.join("context.yaml"))
            .arg("--args")
            .arg(d.join("args.yaml"))
            .arg("--mount")
            .arg(format!("{}:/marks", marks.display()))
            .args(extra);
        cmd
    };
    // Pull and unpack once, so that the concurrent runs start together.
    let output = run(&["--pull", "missing"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    std::fs::remove_file(marks.join("log")).unwrap();

    // The limit from the environment, as a pod spec would set it.
    let children: Vec<Child> = (0..RUNS)
        .map(|_| {
            run(&["--pull", "never"])
                .env("EXECUTOR_MAX_CONCURRENT_RUNS", LIMIT.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut waited = 0;
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("waiting for a run slot") {
            waited += 1;
        }
    }
    // Each run holds its slot for at least the 2 s sleep and all start within far
    // less, so some found both slots taken (loosely: a loaded machine may stagger
    // the starts).
    assert!(waited >= 1, "no run waited for a slot");

    let log = std::fs::read_to_string(marks.join("log")).unwrap();
    let (mut alive, mut most, mut starts) = (0usize, 0usize, 0usize);
    for line in log.lines() {
        match line {
            "start" => {
                alive += 1;
                starts += 1;
                most = most.max(alive);
            }
            "end" => alive -= 1,
            other => panic!("unexpected mark {other:?}"),
        }
    }
    assert_eq!(starts, RUNS, "{log}");
    assert_eq!(alive, 0, "{log}");
    assert!(most <= LIMIT, "{most} runners alive at once:\n{log}");
    assert!(
        std::fs::read_dir(d.join("root/runs"))
            .unwrap()
            .next()
            .is_none(),
        "run directories left"
    );
}

/// A run waiting for a slot (here held by another process) ends on SIGTERM: exit
/// 125, the interruption named, no run directory made.
#[test]
fn sigterm_ends_the_wait_for_a_slot() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::Builder::new()
        .prefix("executor-slot-wait-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("run-slots")).unwrap();
    // The one slot, taken as another executor would hold it.
    let slot = root.join("run-slots/0");
    std::fs::write(&slot, "").unwrap();
    let holder = KillOnDrop(
        Command::new("flock")
            .arg("--no-fork")
            .arg(&slot)
            .args(["sleep", "120"])
            .spawn()
            .unwrap(),
    );
    // flock has the lock once the file is locked by someone: wait for that.
    let file = std::fs::File::open(&slot).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match nix::fcntl::Flock::lock(
            file.try_clone().unwrap(),
            nix::fcntl::FlockArg::LockExclusiveNonblock,
        ) {
            Ok(lock) => drop(lock),
            Err(_) => break,
        }
        assert!(std::time::Instant::now() < deadline, "flock never locked");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let mut child = Command::new(executor_bin().unwrap())
        .env_remove("EXECUTOR_ROOT")
        .arg("--root")
        .arg(&root)
        .args(["run", "--max-concurrent-runs", "1", "--bundle"])
        .arg(dir.path().join("no-bundle"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("waiting for a run slot") {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no wait logged: {seen}"
        );
        seen.push_str(&line);
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    drop(holder);
    assert_eq!(status.code(), Some(125), "{seen}{rest}");
    assert!(
        rest.contains("interrupted before the runner started"),
        "{rest}"
    );
    let runs = std::fs::read_dir(root.join("runs")).unwrap().count();
    assert_eq!(runs, 0, "a run directory was made");
}

/// Kills and reaps the child when dropped, also when an assertion fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
