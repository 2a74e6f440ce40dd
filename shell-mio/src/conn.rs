//! One accepted connection: its socket, its session and the bytes between them, and
//! the back-end socket a proxy session opens.
//!
//! Everything here runs on the owning event loop; the loop only adds the registry, the
//! timer table and removal around [`Conn::pump`].

use std::io::{self, Read as _};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry};
use tidegate_core::{Action, MAX_READ, Peer, Reply, RequestId};
use tidegate_store::service::BoxedSession;
use tidegate_store::{Registration, SessionId};

use crate::connect;
use crate::event_loop::{Shared, SocketCount};
use crate::outq::{MAX_PENDING, OutQueue};
use crate::sock::{self, Sock};
use crate::splice::{Handover, Spliced};
use crate::workers::Submitter;

/// Reads per [`Conn::pump`] before other connections get a turn: 16 × 16 KiB = 256 KiB.
/// A client that pipelines as fast as it reads replies must not starve its neighbours.
const READ_BUDGET: usize = 16;
/// How long the final reply may take to reach the kernel after the session closed.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);
/// How long to wait for the client's FIN after ours (see [`Phase::Lingering`]).
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes discarded while lingering before the socket is simply dropped.
const LINGER_DISCARD: usize = 256 * 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// The session is running.
    Open,
    /// The session sent `Close`: flush the queued output by `until`, then send FIN.
    Closing { until: Instant },
    /// FIN sent while the client was still sending. Closing a socket that has unread
    /// input makes the kernel send RST, which can destroy the final reply before the
    /// client reads it; so the client's bytes are read and discarded until it closes
    /// too (or `until`). A client that sent nothing more is not waited for.
    Lingering { until: Instant, discarded: usize },
    /// The session handed both sockets over (`Action::Splice`): the loop turns this
    /// connection into a [`Spliced`] one and drops the session.
    Spliced {
        to_client: bytes::Bytes,
        to_backend: bytes::Bytes,
        idle: Duration,
    },
}

/// What the event loop must do with a connection after driving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pump {
    /// Nothing until the next event, reply or deadline.
    Idle,
    /// The read budget ran out with input possibly left: drive it again next turn.
    MoreInput,
    /// Finished or broken: drop it.
    Remove,
    /// The session asked for a splice: replace it with [`Conn::into_spliced`].
    Splice,
}

/// Where the back-end socket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendState {
    /// `connect` is in progress; output is queued until it completes.
    Connecting,
    /// Connected: read and written like the client.
    Open,
    /// The session closed it: flush, then drop the socket.
    Closing,
}

/// The connection a proxy session opened (`Action::Connect`).
struct Backend {
    sock: Sock,
    state: BackendState,
    out: OutQueue,
    /// False after EOF or a read error: the session has been told.
    read_open: bool,
    /// The socket may hold unread input (as [`Conn`]'s flag for the client).
    unread: bool,
    /// The poller reported EOF or an error (as [`Conn`]'s flag for the client).
    closing: bool,
    /// Keeps the socket counted as an open connection.
    count: SocketCount,
}

/// A connection and its session (the `Conn` of the module docs).
pub(crate) struct Conn {
    client: Sock,
    peer: SocketAddr,
    session: BoxedSession,
    /// This connection's slot and generation, quoted in its requests.
    key: usize,
    generation: u64,
    /// Output to the client the kernel has not taken yet, bounded by the session's
    /// high-water mark (and [`MAX_PENDING`]).
    out: OutQueue,
    /// False after EOF or a read error: the session has been told, nothing more is read.
    read_open: bool,
    /// The socket may hold unread input: set by every readable event, cleared by
    /// `WouldBlock` or by a read shorter than the buffer (a TCP read returns less than
    /// asked only when the socket's queue ran empty, and the next arrival brings a new
    /// edge), unless `closing`. mio is edge-triggered, so a session whose `wants_read`
    /// turns true again after a reply or a drain must be read without waiting for a
    /// new event.
    unread: bool,
    /// The poller reported the client's EOF or an error: read until the read says so,
    /// since the EOF may sit behind data and will not be reported again.
    closing: bool,
    phase: Phase,
    /// Immediate replies (job queue full) to deliver once the current drain ends.
    deferred: Vec<(RequestId, Reply)>,
    /// A connect outcome known at once (the socket could not even be started), to
    /// deliver once the current drain ends.
    connected: Option<Result<(), String>>,
    backend: Option<Backend>,
    /// For counting back-end sockets as open connections of this loop.
    shared: Arc<Shared>,
    loop_index: usize,
    /// This connection's entry in the session registry; told the session's account
    /// after every drain until it has one.
    registration: Registration,
}

/// What one non-blocking read gave.
enum Read {
    Data(usize),
    Eof,
    Blocked,
    Interrupted,
    Failed(io::Error),
}

fn read_socket(mut socket: &TcpStream, buf: &mut [u8; MAX_READ]) -> Read {
    match socket.read(buf) {
        Ok(0) => Read::Eof,
        Ok(n) => Read::Data(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::Blocked,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Read::Interrupted,
        Err(e) => Read::Failed(e),
    }
}

impl Conn {
    /// A connection whose socket is registered with `Interest::READABLE` under its key.
    // Each argument is a separate part the loop already holds; a struct to carry them
    // once would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: Sock,
        peer: SocketAddr,
        session: BoxedSession,
        key: usize,
        generation: u64,
        shared: Arc<Shared>,
        loop_index: usize,
        registration: Registration,
    ) -> Self {
        Conn {
            client,
            peer,
            session,
            key,
            generation,
            out: OutQueue::default(),
            read_open: true,
            // The client may have written before the socket was registered.
            unread: true,
            closing: false,
            phase: Phase::Open,
            deferred: Vec::new(),
            connected: None,
            backend: None,
            shared,
            loop_index,
            registration,
        }
    }

    /// The connection's id in the session registry.
    pub(crate) fn session_id(&self) -> SessionId {
        self.registration.id()
    }

    /// `ctl kick`: the session gives up ([`tidegate_core::Session::handle_abort`]); the
    /// requests it still queues (a lock release) go to the workers, whose replies are
    /// dropped by generation once the loop has removed this connection.
    pub(crate) fn abort(&mut self, now: Instant, jobs: &Submitter) {
        if self.phase != Phase::Open {
            return;
        }
        self.session.handle_abort(now);
        while let Some(action) = self.session.poll_action() {
            if let Action::Request { id, request } = action {
                let _ = jobs.submit(self.key, self.generation, id, request);
            }
        }
    }

    /// Tells a reused slot from this connection.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// A readable (or closed, or error) event arrived on `peer`'s socket; `closing`
    /// when it reported the peer's EOF or an error.
    pub(crate) fn mark_readable(&mut self, peer: Peer, closing: bool) {
        match peer {
            Peer::Client => {
                self.unread = true;
                self.closing |= closing;
            }
            Peer::Backend => {
                if let Some(backend) = &mut self.backend {
                    backend.unread = true;
                    backend.closing |= closing;
                }
            }
        }
    }

    /// Brings both sockets' registrations up to date: always readable (an edge costs
    /// nothing while the session does not want input), writable only while output is
    /// queued, and a connecting back-end writable only (that is how completion shows).
    pub(crate) fn sync_interest(&mut self, registry: &Registry, key: usize) -> io::Result<()> {
        let want = |out: &OutQueue| {
            if out.is_empty() {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            }
        };
        self.client
            .sync(registry, sock::token(key, Peer::Client), want(&self.out))?;
        if let Some(backend) = &mut self.backend {
            let interest = match backend.state {
                BackendState::Connecting => Interest::WRITABLE,
                BackendState::Open | BackendState::Closing => want(&backend.out),
            };
            backend
                .sock
                .sync(registry, sock::token(key, Peer::Backend), interest)?;
        }
        Ok(())
    }

    /// The deadline the loop must wake this connection at.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open => self.session.poll_timeout(),
            Phase::Closing { until } | Phase::Lingering { until, .. } => Some(until),
            Phase::Spliced { .. } => None,
        }
    }

    /// The answer to one of this connection's requests.
    pub(crate) fn on_reply(
        &mut self,
        now: Instant,
        id: RequestId,
        reply: Reply,
        buf: &mut [u8; MAX_READ],
        jobs: &Submitter,
    ) -> Pump {
        if self.phase != Phase::Open {
            return Pump::Idle;
        }
        self.session.handle_reply(now, id, reply);
        self.pump(now, buf, jobs)
    }

    /// The connection's deadline passed (or may have: spurious calls are harmless).
    pub(crate) fn on_timeout(
        &mut self,
        now: Instant,
        buf: &mut [u8; MAX_READ],
        jobs: &Submitter,
    ) -> Pump {
        match self.phase {
            Phase::Open => self.session.handle_timeout(now),
            Phase::Closing { until } | Phase::Lingering { until, .. } if now >= until => {
                log::debug!("{}: closing timed out, dropping the connection", self.peer);
                return Pump::Remove;
            }
            Phase::Closing { .. } | Phase::Lingering { .. } | Phase::Spliced { .. } => {}
        }
        self.pump(now, buf, jobs)
    }

    /// Drives the connection as far as it goes without blocking: carries out the
    /// session's actions, reads both sockets while the session wants their input (up
    /// to [`READ_BUDGET`] reads in all), writes until the kernel pushes back, reports
    /// connects and drains, and walks the close phases.
    pub(crate) fn pump(
        &mut self,
        now: Instant,
        buf: &mut [u8; MAX_READ],
        jobs: &Submitter,
    ) -> Pump {
        self.drain(now, jobs);
        let mut budget = READ_BUDGET;
        loop {
            let mut progressed = self.check_connect(now, jobs);
            for peer in [Peer::Client, Peer::Backend] {
                if self.may_read(peer) {
                    if budget == 0 {
                        return self.settle(now, buf, Pump::MoreInput);
                    }
                    budget -= 1;
                    progressed |= self.read(now, peer, buf, jobs);
                }
            }
            if let Err(e) = self.out.flush(&self.client.stream) {
                // The client is gone. The session is dropped with the connection: nothing
                // it could still do (even after a `handle_eof`) would reach anyone, and a
                // reply to its outstanding request is dropped by generation.
                log::debug!("{}: write failed: {e}", self.peer);
                return Pump::Remove;
            }
            if self.out.is_empty() && self.out.wrote {
                self.out.wrote = false;
                if self.phase == Phase::Open {
                    self.session.handle_drained(now, Peer::Client);
                    self.drain(now, jobs);
                    progressed = true;
                }
            }
            progressed |= self.flush_backend(now, jobs);
            if !progressed {
                return self.settle(now, buf, Pump::Idle);
            }
        }
    }

    /// Turns a connection whose session asked for a splice into a spliced one, which
    /// keeps the finished session (and what it guards) until it ends. Output still queued for either socket goes before the residuals.
    pub(crate) fn into_spliced(self, now: Instant, generation: u64) -> Result<Spliced, String> {
        let Phase::Spliced {
            to_client,
            to_backend,
            idle,
        } = self.phase
        else {
            return Err("no splice was asked for".into());
        };
        let Some(backend) = self.backend.filter(|b| b.state == BackendState::Open) else {
            return Err("splice asked for without a connected back-end".into());
        };
        let (mut client_head, mut backend_head) = (self.out, backend.out);
        if !client_head.push(to_client) || !backend_head.push(to_backend) {
            return Err("splice residuals over the output limit".into());
        }
        let client = Handover {
            sock: self.client,
            head: client_head,
            eof: !self.read_open,
            unread: self.unread,
            closing: self.closing,
        };
        let backend_side = Handover {
            sock: backend.sock,
            head: backend_head,
            eof: !backend.read_open,
            unread: backend.unread,
            closing: backend.closing,
        };
        Ok(Spliced::new(
            self.peer,
            client,
            backend_side,
            backend.count,
            idle,
            generation,
            now,
        )
        .keeping(self.session, self.registration))
    }

    fn may_read(&self, peer: Peer) -> bool {
        if self.phase != Phase::Open {
            return false;
        }
        let ready = match peer {
            Peer::Client => self.read_open && self.unread,
            Peer::Backend => self
                .backend
                .as_ref()
                .is_some_and(|b| b.state == BackendState::Open && b.read_open && b.unread),
        };
        ready && self.session.wants_read(peer)
    }

    /// One read from `peer` into the session. Returns whether anything happened.
    fn read(
        &mut self,
        now: Instant,
        peer: Peer,
        buf: &mut [u8; MAX_READ],
        jobs: &Submitter,
    ) -> bool {
        let (socket, read_open, unread, closing) = match peer {
            Peer::Client => (
                &self.client.stream,
                &mut self.read_open,
                &mut self.unread,
                self.closing,
            ),
            Peer::Backend => match &mut self.backend {
                Some(b) => (&b.sock.stream, &mut b.read_open, &mut b.unread, b.closing),
                None => return false,
            },
        };
        match read_socket(socket, buf) {
            Read::Data(n) => {
                if n < buf.len() && !closing {
                    *unread = false;
                }
                let input = buf.get(..n).unwrap_or_default();
                self.session.handle_input(now, peer, input);
            }
            Read::Eof => {
                *read_open = false;
                self.session.handle_eof(now, peer);
            }
            Read::Blocked => {
                *unread = false;
                return false;
            }
            Read::Interrupted => return true,
            Read::Failed(e) => {
                log::debug!("{}: read from {peer:?} failed: {e}", self.peer);
                *read_open = false;
                self.session.handle_eof(now, peer);
            }
        }
        self.drain(now, jobs);
        true
    }

    /// Reports a finished back-end connect. Returns whether anything happened.
    fn check_connect(&mut self, now: Instant, jobs: &Submitter) -> bool {
        let Some(backend) = self
            .backend
            .as_mut()
            .filter(|b| b.state == BackendState::Connecting)
        else {
            return false;
        };
        let result = match connect::outcome(&backend.sock.stream) {
            Ok(false) => return false,
            Ok(true) => {
                backend.state = BackendState::Open;
                Ok(())
            }
            Err(e) => {
                self.backend = None;
                Err(format!("connect failed: {e}"))
            }
        };
        if self.phase == Phase::Open {
            self.session.handle_connected(now, Peer::Backend, result);
            self.drain(now, jobs);
        }
        true
    }

    /// Writes queued back-end output, reports its drain, finishes its close. Returns
    /// whether anything happened.
    fn flush_backend(&mut self, now: Instant, jobs: &Submitter) -> bool {
        let Some(backend) = self
            .backend
            .as_mut()
            .filter(|b| b.state != BackendState::Connecting)
        else {
            return false;
        };
        if let Err(e) = backend.out.flush(&backend.sock.stream) {
            // A broken back-end is an EOF to the session; the socket is of no more use.
            log::debug!("{}: write to the back-end failed: {e}", self.peer);
            let told = !backend.read_open || backend.state == BackendState::Closing;
            self.backend = None;
            if !told && self.phase == Phase::Open {
                self.session.handle_eof(now, Peer::Backend);
                self.drain(now, jobs);
            }
            return true;
        }
        if !backend.out.is_empty() {
            return false;
        }
        if backend.state == BackendState::Closing {
            let _ = backend.sock.stream.shutdown(Shutdown::Write);
            self.backend = None;
            return true;
        }
        if backend.out.wrote {
            backend.out.wrote = false;
            if self.phase == Phase::Open {
                self.session.handle_drained(now, Peer::Backend);
                self.drain(now, jobs);
                return true;
            }
        }
        false
    }

    /// Carries out the session's actions until it has none (the single-mutation rule).
    fn drain(&mut self, now: Instant, jobs: &Submitter) {
        loop {
            while let Some(action) = self.session.poll_action() {
                self.carry_out(now, action, jobs);
            }
            if let Some(result) = self.connected.take() {
                if self.phase == Phase::Open {
                    self.session.handle_connected(now, Peer::Backend, result);
                }
                continue;
            }
            if self.deferred.is_empty() {
                self.registration.note_account(self.session.account(), now);
                return;
            }
            for (id, reply) in std::mem::take(&mut self.deferred) {
                if self.phase == Phase::Open {
                    self.session.handle_reply(now, id, reply);
                }
            }
        }
    }

    fn carry_out(&mut self, now: Instant, action: Action, jobs: &Submitter) {
        // Nothing follows Close or Splice; a session that acts anyway is not obeyed.
        if self.phase != Phase::Open {
            return;
        }
        match action {
            Action::Write { to, bytes } => {
                let queue = match to {
                    Peer::Client => Some(&mut self.out),
                    Peer::Backend => self
                        .backend
                        .as_mut()
                        .filter(|b| b.state != BackendState::Closing)
                        .map(|b| &mut b.out),
                };
                let Some(queue) = queue else {
                    log::debug!("{}: write to a closed back-end dropped", self.peer);
                    return;
                };
                if !queue.push(bytes) {
                    log::error!(
                        "{}: session queued over {MAX_PENDING} bytes for {to:?} without waiting \
                         for a drain; closing",
                        self.peer
                    );
                    self.start_close(now);
                }
            }
            Action::Request { id, request } => {
                if let Err(reply) = jobs.submit(self.key, self.generation, id, request) {
                    self.deferred.push((id, reply));
                }
            }
            Action::Close { to: Peer::Client } => self.start_close(now),
            Action::Close { to: Peer::Backend } => match &mut self.backend {
                // Closing a connect in progress cancels it.
                Some(b) if b.state == BackendState::Connecting => self.backend = None,
                Some(b) => b.state = BackendState::Closing,
                None => {}
            },
            Action::Connect {
                to: Peer::Backend,
                addr,
                source,
            } => self.connect(addr, source),
            Action::Splice {
                to_client,
                to_backend,
                idle_timeout,
            } => {
                self.phase = Phase::Spliced {
                    to_client,
                    to_backend,
                    idle: idle_timeout,
                }
            }
            Action::StartTls { .. }
            | Action::Connect {
                to: Peer::Client, ..
            } => {
                log::error!(
                    "{}: session asked the shell for {action:?}; closing",
                    self.peer
                );
                self.start_close(now);
            }
        }
    }

    /// Starts a back-end connection; its outcome reaches the session as
    /// `handle_connected`, at once if the socket cannot even be started.
    fn connect(&mut self, addr: SocketAddr, source: Option<std::net::IpAddr>) {
        if self.backend.is_some() {
            self.connected = Some(Err("a back-end connection is already open".into()));
            return;
        }
        match connect::start(addr, source) {
            Ok(stream) => {
                log::debug!("{}: connecting to back-end {addr}", self.peer);
                self.backend = Some(Backend {
                    sock: Sock::new(stream),
                    state: BackendState::Connecting,
                    out: OutQueue::default(),
                    read_open: true,
                    // Registering the new socket reports input already there.
                    unread: false,
                    closing: false,
                    count: SocketCount::new(&self.shared, self.loop_index),
                });
            }
            Err(e) => self.connected = Some(Err(format!("cannot connect to {addr}: {e}"))),
        }
    }

    fn start_close(&mut self, now: Instant) {
        if self.phase == Phase::Open {
            self.phase = Phase::Closing {
                until: now + CLOSE_FLUSH,
            };
        }
    }

    /// After driving: once a closing connection's output is flushed, sends FIN and
    /// lingers; a lingering connection discards input until the client closes.
    fn settle(&mut self, now: Instant, buf: &mut [u8; MAX_READ], pump: Pump) -> Pump {
        if let Phase::Spliced { .. } = self.phase {
            return Pump::Splice;
        }
        if let Phase::Closing { .. } = self.phase
            && self.out.is_empty()
        {
            if self.client.stream.shutdown(Shutdown::Write).is_err() {
                return Pump::Remove;
            }
            self.phase = Phase::Lingering {
                until: now + LINGER,
                discarded: 0,
            };
            // Linger only while the client is still sending (nginx's heuristic): with
            // nothing unread at this point, closing cannot reset the final reply away.
            let finished = self.discard(buf);
            let sending = matches!(self.phase, Phase::Lingering { discarded, .. } if discarded > 0);
            return if finished || !sending {
                Pump::Remove
            } else {
                pump
            };
        }
        if let Phase::Lingering { .. } = self.phase
            && self.discard(buf)
        {
            return Pump::Remove;
        }
        pump
    }

    /// Reads and throws away input while lingering. Returns true when the connection
    /// is finished (client closed, error, or too much input).
    fn discard(&mut self, buf: &mut [u8; MAX_READ]) -> bool {
        let Phase::Lingering { discarded, .. } = &mut self.phase else {
            return true;
        };
        loop {
            match (&self.client.stream).read(buf) {
                Ok(0) => return true,
                Ok(n) => {
                    *discarded += n;
                    if *discarded > LINGER_DISCARD {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }
}
