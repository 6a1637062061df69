//! Unit tests of the seccomp profiles: the built-in one parses and refuses by default, clone flags, capabilities widening the filter, conditions, the OCI form, bad profiles, the libcontainer dialect.

use super::*;

fn amd64() -> Target {
    Target {
        go_arch: "amd64".to_owned(),
        native: Arch::ScmpArchX86_64,
        kernel: Some(KernelVersion { major: 6, minor: 1 }),
    }
}

fn allowed(filter: &LinuxSeccomp) -> HashSet<String> {
    filter
        .syscalls()
        .iter()
        .flatten()
        .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
        .flat_map(|s| s.names().iter().cloned())
        .collect()
}

#[test]
fn the_default_profile_parses_and_refuses_by_default() {
    let profile = Profile::default_profile();
    let filter = profile.resolve(&HashSet::new(), &amd64()).unwrap();
    assert_eq!(filter.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(filter.default_errno_ret(), Some(libc::EPERM as u32));
    assert_eq!(
        filter.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
    );
    let allowed = allowed(&filter);
    assert!(allowed.contains("read") && allowed.contains("execve"));
    for refused in [
        "unshare",
        "setns",
        "mount",
        "umount2",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "move_mount",
        "open_tree",
        "mount_setattr",
        "pivot_root",
        "userfaultfd",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "init_module",
        "finit_module",
        "kexec_load",
        "kexec_file_load",
        "io_uring_setup",
        "clone3",
        "personality",
        "sethostname",
    ] {
        assert!(!allowed.contains(refused), "{refused} is allowed");
    }
}

#[test]
fn clone_is_allowed_only_without_namespace_flags_and_clone3_answers_enosys() {
    let filter = Profile::default_profile()
        .resolve(&HashSet::new(), &amd64())
        .unwrap();
    let rules = filter.syscalls().as_ref().unwrap();
    let clone: Vec<_> = rules
        .iter()
        .filter(|r| r.names().iter().any(|n| n == "clone"))
        .collect();
    assert_eq!(clone.len(), 1, "{clone:?}");
    let arg = clone[0].args().as_ref().unwrap()[0];
    assert_eq!((arg.index(), arg.value()), (0, 0x7E02_0000));
    let clone3: Vec<_> = rules
        .iter()
        .filter(|r| r.names().iter().any(|n| n == "clone3"))
        .collect();
    assert_eq!(clone3.len(), 1);
    assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(clone3[0].errno_ret(), Some(libc::ENOSYS as u32));
    let personality: HashSet<u64> = rules
        .iter()
        .filter(|r| r.names().iter().any(|n| n == "personality"))
        .map(|r| r.args().as_ref().unwrap()[0].value())
        .collect();
    assert_eq!(
        personality,
        HashSet::from([0, 8, 0x20000, 0x20008, 0xffff_ffff])
    );
}

#[test]
fn capabilities_widen_the_filter_as_docker_does() {
    let profile = Profile::default_profile();
    let admin = profile
        .resolve(&HashSet::from([Capability::SysAdmin]), &amd64())
        .unwrap();
    let allowed_admin = allowed(&admin);
    for call in ["mount", "unshare", "setns", "clone", "clone3", "bpf"] {
        assert!(allowed_admin.contains(call), "{call} with CAP_SYS_ADMIN");
    }
    // With CAP_SYS_ADMIN neither the flag-checking clone rule nor clone3's ENOSYS apply.
    assert!(
        !admin
            .syscalls()
            .iter()
            .flatten()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActErrno)
    );
    let ptrace = profile
        .resolve(&HashSet::from([Capability::SysPtrace]), &amd64())
        .unwrap();
    assert!(allowed(&ptrace).contains("process_vm_readv"));
    assert!(!allowed(&ptrace).contains("mount"));
}

#[test]
fn rules_follow_architecture_and_kernel_conditions() {
    let profile = Profile::default_profile();
    let amd = allowed(&profile.resolve(&HashSet::new(), &amd64()).unwrap());
    assert!(amd.contains("arch_prctl") && amd.contains("ptrace"));
    assert!(!amd.contains("arm_fadvise64_64"));
    let mut old = amd64();
    old.kernel = Some(KernelVersion { major: 4, minor: 4 });
    assert!(!allowed(&profile.resolve(&HashSet::new(), &old).unwrap()).contains("ptrace"));
    let arm = Target {
        go_arch: "arm64".to_owned(),
        native: Arch::ScmpArchAarch64,
        kernel: None,
    };
    let filter = profile.resolve(&HashSet::new(), &arm).unwrap();
    assert_eq!(
        filter.architectures().as_deref(),
        Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
    );
    assert!(allowed(&filter).contains("arm_fadvise64_64"));
    assert!(!allowed(&filter).contains("arch_prctl"));
}

#[test]
fn an_oci_form_profile_is_read_as_is() {
    let text = r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
        "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#;
    let filter = Profile::parse(Path::new("p.json"), text)
        .unwrap()
        .resolve(&HashSet::new(), &amd64())
        .unwrap();
    assert_eq!(filter.default_action(), LinuxSeccompAction::ScmpActAllow);
    assert_eq!(
        filter.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86_64][..])
    );
    let rule = &filter.syscalls().as_ref().unwrap()[0];
    assert_eq!(rule.names(), &["mkdir".to_owned()]);
    assert_eq!(rule.errno_ret(), Some(13));
}

#[test]
fn bad_profiles_are_refused_naming_the_file_and_what_is_wrong() {
    for (text, wanted) in [
        ("{", "EOF"),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","sycalls":[]}"#,
            "sycalls",
        ),
        (r#"{"defaultAction":"SCMP_ACT_NOPE"}"#, "SCMP_ACT_NOPE"),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"action":"SCMP_ACT_ALLOW"}]}"#,
            "syscalls[0]: no `names`",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_NOPE"]}}]}"#,
            "CAP_NOPE",
        ),
    ] {
        let e = Profile::parse(Path::new("/etc/p.json"), text)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid seccomp profile /etc/p.json: ") && e.contains(wanted),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
    let e = Profile::load(Path::new("/nonexistent/p.json")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read seccomp profile /nonexistent/p.json"
    );
}

#[test]
fn the_libcontainer_dialect_swaps_mask_and_datum() {
    let filter = Profile::default_profile()
        .resolve(&HashSet::new(), &amd64())
        .unwrap();
    let clone_arg = |f: &LinuxSeccomp| {
        f.syscalls()
            .iter()
            .flatten()
            .find(|r| r.names().iter().any(|n| n == "clone") && r.args().is_some())
            .map(|r| r.args().as_ref().unwrap()[0])
            .unwrap()
    };
    let oci = clone_arg(&Dialect::Oci.adapt(filter.clone()));
    assert_eq!((oci.value(), oci.value_two()), (0x7E02_0000, None));
    let youki = clone_arg(&Dialect::Libcontainer.adapt(filter.clone()));
    assert_eq!((youki.value(), youki.value_two()), (0, Some(0x7E02_0000)));
    // Other conditions (personality's SCMP_CMP_EQ) stay as they are.
    assert_eq!(
        Dialect::Libcontainer
            .adapt(filter.clone())
            .syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names() == &["personality".to_owned()])
            .count(),
        5
    );
}

#[test]
fn kernel_versions_parse_from_uname_releases() {
    assert_eq!(
        KernelVersion::parse("6.1.0-18-amd64"),
        Some(KernelVersion { major: 6, minor: 1 })
    );
    assert_eq!(
        KernelVersion::parse("5"),
        Some(KernelVersion { major: 5, minor: 0 })
    );
    assert_eq!(KernelVersion::parse("x"), None);
}
