//! Seccomp profiles in the JSON format of Docker, Moby, containerd and podman, resolved
//! into the OCI `linux.seccomp` of one container process.
//!
//! A profile is an allow list: the `defaultAction` (`SCMP_ACT_ERRNO`) refuses every system
//! call that no rule allows. A rule may apply only to some architectures (`includes.arches`),
//! only when the process holds some capabilities (`includes.caps`), only when it does not
//! (`excludes.caps`), or only from some kernel version (`includes.minKernel`). Resolving a
//! profile for the capabilities the process gets is what lets `--cap-add SYS_ADMIN` widen
//! the filter the way it does in Docker and podman. The same loader reads the built-in
//! default ([`DEFAULT_PROFILE`]) and a `--seccomp-profile FILE`; a profile already in the
//! OCI form (`architectures`, rules without `includes`) is read by it as well.
//!
//! # The default profile
//!
//! [`DEFAULT_PROFILE`] (`seccomp/default.json`) is Moby's default profile, the one containerd
//! and podman ship too, rule for rule, with one difference: the three `io_uring_*` calls are
//! not allowed (as in Moby 25 and containerd 2), since io_uring has been a steady source of
//! kernel privilege escalations and no runner needs it. A test compares it with the upstream
//! file of Debian's `golang-github-docker-docker-dev`, for several capability sets.
//!
//! What it refuses without `CAP_SYS_ADMIN` (with `EPERM` unless said otherwise), and so what a
//! runner may not do: `clone` with any namespace flag (`CLONE_NEWUSER`, `CLONE_NEWNS`,
//! `CLONE_NEWNET`, `CLONE_NEWPID`, `CLONE_NEWIPC`, `CLONE_NEWUTS`, `CLONE_NEWCGROUP`),
//! `clone3` (`ENOSYS`, so that libc falls back to `clone`, whose flags the filter can see),
//! `unshare`, `setns`, `mount`, `umount2`, the new mount API (`fsopen`, `fsconfig`, `fsmount`,
//! `fspick`, `move_mount`, `open_tree`, `mount_setattr`: the path of CVE-2022-0185),
//! `pivot_root`, `bpf`, `perf_event_open`, `fanotify_init`, `name_to_handle_at`, `quotactl`,
//! `sethostname`, `setdomainname`, `syslog`, `lookup_dcookie`; always: `userfaultfd`, the
//! keyring (`add_key`, `keyctl`, `request_key`), module loading (`init_module`,
//! `finit_module`, `delete_module` without `CAP_SYS_MODULE`), `kexec_load`,
//! `kexec_file_load`, `reboot` (without `CAP_SYS_BOOT`), `swapon`/`swapoff`, clock changes
//! (without `CAP_SYS_TIME`), `iopl`/`ioperm` (without `CAP_SYS_RAWIO`), `io_uring_*`, and
//! `personality` with any value but the five Moby allows.

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscallBuilder,
};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The built-in default profile (Docker's JSON format); see the module documentation.
pub const DEFAULT_PROFILE: &str = include_str!("default.json");

/// Errors reading or resolving a seccomp profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile file cannot be read.
    #[error("cannot read seccomp profile {path}")]
    Read {
        /// The profile file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The profile is not a valid profile document (syntax, unknown field, bad value).
    #[error("invalid seccomp profile {path}: {reason}")]
    Invalid {
        /// The profile file, or `built-in default` for [`DEFAULT_PROFILE`].
        path: PathBuf,
        /// What is wrong, with line and column where the parser gives them.
        reason: String,
    },
    /// oci-spec refused a resolved rule.
    #[error("cannot build the seccomp filter")]
    Spec(#[from] OciSpecError),
}

/// A seccomp profile in Docker's JSON format (which also reads the OCI form).
///
/// Unknown fields are an error: a misspelt key in a security profile must not be
/// silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<Arch>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<Rule>>,
}

/// An architecture and the compatibility modes that come with it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Option<Vec<Arch>>,
}

/// One rule: an action for some system calls, maybe with argument conditions, that
/// applies where its `includes` hold and its `excludes` do not.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    names: Option<Vec<String>>,
    /// The old single-name form.
    #[serde(default)]
    name: Option<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

/// Conditions on the process and the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Filter {
    /// Go architecture names (`amd64`, `arm64`, `x86`, ...).
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    caps: Option<Vec<Capability>>,
    #[serde(default)]
    min_kernel: Option<KernelVersion>,
}

/// A kernel version, `major.minor`, as profiles and `uname -r` write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl KernelVersion {
    /// Parses the leading `major.minor` of a release string such as `6.1.0-18-amd64`.
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().unwrap_or("0").parse().unwrap_or(0);
        Some(KernelVersion { major, minor })
    }
}

impl<'de> Deserialize<'de> for KernelVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KernelVersion::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid kernel version {s:?}")))
    }
}

/// What a profile is resolved for: the host's architecture and kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The Go name of the architecture, as profiles' `arches` use it (`amd64`, `arm64`).
    pub go_arch: String,
    /// The native seccomp architecture (looked up in `archMap`).
    pub native: Arch,
    /// The running kernel's version, if known (rules with `minKernel` need it).
    pub kernel: Option<KernelVersion>,
}

impl Target {
    /// This host: the architecture the executor was built for and the running kernel.
    pub fn host() -> Target {
        let (go_arch, native) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", Arch::ScmpArchX86_64),
            "x86" => ("386", Arch::ScmpArchX86),
            "aarch64" => ("arm64", Arch::ScmpArchAarch64),
            "arm" => ("arm", Arch::ScmpArchArm),
            "s390x" => ("s390x", Arch::ScmpArchS390x),
            "powerpc64" => ("ppc64le", Arch::ScmpArchPpc64le),
            "riscv64" => ("riscv64", Arch::ScmpArchRiscv64),
            other => (other, Arch::ScmpArchNative),
        };
        let kernel = nix::sys::utsname::uname()
            .ok()
            .and_then(|u| u.release().to_str().and_then(KernelVersion::parse));
        Target {
            go_arch: go_arch.to_owned(),
            native,
            kernel,
        }
    }
}

/// How a runtime reads the two values of a `SCMP_CMP_MASKED_EQ` argument condition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dialect {
    /// As the OCI runtime spec, runc and crun read it, and as profiles write it: `value` is
    /// the mask, `valueTwo` the datum (`arg & value == valueTwo`).
    #[default]
    Oci,
    /// As youki's `libcontainer` 0.7 reads it (the embedded runtime and the youki CLI):
    /// the other way round. A filter written for it swaps the two, or its `clone` rule
    /// would let every namespace flag through.
    Libcontainer,
}

impl Dialect {
    /// `filter` as a runtime of this dialect must be given it.
    pub fn adapt(self, mut filter: LinuxSeccomp) -> LinuxSeccomp {
        if self == Dialect::Oci {
            return filter;
        }
        let mut syscalls = filter.syscalls().clone();
        for call in syscalls.iter_mut().flatten() {
            let Some(mut args) = call.args().clone() else {
                continue;
            };
            for arg in args.iter_mut() {
                if arg.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
                    let (mask, datum) = (arg.value(), arg.value_two().unwrap_or(0));
                    *arg = LinuxSeccompArgBuilder::default()
                        .index(arg.index())
                        .op(arg.op())
                        .value(datum)
                        .value_two(mask)
                        .build()
                        .expect("every field of the argument is set");
                }
            }
            call.set_args(Some(args));
        }
        filter.set_syscalls(syscalls);
        filter
    }
}

impl Profile {
    /// The built-in default profile.
    pub fn default_profile() -> Profile {
        Profile::parse(Path::new("built-in default"), DEFAULT_PROFILE)
            .expect("the built-in profile is checked by the unit tests")
    }

    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Profile, SeccompError> {
        let text = std::fs::read_to_string(path).map_err(|source| SeccompError::Read {
            path: path.to_owned(),
            source,
        })?;
        Profile::parse(path, &text)
    }

    /// Parses a profile document; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Profile, SeccompError> {
        let invalid = |reason: String| SeccompError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let profile: Profile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if profile
            .architectures
            .as_ref()
            .is_some_and(|a| !a.is_empty())
            && profile.arch_map.as_ref().is_some_and(|a| !a.is_empty())
        {
            return Err(invalid(
                "`architectures` and `archMap` cannot both be set".to_owned(),
            ));
        }
        for (i, rule) in profile.syscalls.iter().flatten().enumerate() {
            let names = rule.names.as_ref().is_some_and(|n| !n.is_empty());
            match (names, &rule.name) {
                (true, Some(_)) => {
                    return Err(invalid(format!(
                        "syscalls[{i}]: `name` and `names` cannot both be set"
                    )));
                }
                (false, None) => {
                    return Err(invalid(format!("syscalls[{i}]: no `names`")));
                }
                _ => {}
            }
        }
        Ok(profile)
    }

    /// The OCI seccomp filter for a process holding `caps` on `target`: the rules whose
    /// conditions hold, in order, with their conditions dropped.
    pub fn resolve(
        &self,
        caps: &HashSet<Capability>,
        target: &Target,
    ) -> Result<LinuxSeccomp, SeccompError> {
        let architectures: Vec<Arch> = match (&self.architectures, &self.arch_map) {
            (Some(archs), _) if !archs.is_empty() => archs.clone(),
            (_, Some(map)) => map
                .iter()
                .find(|m| m.architecture == target.native)
                .map(|m| {
                    std::iter::once(m.architecture)
                        .chain(m.sub_architectures.iter().flatten().copied())
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let mut syscalls = Vec::new();
        for rule in self.syscalls.iter().flatten() {
            if !rule.applies(caps, target) {
                continue;
            }
            let names = match (&rule.names, &rule.name) {
                (Some(names), _) if !names.is_empty() => names.clone(),
                (_, Some(name)) => vec![name.clone()],
                _ => continue,
            };
            let mut call = LinuxSyscallBuilder::default()
                .names(names)
                .action(rule.action);
            if let Some(errno) = rule.errno_ret {
                call = call.errno_ret(errno);
            }
            if let Some(args) = rule.args.as_ref().filter(|a| !a.is_empty()) {
                call = call.args(args.clone());
            }
            syscalls.push(call.build()?);
        }
        let mut seccomp = LinuxSeccompBuilder::default()
            .default_action(self.default_action)
            .architectures(architectures)
            .syscalls(syscalls);
        if let Some(errno) = self.default_errno_ret {
            seccomp = seccomp.default_errno_ret(errno);
        }
        if let Some(flags) = &self.flags {
            seccomp = seccomp.flags(flags.clone());
        }
        if let Some(path) = &self.listener_path {
            seccomp = seccomp.listener_path(path.clone());
        }
        if let Some(meta) = &self.listener_metadata {
            seccomp = seccomp.listener_metadata(meta.clone());
        }
        Ok(seccomp.build()?)
    }
}

impl Rule {
    /// Docker's semantics: every included capability held, every included architecture
    /// list naming this one, the kernel at least `includes.minKernel`; no excluded
    /// capability held, this architecture not excluded, the kernel below
    /// `excludes.minKernel`. An unknown kernel version satisfies neither kernel condition.
    fn applies(&self, caps: &HashSet<Capability>, target: &Target) -> bool {
        let arch = target.go_arch.as_str();
        if let Some(inc) = &self.includes {
            if inc
                .arches
                .as_ref()
                .is_some_and(|a| !a.is_empty() && !a.iter().any(|x| x == arch))
            {
                return false;
            }
            if inc.caps.iter().flatten().any(|c| !caps.contains(c)) {
                return false;
            }
            if let Some(min) = inc.min_kernel
                && target.kernel.is_none_or(|k| k < min)
            {
                return false;
            }
        }
        if let Some(exc) = &self.excludes {
            if exc.arches.iter().flatten().any(|x| x == arch) {
                return false;
            }
            if exc.caps.iter().flatten().any(|c| caps.contains(c)) {
                return false;
            }
            if let Some(min) = exc.min_kernel
                && target.kernel.is_none_or(|k| k >= min)
            {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;
