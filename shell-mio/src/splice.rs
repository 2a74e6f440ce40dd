//! A spliced connection: the session handed both sockets over (`Action::Splice`) and
//! is gone; bytes now flow client ⇄ back-end without it.
//!
//! Each direction first writes its *head* (output the session had queued, then the
//! residual bytes of the `Splice` action), then moves bytes with `splice(2)` through a
//! pipe borrowed from the loop's [`PipePool`], or, when no pipe can be had, through the
//! loop's read buffer. Either way a direction holds at most one pipe or one buffer of
//! bytes the destination has not taken, and reads from its source only while that is
//! empty, so a slow reader pushes back through TCP onto the sender instead of making
//! us buffer. EOF from a source is passed on with `shutdown(Write)` once everything
//! before it is written; when both directions are done, or either socket fails, or
//! neither carried a byte for the idle timeout, both sockets are closed.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::TcpStream;
use mio::{Interest, Registry};
use tidegate_core::{MAX_READ, Peer};
use tidegate_store::service::BoxedSession;
use tidegate_store::{Registration, SessionId};

use crate::conn::Pump;
use crate::event_loop::SocketCount;
use crate::outq::OutQueue;
use crate::pipes::{PIPE_SIZE, Pipe, PipePool};
use crate::sock::{self, Sock};

/// Bytes one direction moves per turn before other connections get theirs (as the
/// session phase's read budget: 16 × 16 KiB).
const TURN_BUDGET: usize = PIPE_SIZE;
/// Most bytes asked of one `splice(2)` call: what a pipe holds.
const SPLICE_CHUNK: usize = PIPE_SIZE;

/// Two sockets joined after the session ended.
pub(crate) struct Spliced {
    peer: SocketAddr,
    client: Sock,
    backend: Sock,
    /// Client → back-end.
    up: Direction,
    /// Back-end → client.
    down: Direction,
    idle: Duration,
    /// The client socket is registered for writability (see [`Spliced::sync_interest`]).
    client_writable: bool,
    /// The back-end socket is registered for writability.
    backend_writable: bool,
    /// When a byte last moved either way.
    last_active: Instant,
    /// The deadline in the loop's timer table: refreshed only when it fires, so moving
    /// bytes does not touch the table.
    deadline: Instant,
    generation: u64,
    /// Keeps the back-end socket counted as an open connection.
    _backend_count: SocketCount,
    /// The session that asked for the splice, kept until the splice ends: what it
    /// still holds counts the connection (the per-address cap's slot). A session
    /// should free its own state before it asks for a splice.
    _finished: Option<BoxedSession>,
    /// The connection's entry in the session registry (`ctl who`, `ctl kick`).
    registration: Option<Registration>,
}

/// What the session phase hands over to a [`Spliced`] for one socket.
pub(crate) struct Handover {
    /// The socket (registered).
    pub(crate) sock: Sock,
    /// Bytes still owed to this socket, in order: queued output, then the residual.
    pub(crate) head: OutQueue,
    /// Whether this socket's peer already sent EOF (nothing more will be read from it).
    pub(crate) eof: bool,
    /// Whether the socket may hold unread input (no read has found it drained since
    /// its last readable event).
    pub(crate) unread: bool,
    /// Whether the poller reported the peer's EOF or an error, not yet read.
    pub(crate) closing: bool,
}

impl Spliced {
    /// Joins `client` and `backend`; the first turn runs at the next [`Spliced::pump`].
    pub(crate) fn new(
        peer: SocketAddr,
        client: Handover,
        backend: Handover,
        backend_count: SocketCount,
        idle: Duration,
        generation: u64,
        now: Instant,
    ) -> Self {
        Spliced {
            peer,
            up: Direction::new(backend.head, client.eof, client.unread, client.closing),
            down: Direction::new(client.head, backend.eof, backend.unread, backend.closing),
            client: client.sock,
            backend: backend.sock,
            idle,
            client_writable: false,
            backend_writable: false,
            last_active: now,
            deadline: now + idle,
            generation,
            _backend_count: backend_count,
            _finished: None,
            registration: None,
        }
    }

    /// Keeps the finished `session` and the connection's registry entry until the
    /// splice ends.
    pub(crate) fn keeping(mut self, session: BoxedSession, registration: Registration) -> Self {
        self._finished = Some(session);
        self.registration = Some(registration);
        self
    }

    /// The connection's id in the session registry.
    pub(crate) fn session_id(&self) -> Option<SessionId> {
        self.registration.as_ref().map(Registration::id)
    }

    /// Tells a reused slot from this connection.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The idle deadline.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        Some(self.deadline)
    }

    /// A readable (or closed, or error) event arrived on `peer`'s socket; `closing`
    /// when it reported the peer's EOF or an error.
    pub(crate) fn mark_readable(&mut self, peer: Peer, closing: bool) {
        let direction = match peer {
            Peer::Client => &mut self.up,
            Peer::Backend => &mut self.down,
        };
        direction.unread = true;
        direction.closing |= closing;
    }

    /// A socket is registered for writability only from the first time a write to it
    /// was refused (bytes wait for it), and then stays so: short sessions, whose
    /// replies fit the socket buffers, never pay the `epoll_ctl` calls, and a bulk
    /// transfer pays them once (with edge triggering a writable edge only comes after
    /// a refused write, so keeping the interest costs no wake-ups). Registering a
    /// socket that is already writable reports it at once, so no edge is lost.
    pub(crate) fn sync_interest(&mut self, registry: &Registry, key: usize) -> io::Result<()> {
        self.client_writable |= self.down.pending();
        self.backend_writable |= self.up.pending();
        self.client.sync(
            registry,
            sock::token(key, Peer::Client),
            interest(self.client_writable),
        )?;
        self.backend.sync(
            registry,
            sock::token(key, Peer::Backend),
            interest(self.backend_writable),
        )
    }

    /// Registers both sockets under connection key `key` (after a move to another slot).
    pub(crate) fn retoken(&mut self, registry: &Registry, key: usize) -> io::Result<()> {
        self.client.retoken(
            registry,
            sock::token(key, Peer::Client),
            interest(self.client_writable),
        )?;
        self.backend.retoken(
            registry,
            sock::token(key, Peer::Backend),
            interest(self.backend_writable),
        )
    }

    /// The idle deadline passed (or may have).
    pub(crate) fn on_timeout(&mut self, now: Instant) -> Pump {
        let idle_until = self.last_active + self.idle;
        if now >= idle_until {
            log::debug!(
                "{}: spliced connection idle for {:?}; closing",
                self.peer,
                self.idle
            );
            return Pump::Remove;
        }
        self.deadline = idle_until;
        Pump::Idle
    }

    /// Moves what can be moved both ways without blocking.
    pub(crate) fn pump(
        &mut self,
        now: Instant,
        pipes: &mut PipePool,
        buf: &mut [u8; MAX_READ],
    ) -> Pump {
        let up = self.up.pump(
            &self.client.stream,
            &self.backend.stream,
            self.down.done,
            pipes,
            buf,
        );
        let down = self.down.pump(
            &self.backend.stream,
            &self.client.stream,
            self.up.done,
            pipes,
            buf,
        );
        let (up, down) = match (up, down) {
            (Ok(up), Ok(down)) => (up, down),
            (Err(e), _) | (_, Err(e)) => {
                log::debug!("{}: spliced connection broke: {e}", self.peer);
                return Pump::Remove;
            }
        };
        if up.moved || down.moved {
            self.last_active = now;
        }
        if self.up.done && self.down.done {
            log::debug!("{}: spliced connection closed by both sides", self.peer);
            return Pump::Remove;
        }
        if up.more || down.more {
            Pump::MoreInput
        } else {
            Pump::Idle
        }
    }
}

/// Readable always; writable too once a socket needed it.
fn interest(writable: bool) -> Interest {
    if writable {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    }
}

/// What one turn of a direction did.
struct Turn {
    /// Some bytes moved.
    moved: bool,
    /// The budget ran out with input possibly left.
    more: bool,
}

/// One way of a spliced connection.
struct Direction {
    /// Bytes to write before anything read from the source (see the module docs).
    head: OutQueue,
    /// The borrowed pipe and how many bytes it holds.
    pipe: Option<Pipe>,
    in_pipe: usize,
    /// The source may hold unread bytes (cleared only by `WouldBlock` on an empty pipe).
    unread: bool,
    /// A read filled the loop's buffer: this direction carries bulk data (a message
    /// being fetched, one being uploaded), which moves by `splice(2)` from then on
    /// (see [`Direction::copy`]).
    bulk: bool,
    /// The poller reported the source's EOF or an error: read until the read says so,
    /// as the EOF may sit behind data and no further event will announce it.
    closing: bool,
    /// The source sent EOF.
    eof: bool,
    /// EOF was passed on: the destination's sending side is shut down.
    done: bool,
}

impl Direction {
    /// A direction owing `head` to its destination, with its source's state as the
    /// session phase left it.
    fn new(head: OutQueue, eof: bool, unread: bool, closing: bool) -> Self {
        Direction {
            head,
            pipe: None,
            in_pipe: 0,
            unread,
            bulk: false,
            closing,
            eof,
            done: false,
        }
    }

    /// One turn: flush, then read and pass on. EOF from the source is passed on with
    /// `shutdown(Write)`, unless `other_done` (the other direction finished too): the
    /// connection closes right after, and the close sends the FIN.
    fn pump(
        &mut self,
        src: &TcpStream,
        dst: &TcpStream,
        other_done: bool,
        pipes: &mut PipePool,
        buf: &mut [u8; MAX_READ],
    ) -> io::Result<Turn> {
        let mut turn = Turn {
            moved: false,
            more: false,
        };
        let mut budget = TURN_BUDGET;
        loop {
            if !self.flush(dst, &mut turn)? {
                break; // the destination pushes back
            }
            if self.eof {
                if !self.done {
                    self.done = true;
                    if !other_done {
                        shut_write(dst)?;
                    }
                }
                break;
            }
            if !self.unread {
                break;
            }
            if budget == 0 {
                turn.more = true;
                break;
            }
            let read = if !self.bulk {
                self.copy(src, dst, buf)?
            } else if let Some(pipe) = self.pipe.take().or_else(|| pipes.take()) {
                let read = self.splice_in(src, &pipe);
                self.pipe = Some(pipe);
                read?
            } else {
                self.copy(src, dst, buf)?
            };
            match read {
                Some(n) => {
                    budget = budget.saturating_sub(n);
                    turn.moved |= n > 0;
                }
                None => break,
            }
        }
        if self.in_pipe == 0
            && let Some(pipe) = self.pipe.take()
        {
            pipes.give(pipe);
        }
        Ok(turn)
    }

    /// Bytes wait for the destination.
    fn pending(&self) -> bool {
        !self.head.is_empty() || self.in_pipe > 0
    }

    /// Writes the head, then the pipe's bytes. Returns true when both are empty.
    fn flush(&mut self, dst: &TcpStream, turn: &mut Turn) -> io::Result<bool> {
        if !self.head.is_empty() {
            let before = self.head.len();
            self.head.flush(dst)?;
            turn.moved |= self.head.len() != before;
            if !self.head.is_empty() {
                return Ok(false);
            }
        }
        while self.in_pipe > 0 {
            let Some(pipe) = &self.pipe else {
                return Err(io::Error::other("pipe lost while holding bytes"));
            };
            match splice(&pipe.read, dst, self.in_pipe) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    turn.moved = true;
                    self.in_pipe -= n.min(self.in_pipe);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Splices from the source into the (empty) pipe. `Some(n)` bytes came in (0 at
    /// EOF), `None` when the source has nothing now.
    fn splice_in(&mut self, src: &TcpStream, pipe: &Pipe) -> io::Result<Option<usize>> {
        match splice(src, &pipe.write, SPLICE_CHUNK) {
            Ok(0) => {
                self.eof = true;
                Ok(Some(0))
            }
            Ok(n) => {
                self.in_pipe += n;
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The pipe is empty here (we only read after flushing it), so this is
                // the socket having nothing.
                self.unread = false;
                Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(0)),
            Err(e) => Err(e),
        }
    }

    /// One read into the loop's buffer and a write of it; what the destination does not
    /// take is kept in the head (at most one buffer). Every direction starts here:
    /// the commands and replies of a mail session are small, and a plain read and
    /// write move them with fewer system calls than a pipe would. A read that fills
    /// the buffer switches the direction to `splice(2)` for good ([`Direction::bulk`]); one
    /// that does not shows the socket is drained (a TCP read returns less than asked
    /// only when its queue ran empty, and with edge-triggered polling the next
    /// arrival is reported), which saves the read that would only say `WouldBlock`;
    /// not after the poller reported EOF, which may wait behind the data read and
    /// will not be reported again. Also the fallback when no pipe can be had.
    fn copy(
        &mut self,
        mut src: &TcpStream,
        mut dst: &TcpStream,
        buf: &mut [u8; MAX_READ],
    ) -> io::Result<Option<usize>> {
        let n = match src.read(buf) {
            Ok(0) => {
                self.eof = true;
                return Ok(Some(0));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.unread = false;
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Some(0)),
            Err(e) => return Err(e),
        };
        if n < buf.len() {
            self.unread = self.closing;
        } else {
            self.bulk = true;
        }
        let data = buf.get(..n).unwrap_or_default();
        let mut written = 0;
        while written < n {
            match dst.write(data.get(written..).unwrap_or_default()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => written += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(rest) = data.get(written..).filter(|rest| !rest.is_empty()) {
            // At most one buffer, far below the queue's cap: cannot be refused.
            let _ = self.head.push(Bytes::copy_from_slice(rest));
        }
        Ok(Some(n))
    }
}

/// Passes EOF on. A peer that is already gone has nothing to be told.
fn shut_write(dst: &TcpStream) -> io::Result<()> {
    match dst.shutdown(Shutdown::Write) {
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
        _ => Ok(()),
    }
}

/// One non-blocking `splice(2)` of up to `len` bytes (one side must be a pipe).
#[cfg(target_os = "linux")]
fn splice(
    from: impl std::os::fd::AsFd,
    to: impl std::os::fd::AsFd,
    len: usize,
) -> io::Result<usize> {
    use rustix::pipe::SpliceFlags;
    Ok(rustix::pipe::splice(
        from,
        None,
        to,
        None,
        len,
        SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
    )?)
}

/// Without `splice(2)` no pipe is ever lent out, so this is never reached.
#[cfg(not(target_os = "linux"))]
fn splice(_: impl std::os::fd::AsFd, _: impl std::os::fd::AsFd, _: usize) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}
