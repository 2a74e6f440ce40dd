//! The contract between the `tidegate` binary and a runtime shell.
//!
//! The binary binds the listeners (so it can drop privileges afterwards), builds a
//! [`SessionFactory`] from the config and an [`Executor`] for requests, and hands them to
//! a shell's `serve` function together with a [`Shutdown`] handle.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidegate_core::{Reply, Request, Session};

mod per_address;

pub use per_address::{AddressGuard, AddressKey, AddressLimit, Admission, CappedFactory};

/// Runs core requests. Called from worker threads (mio) or blocking tasks (smol), so it
/// may block on disk and network I/O; it must always return exactly one reply.
pub trait Executor: Send + Sync + 'static {
    /// Carries out one request.
    fn execute(&self, request: Request) -> Reply;
}

/// A boxed session as shells drive it.
pub type BoxedSession = Box<dyn Session + Send>;

/// Makes sessions for accepted connections.
pub trait SessionFactory: Send + Sync + 'static {
    /// A session for a connection accepted on `ServerSpec::listeners[listener]`.
    fn open(&self, listener: usize, peer: SocketAddr, now: Instant) -> BoxedSession;
    /// A session that only tells the client the server is full (for POP3
    /// `-ERR [SYS/TEMP]`) and closes; used when `max_connections` is reached.
    fn busy(&self, listener: usize, peer: SocketAddr, now: Instant) -> BoxedSession;
}

impl<F: SessionFactory + ?Sized> SessionFactory for Arc<F> {
    fn open(&self, listener: usize, peer: SocketAddr, now: Instant) -> BoxedSession {
        (**self).open(listener, peer, now)
    }
    fn busy(&self, listener: usize, peer: SocketAddr, now: Instant) -> BoxedSession {
        (**self).busy(listener, peer, now)
    }
}

/// Everything a shell needs to serve.
pub struct ServerSpec {
    /// Bound listening sockets, in the order the factory knows them.
    pub listeners: Vec<TcpListener>,
    /// Makes a session per accepted connection.
    pub factory: Arc<dyn SessionFactory>,
    /// Runs requests off the event loop.
    pub executor: Arc<dyn Executor>,
    /// Open connections above which new ones get the busy session. (The per-address
    /// cap is the factory's: see [`CappedFactory`].)
    pub max_connections: usize,
    /// On shutdown, how long open sessions may take to finish before they are cut.
    pub shutdown_grace: Duration,
    /// Event loops (mio) or executor threads (smol); 0 means one per core.
    pub threads: usize,
    /// Threads that run blocking requests (mio's worker pool); 0 means a default of
    /// four per core, since requests mostly wait on disk.
    pub workers: usize,
}

impl ServerSpec {
    /// The number of event loop threads to start.
    pub fn thread_count(&self) -> usize {
        resolve_count(self.threads, 1)
    }
    /// The number of request worker threads to start.
    pub fn worker_count(&self) -> usize {
        resolve_count(self.workers, 4)
    }
}

fn resolve_count(configured: usize, per_core: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores * per_core
}

/// A cloneable stop signal: `trigger` asks every shell loop to stop accepting and finish.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

#[derive(Default)]
struct ShutdownInner {
    triggered: AtomicBool,
    wakers: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl Shutdown {
    /// A handle that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal and wakes every registered loop. Safe to call more than once.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::SeqCst);
        let wakers = self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner());
        for wake in wakers.iter() {
            wake();
        }
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Registers a function that wakes a loop; it runs at once if the signal already fired.
    pub fn on_trigger(&self, wake: impl Fn() + Send + Sync + 'static) {
        let mut wakers = self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_triggered() {
            wake();
        }
        wakers.push(Box::new(wake));
    }
}

/// The protocol a listener speaks, with its settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Listener {
    /// POP3, plain (with optional STLS) or implicit TLS.
    Pop3(tidegate_core::pop3::Pop3Listener),
    /// SMTP (inbound or submission) or LMTP, with optional STARTTLS.
    Smtp(tidegate_core::smtp::SmtpListener),
    /// IMAP, plain (with optional STARTTLS) or implicit TLS.
    Imap(tidegate_core::imap::ImapListener),
    /// Any other kind of session (proxy front-ends, authd).
    Custom(Arc<dyn Accept>),
}

/// A kind of listener: makes the session for each connection it accepts.
pub trait Accept: Send + Sync + 'static {
    /// The session for a connection from `peer`.
    fn open(&self, peer: SocketAddr, now: Instant) -> BoxedSession;
    /// A session that tells the client the server is full and closes.
    fn busy(&self, peer: SocketAddr, now: Instant) -> BoxedSession;
}

impl std::fmt::Debug for dyn Accept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Accept")
    }
}

/// A [`SessionFactory`] for a list of listeners, indexed like `ServerSpec::listeners`.
#[derive(Debug, Clone, Default)]
pub struct Listeners(pub Vec<Listener>);

impl SessionFactory for Listeners {
    fn open(&self, listener: usize, peer: SocketAddr, now: Instant) -> BoxedSession {
        match self.0.get(listener) {
            Some(Listener::Pop3(pop3)) => pop3.open(peer, now),
            Some(Listener::Smtp(smtp)) => smtp.open(peer, std::time::SystemTime::now(), now),
            Some(Listener::Imap(imap)) => imap.open(peer, now),
            Some(Listener::Custom(accept)) => accept.open(peer, now),
            None => Box::new(tidegate_core::refusal::Refusal::new(b"")),
        }
    }

    fn busy(&self, listener: usize, peer: SocketAddr, now: Instant) -> BoxedSession {
        match self.0.get(listener) {
            Some(Listener::Pop3(pop3)) => pop3.busy(),
            Some(Listener::Smtp(smtp)) => smtp.busy(),
            Some(Listener::Imap(imap)) => imap.busy(),
            Some(Listener::Custom(accept)) => accept.busy(peer, now),
            None => Box::new(tidegate_core::refusal::Refusal::new(b"")),
        }
    }
}
