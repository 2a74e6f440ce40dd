//! The driving contract shared by every session: inputs, outputs, request ids.
//!
//! See the crate documentation for the run loop a shell implements.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::request::{Reply, Request};

/// Which connection a byte stream belongs to.
///
/// A server session only talks to its client; a proxy front-end also talks to the
/// back-end it routes the client to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The connection that was accepted by our listener.
    Client,
    /// The connection a proxy session opened towards a back-end.
    Backend,
}

/// Identifies one [`Request`] so its [`Reply`] can be matched to it.
///
/// Ids grow monotonically within a session. Every request gets exactly one reply from
/// the shell; a session that gave up waiting (its reply deadline passed) ignores the late
/// reply by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Something the shell must do on behalf of a session.
#[must_use = "every Action must be carried out by the shell"]
#[derive(Debug)]
pub enum Action {
    /// Send these bytes to the peer, after all bytes of earlier `Write`s.
    Write {
        /// Destination connection.
        to: Peer,
        /// Bytes to send (ciphertext when the session is wrapped in [`crate::tls::Secured`]).
        bytes: Bytes,
    },
    /// Run a host operation (user lookup, maildir access) and answer it with
    /// [`Session::handle_reply`] carrying the same id.
    Request {
        /// Id to quote in the reply.
        id: RequestId,
        /// What to do.
        request: Request,
    },
    /// Start TLS on this peer's connection: every later byte in either direction is a
    /// TLS record. Emitted by protocol sessions after their "go ahead" reply;
    /// [`crate::tls::Secured`] consumes it, so a shell that drives a `Secured` session
    /// never sees it.
    StartTls {
        /// Connection to secure.
        with: Peer,
    },
    /// Flush what was written, then close the connection. Nothing follows for that peer.
    /// Closing a peer whose [`Action::Connect`] has not completed cancels the attempt.
    Close {
        /// Connection to close.
        to: Peer,
    },
    /// Open a TCP connection to `addr` for `to` (a proxy's [`Peer::Backend`]). The shell
    /// answers with exactly one [`Session::handle_connected`]. The session owns the
    /// connect deadline: on timeout it emits [`Action::Close`] for the peer.
    Connect {
        /// Which connection this becomes.
        to: Peer,
        /// Where to connect.
        addr: SocketAddr,
        /// Local address to bind first (several source addresses let one front-end open
        /// more than 64k connections to one back-end); `None` lets the kernel choose.
        source: Option<IpAddr>,
    },
    /// Hand both connections over to the shell: write `to_client` to the client and
    /// `to_backend` to the back-end (bytes the session had read but not yet relayed),
    /// then copy bytes both ways with bounded buffers until both sides are closed,
    /// passing a half-close on. The session is finished: the shell drops it. Only
    /// emitted when neither leg carries TLS the session terminates.
    Splice {
        /// Bytes for the client before the copying starts.
        to_client: Bytes,
        /// Bytes for the back-end before the copying starts.
        to_backend: Bytes,
        /// Close both connections when neither has carried a byte for this long.
        idle_timeout: Duration,
    },
}

/// A sans-IO protocol session: a state machine driven by values.
///
/// The shell calls one `handle_*` method per event and then drains [`Session::poll_action`]
/// until it returns `None` (the single-mutation rule). Time only comes in as `now`,
/// taken from a monotonic clock by the shell.
pub trait Session {
    /// Bytes read from `from`. The session copies them into its own bounded buffer.
    /// Call only while [`Session::wants_read`] is true, with at most
    /// [`MAX_READ`] bytes at a time.
    fn handle_input(&mut self, now: Instant, from: Peer, bytes: &[u8]);
    /// The peer closed its sending side (read returned 0) or the connection broke.
    fn handle_eof(&mut self, now: Instant, from: Peer);
    /// The answer to the request with this id. Unknown or abandoned ids are ignored.
    fn handle_reply(&mut self, now: Instant, id: RequestId, reply: Reply);
    /// A deadline from [`Session::poll_timeout`] may have passed; spurious calls are no-ops.
    fn handle_timeout(&mut self, now: Instant);
    /// Everything written to `to` so far has been handed to the operating system.
    /// Sessions that stream large replies wait for this before producing more, so a
    /// client that never reads cannot make the server buffer without bound.
    fn handle_drained(&mut self, now: Instant, to: Peer);
    /// The next thing to do, or `None` when the session has nothing more until the next event.
    fn poll_action(&mut self) -> Option<Action>;
    /// The earliest deadline at which [`Session::handle_timeout`] must be called.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Backpressure: false while the session will not accept more input from `from`
    /// (its buffer is full, a request is outstanding with input queued, or output
    /// is waiting for the client to read).
    fn wants_read(&self, from: Peer) -> bool;

    /// The outcome of an [`Action::Connect`]: `Ok` once the connection is established,
    /// `Err` with the reason (for the log) when it could not be. Sessions that never
    /// connect anywhere keep the default, which ignores it.
    fn handle_connected(&mut self, now: Instant, to: Peer, result: Result<(), String>) {
        let _ = (now, to, result);
    }

    /// The account this connection is logged in as, for the shell's session registry
    /// (`ctl who`, `ctl kick`): set once a login succeeded (POP3 RFC 1939 §4 TRANSACTION,
    /// IMAP RFC 9051 §3.2 Authenticated, SMTP AUTH RFC 4954 §4), and on a proxy
    /// front-end once the back-end accepted the login. A getter, not an [`Action`]: the
    /// shell reads it after draining actions, and stops once it got `Some`, since a
    /// session never logs in twice. Sessions without a login keep the default, `None`.
    fn account(&self) -> Option<&str> {
        None
    }

    /// The shell is closing this connection now, from outside the protocol (`ctl kick`):
    /// nothing more is written to or read from either peer. The session gives up and
    /// queues only the requests that must still run, such as releasing a POP3 mailbox
    /// lock (without RFC 1939 §6 UPDATE: nothing is deleted) or dropping a half-received
    /// message; the shell drains [`Session::poll_action`], carries out those
    /// [`Action::Request`]s without waiting for their replies, and ignores every other
    /// action. The default, for sessions that hold nothing in the store, does nothing.
    fn handle_abort(&mut self, now: Instant) {
        let _ = now;
    }
}

/// The most bytes a shell passes to one [`Session::handle_input`] call.
///
/// Session buffers are sized as their own limit plus this much, so a shell that honours
/// [`Session::wants_read`] can never overflow them. 16 KiB is one TLS record.
pub const MAX_READ: usize = 16 * 1024;

impl<S: Session + ?Sized> Session for Box<S> {
    fn handle_input(&mut self, now: Instant, from: Peer, bytes: &[u8]) {
        (**self).handle_input(now, from, bytes)
    }
    fn handle_eof(&mut self, now: Instant, from: Peer) {
        (**self).handle_eof(now, from)
    }
    fn handle_reply(&mut self, now: Instant, id: RequestId, reply: Reply) {
        (**self).handle_reply(now, id, reply)
    }
    fn handle_timeout(&mut self, now: Instant) {
        (**self).handle_timeout(now)
    }
    fn handle_drained(&mut self, now: Instant, to: Peer) {
        (**self).handle_drained(now, to)
    }
    fn poll_action(&mut self) -> Option<Action> {
        (**self).poll_action()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }
    fn wants_read(&self, from: Peer) -> bool {
        (**self).wants_read(from)
    }
    fn handle_connected(&mut self, now: Instant, to: Peer, result: Result<(), String>) {
        (**self).handle_connected(now, to, result)
    }
    fn account(&self) -> Option<&str> {
        (**self).account()
    }
    fn handle_abort(&mut self, now: Instant) {
        (**self).handle_abort(now)
    }
}
