//! What confines the container beyond its namespaces and capabilities: the seccomp
//! filter it gets ([`Seccomp`]), its CPU limit ([`Cpus`], a CFS quota), and the paths
//! masked or mounted read-only in it.

use crate::seccomp::{Profile, SeccompError};
use std::path::{Path, PathBuf};

/// Paths hidden from the container (runc's defaults plus containerd's powercap).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths mounted read-only in the container (runc's defaults).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Which seccomp filter the container process gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// The built-in profile ([`crate::seccomp::DEFAULT_PROFILE`]).
    #[default]
    Default,
    /// No filter at all (`--no-seccomp`, `--security-opt seccomp=unconfined`).
    Unconfined,
    /// A profile read from a file (`--seccomp-profile FILE`).
    Profile {
        /// The file it was read from.
        path: PathBuf,
        /// The parsed profile.
        profile: Box<Profile>,
    },
}

impl Seccomp {
    /// Reads the profile file at `path`.
    pub fn from_file(path: &Path) -> Result<Seccomp, SeccompError> {
        Ok(Seccomp::Profile {
            path: path.to_owned(),
            profile: Box::new(Profile::load(path)?),
        })
    }
}

/// A CPU limit in thousandths of a CPU, as `--cpus 1.5` gives it (1500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cpus(u64);

/// The CFS period the CPU limit is a quota of, in microseconds (Docker's and podman's).
pub const CPU_PERIOD_US: u64 = 100_000;

impl Cpus {
    /// The limit in thousandths of a CPU.
    pub fn millis(self) -> u64 {
        self.0
    }

    /// The CFS quota per [`CPU_PERIOD_US`], in microseconds.
    pub fn quota_us(self) -> i64 {
        i64::try_from(self.0 * (CPU_PERIOD_US / 1000)).unwrap_or(i64::MAX)
    }
}

impl std::str::FromStr for Cpus {
    type Err = String;

    /// A positive decimal number of CPUs with at most three decimals (`2`, `0.5`, `1.25`).
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{value:?} is not a positive number of CPUs (such as 0.5 or 2)");
        let (whole, frac) = value.split_once('.').unwrap_or((value, ""));
        if whole.is_empty() && frac.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || frac.len() > 3
        {
            return Err(bad());
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let frac: u64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
        let millis = whole
            .checked_mul(1000)
            .and_then(|w| w.checked_add(frac))
            .filter(|&m| m > 0 && m <= 1_000_000_000)
            .ok_or_else(bad)?;
        Ok(Cpus(millis))
    }
}
