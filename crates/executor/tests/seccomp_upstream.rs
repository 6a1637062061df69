//! The built-in seccomp profile against the upstream one it follows: Moby's default
//! profile as Debian ships it (`golang-github-docker-docker-dev`,
//! `profiles/seccomp/default.json`; `tests/install-deps.sh` puts that one file at
//! [`UPSTREAM`]). Both are resolved with the same loader for many capability sets and two
//! architectures, and must give the same filter but for the documented difference: the
//! built-in profile does not allow `io_uring_*`.

use executor::capabilities::{ALL_CAPABILITIES, DEFAULT_CAPABILITIES};
use executor::seccomp::{KernelVersion, Profile, Target};
use oci_spec::runtime::{Arch, Capability, LinuxSeccomp};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;

/// Where `tests/install-deps.sh` puts Moby's default profile.
const UPSTREAM: &str = "/usr/local/share/executor-tests/moby-seccomp-default.json";

/// What the built-in profile leaves out of upstream's allow list.
const NOT_ALLOWED_HERE: [&str; 3] = ["io_uring_enter", "io_uring_register", "io_uring_setup"];

/// Each rule of a filter flattened to one line per system call.
fn flatten(filter: &LinuxSeccomp) -> BTreeSet<String> {
    filter
        .syscalls()
        .iter()
        .flatten()
        .flat_map(|rule| {
            rule.names().iter().map(move |name| {
                format!(
                    "{name} {:?} errno={:?} args={:?}",
                    rule.action(),
                    rule.errno_ret(),
                    rule.args()
                )
            })
        })
        .collect()
}

#[test]
fn the_built_in_profile_is_mobys_default_without_io_uring() {
    let upstream = Profile::load(Path::new(UPSTREAM)).unwrap_or_else(|e| {
        panic!("{e} (tests/install-deps.sh installs Moby's default profile there)")
    });
    let ours = Profile::default_profile();
    let mut cap_sets: Vec<HashSet<Capability>> = vec![
        HashSet::new(),
        DEFAULT_CAPABILITIES.into_iter().collect(),
        ALL_CAPABILITIES.into_iter().collect(),
    ];
    cap_sets.extend(ALL_CAPABILITIES.iter().map(|c| HashSet::from([*c])));
    let targets = [
        Target {
            go_arch: "amd64".into(),
            native: Arch::ScmpArchX86_64,
            kernel: Some(KernelVersion { major: 6, minor: 1 }),
        },
        Target {
            go_arch: "arm64".into(),
            native: Arch::ScmpArchAarch64,
            kernel: Some(KernelVersion { major: 4, minor: 4 }),
        },
        Target::host(),
    ];
    let mut compared = 0;
    for target in &targets {
        for caps in &cap_sets {
            let theirs = upstream.resolve(caps, target).unwrap();
            let mine = ours.resolve(caps, target).unwrap();
            assert_eq!(mine.default_action(), theirs.default_action());
            assert_eq!(mine.architectures(), theirs.architectures(), "{target:?}");
            let (mine, theirs) = (flatten(&mine), flatten(&theirs));
            let extra: Vec<_> = mine.difference(&theirs).collect();
            let missing: Vec<_> = theirs.difference(&mine).collect();
            assert!(extra.is_empty(), "allowed here, not upstream: {extra:?}");
            assert!(
                missing.iter().all(|m| NOT_ALLOWED_HERE
                    .iter()
                    .any(|n| m.starts_with(&format!("{n} ")))),
                "upstream has rules the built-in profile lacks: {missing:?} ({caps:?}, {target:?})"
            );
            // Upstream still allows io_uring; when it stops, this list and the docs change.
            assert_eq!(missing.len(), NOT_ALLOWED_HERE.len(), "{missing:?}");
            compared += 1;
        }
    }
    assert_eq!(compared, targets.len() * cap_sets.len());
}
