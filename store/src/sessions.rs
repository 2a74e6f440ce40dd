//! The registry of open connections that `tidegate ctl who`, `ctl kick` and `ctl status`
//! read: one entry per connection a shell serves, with its listener, peer, start time
//! and, once the session logged in, its account.
//!
//! Shells [`SessionRegistry::register`] each accepted connection and keep the returned
//! [`Registration`] for as long as the connection lives (a spliced proxy connection
//! included); dropping it removes the entry. The entries are spread over shards by id,
//! each behind its own mutex held only for one map operation (never across I/O), so
//! connections on different threads rarely meet on a lock.
//!
//! Bounded: the shells hold at most one registration per admitted connection, and
//! admit at most twice `max_connections`, so the registry never holds more entries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Shards the entries are spread over (a power of two).
const SHARDS: usize = 16;

/// Identifies one registered connection for the whole life of the registry (ids are
/// never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// A shell's way to close one of its connections from outside its loop or task
/// (`ctl kick`). Must not block: it only signals the owner, which closes the
/// connection at once, sending nothing more.
pub trait Closer: Send + Sync + 'static {
    /// Asks the owner of connection `id` to close it.
    fn close(&self, id: SessionId);
}

/// What `ctl who` shows of one connection: a copy taken by [`SessionRegistry::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The registry id.
    pub id: SessionId,
    /// The index of the listener it was accepted on (`ServerSpec::listeners`).
    pub listener: usize,
    /// The client's address.
    pub peer: SocketAddr,
    /// When it was accepted.
    pub started: Instant,
    /// The account it is logged in as (a proxy front-end: the account proxied), and
    /// when the shell saw the login.
    pub account: Option<(String, Instant)>,
}

struct Entry {
    listener: usize,
    peer: SocketAddr,
    started: Instant,
    account: Option<(Box<str>, Instant)>,
    closer: Arc<dyn Closer>,
}

/// Every open connection of this server; shared by the shell and the control socket.
pub struct SessionRegistry {
    shards: Box<[Mutex<HashMap<u64, Entry>>]>,
    next_id: AtomicU64,
}

impl Default for SessionRegistry {
    fn default() -> Self {
        SessionRegistry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            next_id: AtomicU64::new(1),
        }
    }
}

impl std::fmt::Debug for SessionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRegistry")
            .field("len", &self.len())
            .finish()
    }
}

impl SessionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn shard(&self, id: u64) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // Every change under the lock is one map operation, so a poisoned map is whole.
        let index = (id as usize) & (SHARDS - 1);
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a connection accepted at `now` on `listener` from `peer`; `closer` is
    /// how [`SessionRegistry::kick`] reaches its owner. The entry lives as long as the
    /// returned [`Registration`].
    pub fn register(
        self: &Arc<Self>,
        listener: usize,
        peer: SocketAddr,
        now: Instant,
        closer: Arc<dyn Closer>,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            listener,
            peer,
            started: now,
            account: None,
            closer,
        };
        self.shard(id).insert(id, entry);
        Registration {
            registry: self.clone(),
            id: SessionId(id),
            account_known: false,
        }
    }

    /// The open connections, sorted by account (connections not logged in last), then
    /// by start time.
    pub fn snapshot(&self) -> Vec<SessionInfo> {
        let mut all = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            all.extend(shard.iter().map(|(id, e)| SessionInfo {
                id: SessionId(*id),
                listener: e.listener,
                peer: e.peer,
                started: e.started,
                account: e.account.as_ref().map(|(a, at)| (a.to_string(), *at)),
            }));
        }
        all.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        all
    }

    /// Asks the owners of every connection logged in as `account` (compared without
    /// regard to ASCII case) to close it; returns how many were asked. The locks are
    /// released before any owner is signalled.
    pub fn kick(&self, account: &str) -> usize {
        let mut targets: Vec<(SessionId, Arc<dyn Closer>)> = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            targets.extend(
                shard
                    .iter()
                    .filter(|(_, e)| {
                        e.account
                            .as_ref()
                            .is_some_and(|(a, _)| a.eq_ignore_ascii_case(account))
                    })
                    .map(|(id, e)| (SessionId(*id), e.closer.clone())),
            );
        }
        for (id, closer) in &targets {
            closer.close(*id);
        }
        targets.len()
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `who` order: by account, connections not logged in last, then by start.
fn sort_key(s: &SessionInfo) -> (bool, Option<&str>, Instant, SessionId) {
    let account = s.account.as_ref().map(|(name, _)| name.as_str());
    (account.is_none(), account, s.started, s.id)
}

/// A connection's entry in the [`SessionRegistry`]; dropping it removes the entry.
pub struct Registration {
    registry: Arc<SessionRegistry>,
    id: SessionId,
    account_known: bool,
}

impl Registration {
    /// The entry's id, as [`Closer::close`] receives it.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Records the account the session reports (`Session::account`), the first time it
    /// reports one; later calls cost one branch, so shells call this after every drive
    /// step.
    pub fn note_account(&mut self, account: Option<&str>, now: Instant) {
        if self.account_known {
            return;
        }
        let Some(account) = account else {
            return;
        };
        self.account_known = true;
        if let Some(entry) = self.registry.shard(self.id.0).get_mut(&self.id.0) {
            entry.account = Some((account.into(), now));
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.shard(self.id.0).remove(&self.id.0);
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    #[derive(Default)]
    struct Recorder(StdMutex<Vec<SessionId>>);

    impl Closer for Recorder {
        fn close(&self, id: SessionId) {
            self.0.lock().unwrap().push(id);
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn entries_live_as_long_as_their_registration() {
        let registry = Arc::new(SessionRegistry::new());
        let closer = Arc::new(Recorder::default());
        let now = Instant::now();
        let a = registry.register(0, addr(1000), now, closer.clone());
        let b = registry.register(1, addr(1001), now, closer.clone());
        assert_eq!(registry.len(), 2);
        assert_ne!(a.id(), b.id());
        drop(a);
        let left = registry.snapshot();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].listener, 1);
        assert_eq!(left[0].peer, addr(1001));
        drop(b);
        assert!(registry.is_empty());
    }

    #[test]
    fn the_first_account_reported_is_kept() {
        let registry = Arc::new(SessionRegistry::new());
        let now = Instant::now();
        let mut r = registry.register(0, addr(1), now, Arc::new(Recorder::default()));
        r.note_account(None, now);
        assert_eq!(registry.snapshot()[0].account, None);
        r.note_account(Some("alice@example.org"), now);
        r.note_account(Some("mallory@example.org"), now);
        assert_eq!(
            registry.snapshot()[0].account,
            Some(("alice@example.org".to_owned(), now))
        );
    }

    #[test]
    fn snapshot_sorts_by_account_with_anonymous_last() {
        let registry = Arc::new(SessionRegistry::new());
        let closer: Arc<dyn Closer> = Arc::new(Recorder::default());
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(1);
        let _anon = registry.register(0, addr(1), t0, closer.clone());
        let mut bob = registry.register(0, addr(2), t0, closer.clone());
        bob.note_account(Some("bob@example.org"), t0);
        let mut alice_late = registry.register(0, addr(3), t1, closer.clone());
        alice_late.note_account(Some("alice@example.org"), t1);
        let mut alice = registry.register(0, addr(4), t0, closer.clone());
        alice.note_account(Some("alice@example.org"), t0);
        let peers: Vec<u16> = registry.snapshot().iter().map(|s| s.peer.port()).collect();
        assert_eq!(peers, [4, 3, 2, 1]);
    }

    #[test]
    fn kick_signals_only_that_accounts_connections() {
        let registry = Arc::new(SessionRegistry::new());
        let closer = Arc::new(Recorder::default());
        let now = Instant::now();
        let mut regs = Vec::new();
        for (port, account) in [(1, "alice@example.org"), (2, "bob@example.org"), (3, "")] {
            let mut r = registry.register(0, addr(port), now, closer.clone());
            if !account.is_empty() {
                r.note_account(Some(account), now);
            }
            regs.push(r);
        }
        let mut again = registry.register(2, addr(4), now, closer.clone());
        again.note_account(Some("alice@example.org"), now);
        assert_eq!(registry.kick("ALICE@example.org"), 2);
        let mut closed = closer.0.lock().unwrap().clone();
        closed.sort();
        assert_eq!(closed, vec![regs[0].id(), again.id()]);
        assert_eq!(registry.kick("nobody@example.org"), 0);
        // Kicking only signals: the entries go when the shells drop the connections.
        assert_eq!(registry.len(), 4);
    }

    #[test]
    fn registrations_from_many_threads_all_come_and_go() {
        let registry = Arc::new(SessionRegistry::new());
        let closer: Arc<dyn Closer> = Arc::new(Recorder::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let registry = registry.clone();
                let closer = closer.clone();
                std::thread::spawn(move || {
                    let now = Instant::now();
                    let held: Vec<_> = (0..250)
                        .map(|i| registry.register(t, addr(i), now, closer.clone()))
                        .collect();
                    held.len()
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 1000);
        assert!(registry.is_empty());
    }
}
