//! Idle connections kept for the next message to the same destination, so a queue
//! runner that delivers one message after another to a smarthost or an MX host pays
//! for the TCP connection, EHLO, STARTTLS and AUTH once per [`ReuseLimits::max_messages`]
//! messages rather than once per message (RFC 5321 §3.3: after a completed transaction
//! a new MAIL starts the next one).
//!
//! A connection is used by one runner at a time: [`ConnectionPool::take`] hands it out,
//! [`ConnectionPool::put`] returns it idle. Connections idle longer than
//! [`ReuseLimits::idle`] are closed with QUIT by [`ConnectionPool::close_expired`] (the
//! runners call it while they wait) or when met in [`ConnectionPool::take`]; the pool
//! holds at most [`ReuseLimits::max_idle`] of them.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::send::Connection;
use super::{Destination, SendOptions, TlsPolicy};

/// How far connections are reused (`[relay] reuse_messages`, `reuse_idle_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReuseLimits {
    /// The most messages sent over one connection; 1 (or 0) sends one message per
    /// connection, as without a pool.
    pub max_messages: usize,
    /// How long an idle connection waits for the next message before QUIT: short, so
    /// a receiving server's connection slots are not held for nothing.
    pub idle: Duration,
    /// The most idle connections kept at once, all destinations together (each holds
    /// a socket, and its TLS state when it has one).
    pub max_idle: usize,
}

impl Default for ReuseLimits {
    /// 100 messages per connection, 5 seconds idle, 32 idle connections.
    fn default() -> Self {
        ReuseLimits {
            max_messages: 100,
            idle: Duration::from_secs(5),
            max_idle: 32,
        }
    }
}

/// Which connections may carry a message: the same addresses and certificate name
/// (one smarthost, or one MX host and port) and the same TLS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PoolKey {
    addrs: Vec<SocketAddr>,
    tls_name: String,
    policy: TlsPolicy,
}

impl PoolKey {
    pub(super) fn new(dest: &Destination, options: &SendOptions) -> Self {
        PoolKey {
            addrs: dest.addrs.clone(),
            tls_name: dest.tls_name.to_ascii_lowercase(),
            policy: options.tls,
        }
    }
}

/// One idle connection.
struct Idle {
    key: PoolKey,
    conn: Connection,
    since: Instant,
}

/// Idle connections by destination; shared by the runners of one transport.
pub struct ConnectionPool {
    limits: ReuseLimits,
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for ConnectionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPool")
            .field("limits", &self.limits)
            .field("idle", &self.lock().len())
            .finish()
    }
}

impl ConnectionPool {
    /// An empty pool with these limits.
    pub fn new(limits: ReuseLimits) -> Self {
        ConnectionPool {
            limits,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The limits.
    pub fn limits(&self) -> ReuseLimits {
        self.limits
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection for `key`, if one is still within its
    /// idle time (expired ones met are closed).
    pub(super) fn take(&self, key: &PoolKey) -> Option<Connection> {
        let now = Instant::now();
        let (found, expired) = {
            let mut idle = self.lock();
            let expired = self.drain_expired(&mut idle, now);
            let found = idle
                .iter()
                .rposition(|i| &i.key == key)
                .map(|at| idle.remove(at).conn);
            (found, expired)
        };
        for conn in expired {
            conn.close();
        }
        found
    }

    /// Returns a connection after a message: kept idle when it can take another one
    /// (idle session, under the message limit, room in the pool), else closed.
    pub(super) fn put(&self, key: PoolKey, conn: Connection) {
        if !conn.is_idle() || conn.messages >= self.limits.max_messages {
            return conn.close();
        }
        let mut idle = self.lock();
        if idle.len() >= self.limits.max_idle {
            drop(idle);
            return conn.close();
        }
        idle.push(Idle {
            key,
            conn,
            since: Instant::now(),
        });
    }

    /// Closes (QUIT) the connections idle for longer than [`ReuseLimits::idle`];
    /// returns when the next of the others expires.
    pub fn close_expired(&self) -> Option<Instant> {
        let now = Instant::now();
        let (expired, next) = {
            let mut idle = self.lock();
            let expired = self.drain_expired(&mut idle, now);
            let next = idle.iter().map(|i| i.since + self.limits.idle).min();
            (expired, next)
        };
        for conn in expired {
            conn.close();
        }
        next
    }

    /// Closes every idle connection (shutdown).
    pub fn close_all(&self) {
        let all: Vec<Idle> = std::mem::take(&mut *self.lock());
        for idle in all {
            idle.conn.close();
        }
    }

    fn drain_expired(&self, idle: &mut Vec<Idle>, now: Instant) -> Vec<Connection> {
        let mut expired = Vec::new();
        let mut i = 0;
        while i < idle.len() {
            if now.saturating_duration_since(idle[i].since) >= self.limits.idle {
                expired.push(idle.remove(i).conn);
            } else {
                i += 1;
            }
        }
        expired
    }
}
