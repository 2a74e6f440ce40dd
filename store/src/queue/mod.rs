//! The durable outbound queue: mail accepted for remote recipients waits here, in
//! `<workarea>/queue/` (node-local: the mailbox path may be shared, the queue is not),
//! until the runner threads deliver it, give up and bounce it, or an operator deletes it.
//!
//! * [`entry`]: one message's envelope and per-recipient state, and its text form.
//! * [`spool`]: the files (message + state per entry; temp, fsync, rename).
//! * [`schedule`]: the pure retry policy (backoff with jitter, delay warning, expiry).
//! * [`runner`]: the delivery threads and the [`runner::Transport`] they send through.
//! * [`bounce`]: delay warnings and failure reports (RFC 3464) back to the sender.
//! * [`relay`]: the real transport: smarthost or MX, DKIM, [`crate::outbound::send`].
//! * [`lmtp`]: proxy mode: recipients on back-ends relayed over LMTP, and the
//!   [`lmtp::Dispatch`] transport that picks LMTP or `[relay]` per attempt.
//!
//! # Delivery semantics: at least once
//!
//! A message is fsynced into the queue before the client gets its `250`, so an
//! acknowledged message is never lost. A recipient's outcome is written (temp file,
//! fsync, rename) right after the attempt for its domain, so a restart never sends to a
//! recipient already recorded as delivered. The one window left is between the
//! receiving server's `250` and that write: a crash or a lost reply there means the
//! message is sent again later, a possible **duplicate, never a loss**. SMTP cannot
//! close this window (RFC 1047). Likewise a crash after the queue copy was fsynced but
//! before the client saw `250` may deliver a message the client then sends again.
//!
//! On a proxy front-end the queue also holds inbound mail for back-end recipients
//! ([`entry::Destination::Backend`]). Because the copy is durable before the `250`, a
//! transaction whose recipients live on several back-ends is accepted whole even when
//! one of them is down: that back-end's recipients wait for the next retry (and bounce
//! after the maximum age) while the others are delivered at once.

pub mod bounce;
pub mod entry;
pub mod lmtp;
pub mod relay;
pub mod runner;
pub mod schedule;
pub mod spool;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use entry::{Destination, QueueEntry, QueuedRecipient, RecipientState};
pub use runner::{Attempt, AttemptFailure, Runner, RunnerConfig, Transport, Verdict};
pub use schedule::RetryPolicy;
pub use spool::SpoolDir;

/// Default bound on queued messages ([`Queue::with_max_entries`]).
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

/// The current Unix time in seconds (the runner's and the enqueuer's clock).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The queue: its files and the in-memory view the runners and `ctl queue` share.
#[derive(Debug)]
pub struct Queue {
    spool: SpoolDir,
    /// The most entries held; beyond it new mail is refused for now (the in-memory
    /// view stays bounded; a few hundred bytes an entry).
    max_entries: usize,
    state: Mutex<State>,
    /// Signalled when an entry becomes due (enqueue, flush) or on shutdown.
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<String, Slot>,
}

#[derive(Debug)]
struct Slot {
    entry: QueueEntry,
    /// Written to disk but not yet acknowledged to the client: runners skip it.
    held: bool,
    /// A runner is delivering it now.
    busy: bool,
    /// Deleted by an operator while busy: removed when the runner hands it back.
    deleted: bool,
}

/// The new entry's envelope, for [`Queue::enqueue`].
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// The reverse-path; empty for a bounce.
    pub sender: String,
    /// The remote recipients, in RCPT order.
    pub recipients: Vec<String>,
    /// The body needs 8BITMIME.
    pub eight_bit: bool,
    /// The envelope or headers need SMTPUTF8.
    pub smtputf8: bool,
    /// Proxy mode: recipients relayed to their back-ends over LMTP, as
    /// `(address, back-end host)`; they follow `recipients` in the entry.
    pub backends: Vec<(String, String)>,
    /// The SMTP client the message came from, for XCLIENT on the LMTP leg (proxy mode).
    pub client: Option<tidegate_core::proxy::xclient::Xclient>,
}

impl Queue {
    /// Opens the queue in `dir` and loads every complete entry (cleaning up half-made
    /// ones). `fsync` follows `[storage] fsync`; `host` goes into entry ids.
    pub fn open(dir: &Path, fsync: bool, host: &str) -> io::Result<Queue> {
        let spool = SpoolDir::open(dir, fsync, host)?;
        let loaded = spool.load()?;
        if loaded.removed > 0 {
            log::info!("queue: removed {} half-made entries", loaded.removed);
        }
        let mut state = State::default();
        for entry in loaded.entries {
            let id = entry.id.clone();
            state.entries.insert(
                id,
                Slot {
                    entry,
                    held: false,
                    busy: false,
                    deleted: false,
                },
            );
        }
        if !state.entries.is_empty() {
            log::info!("queue: {} messages waiting", state.entries.len());
        }
        Queue::count(&state);
        Ok(Queue {
            spool,
            max_entries: DEFAULT_MAX_ENTRIES,
            state: Mutex::new(state),
            wake: Condvar::new(),
        })
    }

    /// Sets the most entries held (`[relay] max_queue`); beyond it [`Queue::enqueue`]
    /// fails and the client gets a temporary failure. Bounces are refused too.
    pub fn with_max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the queue's size (`tidegate_queue_messages`) after a change.
    fn count(state: &State) {
        crate::metrics::queue_size(state.entries.len());
    }

    /// The queue directory.
    pub fn dir(&self) -> &Path {
        self.spool.path()
    }

    /// The message file of an entry.
    pub fn message_path(&self, id: &str) -> PathBuf {
        self.spool.message_path(id)
    }

    /// Writes a new entry (message, then state, each fsynced) and returns its id. The
    /// entry is *held*: runners leave it alone until [`Queue::release`] (after the
    /// client got its `250`) or [`Queue::discard`] (the transaction failed).
    pub fn enqueue(&self, new: NewEntry, message: impl Read, now: u64) -> io::Result<String> {
        if self.len() >= self.max_entries {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("the queue is full ({} messages)", self.max_entries),
            ));
        }
        let id = self.spool.new_id();
        self.spool.write_message(&id, message)?;
        let entry = QueueEntry {
            id: id.clone(),
            sender: new.sender,
            arrived: now,
            eight_bit: new.eight_bit,
            smtputf8: new.smtputf8,
            warned: false,
            recipients: new
                .recipients
                .into_iter()
                .map(|address| QueuedRecipient::new(address, now))
                .chain(
                    new.backends
                        .into_iter()
                        .map(|(address, host)| QueuedRecipient::for_backend(address, host, now)),
                )
                .collect(),
            client: new.client,
        };
        if let Err(e) = self.spool.write_state(&entry) {
            let _ = self.spool.remove(&id);
            return Err(e);
        }
        let mut state = self.lock();
        state.entries.insert(
            id.clone(),
            Slot {
                entry,
                held: true,
                busy: false,
                deleted: false,
            },
        );
        Queue::count(&state);
        Ok(id)
    }

    /// Lets the runners deliver a held entry.
    pub fn release(&self, id: &str) {
        if let Some(slot) = self.lock().entries.get_mut(id) {
            slot.held = false;
        }
        self.wake.notify_all();
    }

    /// Removes a held entry whose transaction failed: nothing of it stays.
    pub fn discard(&self, id: &str) {
        {
            let mut state = self.lock();
            state.entries.remove(id);
            Queue::count(&state);
        }
        if let Err(e) = self.spool.remove(id) {
            log::error!("queue: cannot remove discarded entry {id}: {e}");
        }
    }

    /// Entries in the queue (held ones included).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every released entry, oldest first (`ctl queue list`).
    pub fn list(&self) -> Vec<QueueEntry> {
        let mut entries: Vec<QueueEntry> = self
            .lock()
            .entries
            .values()
            .filter(|slot| !slot.held && !slot.deleted)
            .map(|slot| slot.entry.clone())
            .collect();
        entries.sort_by(|a, b| a.arrived.cmp(&b.arrived).then(a.id.cmp(&b.id)));
        entries
    }

    /// Makes every pending recipient due now (`ctl queue flush`); returns how many
    /// entries that touched.
    pub fn flush(&self) -> usize {
        let mut touched = 0;
        {
            let mut state = self.lock();
            for slot in state.entries.values_mut().filter(|s| !s.held) {
                for r in &mut slot.entry.recipients {
                    if r.state == RecipientState::Pending {
                        r.next_attempt = 0;
                    }
                }
                touched += 1;
            }
        }
        self.wake.notify_all();
        touched
    }

    /// Removes an entry without delivering it (`ctl queue delete ID`); false when
    /// there is no such entry. An entry being delivered right now is removed when its
    /// attempt ends.
    pub fn delete(&self, id: &str) -> io::Result<bool> {
        let mut state = self.lock();
        match state.entries.get_mut(id) {
            None => Ok(false),
            Some(slot) if slot.held => Ok(false),
            Some(slot) if slot.busy => {
                slot.deleted = true;
                Ok(true)
            }
            Some(_) => {
                state.entries.remove(id);
                Queue::count(&state);
                drop(state);
                self.spool.remove(id)?;
                log::info!("queue: {id} deleted by the operator");
                Ok(true)
            }
        }
    }

    /// Takes the earliest due entry for delivery (marking it busy), if one is due.
    pub(crate) fn take_due(&self, now: u64) -> Option<QueueEntry> {
        let mut state = self.lock();
        let slot = state
            .entries
            .values_mut()
            .filter(|s| !s.held && !s.busy && !s.deleted)
            .filter(|s| s.entry.next_attempt().is_none_or(|t| t <= now))
            .min_by_key(|s| s.entry.next_attempt().unwrap_or(0))?;
        slot.busy = true;
        Some(slot.entry.clone())
    }

    /// The earliest time an idle entry becomes due.
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.lock()
            .entries
            .values()
            .filter(|s| !s.held && !s.busy && !s.deleted)
            .map(|s| s.entry.next_attempt().unwrap_or(0))
            .min()
    }

    /// Records an entry's new state on disk (mid-attempt: after each destination), and
    /// in the view `ctl queue list` shows.
    pub(crate) fn save(&self, entry: &QueueEntry) -> io::Result<()> {
        self.spool.write_state(entry)?;
        if let Some(slot) = self.lock().entries.get_mut(&entry.id) {
            slot.entry = entry.clone();
        }
        Ok(())
    }

    /// Hands a busy entry back after an attempt: finished or deleted entries are
    /// removed, others written and kept.
    pub(crate) fn put_back(&self, entry: QueueEntry) -> io::Result<()> {
        let mut state = self.lock();
        let deleted = state.entries.get(&entry.id).is_none_or(|s| s.deleted);
        if deleted || entry.is_finished() {
            state.entries.remove(&entry.id);
            Queue::count(&state);
            drop(state);
            return self.spool.remove(&entry.id);
        }
        let written = self.spool.write_state(&entry);
        if let Some(slot) = state.entries.get_mut(&entry.id) {
            slot.busy = false;
            slot.entry = entry;
        }
        written
    }

    /// Waits until something may be due, at most `timeout`.
    pub(crate) fn wait(&self, timeout: Duration) {
        let state = self.lock();
        let _ = self
            .wake
            .wait_timeout(state, timeout)
            .unwrap_or_else(|e| e.into_inner());
    }

    /// Wakes every waiting runner (shutdown).
    pub(crate) fn wake_all(&self) {
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_entry(recipients: &[&str]) -> NewEntry {
        NewEntry {
            sender: "a@example.com".into(),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            eight_bit: false,
            smtputf8: false,
            client: None,
            backends: Vec::new(),
        }
    }

    #[test]
    fn held_entries_are_invisible_until_released_and_discard_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), true, "h").unwrap();
        let id = queue
            .enqueue(
                new_entry(&["b@x.net"]),
                &b"Subject: x\r\n\r\nhi\r\n"[..],
                50,
            )
            .unwrap();
        assert_eq!(queue.len(), 1);
        assert!(queue.list().is_empty());
        assert_eq!(queue.take_due(100), None);
        queue.discard(&id);
        assert!(queue.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let id = queue
            .enqueue(new_entry(&["b@x.net"]), &b"x\r\n"[..], 50)
            .unwrap();
        queue.release(&id);
        assert_eq!(queue.list().len(), 1);
        let entry = queue.take_due(100).unwrap();
        assert_eq!(entry.id, id);
        // Busy: nobody else gets it.
        assert_eq!(queue.take_due(100), None);
        // A restart sees the entry as written.
        let reopened = Queue::open(dir.path(), true, "h").unwrap();
        assert_eq!(reopened.list(), vec![entry.clone()]);
    }

    #[test]
    fn put_back_keeps_pending_and_removes_finished_or_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), false, "h").unwrap();
        let id = queue
            .enqueue(new_entry(&["b@x.net"]), &b"x"[..], 0)
            .unwrap();
        queue.release(&id);
        let mut entry = queue.take_due(0).unwrap();
        entry.recipients[0].attempts = 1;
        entry.recipients[0].next_attempt = 500;
        queue.put_back(entry).unwrap();
        assert_eq!(queue.take_due(499), None);
        assert_eq!(queue.next_due(), Some(500));
        assert_eq!(queue.flush(), 1);
        let mut entry = queue.take_due(1).unwrap();
        assert!(queue.delete(&id).unwrap());
        entry.recipients[0].attempts = 2;
        queue.put_back(entry).unwrap();
        assert!(queue.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(!queue.delete("nope").unwrap());
    }

    #[test]
    fn a_full_queue_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), false, "h")
            .unwrap()
            .with_max_entries(1);
        queue
            .enqueue(new_entry(&["b@x.net"]), &b"x"[..], 0)
            .unwrap();
        let err = queue
            .enqueue(new_entry(&["c@x.net"]), &b"y"[..], 0)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn concurrent_enqueues_share_directory_syncs_and_all_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), true, "h").unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let queue = &queue;
                s.spawn(move || {
                    for n in 0..20 {
                        let to = format!("r{t}x{n}@x.net");
                        let id = queue
                            .enqueue(new_entry(&[&to]), format!("m {t} {n}\r\n").as_bytes(), 0)
                            .unwrap();
                        queue.release(&id);
                    }
                });
            }
        });
        let reopened = Queue::open(dir.path(), true, "h").unwrap();
        let entries = reopened.list();
        assert_eq!(entries.len(), 160);
        for entry in &entries {
            let body = std::fs::read_to_string(reopened.message_path(&entry.id)).unwrap();
            let (t, n) = entry.recipients[0].address[1..]
                .split_once('@')
                .and_then(|(tn, _)| tn.split_once('x'))
                .unwrap();
            assert_eq!(body, format!("m {t} {n}\r\n"));
        }
    }
}
