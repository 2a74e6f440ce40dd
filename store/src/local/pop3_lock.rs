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

/// The POP3 locks this process holds, by account. The map's mutex is never held across
/// filesystem work (which may be slow on NFS), so logins do not queue behind each other
/// or behind the refresher.
#[derive(Debug)]
pub struct Pop3Locks {
    options: LockOptions,
    held: Mutex<HashMap<String, Arc<Dotlock>>>,
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
        if self.map().contains_key(account) {
            return Ok(false);
        }
        // Two sessions of this process racing here both try the lock file; the link
        // lets only one win, the other sees a live holder.
        let Some(lock) = Dotlock::try_acquire(&dir.join(LOCK_TARGET), &self.options)? else {
            return Ok(false);
        };
        self.map().insert(account.to_owned(), Arc::new(lock));
        Ok(true)
    }

    /// Releases `account`'s lock if this process holds it.
    pub fn release(&self, account: &str) {
        let lock = self.map().remove(account);
        // Unwrapped unless the refresher holds it this instant; then its drop releases.
        if let Some(Ok(lock)) = lock.map(Arc::try_unwrap)
            && let Err(e) = lock.release()
        {
            log::warn!("POP3 lock of {account}: {e}");
        }
    }

    /// The number of locks held now.
    pub fn held(&self) -> usize {
        self.map().len()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Dotlock>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refresh_all(&self) {
        let locks: Vec<(String, Arc<Dotlock>)> = self
            .map()
            .iter()
            .map(|(account, lock)| (account.clone(), lock.clone()))
            .collect();
        for (account, lock) in locks {
            if let Err(e) = lock.refresh() {
                log::error!("POP3 lock of {account} could not be kept: {e}");
                let mut held = self.map();
                if held.get(&account).is_some_and(|h| Arc::ptr_eq(h, &lock)) {
                    held.remove(&account);
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn locks() -> Arc<Pop3Locks> {
        Pop3Locks::new(LockOptions::new("test.host"))
    }

    #[test]
    fn one_holder_per_mailbox_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let locks = locks();
        assert!(locks.take("alice@example.com", dir.path()).unwrap());
        assert!(!locks.take("alice@example.com", dir.path()).unwrap());
        assert!(dir.path().join("tidegate-pop3.lock").is_file());
        locks.release("alice@example.com");
        assert!(!dir.path().join("tidegate-pop3.lock").exists());
        assert!(locks.take("alice@example.com", dir.path()).unwrap());
        assert_eq!(locks.held(), 1);
    }

    #[test]
    fn racing_sessions_of_one_process_get_one_lock() {
        let dir = tempfile::tempdir().unwrap();
        let locks = locks();
        let winners: usize = std::thread::scope(|scope| {
            let tries: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| locks.take("bob@example.com", dir.path()).unwrap()))
                .collect();
            tries
                .into_iter()
                .map(|t| usize::from(t.join().unwrap()))
                .sum()
        });
        assert_eq!(winners, 1);
        assert_eq!(locks.held(), 1);
    }
}
