//! The capabilities a runner gets: podman's default set, changed by `--cap-add` and
//! `--cap-drop` with podman's rules.

use oci_spec::runtime::{Capabilities, Capability};
use std::str::FromStr;

/// The capabilities a runner gets by default: podman's default set, which is containerd's
/// and Docker's without `CAP_NET_RAW` (raw and packet sockets: spoofing, sniffing and a
/// long list of kernel bugs), `CAP_MKNOD` and `CAP_AUDIT_WRITE`, none of which a runner needs.
pub const DEFAULT_CAPABILITIES: [Capability; 11] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::NetBindService,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysChroot,
];

/// Every capability the kernel defines (up to `CAP_CHECKPOINT_RESTORE`, Linux 5.9): what
/// `--cap-add ALL` grants.
pub const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// Errors in `--cap-add` / `--cap-drop` values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    /// The name is no capability the kernel defines.
    #[error("unknown capability {0:?}")]
    Unknown(String),
    /// The same capability is both added and dropped (podman refuses this too).
    #[error("capability {0} cannot be both added and dropped")]
    AddedAndDropped(String),
}

/// One `--cap-add` or `--cap-drop` value: a capability or `ALL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapChange {
    /// Every capability.
    All,
    /// One capability.
    One(Capability),
}

impl FromStr for CapChange {
    type Err = CapabilityError;

    /// Accepts podman's spellings: `NET_RAW`, `CAP_NET_RAW`, `net_raw`, and `ALL`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let upper = value.trim().to_ascii_uppercase();
        if upper == "ALL" {
            return Ok(CapChange::All);
        }
        let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
        Capability::from_str(name)
            .map(CapChange::One)
            .map_err(|_| CapabilityError::Unknown(value.to_owned()))
    }
}

/// The name of a capability as the kernel and `capsh` write it (`CAP_NET_RAW`).
pub fn name(cap: Capability) -> String {
    format!("CAP_{cap}")
}

/// The capability set for these changes, with podman's rules: `--cap-drop ALL` starts from
/// nothing, `--cap-add ALL` grants every capability, a capability both added and dropped by
/// name is an error; otherwise the default set plus what is added minus what is dropped.
pub fn resolve(add: &[CapChange], drop: &[CapChange]) -> Result<Capabilities, CapabilityError> {
    for change in add {
        if let CapChange::One(cap) = change
            && drop.contains(change)
        {
            return Err(CapabilityError::AddedAndDropped(name(*cap)));
        }
    }
    let add_all = add.contains(&CapChange::All);
    let drop_all = drop.contains(&CapChange::All);
    if add_all && drop_all {
        return Err(CapabilityError::AddedAndDropped("ALL".to_owned()));
    }
    let mut caps: Capabilities = if add_all {
        ALL_CAPABILITIES.into_iter().collect()
    } else if drop_all {
        Capabilities::new()
    } else {
        DEFAULT_CAPABILITIES.into_iter().collect()
    };
    for change in add {
        if let CapChange::One(cap) = change {
            caps.insert(*cap);
        }
    }
    for change in drop {
        if let CapChange::One(cap) = change {
            caps.remove(cap);
        }
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Vec<CapChange> {
        values.iter().map(|v| v.parse().unwrap()).collect()
    }

    #[test]
    fn names_parse_in_every_spelling_podman_accepts() {
        for v in ["NET_RAW", "CAP_NET_RAW", "net_raw", "cap_net_raw"] {
            assert_eq!(v.parse(), Ok(CapChange::One(Capability::NetRaw)), "{v}");
        }
        assert_eq!("all".parse(), Ok(CapChange::All));
        assert_eq!(
            "NET_RAWR".parse::<CapChange>(),
            Err(CapabilityError::Unknown("NET_RAWR".to_owned()))
        );
        assert_eq!(name(Capability::SysAdmin), "CAP_SYS_ADMIN");
    }

    #[test]
    fn changes_follow_podmans_rules() {
        let default: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
        assert_eq!(resolve(&[], &[]).unwrap(), default);
        let caps = resolve(&parse(&["SYS_ADMIN"]), &parse(&["KILL"])).unwrap();
        assert!(caps.contains(&Capability::SysAdmin) && !caps.contains(&Capability::Kill));
        assert_eq!(caps.len(), default.len());
        let only = resolve(&parse(&["CHOWN"]), &parse(&["ALL"])).unwrap();
        assert_eq!(only, Capabilities::from([Capability::Chown]));
        let all = resolve(&parse(&["ALL"]), &parse(&["SYS_ADMIN"])).unwrap();
        assert_eq!(all.len(), ALL_CAPABILITIES.len() - 1);
        assert_eq!(
            resolve(&parse(&["NET_RAW"]), &parse(&["CAP_NET_RAW"])),
            Err(CapabilityError::AddedAndDropped("CAP_NET_RAW".to_owned()))
        );
    }

    #[test]
    fn all_capabilities_are_distinct_and_include_the_defaults() {
        let all: Capabilities = ALL_CAPABILITIES.into_iter().collect();
        assert_eq!(all.len(), ALL_CAPABILITIES.len());
        assert!(DEFAULT_CAPABILITIES.iter().all(|c| all.contains(c)));
    }
}
