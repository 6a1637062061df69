//! Open a path inside a root directory as if that directory were `/`: `..` stops at the root,
//! absolute symlinks restart from the root, and nothing ever resolves to a file outside it.
//!
//! The kernel does this with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` (Linux 5.6+),
//! which also defends against concurrent renames. On older kernels (`ENOSYS`) the same
//! semantics are emulated by walking one component at a time: each component is inspected
//! with `fstatat(AT_SYMLINK_NOFOLLOW)` and opened with `O_NOFOLLOW` relative to the directory
//! fd of its parent, symlinks are expanded by hand (at most 40, like the kernel). A symlink
//! swapped in between the check and the open makes the open fail instead of being followed,
//! so the walk is safe against the tree it unpacks; it is not meant for trees that other
//! processes change concurrently.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{Mode, SFlag, fstatat};
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once `openat2` returned `ENOSYS`: the kernel predates it.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);
/// Symlinks expanded per resolution before giving up with `ELOOP` (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// Opens `path` (relative, `/`-separated; empty means the root) inside `root` with `flags`.
/// `walk` forces the userspace walk (tests exercise it on kernels that have `openat2`).
/// `O_NOFOLLOW` in `flags` applies to the final component as usual.
pub(crate) fn open_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlag,
    walk: bool,
) -> nix::Result<OwnedFd> {
    if !walk && !OPENAT2_MISSING.load(Ordering::Relaxed) {
        let rel = if path.is_empty() {
            OsStr::new(".")
        } else {
            OsStr::from_bytes(path)
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match openat2(root, rel, how) {
            Err(Errno::ENOSYS) => {
                OPENAT2_MISSING.store(true, Ordering::Relaxed);
                tracing::warn!("openat2 unavailable: resolving layer paths component by component");
            }
            other => return other,
        }
    }
    walk_in_root(root, path, flags)
}

fn walk_in_root(root: BorrowedFd<'_>, path: &[u8], flags: OFlag) -> nix::Result<OwnedFd> {
    let follow_last = !flags.contains(OFlag::O_NOFOLLOW);
    let mut queue: VecDeque<Vec<u8>> = components(path).collect();
    // The directories from the root down to the current one; empty = at the root.
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    while let Some(comp) = queue.pop_front() {
        if comp == b".." {
            stack.pop();
            continue;
        }
        let last = queue.is_empty();
        let cur = stack.last().map_or(root, |fd| fd.as_fd());
        let name = OsStr::from_bytes(&comp);
        let st = fstatat(cur, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK && (!last || follow_last) {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Errno::ELOOP);
            }
            let target = readlinkat(cur, name)?;
            let target = target.as_bytes();
            if target.starts_with(b"/") {
                stack.clear();
            }
            for c in components(target).collect::<Vec<_>>().into_iter().rev() {
                queue.push_front(c);
            }
            continue;
        }
        if last {
            return openat(
                cur,
                name,
                flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            );
        }
        let next = openat(
            cur,
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        stack.push(next);
    }
    let cur = stack.last().map_or(root, |fd| fd.as_fd());
    openat(cur, ".", flags | OFlag::O_CLOEXEC, Mode::empty())
}

fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn walk_and_openat2_agree_and_stay_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::write(root.join("usr/lib/marker"), b"inside").unwrap();
        fs::write(tmp.path().join("marker"), b"outside").unwrap();
        symlink("/usr/lib", root.join("abs")).unwrap();
        symlink("../../../..", root.join("usr/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        symlink("usr/lib/marker", root.join("file-link")).unwrap();
        let rootfd =
            nix::fcntl::open(&root, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let read = |path: &str, walk: bool| -> nix::Result<String> {
            let fd = open_in_root(rootfd.as_fd(), path.as_bytes(), OFlag::O_RDONLY, walk)?;
            Ok(std::io::read_to_string(fs::File::from(fd)).unwrap())
        };
        for walk in [false, true] {
            assert_eq!(read("abs/marker", walk).unwrap(), "inside");
            assert_eq!(
                read("usr/up/marker", walk).unwrap_err(),
                Errno::ENOENT,
                "walk={walk}"
            );
            assert_eq!(read("usr/up/usr/lib/marker", walk).unwrap(), "inside");
            assert_eq!(read("../../marker", walk).unwrap_err(), Errno::ENOENT);
            assert_eq!(read("file-link", walk).unwrap(), "inside");
            assert_eq!(read("loop", walk).unwrap_err(), Errno::ELOOP);
            let nofollow = open_in_root(
                rootfd.as_fd(),
                b"file-link",
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW,
                walk,
            );
            assert_eq!(
                nofollow.unwrap_err(),
                Errno::ELOOP,
                "O_NOFOLLOW on the last component"
            );
            assert_eq!(
                open_in_root(rootfd.as_fd(), b"usr/lib/marker/x", OFlag::O_PATH, walk).unwrap_err(),
                Errno::ENOTDIR
            );
        }
    }
}
