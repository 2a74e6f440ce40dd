//! Accepting connections: the listeners live on loop 0, which hands sockets out.
//!
//! Why one accepting loop rather than every loop registering every listener: mio offers
//! no `EPOLLEXCLUSIVE`, so a listener in N epoll sets wakes all N loops for each new
//! connection and all but one find nothing (a thundering herd on every accept). A single
//! acceptor also keeps the connection count exact at the moment the `max_connections`
//! decision is made, and gives one place to back off when the process runs out of file
//! descriptors. Loop 0 still serves connections itself; the hand-off to another loop
//! costs one channel message and one wake per connection, small next to a session.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::event_loop::Shared;

/// Tokens at and above this value name listeners and the waker, never connections.
pub(crate) const FIRST_RESERVED_TOKEN: usize = usize::MAX - (1 << 16);
/// Listener `i` is registered as `LISTENER_TOKEN_BASE - i`.
const LISTENER_TOKEN_BASE: usize = usize::MAX - 1;
/// Listener indices (initial and added by reloads) stay below this, inside the
/// reserved token range and clear of the waker's token.
const MAX_LISTENERS: usize = LISTENER_TOKEN_BASE - FIRST_RESERVED_TOKEN;
/// Pause before accepting again after a resource error (EMFILE, ENFILE, ENOBUFS).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// An accepted socket on its way to the loop that will serve it.
pub(crate) struct NewConn {
    /// The accepted socket (nonblocking, TCP_NODELAY set).
    pub(crate) socket: TcpStream,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// Index of the listener in `ServerSpec::listeners`.
    pub(crate) listener: usize,
    /// The server was full: serve the factory's busy session instead.
    pub(crate) busy: bool,
}

/// The listening sockets, registered with loop 0's poll, indexed like the factory's
/// listeners; a slot is empty once a reload removed its listener.
pub(crate) struct Acceptor {
    listeners: Vec<Option<TcpListener>>,
    /// Set after a resource error: accept again at this time even without an event.
    retry_at: Option<Instant>,
}

impl Acceptor {
    /// Makes the bound std listeners nonblocking and registers them with `registry`.
    pub(crate) fn new(
        listeners: Vec<std::net::TcpListener>,
        registry: &Registry,
    ) -> io::Result<Self> {
        let mut acceptor = Acceptor {
            listeners: Vec::with_capacity(listeners.len()),
            retry_at: None,
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            acceptor.add(i, listener, registry)?;
        }
        Ok(acceptor)
    }

    /// Starts accepting on `listener` as listener `index` (a reload added it). Fails
    /// when the index is out of the token range or already in use, or when the socket
    /// cannot be registered; the socket is then closed.
    pub(crate) fn add(
        &mut self,
        index: usize,
        listener: std::net::TcpListener,
        registry: &Registry,
    ) -> io::Result<()> {
        if index >= MAX_LISTENERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many listeners",
            ));
        }
        if self.listeners.get(index).is_some_and(Option::is_some) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("listener {index} exists already"),
            ));
        }
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        registry.register(
            &mut listener,
            Token(LISTENER_TOKEN_BASE - index),
            Interest::READABLE,
        )?;
        if self.listeners.len() <= index {
            self.listeners.resize_with(index + 1, || None);
        }
        if let Some(slot) = self.listeners.get_mut(index) {
            *slot = Some(listener);
        }
        Ok(())
    }

    /// Stops accepting on listener `index` and closes its socket; connections accepted
    /// on it go on. Returns whether there was such a listener.
    pub(crate) fn remove(&mut self, index: usize, registry: &Registry) -> bool {
        match self.listeners.get_mut(index).and_then(Option::take) {
            Some(mut listener) => {
                let _ = registry.deregister(&mut listener);
                true
            }
            None => false,
        }
    }

    /// The listener index a token names, if it names one.
    pub(crate) fn listener_of(&self, token: Token) -> Option<usize> {
        let i = LISTENER_TOKEN_BASE.checked_sub(token.0)?;
        self.listeners
            .get(i)
            .is_some_and(Option::is_some)
            .then_some(i)
    }

    /// The number of listeners accepting now.
    pub(crate) fn count(&self) -> usize {
        self.listeners.iter().flatten().count()
    }

    /// When to retry accepting after a resource error.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Clears the retry time if it has come; returns whether it had.
    pub(crate) fn take_retry(&mut self, now: Instant) -> bool {
        let due = self.retry_at.is_some_and(|at| at <= now);
        if due {
            self.retry_at = None;
        }
        due
    }

    /// Accepts the next connection on `listener`, counting it in `shared`. Returns
    /// `None` once the listener would block (mio is edge-triggered: callers loop until
    /// then) or after a resource error, which schedules a retry.
    pub(crate) fn accept_one(
        &mut self,
        listener: usize,
        now: Instant,
        shared: &Shared,
    ) -> Option<NewConn> {
        let listening = self.listeners.get(listener)?.as_ref()?;
        loop {
            let (socket, peer) = match listening.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                // The client gave up before we got to it, or a signal: try the next one.
                Err(e) if is_transient(&e) => continue,
                Err(e) => {
                    if self.retry_at.is_none() {
                        log::warn!("accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    }
                    self.retry_at = Some(now + ACCEPT_BACKOFF);
                    return None;
                }
            };
            if let Err(e) = socket.set_nodelay(true) {
                log::debug!("{peer}: cannot set TCP_NODELAY: {e}");
            }
            let Some(busy) = shared.admit() else {
                log::debug!("{peer}: far over the connection limit; closed without a session");
                continue;
            };
            if busy {
                log::debug!("{peer}: connection limit reached; sending the busy reply");
            }
            return Some(NewConn {
                socket,
                peer,
                listener,
                busy,
            });
        }
    }

    /// Stops accepting: the listening sockets are deregistered and closed.
    pub(crate) fn close(mut self, registry: &Registry) {
        for listener in self.listeners.iter_mut().flatten() {
            // Closing the socket removes it from epoll anyway; deregistering is tidy.
            let _ = registry.deregister(listener);
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
