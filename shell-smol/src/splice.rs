//! A spliced connection: the session handed both sockets over (`Action::Splice`) and
//! is gone; the task now copies bytes client ⇄ back-end without it.
//!
//! Each direction first writes its *head* (output the session had queued, then the
//! residual bytes of the `Splice` action), then copies: one non-blocking read into a
//! [`COPY_BUF`] stack buffer, written on at once; whatever the destination does not
//! take stays in the head, and the source is read again only once the head is empty.
//! So a direction holds at most one buffer of bytes, and a slow reader pushes back
//! through TCP onto the sender. Nothing is held across an `.await` but the heads, so an
//! idle spliced connection costs two sockets and this struct. EOF from a source is
//! passed on with `shutdown(Write)` after everything before it; when both directions
//! are done, either socket fails, neither carried a byte for the idle timeout, or the
//! shutdown cut comes, both sockets are closed.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use bytes::Bytes;
use futures_lite::future;

use tidegate_store::Registration;
use tidegate_store::service::BoxedSession;

use crate::accept::Slot;
use crate::output::Output;
use crate::signal::Waiter;

/// The copy buffer of one read: one per executor thread ([`COPY`]), used only
/// within a read and its write, so an idle spliced connection holds none. Large, so a
/// bulk transfer needs few reads per wake-up.
const COPY_BUF: usize = 256 * 1024;
/// Bytes one direction moves per turn before the task yields to others.
const TURN_BUDGET: usize = 1024 * 1024;

thread_local! {
    /// The executor thread's copy buffer, allocated (and zeroed) once, not per read.
    static COPY: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; COPY_BUF]);
}

/// One side of the splice as the session phase hands it over.
pub(crate) struct Side {
    /// The socket.
    pub(crate) stream: Async<TcpStream>,
    /// Bytes still owed to this socket: queued output, then the residual.
    pub(crate) head: Output,
    /// Its peer already sent EOF: nothing more will be read from it.
    pub(crate) eof: bool,
}

/// Why a splice ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SpliceEnd {
    /// Both sides closed their sending side and everything was delivered.
    Finished,
    /// A socket failed.
    Broken,
    /// Neither side sent a byte for the idle timeout.
    Idle,
    /// The shutdown grace period ended.
    Cut,
}

/// A splice ready to run: both sides, its idle timeout, the shutdown cut.
pub(crate) struct Job {
    /// The client's address, for the log.
    pub(crate) peer: SocketAddr,
    /// The accepted connection.
    pub(crate) client: Side,
    /// The connection the session opened.
    pub(crate) backend: Side,
    /// Close both when neither carried a byte for this long.
    pub(crate) idle: Duration,
    /// Fired when the shutdown grace period ends.
    pub(crate) cut: Waiter,
    /// Keeps the back-end socket counted.
    pub(crate) backend_slot: Slot,
    /// The session that asked for the splice, kept until the splice ends: what it
    /// still holds counts the connection (the per-address cap's slot). A session
    /// should free its own state before it asks for a splice.
    pub(crate) finished: BoxedSession,
    /// The connection's entry in the session registry, until the splice ends.
    pub(crate) registration: Registration,
}

impl Job {
    /// Copies both ways until the splice ends; both sockets are closed on return.
    pub(crate) async fn run(self) -> SpliceEnd {
        let Job {
            peer,
            client,
            backend,
            idle,
            mut cut,
            backend_slot,
            finished,
            registration,
        } = self;
        let end = run(peer, client, backend, idle, &mut cut).await;
        drop((backend_slot, finished, registration));
        end
    }
}

/// Copies both ways until the splice ends; dropping the sockets then closes both.
async fn run(
    peer: SocketAddr,
    client: Side,
    backend: Side,
    idle: Duration,
    cut: &mut Waiter,
) -> SpliceEnd {
    let mut up = Direction::new(backend.head, client.eof);
    let mut down = Direction::new(client.head, backend.eof);
    let (client, backend) = (client.stream, backend.stream);
    let mut client_io = Ready::default();
    let mut backend_io = Ready::default();
    let mut last_active = Instant::now();
    let mut timer = Timer::at(last_active + idle);
    loop {
        let now = Instant::now();
        let up_turn = up.pump(
            client.get_ref(),
            backend.get_ref(),
            down.done,
            &mut client_io.read,
            &mut backend_io.write,
        );
        let down_turn = down.pump(
            backend.get_ref(),
            client.get_ref(),
            up.done,
            &mut backend_io.read,
            &mut client_io.write,
        );
        let (up_turn, down_turn) = match (up_turn, down_turn) {
            (Ok(u), Ok(d)) => (u, d),
            (Err(e), _) | (_, Err(e)) => {
                log::debug!("{peer}: spliced connection broke: {e}");
                return SpliceEnd::Broken;
            }
        };
        if up_turn.moved || down_turn.moved {
            last_active = now;
        }
        if up.done && down.done {
            return SpliceEnd::Finished;
        }
        if up_turn.more || down_turn.more {
            future::yield_now().await;
            continue;
        }
        // Wait for what the directions need, the idle deadline or the cut.
        let want = Wants {
            client_read: up.wants_read(&client_io),
            client_write: down.wants_write(&client_io),
            backend_read: down.wants_read(&backend_io),
            backend_write: up.wants_write(&backend_io),
        };
        let wake = future::poll_fn(|cx| {
            if cut.poll_fired(cx).is_ready() {
                return Poll::Ready(Err(SpliceEnd::Cut));
            }
            let mut woke = Woke {
                timer: Pin::new(&mut timer).poll(cx).is_ready(),
                client_read: want.client_read && client.poll_readable(cx).is_ready(),
                client_write: want.client_write && client.poll_writable(cx).is_ready(),
                backend_read: want.backend_read && backend.poll_readable(cx).is_ready(),
                backend_write: want.backend_write && backend.poll_writable(cx).is_ready(),
            };
            let any =
                woke.client_read || woke.client_write || woke.backend_read || woke.backend_write;
            if any || woke.timer {
                woke.timer &= !any;
                Poll::Ready(Ok(woke))
            } else {
                Poll::Pending
            }
        })
        .await;
        let woke = match wake {
            Ok(woke) => woke,
            Err(end) => return end,
        };
        client_io.read |= woke.client_read;
        client_io.write |= woke.client_write;
        backend_io.read |= woke.backend_read;
        backend_io.write |= woke.backend_write;
        if woke.timer {
            let idle_until = last_active + idle;
            if Instant::now() >= idle_until {
                log::debug!("{peer}: spliced connection idle for {idle:?}; closing");
                return SpliceEnd::Idle;
            }
            timer.set_at(idle_until);
        }
    }
}

/// What a socket may do without waiting (cleared by `WouldBlock`, set by readiness).
struct Ready {
    read: bool,
    write: bool,
}

impl Default for Ready {
    fn default() -> Self {
        Ready {
            read: true,
            write: true,
        }
    }
}

#[derive(Clone, Copy)]
struct Wants {
    client_read: bool,
    client_write: bool,
    backend_read: bool,
    backend_write: bool,
}

struct Woke {
    timer: bool,
    client_read: bool,
    client_write: bool,
    backend_read: bool,
    backend_write: bool,
}

/// What one turn of a direction did.
struct Turn {
    moved: bool,
    /// The budget ran out with input possibly left.
    more: bool,
}

/// One way of the splice.
struct Direction {
    head: Output,
    /// The source sent EOF.
    eof: bool,
    /// EOF was passed on to the destination.
    done: bool,
}

impl Direction {
    fn new(head: Output, eof: bool) -> Self {
        Direction {
            head,
            eof,
            done: false,
        }
    }

    /// Waiting for the source to become readable makes sense.
    fn wants_read(&self, src: &Ready) -> bool {
        !src.read && !self.eof && self.head.is_empty()
    }

    /// Waiting for the destination to become writable makes sense.
    fn wants_write(&self, dst: &Ready) -> bool {
        !dst.write && !self.head.is_empty()
    }

    /// One turn: flush the head, then read and pass on. EOF from the source is passed
    /// on with `shutdown(Write)`, unless `other_done` (the other direction finished
    /// too): the splice ends right after, and closing the socket sends the FIN.
    fn pump(
        &mut self,
        src: &TcpStream,
        dst: &TcpStream,
        other_done: bool,
        can_read: &mut bool,
        can_write: &mut bool,
    ) -> io::Result<Turn> {
        let mut turn = Turn {
            moved: false,
            more: false,
        };
        let mut budget = TURN_BUDGET;
        loop {
            if !self.head.is_empty() {
                if !*can_write {
                    break;
                }
                match self.head.write_to(dst) {
                    Ok(n) => turn.moved |= n > 0,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if !self.head.is_empty() {
                    *can_write = false;
                    break;
                }
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
            if !*can_read {
                break;
            }
            if budget == 0 {
                turn.more = true;
                break;
            }
            let step = COPY.with(|buf| match buf.try_borrow_mut() {
                Ok(mut buf) => self.copy(src, dst, &mut buf, can_read, can_write),
                // Not reentrant; a nested use would be a bug: copy through a small one.
                Err(_) => self.copy(src, dst, &mut [0; 4096], can_read, can_write),
            })?;
            match step {
                Copied::Bytes(n) => {
                    turn.moved = true;
                    budget = budget.saturating_sub(n);
                }
                Copied::Eof | Copied::Interrupted => {}
                Copied::Drained => break,
            }
        }
        Ok(turn)
    }

    /// One read from `src` into `buf` and a write of it to `dst`; what `dst` does not
    /// take goes to the head. A read shorter than the buffer shows the socket's queue
    /// ran empty (a TCP read returns less than asked only then), so `can_read` is
    /// cleared without the read that would only say `WouldBlock`: waiting for
    /// readability re-arms the poller, which reports at once anything that arrived
    /// since, an EOF included.
    fn copy(
        &mut self,
        mut src: &TcpStream,
        dst: &TcpStream,
        buf: &mut [u8],
        can_read: &mut bool,
        can_write: &mut bool,
    ) -> io::Result<Copied> {
        let n = match src.read(buf) {
            Ok(0) => {
                self.eof = true;
                return Ok(Copied::Eof);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *can_read = false;
                return Ok(Copied::Drained);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Copied::Interrupted),
            Err(e) => return Err(e),
        };
        if n < buf.len() {
            *can_read = false;
        }
        let data = buf.get(..n).unwrap_or_default();
        let written = if *can_write {
            write_some(dst, data)?
        } else {
            0
        };
        if let Some(rest) = data.get(written..).filter(|rest| !rest.is_empty()) {
            self.head.push(Bytes::copy_from_slice(rest));
        }
        Ok(Copied::Bytes(n))
    }
}

/// What one [`Direction::copy`] did.
enum Copied {
    /// Moved this many bytes (some may wait in the head).
    Bytes(usize),
    /// The source sent EOF.
    Eof,
    /// A signal interrupted the read: try again.
    Interrupted,
    /// The source has nothing now.
    Drained,
}

/// Writes as much of `data` as the socket takes now.
fn write_some(mut dst: &TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match dst.write(data.get(written..).unwrap_or_default()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Passes EOF on. A peer that is already gone has nothing to be told.
fn shut_write(dst: &TcpStream) -> io::Result<()> {
    match dst.shutdown(Shutdown::Write) {
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
        _ => Ok(()),
    }
}
