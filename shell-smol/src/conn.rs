//! One connection task: drives a session over a non-blocking socket.
//!
//! The task alternates between a *turn* (all work possible without waiting: due
//! timers, arrived replies, writing, one read) and a *wait* for whichever comes first:
//! readable (only while the session wants input), writable (only while output is
//! pending), a store reply, the session's deadline, or the shutdown cut.
//!
//! Cancellation safety: the wait only observes readiness. Bytes are read and written
//! by non-blocking calls in the turn, which is synchronous: read bytes reach
//! `handle_input` before the next `.await`, and unwritten bytes stay in the
//! connection's output queue. Dropping the wait (a branch lost a race, or the task was
//! cancelled) therefore never loses data. The read buffer is a stack array for the
//! same reason: no read byte is ever held across an `.await`, so idle connections do
//! not each keep a [`MAX_READ`] buffer.

use std::io::{self, Read as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use bytes::Bytes;
use futures_lite::future;
use tidegate_core::{Action, Failure, MAX_READ, Peer, Reply, Request, RequestId};
use tidegate_store::Registration;
use tidegate_store::service::BoxedSession;

use crate::accept::{Shared, Slot};
use crate::connect;
use crate::inbox::{self, Answer, Inbox, Poster};
use crate::output::Output;
use crate::signal::{Signal, Waiter};
use crate::splice;

/// How long a closing connection may take to flush its last bytes to a slow client.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);
/// After the final flush and half-close, how long unread client input is discarded
/// before the socket is closed (see [`Conn::linger`]).
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 64 * 1024;
/// Hard cap on pending output. Sessions stay far below it (POP3 stops at 256 KiB); a
/// session that does not is closed rather than allowed to exhaust memory.
const MAX_PENDING_OUTPUT: usize = 16 * 1024 * 1024;
/// Turns in a row without waiting before the task yields to others on its thread.
const BUDGET: u32 = 32;

/// Runs one accepted connection to its end. `slot` keeps it counted until then. A
/// splice continues in a task of its own on `tasks`, which takes the slot along: this
/// task's future is sized for the session phase, and an idle spliced connection
/// should not keep that much memory.
pub(crate) async fn run(
    shared: Arc<Shared>,
    tasks: Arc<async_executor::Executor<'static>>,
    slot: Slot,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    listener: usize,
    busy: bool,
) {
    let now = Instant::now();
    let session = if busy {
        shared.factory.busy(listener, peer, now)
    } else {
        shared.factory.open(listener, peer, now)
    };
    // The connection's own signal for `ctl kick`, waited on with the shutdown cut.
    let kick = Arc::new(Signal::default());
    let registration = shared.sessions.register(listener, peer, now, kick.clone());
    let mut conn = Conn::new(&shared, stream, peer, session, registration, kick);
    let end = conn.drive().await;
    log::debug!("{peer}: connection ended: {end:?}");
    match end {
        End::Closed => conn.linger().await,
        End::Spliced => {
            if let Some(job) = conn.into_splice() {
                let task = async move {
                    let end = job.run().await;
                    log::debug!("{peer}: splice ended: {end:?}");
                    drop(slot);
                };
                tasks.spawn(crate::contained("splice", task)).detach();
                return;
            }
        }
        // Kicked, or cut at the end of the shutdown grace: the session gives up and
        // what it must still release (a POP3 lock) goes to the blocking pool.
        End::Cut => conn.abort(),
        End::PeerGone | End::FlushTimeout => {}
    }
    drop(slot);
}

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The session closed and its output was flushed.
    Closed,
    /// The session closed after the socket broke; its output was discarded.
    PeerGone,
    /// The client did not read the final output in time.
    FlushTimeout,
    /// The shutdown grace period ended.
    Cut,
    /// The session handed both sockets over: run the splice.
    Spliced,
}

/// What ended a wait.
#[derive(Default)]
struct Wake {
    cut: bool,
    readable: bool,
    writable: bool,
    timer: bool,
    answer: Option<Answer>,
    backend_readable: bool,
    backend_writable: bool,
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
    stream: Async<TcpStream>,
    state: BackendState,
    out: Output,
    /// As the client's flags: no `WouldBlock` since the last readiness.
    can_read: bool,
    can_write: bool,
    /// `handle_eof(Backend)` was delivered: no more reads.
    eof: bool,
    /// Keeps the socket counted as an open connection.
    slot: Slot,
}

/// What the session asked for with `Action::Splice`.
struct SpliceRequest {
    to_client: Bytes,
    to_backend: Bytes,
    idle: Duration,
}

/// One connection's socket, session and buffers.
struct Conn {
    peer: SocketAddr,
    stream: Async<TcpStream>,
    session: BoxedSession,
    executor: Arc<dyn tidegate_store::Executor>,
    /// Bytes owed to the client, in order.
    out: Output,
    /// Cloned into every request; the inbox holds at most one reply per outstanding
    /// request, which the session bounds.
    answers_tx: Poster,
    answers: Inbox,
    /// Fires at `armed`, which is at or before the session's deadline: the timer is
    /// moved only to an earlier deadline. Every command pushes the idle timeout later,
    /// and each `set_at` of an async-io timer wakes the reactor thread to re-sort its
    /// timers; instead the armed timer fires early, [`Conn::turn`] finds nothing due on
    /// the clock, and the next wait arms the real deadline (about one wake-up per
    /// timeout period instead of one per command). A deadline that goes away leaves the
    /// timer to fire once for nothing.
    timer: Timer,
    armed: Option<Instant>,
    cut: Waiter,
    /// The last read did not return `WouldBlock` (or readiness was reported since).
    can_read: bool,
    /// The last write did not return `WouldBlock` (or readiness was reported since).
    can_write: bool,
    /// `handle_eof` was delivered: no more reads.
    eof: bool,
    /// A write failed: output is discarded from now on.
    dead: bool,
    /// The session closed: flush until this deadline, then end.
    closing: Option<Instant>,
    /// The back-end socket of a proxy session.
    backend: Option<Backend>,
    /// A connect outcome known at once, delivered after the current drain.
    connected: Option<Result<(), String>>,
    /// Set by `Action::Splice`: the session is finished.
    splice: Option<SpliceRequest>,
    /// For counting back-end sockets.
    shared: Arc<Shared>,
    /// This connection's entry in the session registry; told the session's account
    /// after every drain until it has one.
    registration: Registration,
}

impl Conn {
    fn new(
        shared: &Arc<Shared>,
        stream: Async<TcpStream>,
        peer: SocketAddr,
        session: BoxedSession,
        registration: Registration,
        kick: Arc<Signal>,
    ) -> Self {
        let (answers, answers_tx) = inbox::inbox();
        Conn {
            peer,
            stream,
            session,
            executor: shared.executor.clone(),
            out: Output::default(),
            answers_tx,
            answers,
            timer: Timer::never(),
            armed: None,
            cut: Waiter::new(shared.cut.clone()).or(kick),
            can_read: true,
            can_write: true,
            eof: false,
            dead: false,
            closing: None,
            backend: None,
            connected: None,
            splice: None,
            shared: shared.clone(),
            registration,
        }
    }

    /// Runs turns and waits until the connection ends.
    async fn drive(&mut self) -> End {
        // The greeting (or busy reply) is queued by the session's constructor.
        self.drain_actions(Instant::now());
        let mut budget = BUDGET;
        loop {
            match self.turn() {
                Err(end) => return end,
                Ok(true) => {
                    budget -= 1;
                    if budget == 0 {
                        budget = BUDGET;
                        future::yield_now().await;
                    }
                    continue;
                }
                Ok(false) => budget = BUDGET,
            }
            let wake = self.wait().await;
            if wake.cut {
                return End::Cut;
            }
            self.can_read |= wake.readable;
            self.can_write |= wake.writable;
            if let Some(backend) = &mut self.backend {
                backend.can_read |= wake.backend_readable;
                backend.can_write |= wake.backend_writable;
            }
            if wake.timer {
                // A fired timer must be set again even for the same deadline.
                self.armed = None;
            }
            if let Some((id, reply)) = wake.answer {
                let now = Instant::now();
                self.session.handle_reply(now, id, *reply);
                self.drain_actions(now);
            }
        }
    }

    /// Does everything possible without waiting. `Ok(true)`: something happened, so
    /// there may be more to do; `Ok(false)`: wait for an event.
    fn turn(&mut self) -> Result<bool, End> {
        let now = Instant::now();
        if self.splice.is_some() {
            return Err(End::Spliced);
        }
        if let Some(deadline) = self.closing {
            if self.out.is_empty() || self.dead {
                return Err(if self.dead {
                    End::PeerGone
                } else {
                    End::Closed
                });
            }
            if now >= deadline {
                log::debug!("{}: client did not read its last output", self.peer);
                return Err(End::FlushTimeout);
            }
        }
        let mut progress = false;
        // Deadlines: compare with the clock ourselves; a timer may fire early or late.
        if self.closing.is_none() && self.session.poll_timeout().is_some_and(|d| d <= now) {
            self.session.handle_timeout(now);
            self.drain_actions(now);
            progress = true;
        }
        while self.closing.is_none() {
            let Some((id, reply)) = self.answers.take() else {
                break;
            };
            self.session.handle_reply(now, id, *reply);
            self.drain_actions(now);
            progress = true;
        }
        progress |= self.write(now);
        progress |= self.read(now);
        progress |= self.backend_connect(now);
        progress |= self.backend_write(now);
        progress |= self.backend_read(now);
        Ok(progress)
    }

    /// Whether the session is still running (not closed, not handed over).
    fn running(&self) -> bool {
        self.closing.is_none() && self.splice.is_none()
    }

    /// Reports a finished back-end connect. Returns true on progress.
    fn backend_connect(&mut self, now: Instant) -> bool {
        let Some(backend) = self
            .backend
            .as_mut()
            .filter(|b| b.state == BackendState::Connecting && b.can_write)
        else {
            return false;
        };
        let result = match connect::outcome(backend.stream.get_ref()) {
            Ok(false) => {
                backend.can_write = false;
                return false;
            }
            Ok(true) => {
                backend.state = BackendState::Open;
                Ok(())
            }
            Err(e) => {
                self.backend = None;
                Err(format!("connect failed: {e}"))
            }
        };
        if self.running() {
            self.session.handle_connected(now, Peer::Backend, result);
            self.drain_actions(now);
        }
        true
    }

    /// Writes queued back-end output; reports its drain or finishes its close.
    /// Returns true on progress.
    fn backend_write(&mut self, now: Instant) -> bool {
        let Some(backend) = self
            .backend
            .as_mut()
            .filter(|b| b.state != BackendState::Connecting)
        else {
            return false;
        };
        if backend.out.is_empty() {
            if backend.state == BackendState::Closing {
                let _ = backend.stream.get_ref().shutdown(Shutdown::Write);
                self.backend = None;
                return true;
            }
            return false;
        }
        if !backend.can_write {
            return false;
        }
        match backend.out.write_to(backend.stream.get_ref()) {
            Ok(_) if backend.out.is_empty() => {
                if backend.state == BackendState::Open && self.running() {
                    self.session.handle_drained(now, Peer::Backend);
                    self.drain_actions(now);
                }
                true
            }
            Ok(_) => {
                backend.can_write = false;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                backend.can_write = false;
                false
            }
            Err(e) => {
                // A broken back-end is an EOF to the session; the socket is of no more use.
                log::debug!("{}: write to the back-end failed: {e}", self.peer);
                let told = backend.eof || backend.state == BackendState::Closing;
                self.backend = None;
                if !told && self.running() {
                    self.session.handle_eof(now, Peer::Backend);
                    self.drain_actions(now);
                }
                true
            }
        }
    }

    /// Reads once from the back-end if the session wants its input. Returns true on
    /// progress.
    fn backend_read(&mut self, now: Instant) -> bool {
        if !self.wants(Peer::Backend) {
            return false;
        }
        let Some(backend) = self.backend.as_mut().filter(|b| b.can_read) else {
            return false;
        };
        let mut input = [0u8; MAX_READ];
        match backend.stream.get_ref().read(&mut input) {
            Ok(0) => {
                backend.eof = true;
                self.session.handle_eof(now, Peer::Backend);
            }
            Ok(n) => {
                self.session
                    .handle_input(now, Peer::Backend, input.get(..n).unwrap_or_default())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                backend.can_read = false;
                return false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            Err(e) => {
                log::debug!("{}: read from the back-end failed: {e}", self.peer);
                backend.eof = true;
                self.session.handle_eof(now, Peer::Backend);
            }
        }
        self.drain_actions(now);
        true
    }

    /// Whether bytes from `peer` would be handed to the session now.
    fn wants(&self, peer: Peer) -> bool {
        if !self.running() {
            return false;
        }
        let open = match peer {
            Peer::Client => !self.eof && !self.dead,
            Peer::Backend => self
                .backend
                .as_ref()
                .is_some_and(|b| b.state == BackendState::Open && !b.eof),
        };
        open && self.session.wants_read(peer)
    }

    /// Takes both sockets and the finished session (kept for what it guards) for the
    /// splice and drops everything else;
    /// `None` (logged) when the session asked for a splice without a connected back-end.
    fn into_splice(self) -> Option<splice::Job> {
        let Conn {
            peer,
            stream,
            session,
            executor,
            mut out,
            answers_tx,
            answers,
            timer,
            eof,
            backend,
            splice,
            cut,
            registration,
            ..
        } = self;
        // Nothing of the session phase outlives it: a spliced connection may sit idle
        // for a long time, and every byte it holds is multiplied by their number.
        drop((executor, answers_tx, answers, timer));
        let (Some(request), Some(backend)) =
            (splice, backend.filter(|b| b.state == BackendState::Open))
        else {
            log::error!("{peer}: splice asked for without a connected back-end; closing");
            return None;
        };
        let Backend {
            stream: backend_stream,
            out: mut backend_out,
            eof: backend_eof,
            slot: backend_slot,
            ..
        } = backend;
        out.push(request.to_client);
        backend_out.push(request.to_backend);
        let client = splice::Side {
            stream,
            head: out,
            eof,
        };
        let backend = splice::Side {
            stream: backend_stream,
            head: backend_out,
            eof: backend_eof,
        };
        Some(splice::Job {
            peer,
            client,
            backend,
            idle: request.idle,
            cut,
            backend_slot,
            finished: session,
            registration,
        })
    }

    /// Writes pending output. After the queue empties the session hears
    /// `handle_drained`, which may produce more. Returns true on progress.
    fn write(&mut self, now: Instant) -> bool {
        if self.out.is_empty() || !self.can_write || self.dead {
            return false;
        }
        match self.out.write_to(self.stream.get_ref()) {
            Ok(_) if self.out.is_empty() => {
                if self.running() {
                    self.session.handle_drained(now, Peer::Client);
                    self.drain_actions(now);
                }
                true
            }
            Ok(_) => {
                // Partial: the socket buffer is full.
                self.can_write = false;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.can_write = false;
                false
            }
            Err(e) => {
                log::debug!("{}: write failed: {e}", self.peer);
                self.dead = true;
                self.out.clear();
                self.deliver_eof(now);
                true
            }
        }
    }

    /// Reads once (at most [`MAX_READ`] bytes) if the session wants input. Returns true
    /// on progress.
    fn read(&mut self, now: Instant) -> bool {
        if !self.can_read || !self.wants_input() {
            return false;
        }
        let mut input = [0u8; MAX_READ];
        match self.stream.get_ref().read(&mut input) {
            Ok(0) => self.deliver_eof(now),
            Ok(n) => {
                self.session.handle_input(now, Peer::Client, &input[..n]);
                self.drain_actions(now);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.can_read = false;
                return false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::debug!("{}: read failed: {e}", self.peer);
                self.deliver_eof(now);
            }
        }
        true
    }

    /// Whether bytes from the client would be handed to the session now.
    fn wants_input(&self) -> bool {
        self.wants(Peer::Client)
    }

    /// Tells the session the client is gone (once).
    fn deliver_eof(&mut self, now: Instant) {
        if !self.eof && self.running() {
            self.eof = true;
            self.session.handle_eof(now, Peer::Client);
            self.drain_actions(now);
        }
        self.eof = true;
    }

    /// Drains the session's actions until `None` (the single-mutation rule), then
    /// delivers a connect outcome that was known at once (and drains again).
    fn drain_actions(&mut self, now: Instant) {
        loop {
            while let Some(action) = self.session.poll_action() {
                // Nothing follows Splice; a session that acts anyway is not obeyed.
                if self.splice.is_none() {
                    self.carry_out(now, action);
                }
            }
            let Some(result) = self.connected.take() else {
                self.registration.note_account(self.session.account(), now);
                return;
            };
            if self.running() {
                self.session.handle_connected(now, Peer::Backend, result);
            }
        }
    }

    fn carry_out(&mut self, now: Instant, action: Action) {
        match action {
            Action::Write { to, bytes } => {
                if self.closing.is_some() {
                    return;
                }
                let queue = match to {
                    Peer::Client if !self.dead => &mut self.out,
                    Peer::Client => return,
                    Peer::Backend => match &mut self.backend {
                        Some(b) if b.state != BackendState::Closing => &mut b.out,
                        _ => {
                            log::debug!("{}: write to a closed back-end dropped", self.peer);
                            return;
                        }
                    },
                };
                queue.push(bytes);
                if queue.len() > MAX_PENDING_OUTPUT {
                    log::error!(
                        "{}: session queued over {MAX_PENDING_OUTPUT} bytes for {to:?} without \
                         waiting for a drain; closing",
                        self.peer
                    );
                    self.begin_close(now);
                }
            }
            Action::Request { id, request } => self.spawn_request(id, request),
            Action::Close { to: Peer::Client } => self.begin_close(now),
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
            } => {
                if self.closing.is_some() {
                    return;
                }
                self.connect(addr, source);
            }
            Action::Splice {
                to_client,
                to_backend,
                idle_timeout,
            } => {
                if self.closing.is_none() {
                    self.splice = Some(SpliceRequest {
                        to_client,
                        to_backend,
                        idle: idle_timeout,
                    });
                }
            }
            Action::StartTls { .. }
            | Action::Connect {
                to: Peer::Client, ..
            } => {
                log::error!(
                    "{}: session asked the shell for {action:?}; sessions must be wrapped in \
                     tls::Secured and connect only back-ends. Closing",
                    self.peer
                );
                self.begin_close(now);
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
        match connect::start(addr, source).and_then(Async::new) {
            Ok(stream) => {
                log::debug!("{}: connecting to back-end {addr}", self.peer);
                self.backend = Some(Backend {
                    stream,
                    state: BackendState::Connecting,
                    out: Output::default(),
                    can_read: true,
                    // Writable is how the connect's completion shows: wait for it.
                    can_write: false,
                    eof: false,
                    slot: Slot::backend(&self.shared),
                });
            }
            Err(e) => self.connected = Some(Err(format!("cannot connect to {addr}: {e}"))),
        }
    }

    fn begin_close(&mut self, now: Instant) {
        if self.closing.is_none() {
            self.closing = Some(now + CLOSE_FLUSH);
        }
    }

    /// Runs a request inline when the executor can answer it at once, else on the
    /// blocking pool; either way the reply comes back through the inbox.
    ///
    /// The request is detached: if the connection ends first it still completes (a
    /// half-applied store operation would be worse than a wasted one) and the reply is
    /// dropped with the inbox.
    fn spawn_request(&self, id: RequestId, request: Request) {
        let executor = self.executor.clone();
        let answers = self.answers_tx.clone();
        // Cheap requests are answered here, saving the trip to the blocking pool.
        match catch_unwind(AssertUnwindSafe(|| executor.execute_inline(&request))) {
            Ok(Some(reply)) => {
                answers.post((id, Box::new(reply)));
                return;
            }
            Ok(None) => {}
            Err(_) => {
                log::error!("inline request executor panicked; answering a temporary failure");
                answers.post((
                    id,
                    Box::new(Reply::Failed(Failure::Temporary("internal error".into()))),
                ));
                return;
            }
        };
        blocking::unblock(move || {
            let reply = catch_unwind(AssertUnwindSafe(|| executor.execute(request)))
                .unwrap_or_else(|_| {
                    log::error!("request executor panicked; answering a temporary failure");
                    Reply::Failed(Failure::Temporary("internal error".into()))
                });
            // Dropped if the connection is gone: then nobody needs the reply.
            answers.post((id, Box::new(reply)));
        })
        .detach();
    }

    /// The connection is being dropped from outside the protocol (`ctl kick` or the
    /// shutdown cut): the session gives up and only its requests are carried out, their
    /// replies going to an inbox nobody reads.
    fn abort(&mut self) {
        if !self.running() {
            return;
        }
        self.session.handle_abort(Instant::now());
        while let Some(action) = self.session.poll_action() {
            if let Action::Request { id, request } = action {
                self.spawn_request(id, request);
            }
        }
    }

    /// Waits for the next event the connection can act on.
    async fn wait(&mut self) -> Wake {
        let deadline = self.closing.or_else(|| self.session.poll_timeout());
        if let Some(at) = deadline
            && self.armed.is_none_or(|armed| at < armed)
        {
            self.timer.set_at(at);
            self.armed = Some(at);
        }
        let want_read = !self.can_read && self.wants_input();
        let want_write = !self.can_write && !self.out.is_empty() && !self.dead;
        let want_answers = self.closing.is_none();
        let backend_wants_input = self.wants(Peer::Backend);
        let (want_backend_read, want_backend_write) = match &self.backend {
            Some(b) => (
                !b.can_read && backend_wants_input,
                !b.can_write && (b.state == BackendState::Connecting || !b.out.is_empty()),
            ),
            None => (false, false),
        };
        let Conn {
            stream,
            answers,
            timer,
            armed,
            cut,
            backend,
            ..
        } = self;
        future::poll_fn(|cx| {
            let mut wake = Wake {
                cut: cut.poll_fired(cx).is_ready(),
                // An error counts as ready: the next read or write reports it.
                readable: want_read && stream.poll_readable(cx).is_ready(),
                writable: want_write && stream.poll_writable(cx).is_ready(),
                timer: armed.is_some() && Pin::new(&mut *timer).poll(cx).is_ready(),
                answer: None,
                backend_readable: false,
                backend_writable: false,
            };
            if let Some(b) = backend.as_ref() {
                wake.backend_readable = want_backend_read && b.stream.poll_readable(cx).is_ready();
                wake.backend_writable = want_backend_write && b.stream.poll_writable(cx).is_ready();
            }
            if want_answers && let Poll::Ready(answer) = answers.poll_take(cx) {
                wake.answer = Some(answer);
            }
            let any = wake.cut
                || wake.readable
                || wake.writable
                || wake.timer
                || wake.backend_readable
                || wake.backend_writable;
            if any || wake.answer.is_some() {
                Poll::Ready(wake)
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Lingering close: half-close so the client sees EOF right after our last byte,
    /// then discard what it still sends until it closes, [`LINGER`] passes or
    /// [`LINGER_BYTES`] were discarded. Closing a socket with unread input makes the
    /// kernel send a reset, which can destroy our final reply before the client reads it
    /// (a client that pipelined past QUIT, or one refused by the busy session).
    async fn linger(&mut self) {
        if self.stream.get_ref().shutdown(Shutdown::Write).is_err() {
            return;
        }
        let mut timer = Timer::after(LINGER);
        let mut discarded = 0;
        loop {
            match self.discard_input() {
                Ok(Some(n)) => {
                    discarded += n;
                    if discarded > LINGER_BYTES {
                        return;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(_) => return,
            }
            let (stream, cut) = (&self.stream, &mut self.cut);
            let readable = future::poll_fn(|cx| {
                if cut.poll_fired(cx).is_ready() || Pin::new(&mut timer).poll(cx).is_ready() {
                    Poll::Ready(false)
                } else if stream.poll_readable(cx).is_ready() {
                    Poll::Ready(true)
                } else {
                    Poll::Pending
                }
            })
            .await;
            if !readable {
                return;
            }
        }
    }

    /// One non-blocking read whose bytes are thrown away: `Some(n)` bytes discarded,
    /// `None` nothing to read now; EOF is reported as an error (the linger is over).
    fn discard_input(&self) -> io::Result<Option<usize>> {
        let mut scratch = [0u8; MAX_READ];
        match self.stream.get_ref().read(&mut scratch) {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(0)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}
