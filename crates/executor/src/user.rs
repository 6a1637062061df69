//! Resolve an image's `User` (`name`, `uid`, `name:group`, `uid:gid`, ...) to numeric IDs
//! through the image's own `/etc/passwd` and `/etc/group`, as Docker and runc do.
//!
//! The files are read with `openat2(RESOLVE_IN_ROOT)` (or its fallback walk) on the root file system: an image that
//! makes `/etc/passwd` a symlink to an absolute path gets that path inside the image, never a
//! file of the host.

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// The largest passwd or group file read; larger ones are rejected (a hostile image).
const MAX_FILE: u64 = 8 << 20;

/// Errors while resolving a user.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// `/etc/passwd` or `/etc/group` exists in the image but cannot be read.
    #[error("cannot read {path} of the image")]
    Read {
        /// The file, as a path in the image.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A user name is not in the image's `/etc/passwd`.
    #[error("user {0} not found in the image's /etc/passwd")]
    UnknownUser(String),
    /// A group name is not in the image's `/etc/group`.
    #[error("group {0} not found in the image's /etc/group")]
    UnknownGroup(String),
    /// The user string is malformed.
    #[error("invalid user {0:?}: expected user[:group] with names or numeric ids")]
    Invalid(String),
}

/// A user resolved to numeric IDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// The user ID.
    pub uid: u32,
    /// The primary group ID.
    pub gid: u32,
    /// Supplementary groups: those of `/etc/group` that list the user as a member.
    pub additional_gids: Vec<u32>,
    /// The home directory from `/etc/passwd`, if the user has an entry.
    pub home: Option<String>,
}

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group ID.
    pub gid: u32,
    /// Member login names.
    pub members: Vec<String>,
}

/// Parses `/etc/passwd`; malformed lines are skipped, as libc does.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_owned(),
            })
        })
        .collect()
}

/// Parses `/etc/group`; malformed lines are skipped.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

/// Resolves `spec` (empty means root) against the passwd and group entries of an image.
pub fn resolve_with(
    spec: &str,
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
) -> Result<ResolvedUser, UserError> {
    let spec = spec.trim();
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if group.is_some_and(|g| g.is_empty() || g.contains(':')) {
        return Err(UserError::Invalid(spec.to_owned()));
    }
    let user = if user.is_empty() && group.is_none() {
        "0"
    } else {
        user
    };
    if user.is_empty() {
        return Err(UserError::Invalid(spec.to_owned()));
    }
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd
            .iter()
            .find(|p| p.uid == uid)
            .cloned()
            .or(Some(PasswdEntry {
                name: String::new(),
                uid,
                gid: 0,
                home: String::new(),
            })),
        Err(_) => Some(
            passwd
                .iter()
                .find(|p| p.name == user)
                .cloned()
                .ok_or_else(|| UserError::UnknownUser(user.to_owned()))?,
        ),
    }
    .expect("both arms give an entry");
    let gid = match group {
        None => entry.gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| UserError::UnknownGroup(g.to_owned()))?
                    .gid
            }
        },
    };
    let mut additional_gids: Vec<u32> = if entry.name.is_empty() {
        Vec::new()
    } else {
        groups
            .iter()
            .filter(|g| g.members.contains(&entry.name) && g.gid != gid)
            .map(|g| g.gid)
            .collect()
    };
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(ResolvedUser {
        uid: entry.uid,
        gid,
        additional_gids,
        home: (!entry.home.is_empty()).then_some(entry.home),
    })
}

/// Resolves `spec` against `/etc/passwd` and `/etc/group` of the root file system at
/// `rootfs`. Missing files count as empty (numeric IDs still work).
pub fn resolve(rootfs: &Path, spec: &str) -> Result<ResolvedUser, UserError> {
    let passwd = read_in_root(rootfs, "etc/passwd")?;
    let group = read_in_root(rootfs, "etc/group")?;
    resolve_with(spec, &parse_passwd(&passwd), &parse_group(&group))
}

fn read_in_root(rootfs: &Path, rel: &str) -> Result<String, UserError> {
    let err = |source: io::Error| UserError::Read {
        path: Path::new("/").join(rel),
        source,
    };
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(e.into()))?;
    let fd = match crate::unpack::resolve::open_in_root(
        root.as_fd(),
        rel.as_bytes(),
        OFlag::O_RDONLY,
        false,
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(String::new()),
        Err(e) => return Err(err(e.into())),
    };
    let mut bytes = Vec::new();
    File::from(fd)
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(err(io::Error::other("file too large")));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        runner:x:1000:1000:Runner:/home/runner:/bin/sh\n\
        broken line\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\nrunner:x:1000:\nkube:x:2000:runner,other\n\
        audit:x:3000:runner\nnogroup:x:65534:\n";

    fn resolve(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve_with(spec, &parse_passwd(PASSWD), &parse_group(GROUP))
    }

    #[test]
    fn names_resolve_through_passwd_and_group() {
        let u = resolve("runner").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![2000, 3000]);
        assert_eq!(u.home.as_deref(), Some("/home/runner"));
        let u = resolve("runner:kube").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 2000));
        assert_eq!(u.additional_gids, vec![3000], "primary gid is not repeated");
    }

    #[test]
    fn numeric_ids_need_no_entry() {
        let u = resolve("4242:4343").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 4343));
        assert!(u.additional_gids.is_empty());
        assert_eq!(u.home, None);
        let u = resolve("1000").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000), "gid comes from passwd");
        let u = resolve("").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_deref()), (0, 0, Some("/root")));
    }

    #[test]
    fn unknown_names_and_bad_syntax_are_errors() {
        assert_eq!(
            resolve("ghost").unwrap_err().to_string(),
            "user ghost not found in the image's /etc/passwd"
        );
        assert_eq!(
            resolve("runner:ghosts").unwrap_err().to_string(),
            "group ghosts not found in the image's /etc/group"
        );
        assert!(matches!(resolve("runner:"), Err(UserError::Invalid(_))));
        assert!(matches!(resolve(":1"), Err(UserError::Invalid(_))));
        assert!(matches!(resolve("a:b:c"), Err(UserError::Invalid(_))));
    }
}
