//! The slots of the concurrent-run limit (`--max-concurrent-runs`): files `0`..`N-1`
//! in `root/run-slots/`, each held with `flock` by the run that took it (see
//! [`Runs::wait_for_slot`]). As with the run lock, the kernel frees a slot when its
//! executor dies, however it dies.

use super::{Runs, RunsError, io};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::num::NonZeroUsize;
use std::time::Duration;

/// How often a run waiting for a slot tries the slots again. flock has no way to
/// wait for any one of several locks, so waiting runs poll; a run lasts far longer.
const SLOT_POLL: Duration = Duration::from_millis(100);

/// One slot of the concurrent-run limit, held for as long as this value lives
/// (and freed by the kernel if the process dies).
#[derive(Debug)]
pub struct RunSlot {
    index: usize,
    _lock: Flock<File>,
}

impl RunSlot {
    /// Which slot (`0`..limit) this is.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Runs {
    /// Takes a free slot of `limit` if there is one, without waiting.
    ///
    /// The slots are shared by every executor with this root; one that runs with a
    /// smaller limit uses only the first slots, so runs with different limits
    /// together stay within the largest of them.
    pub fn try_slot(&self, limit: NonZeroUsize) -> Result<Option<RunSlot>, RunsError> {
        std::fs::create_dir_all(&self.slots).map_err(io("create", &self.slots))?;
        // Start at a different slot in each process: with many waiting runs, most
        // first tries then hit different files.
        let first = std::process::id() as usize % limit.get();
        for index in (first..limit.get()).chain(0..first) {
            let path = self.slots.join(index.to_string());
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io("create", &path))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(Some(RunSlot { index, _lock: lock })),
                Err((_, nix::Error::EWOULDBLOCK)) => continue,
                Err((_, errno)) => return Err(io("lock", &path)(errno.into())),
            }
        }
        Ok(None)
    }

    /// Waits until one of the `limit` slots is free and takes it; logs once that
    /// the run waits. Waiting runs take freed slots in no particular order.
    pub async fn wait_for_slot(&self, limit: NonZeroUsize) -> Result<RunSlot, RunsError> {
        let mut logged = false;
        loop {
            if let Some(slot) = self.try_slot(limit)? {
                if logged {
                    tracing::info!(slot = slot.index(), "got a run slot");
                }
                return Ok(slot);
            }
            if !logged {
                tracing::info!(
                    limit = limit.get(),
                    "waiting for a run slot: the concurrent-run limit is reached"
                );
                logged = true;
            }
            tokio::time::sleep(SLOT_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::SLOTS_DIR;

    #[tokio::test]
    async fn slots_are_limited_shared_and_freed_on_drop() {
        let root = tempfile::tempdir().unwrap();
        let runs = Runs::open(root.path()).unwrap();
        let two = NonZeroUsize::new(2).unwrap();
        let a = runs.try_slot(two).unwrap().expect("first slot");
        // Another handle on the same root (as another executor would have).
        let other = Runs::open(root.path()).unwrap();
        let b = other.try_slot(two).unwrap().expect("second slot");
        assert_ne!(a.index(), b.index());
        assert!(runs.try_slot(two).unwrap().is_none(), "limit 2 reached");
        // The slots are not runs: gc leaves them be.
        let report = runs.gc().await;
        assert!(report.removed.is_empty() && report.live.is_empty());
        let waiter = tokio::spawn(async move { other.wait_for_slot(two).await });
        tokio::time::sleep(SLOT_POLL * 3).await;
        assert!(!waiter.is_finished(), "a third run waits");
        let freed = a.index();
        drop(a);
        let c = waiter.await.unwrap().unwrap();
        assert_eq!(c.index(), freed);
        drop((b, c));
    }

    #[test]
    fn a_dead_process_frees_its_slot() {
        let root = tempfile::tempdir().unwrap();
        let runs = Runs::open(root.path()).unwrap();
        let one = NonZeroUsize::new(1).unwrap();
        runs.try_slot(one).unwrap();
        // Another process holds it (`flock --no-fork` execs sleep with the lock),
        // then is killed as an executor would be.
        let slot_file = root.path().join(SLOTS_DIR).join("0");
        let mut holder = std::process::Command::new("flock")
            .arg("--no-fork")
            .arg(&slot_file)
            .args(["sleep", "60"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while runs.try_slot(one).unwrap().is_some() {
            assert!(std::time::Instant::now() < deadline, "holder never locked");
            std::thread::sleep(Duration::from_millis(20));
        }
        holder.kill().unwrap();
        holder.wait().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let slot = loop {
            if let Some(slot) = runs.try_slot(one).unwrap() {
                break slot;
            }
            assert!(std::time::Instant::now() < deadline, "slot never freed");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(slot.index(), 0);
    }
}
