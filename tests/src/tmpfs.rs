//! A small tmpfs mounted in a fresh temp dir, for running out of space on purpose.
//! Needs root (CI runs as root). Unmounted on drop, which also runs when a test panics.

use anyhow::{Context, Result};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::path::Path;

/// A mounted tmpfs; unmounted (lazily, so a leftover open file cannot block it) and its
/// directory removed on drop.
#[derive(Debug)]
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` bytes (rounded up to pages by the kernel).
    pub fn mount(bytes: u64) -> Result<Tmpfs> {
        let dir = tempfile::tempdir().context("creating the tmpfs mount point")?;
        mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={bytes},mode=0700").as_str()),
        )
        .with_context(|| format!("mounting a tmpfs on {} (needs root)", dir.path().display()))?;
        Ok(Tmpfs { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(e) = umount2(self.dir.path(), MntFlags::MNT_DETACH) {
            eprintln!("unmounting {}: {e}", self.dir.path().display());
        }
    }
}
