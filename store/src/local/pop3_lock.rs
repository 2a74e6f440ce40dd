//! The cluster-wide POP3 lock (`[pop3] lock = true`, SurgeMail's `g_pop_lock`): one POP3
//! session per mailbox across every host that shares the maildir root.
//!
//! A session's mailbox listing takes an NFS-safe dotlock in the maildir
//! (`tidegate-pop3.lock`, holding host, pid and start time); the session's
//! `ReleaseMailbox` drops it. A thread touches every held lock well within its stale
//! age, so a live session's lock never looks stale, while the lock of a crashed host
//! expires after `stale_after` (and that of a dead process on this host at once).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::lock::{Dotlock, LockError, LockOptions};

/// The name locked inside each maildir (the lock file is this plus `.lock`).
const LOCK_TARGET: &str = "tidegate-pop3";

/// The POP3 locks this process holds, by account.
#[derive(Debug)]
pub struct Pop3Locks {
    options: LockOptions,
    held: Mutex<HashMap<String, Dotlock>>,
}

impl Pop3Locks {
    /// Locks with these options (`stale_after` is the expiry of a crashed host's lock);
    /// starts the thread that keeps held locks fresh.
    pub fn new(options: LockOptions) -> Arc<Pop3Locks> {
        let interval = (options.stale_after / 4).max(Duration::from_secs(1));
        let locks = Arc::new(Pop3Locks {
            options,
            held: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&locks);
        let spawned = std::thread::Builder::new()
            .name("pop3-lock-refresh".into())
            .spawn(move || refresh_while_alive(&weak, interval));
        if let Err(e) = spawned {
            log::error!("cannot start the POP3 lock refresher: {e}");
        }
        locks
    }

    /// Takes `account`'s lock in its maildir `dir`: `Ok(false)` when a live session
    /// (here or on another host) holds it.
    pub fn take(&self, account: &str, dir: &Path) -> Result<bool, LockError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.contains_key(account) {
            return Ok(false);
        }
        match Dotlock::try_acquire(&dir.join(LOCK_TARGET), &self.options)? {
            Some(lock) => {
                held.insert(account.to_owned(), lock);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Releases `account`'s lock if this process holds it.
    pub fn release(&self, account: &str) {
        let lock = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(account);
        if let Some(lock) = lock
            && let Err(e) = lock.release()
        {
            log::warn!("POP3 lock of {account}: {e}");
        }
    }

    /// The number of locks held now.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn refresh_all(&self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|account, lock| match lock.refresh() {
            Ok(()) => true,
            Err(e) => {
                log::error!("POP3 lock of {account} could not be kept: {e}");
                false
            }
        });
    }
}

fn refresh_while_alive(locks: &Weak<Pop3Locks>, interval: Duration) {
    loop {
        std::thread::sleep(interval);
        match locks.upgrade() {
            Some(locks) => locks.refresh_all(),
            None => return,
        }
    }
}
