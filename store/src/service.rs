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

    /// Answers `request` at once on the calling thread (an event loop) when that is
    /// cheap and cannot block, such as a lookup in memory; `None` when it must go to
    /// [`Executor::execute`] on the blocking pool. Saving the hand-off to a worker
    /// thread and back matters for short sessions. The default answers nothing inline.
    fn execute_inline(&self, request: &Request) -> Option<Reply> {
        let _ = request;
        None
    }
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

impl Listener {
    /// The session for a connection from `peer` accepted on this listener.
    pub fn open(&self, peer: SocketAddr, now: Instant) -> BoxedSession {
        match self {
            Listener::Pop3(pop3) => pop3.open(peer, now),
            Listener::Smtp(smtp) => smtp.open(peer, std::time::SystemTime::now(), now),
            Listener::Imap(imap) => imap.open(peer, now),
            Listener::Custom(accept) => accept.open(peer, now),
        }
    }

    /// The session that tells a client on this listener the server is full.
    pub fn busy(&self, peer: SocketAddr, now: Instant) -> BoxedSession {
        match self {
            Listener::Pop3(pop3) => pop3.busy(),
            Listener::Smtp(smtp) => smtp.busy(),
            Listener::Imap(imap) => imap.busy(),
            Listener::Custom(accept) => accept.busy(peer, now),
        }
    }
}

impl SessionFactory for Listeners {
    fn open(&self, listener: usize, peer: SocketAddr, now: Instant) -> BoxedSession {
        match self.0.get(listener) {
            Some(kind) => kind.open(peer, now),
            None => Box::new(tidegate_core::refusal::Refusal::new(b"")),
        }
    }

    fn busy(&self, listener: usize, peer: SocketAddr, now: Instant) -> BoxedSession {
        match self.0.get(listener) {
            Some(kind) => kind.busy(peer, now),
            None => Box::new(tidegate_core::refusal::Refusal::new(b"")),
        }
    }
}

/// A change to the set of listening sockets while a shell serves (a config reload).
#[derive(Debug)]
pub enum ListenerChange {
    /// Start accepting on `socket`; its connections are opened as listener `index` of
    /// the factory. Indices of added listeners are new: never one in use or used before.
    Add {
        /// The factory's index for this listener.
        index: usize,
        /// The bound socket (listening already).
        socket: TcpListener,
    },
    /// Stop accepting on listener `index` and close its socket. Connections accepted on
    /// it before go on.
    Remove {
        /// The factory's index of the listener to close.
        index: usize,
    },
}

/// The binary's side of listener changes: it queues [`ListenerChange`]s, the shell
/// applies them between events. Cloneable; every clone is the same queue.
///
/// The queue holds at most one entry per listener the config can name and is emptied
/// by the shell on the next wake-up, so it does not grow while a shell serves.
#[derive(Clone, Default)]
pub struct ListenerChanges {
    inner: Arc<ListenerChangesInner>,
}

#[derive(Default)]
struct ListenerChangesInner {
    pending: Mutex<Vec<ListenerChange>>,
    wakers: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl ListenerChanges {
    /// An empty queue no shell watches yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `changes` (applied in order) and wakes the shell.
    pub fn submit(&self, changes: impl IntoIterator<Item = ListenerChange>) {
        {
            let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.extend(changes);
        }
        let wakers = self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner());
        for wake in wakers.iter() {
            wake();
        }
    }

    /// Takes every queued change, oldest first (the shell's side).
    pub fn take(&self) -> Vec<ListenerChange> {
        let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *pending)
    }

    /// Whether changes wait to be taken.
    pub fn is_pending(&self) -> bool {
        let pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        !pending.is_empty()
    }

    /// Registers a function that wakes the shell when changes are submitted; it runs
    /// at once if some are waiting already.
    pub fn on_change(&self, wake: impl Fn() + Send + Sync + 'static) {
        let mut wakers = self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_pending() {
            wake();
        }
        wakers.push(Box::new(wake));
    }
}

impl std::fmt::Debug for ListenerChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListenerChanges")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn listener_changes_wake_the_shell_and_are_taken_in_order() {
        let changes = ListenerChanges::new();
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        changes.submit([ListenerChange::Remove { index: 0 }]);
        // A shell registering late is woken at once for what waits.
        let wakes = Arc::new(AtomicUsize::new(0));
        let counter = wakes.clone();
        changes.on_change(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        changes
            .clone()
            .submit([ListenerChange::Add { index: 3, socket }]);
        assert_eq!(wakes.load(Ordering::SeqCst), 2);
        assert!(changes.is_pending());
        let taken = changes.take();
        assert!(matches!(taken[0], ListenerChange::Remove { index: 0 }));
        match &taken[1] {
            ListenerChange::Add { index: 3, socket } => {
                assert_eq!(socket.local_addr().unwrap().port(), port)
            }
            other => panic!("{other:?}"),
        }
        assert!(!changes.is_pending());
        assert!(changes.take().is_empty());
    }
}
