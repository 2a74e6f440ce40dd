//! Group commit: concurrent deliveries into the same `new/` share directory fsyncs (the
//! outbound queue directory uses the same [`DirSyncs`]).
//!
//! A delivery is acknowledged only after its `link` into `new/` is durable, which takes an
//! fsync of `new/`. An fsync of a directory makes durable every change to its entries
//! made *before the fsync call started*. So a committer whose link is done needs an
//! fsync that starts after that point; it need not be its own.
//!
//! Each directory has a generation counter: `started` counts fsyncs begun, `completed`
//! is the generation of the last one that succeeded. At most one fsync per directory
//! runs at a time. A committer (whose link is already done) takes the lock and needs
//! generation `started + 1`: any fsync numbered that or higher begins after this moment,
//! hence after its link. It then either
//!
//! - returns at once if `completed` already reached that generation,
//! - waits while another fsync runs (that one may have started before the link, so it
//!   does not count unless its number is high enough), or
//! - starts the next generation itself and reports its own result.
//!
//! Under load, while one fsync runs, every committer that arrives queues behind it; when
//! it ends, one of them starts a single fsync that covers all of them. A failed fsync
//! never advances `completed`, so waiters start their own and see their own errors.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::sync_dir;

/// Directory sync state per directory path, shared by clones of a `MaildirStore`.
#[derive(Debug, Default)]
pub(crate) struct DirSyncs {
    dirs: Mutex<HashMap<PathBuf, Arc<DirSync>>>,
}

#[derive(Debug, Default)]
struct DirSync {
    state: Mutex<SyncState>,
    finished: Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Fsyncs begun so far; the running one (if any) has this number.
    started: u64,
    /// The number of the last fsync that succeeded.
    completed: u64,
    /// Whether an fsync is running now.
    running: bool,
    /// Callers waiting for the running fsync to end. Waking nobody costs a system call
    /// per delivery, so the finishing caller notifies only when this is not zero.
    waiting: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl DirSyncs {
    /// Returns once every change to `dir`'s entries made before this call is durable,
    /// sharing an fsync with concurrent callers where that is enough.
    pub(crate) fn sync(&self, dir: &Path) -> io::Result<()> {
        let entry = lock(&self.dirs)
            .entry(dir.to_path_buf())
            .or_default()
            .clone();
        let result = entry.sync(dir);
        let mut dirs = lock(&self.dirs);
        // Only the map and this caller hold it: nobody is waiting, forget the directory
        // (a later caller starts a fresh counter and simply syncs itself).
        if Arc::strong_count(&entry) == 2 {
            dirs.remove(dir);
        }
        result
    }

    /// Directories with a sync in progress or waited for (for tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.dirs).len()
    }
}

impl DirSync {
    fn sync(&self, dir: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        let needed = state.started + 1;
        loop {
            if state.completed >= needed {
                return Ok(());
            }
            if !state.running {
                state.running = true;
                state.started += 1;
                let generation = state.started;
                drop(state);
                let result = sync_dir(dir);
                let mut state = lock(&self.state);
                state.running = false;
                if result.is_ok() {
                    // One fsync at a time, so generations complete in order.
                    state.completed = generation;
                }
                if state.waiting > 0 {
                    self.finished.notify_all();
                }
                return result;
            }
            state.waiting += 1;
            state = self.finished.wait(state).unwrap_or_else(|e| e.into_inner());
            state.waiting -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_syncs_succeed_and_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let syncs = DirSyncs::default();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20 {
                        syncs.sync(dir.path()).unwrap();
                    }
                });
            }
        });
        assert_eq!(syncs.tracked(), 0);
    }

    #[test]
    fn a_waiter_needs_a_sync_that_started_after_it() {
        let sync = DirSync::default();
        {
            let mut state = lock(&sync.state);
            // An fsync numbered 1 is running, begun before our link.
            state.started = 1;
            state.running = true;
        }
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| sync.sync(dir.path()));
            std::thread::sleep(std::time::Duration::from_millis(20));
            {
                let mut state = lock(&sync.state);
                state.running = false;
                state.completed = 1;
                sync.finished.notify_all();
            }
            waiter.join().unwrap().unwrap();
        });
        // The waiter could not use generation 1 and ran generation 2 itself.
        let state = lock(&sync.state);
        assert_eq!((state.started, state.completed), (2, 2));
    }

    #[test]
    fn a_waiter_behind_a_running_sync_is_woken_when_it_ends() {
        let sync = Arc::new(DirSync::default());
        {
            let mut state = lock(&sync.state);
            state.started = 1;
            state.running = true;
        }
        let dir = tempfile::tempdir().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // Plain threads, not scoped ones: a waiter nobody wakes must fail the test, not
        // hang it.
        for _ in 0..2 {
            let (sync, dir, done_tx) = (sync.clone(), dir.path().to_owned(), done_tx.clone());
            std::thread::spawn(move || done_tx.send(sync.sync(&dir).is_ok()));
        }
        while lock(&sync.state).waiting < 2 {
            std::thread::yield_now();
        }
        {
            let mut state = lock(&sync.state);
            state.running = false;
            state.completed = 1;
            sync.finished.notify_all();
        }
        // One of the two runs generation 2; the other waits for it to end and must be
        // woken by it.
        for _ in 0..2 {
            let ok = done_rx.recv_timeout(std::time::Duration::from_secs(20));
            assert_eq!(ok, Ok(true));
        }
        let state = lock(&sync.state);
        assert_eq!((state.started, state.completed, state.waiting), (2, 2, 0));
    }

    #[test]
    fn errors_are_reported_and_do_not_count() {
        let syncs = DirSyncs::default();
        assert!(syncs.sync(Path::new("/nonexistent/tidegate")).is_err());
        assert_eq!(syncs.tracked(), 0);
    }
}
