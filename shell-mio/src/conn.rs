//! One accepted connection: its socket, its session and the bytes between them.
//!
//! Everything here runs on the owning event loop; the loop only adds the registry, the
//! timer table and removal around [`Conn::pump`].

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes};
use mio::Interest;
use mio::net::TcpStream;
use tidegate_core::{Action, MAX_READ, Peer, Reply, RequestId};
use tidegate_store::service::BoxedSession;

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
/// Most buffers handed to one `writev`.
const MAX_IOVECS: usize = 64;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// A connection and its session (the `Conn` of the module docs).
pub(crate) struct Conn {
    socket: TcpStream,
    peer: SocketAddr,
    session: BoxedSession,
    /// This connection's slot and generation, quoted in its requests.
    key: usize,
    generation: u64,
    /// Output the kernel has not taken yet, bounded by the session's high-water mark.
    out: VecDeque<Bytes>,
    /// `out` received bytes since the last `handle_drained`.
    wrote: bool,
    /// False after EOF or a read error: the session has been told, nothing more is read.
    read_open: bool,
    /// The socket may hold unread input: set by every readable event, cleared only by
    /// `WouldBlock`. mio is edge-triggered, so a session whose `wants_read` turns true
    /// again after a reply or a drain must be read without waiting for a new event.
    unread: bool,
    phase: Phase,
    /// Immediate replies (job queue full) to deliver once the current drain ends.
    deferred: Vec<(RequestId, Reply)>,
    /// The deadline this connection has in the loop's timer table.
    pub(crate) timer: Option<Instant>,
    /// The interest the socket is registered with.
    pub(crate) registered: Interest,
    /// Already waiting in the loop's queue of connections with input left.
    pub(crate) queued: bool,
}

impl Conn {
    /// A connection registered with `Interest::READABLE` under token `key`.
    pub(crate) fn new(
        socket: TcpStream,
        peer: SocketAddr,
        session: BoxedSession,
        key: usize,
        generation: u64,
    ) -> Self {
        Conn {
            socket,
            peer,
            session,
            key,
            generation,
            out: VecDeque::new(),
            wrote: false,
            read_open: true,
            // The client may have written before the socket was registered.
            unread: true,
            phase: Phase::Open,
            deferred: Vec::new(),
            timer: None,
            registered: Interest::READABLE,
            queued: false,
        }
    }

    /// Tells a reused slot from this connection.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The socket, for (re/de)registration.
    pub(crate) fn socket(&mut self) -> &mut TcpStream {
        &mut self.socket
    }

    /// A readable (or closed, or error) event arrived.
    pub(crate) fn mark_readable(&mut self) {
        self.unread = true;
    }

    /// The interest the socket needs now: always readable (an edge costs nothing while
    /// the session does not want input), writable only while output is queued.
    pub(crate) fn interest(&self) -> Interest {
        if self.out.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        }
    }

    /// The deadline the loop must wake this connection at.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open => self.session.poll_timeout(),
            Phase::Closing { until } | Phase::Lingering { until, .. } => Some(until),
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
            Phase::Closing { .. } | Phase::Lingering { .. } => {}
        }
        self.pump(now, buf, jobs)
    }

    /// Drives the connection as far as it goes without blocking: carries out the
    /// session's actions, reads while the session wants input (up to [`READ_BUDGET`]),
    /// writes until the kernel pushes back, reports drains, and walks the close phases.
    pub(crate) fn pump(
        &mut self,
        now: Instant,
        buf: &mut [u8; MAX_READ],
        jobs: &Submitter,
    ) -> Pump {
        self.drain(now, jobs);
        let mut budget = READ_BUDGET;
        loop {
            let mut progressed = false;
            if self.may_read() {
                if budget == 0 {
                    return self.settle(now, buf, Pump::MoreInput);
                }
                budget -= 1;
                progressed = self.read(now, buf, jobs);
            }
            if let Err(e) = self.flush() {
                // The client is gone. The session is dropped with the connection: nothing
                // it could still do (even after a `handle_eof`) would reach anyone, and a
                // reply to its outstanding request is dropped by generation.
                log::debug!("{}: write failed: {e}", self.peer);
                return Pump::Remove;
            }
            if self.out.is_empty() && self.wrote {
                self.wrote = false;
                if self.phase == Phase::Open {
                    self.session.handle_drained(now, Peer::Client);
                    self.drain(now, jobs);
                    progressed = true;
                }
            }
            if !progressed {
                return self.settle(now, buf, Pump::Idle);
            }
        }
    }

    fn may_read(&self) -> bool {
        self.phase == Phase::Open
            && self.read_open
            && self.unread
            && self.session.wants_read(Peer::Client)
    }

    /// One read into the session. Returns whether anything happened.
    fn read(&mut self, now: Instant, buf: &mut [u8; MAX_READ], jobs: &Submitter) -> bool {
        match self.socket.read(buf) {
            Ok(n) if n > 0 => self.session.handle_input(now, Peer::Client, &buf[..n]),
            Ok(_) => {
                self.read_open = false;
                self.session.handle_eof(now, Peer::Client);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.unread = false;
                return false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            Err(e) => {
                log::debug!("{}: read failed: {e}", self.peer);
                self.read_open = false;
                self.session.handle_eof(now, Peer::Client);
            }
        }
        self.drain(now, jobs);
        true
    }

    /// Carries out the session's actions until it has none (the single-mutation rule).
    fn drain(&mut self, now: Instant, jobs: &Submitter) {
        loop {
            while let Some(action) = self.session.poll_action() {
                self.carry_out(now, action, jobs);
            }
            if self.deferred.is_empty() {
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
        match action {
            Action::Write {
                to: Peer::Client,
                bytes,
            } => {
                // Nothing follows Close; a session that writes anyway is not obeyed.
                if self.phase == Phase::Open && !bytes.is_empty() {
                    self.out.push_back(bytes);
                    self.wrote = true;
                }
            }
            Action::Request { id, request } => {
                if self.phase == Phase::Open
                    && let Err(reply) = jobs.submit(self.key, self.generation, id, request)
                {
                    self.deferred.push((id, reply));
                }
            }
            Action::Close { to: Peer::Client } => self.start_close(now),
            Action::StartTls { .. } => {
                log::error!(
                    "{}: session asked the shell for StartTls; closing",
                    self.peer
                );
                self.start_close(now);
            }
            Action::Write {
                to: Peer::Backend, ..
            }
            | Action::Close {
                to: Peer::Backend, ..
            }
            | Action::Connect { .. }
            | Action::Splice { .. } => {
                log::error!(
                    "{}: server session addressed a back-end; closing",
                    self.peer
                );
                self.start_close(now);
            }
        }
    }

    fn start_close(&mut self, now: Instant) {
        if self.phase == Phase::Open {
            self.phase = Phase::Closing {
                until: now + CLOSE_FLUSH,
            };
        }
    }

    /// Writes queued output until it is gone or the kernel pushes back.
    fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = slices
                .iter_mut()
                .zip(&self.out)
                .map(|(slice, bytes)| *slice = IoSlice::new(bytes))
                .count();
            match self.socket.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.consume(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Drops `written` bytes from the front of the output queue.
    fn consume(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.out.front_mut() else {
                return;
            };
            if front.len() > written {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.out.pop_front();
        }
    }

    /// After driving: once a closing connection's output is flushed, sends FIN and
    /// lingers; a lingering connection discards input until the client closes.
    fn settle(&mut self, now: Instant, buf: &mut [u8; MAX_READ], pump: Pump) -> Pump {
        if let Phase::Closing { .. } = self.phase
            && self.out.is_empty()
        {
            if self.socket.shutdown(Shutdown::Write).is_err() {
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
            match self.socket.read(buf) {
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
