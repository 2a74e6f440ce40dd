//! The back-end side of the PROXY protocol: [`ProxyHeaderGate`] reads the header a
//! trusted front-end or load balancer sends first, then starts the real session with
//! the client address it carried.
//!
//! HAProxy's `proxy-protocol.txt` §2 rules: the receiver says nothing until the header
//! is complete (so a POP3 or SMTP greeting waits), never guesses whether a header is
//! present, accepts it only from trusted peers, and gives up after a few seconds. The
//! gate sits outside [`crate::tls::Secured`]: the header precedes any TLS record.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::haproxy::{self, ProxiedTls};
use crate::io::{Action, MAX_READ, Peer, RequestId, Session};
use crate::net::Cidr;
use crate::request::Reply;

/// The longest header the gate waits for: a maximal v2 header (v1 is shorter).
pub const MAX_HEADER: usize = 16 + haproxy::V2_MAX_PAYLOAD;

/// How long a peer may take to send its header: the spec asks for at least 3 seconds.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a PROXY header said about the connection, handed to the session builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedClient {
    /// The real client (the socket peer for a `LOCAL`/`UNKNOWN` header: a health check).
    pub addr: SocketAddr,
    /// The address the client connected to, when the header carried one.
    pub destination: Option<SocketAddr>,
    /// Set when the client's leg used TLS.
    pub tls: Option<ProxiedTls>,
    /// Proxy hops still allowed (tidegate's TLV), for a front-end behind a front-end.
    pub hops: Option<u8>,
}

enum Stage<S, F> {
    /// Reading the header; the builder makes the session once it is complete.
    Waiting(F),
    /// The header was read; everything goes to the session.
    Open(S),
    /// Refused: only the close remains.
    Closed,
}

/// A [`Session`] wrapper that reads a PROXY v1 or v2 header before the wrapped session
/// exists. An untrusted peer, a malformed or oversized header, or a peer that does not
/// finish its header within the deadline is disconnected without a word.
pub struct ProxyHeaderGate<S, F> {
    stage: Stage<S, F>,
    peer: SocketAddr,
    buf: Vec<u8>,
    deadline: Instant,
    ready: VecDeque<Action>,
}

impl<S, F> std::fmt::Debug for ProxyHeaderGate<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stage = match self.stage {
            Stage::Waiting(_) => "waiting",
            Stage::Open(_) => "open",
            Stage::Closed => "closed",
        };
        f.debug_struct("ProxyHeaderGate")
            .field("peer", &self.peer)
            .field("stage", &stage)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl<S: Session, F: FnOnce(ProxiedClient) -> S> ProxyHeaderGate<S, F> {
    /// A gate for a connection from `peer`, accepted at `now`. `trusted` are the
    /// networks allowed to send headers (`[trust] networks`); `build` makes the real
    /// session from the header's facts.
    pub fn new(
        peer: SocketAddr,
        trusted: &[Cidr],
        now: Instant,
        timeout: Duration,
        build: F,
    ) -> Self {
        let mut gate = ProxyHeaderGate {
            stage: Stage::Waiting(build),
            peer,
            buf: Vec::new(),
            deadline: now + timeout,
            ready: VecDeque::new(),
        };
        if !trusted.iter().any(|net| net.contains(peer.ip())) {
            gate.refuse();
        }
        gate
    }

    /// True once the header was read and the wrapped session runs.
    pub fn is_open(&self) -> bool {
        matches!(self.stage, Stage::Open(_))
    }

    /// The wrapped session, once it exists.
    pub fn inner(&self) -> Option<&S> {
        match &self.stage {
            Stage::Open(s) => Some(s),
            _ => None,
        }
    }

    fn refuse(&mut self) {
        if !matches!(self.stage, Stage::Closed) {
            self.stage = Stage::Closed;
            self.buf = Vec::new();
            self.ready.push_back(Action::Close { to: Peer::Client });
        }
    }

    fn read_header(&mut self, now: Instant, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        let (header, used) = match haproxy::parse(&self.buf) {
            Ok(Some(found)) => found,
            Ok(None) if self.buf.len() < MAX_HEADER => return,
            _ => return self.refuse(),
        };
        let Stage::Waiting(build) = std::mem::replace(&mut self.stage, Stage::Closed) else {
            return;
        };
        let client = ProxiedClient {
            addr: header.addresses.map_or(self.peer, |a| a.source),
            destination: header.addresses.map(|a| a.destination),
            tls: header.tls,
            hops: header.hops,
        };
        let mut session = build(client);
        let rest = self.buf.split_off(used);
        self.buf = Vec::new();
        // What followed the header in the same reads: at most one read past the cap.
        for chunk in rest.chunks(MAX_READ) {
            session.handle_input(now, Peer::Client, chunk);
        }
        self.stage = Stage::Open(session);
    }
}

impl<S: Session, F: FnOnce(ProxiedClient) -> S> Session for ProxyHeaderGate<S, F> {
    fn handle_input(&mut self, now: Instant, from: Peer, bytes: &[u8]) {
        match &mut self.stage {
            Stage::Open(s) => s.handle_input(now, from, bytes),
            Stage::Waiting(_) if from == Peer::Client => self.read_header(now, bytes),
            _ => {}
        }
    }

    fn handle_eof(&mut self, now: Instant, from: Peer) {
        match &mut self.stage {
            Stage::Open(s) => s.handle_eof(now, from),
            Stage::Waiting(_) => self.refuse(),
            Stage::Closed => {}
        }
    }

    fn handle_reply(&mut self, now: Instant, id: RequestId, reply: Reply) {
        if let Stage::Open(s) = &mut self.stage {
            s.handle_reply(now, id, reply);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match &mut self.stage {
            Stage::Open(s) => s.handle_timeout(now),
            Stage::Waiting(_) if now >= self.deadline => self.refuse(),
            _ => {}
        }
    }

    fn handle_drained(&mut self, now: Instant, to: Peer) {
        if let Stage::Open(s) = &mut self.stage {
            s.handle_drained(now, to);
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        if let Some(action) = self.ready.pop_front() {
            return Some(action);
        }
        match &mut self.stage {
            Stage::Open(s) => s.poll_action(),
            _ => None,
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Open(s) => s.poll_timeout(),
            Stage::Waiting(_) => Some(self.deadline),
            Stage::Closed => None,
        }
    }

    fn wants_read(&self, from: Peer) -> bool {
        match &self.stage {
            Stage::Open(s) => s.wants_read(from),
            Stage::Waiting(_) => from == Peer::Client,
            Stage::Closed => false,
        }
    }

    fn account(&self) -> Option<&str> {
        match &self.stage {
            Stage::Open(s) => s.account(),
            _ => None,
        }
    }

    fn handle_abort(&mut self, now: Instant) {
        if let Stage::Open(s) = &mut self.stage {
            s.handle_abort(now);
        }
    }

    fn handle_connected(&mut self, now: Instant, to: Peer, result: Result<(), String>) {
        if let Stage::Open(s) = &mut self.stage {
            s.handle_connected(now, to, result);
        }
    }
}
