//! One event-loop thread: a `mio::Poll`, its connections, their timers, its inbox.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use tidegate_core::{MAX_READ, Reply, RequestId};
use tidegate_store::{
    Closer, ListenerChange, ListenerChanges, SessionFactory, SessionId, SessionRegistry, Shutdown,
};

use crate::accept::{Acceptor, FIRST_RESERVED_TOKEN, NewConn};
use crate::conn::{Conn, Pump};
use crate::pipes::PipePool;
use crate::sock::{self, BACKEND_BIT, Sock};
use crate::splice::Spliced;
use crate::timers::Timers;
use crate::workers::Submitter;

/// The token of every loop's waker.
pub(crate) const WAKER: Token = Token(usize::MAX);
/// Readiness events taken per `poll` call.
const EVENTS: usize = 1024;

/// What other threads send a loop.
pub(crate) enum Msg {
    /// A socket accepted by loop 0 for this loop to serve.
    Conn(NewConn),
    /// A worker's answer to a request of connection `key`.
    Reply {
        /// The connection's slot.
        key: usize,
        /// The connection's generation; a mismatch means it is gone and the reply is dropped.
        generation: u64,
        /// The session's request id.
        id: RequestId,
        /// The answer.
        reply: Reply,
    },
    /// `ctl kick`: close this connection at once, if it is still open on this loop.
    Kick(SessionId),
}

/// How other threads reach a loop: its inbox and the waker that interrupts its `poll`.
///
/// The inbox is an unbounded channel, but what can be in it is bounded: at most one
/// accepted socket per admitted connection (2 × `max_connections` in all) and at most
/// one reply per job, and the job queue is bounded.
pub(crate) struct LoopHandle {
    tx: Sender<Msg>,
    waker: Arc<Waker>,
}

impl LoopHandle {
    /// A handle to the loop owning `waker` and reading from `tx`'s receiver.
    pub(crate) fn new(tx: Sender<Msg>, waker: Arc<Waker>) -> Self {
        LoopHandle { tx, waker }
    }

    /// Delivers `msg` and wakes the loop; gives the message back if the loop is gone.
    pub(crate) fn send(&self, msg: Msg) -> Result<(), Msg> {
        self.tx.send(msg).map_err(|e| e.0)?;
        self.wake();
        Ok(())
    }

    /// Interrupts the loop's `poll`.
    pub(crate) fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            log::warn!("cannot wake an event loop: {e}");
        }
    }

    /// The waker, for the shutdown signal (held weakly there).
    pub(crate) fn waker(&self) -> &Arc<Waker> {
        &self.waker
    }
}

/// State every loop shares.
pub(crate) struct Shared {
    /// Makes sessions for accepted connections.
    pub(crate) factory: Arc<dyn SessionFactory>,
    /// The caller's stop signal.
    pub(crate) shutdown: Shutdown,
    /// Listeners a reload adds or removes; loop 0 applies them.
    pub(crate) listener_changes: ListenerChanges,
    /// Our own stop signal: a loop failed or a thread could not be started.
    pub(crate) stop: AtomicBool,
    /// Open connections across all loops, busy ones included.
    pub(crate) open: AtomicUsize,
    /// Open connections per loop (for choosing where a new one goes).
    pub(crate) per_loop: Box<[AtomicUsize]>,
    /// Every loop's handle, indexed by loop.
    pub(crate) loops: Arc<[LoopHandle]>,
    /// Above this many open connections, new ones get the busy session.
    pub(crate) max_connections: usize,
    /// How long sessions may run on after shutdown starts.
    pub(crate) grace: Duration,
    /// Every open connection, for `ctl who` and `ctl kick`.
    pub(crate) sessions: Arc<SessionRegistry>,
    /// Per loop, how the registry asks it to close a connection ([`LoopCloser`]).
    pub(crate) closers: Box<[Arc<dyn Closer>]>,
}

/// Closes a connection of one loop from another thread: posts [`Msg::Kick`] to the
/// loop's inbox and wakes it. One per loop, shared by its connections' registry entries.
pub(crate) struct LoopCloser {
    /// Every loop's handle.
    pub(crate) loops: Arc<[LoopHandle]>,
    /// The loop this closer reaches.
    pub(crate) index: usize,
}

impl Closer for LoopCloser {
    fn close(&self, id: SessionId) {
        if let Some(handle) = self.loops.get(self.index) {
            // A loop that is gone has closed its connections already.
            let _ = handle.send(Msg::Kick(id));
        }
    }
}

impl Shared {
    /// Whether loops should stop accepting and wind down.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.shutdown.is_triggered()
    }

    /// Winds every loop down (an internal failure, not the caller's signal).
    pub(crate) fn stop_all(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for handle in self.loops.iter() {
            handle.wake();
        }
    }

    /// Counts a newly accepted connection. `Some(busy)` admits it (with the busy session
    /// at or above `max_connections`); `None` above twice that: close without a session.
    /// Only loop 0 admits, so the check and the increment cannot race each other.
    pub(crate) fn admit(&self) -> Option<bool> {
        let open = self.open.load(Ordering::SeqCst);
        if open >= self.max_connections.saturating_mul(2) {
            return None;
        }
        self.open.fetch_add(1, Ordering::SeqCst);
        Some(open >= self.max_connections)
    }

    /// Picks the loop with the fewest connections (ties rotate) and counts one more there.
    pub(crate) fn pick_loop(&self, rotor: &mut usize) -> usize {
        let n = self.per_loop.len().max(1);
        let start = *rotor % n;
        *rotor = rotor.wrapping_add(1);
        let best = (0..n)
            .map(|offset| (start + offset) % n)
            .min_by_key(|&i| {
                self.per_loop
                    .get(i)
                    .map_or(usize::MAX, |c| c.load(Ordering::Relaxed))
            })
            .unwrap_or(0);
        if let Some(count) = self.per_loop.get(best) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        best
    }

    /// Counts one more socket on loop `index` (a back-end connection).
    fn count(&self, index: usize) {
        self.open.fetch_add(1, Ordering::SeqCst);
        if let Some(count) = self.per_loop.get(index) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Uncounts a connection of loop `index` that ended (or never started).
    pub(crate) fn release(&self, index: usize) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        if let Some(count) = self.per_loop.get(index) {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A back-end socket counted as an open connection (for `max_connections` and the
/// choice of loop) for as long as this lives. Back-end connections are opened by
/// sessions on any loop, so the count may briefly pass the limit loop 0 checks; the
/// next accepted client sees the true number.
pub(crate) struct SocketCount {
    shared: Arc<Shared>,
    index: usize,
}

impl SocketCount {
    /// Counts one socket on loop `index`.
    pub(crate) fn new(shared: &Arc<Shared>, index: usize) -> Self {
        shared.count(index);
        SocketCount {
            shared: shared.clone(),
            index,
        }
    }
}

impl Drop for SocketCount {
    fn drop(&mut self) {
        self.shared.release(self.index);
    }
}

/// What a slot of the connection table holds.
enum Entry {
    /// A connection driven by its session.
    Session(Conn),
    /// A connection whose session handed both sockets over.
    Spliced(Spliced),
}

/// One slot of the connection table with the loop's bookkeeping for it.
struct Slot {
    entry: Entry,
    /// The deadline this connection has in the loop's timer table.
    timer: Option<Instant>,
    /// Already waiting in the loop's queue of connections with input left.
    queued: bool,
}

impl Slot {
    fn generation(&self) -> u64 {
        match &self.entry {
            Entry::Session(conn) => conn.generation(),
            Entry::Spliced(spliced) => spliced.generation(),
        }
    }
}

/// Winds the server down if a loop thread panics, so `serve` returns instead of
/// running on without (for loop 0) anyone accepting.
struct StopOnPanic(Arc<Shared>);

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            log::error!("an event loop panicked; stopping the server");
            self.0.stop_all();
        }
    }
}

/// One event loop and everything it owns.
pub(crate) struct EventLoop {
    index: usize,
    poll: Poll,
    inbox: Receiver<Msg>,
    shared: Arc<Shared>,
    jobs: Submitter,
    conns: Slab<Slot>,
    timers: Timers,
    /// Loop 0 only, until shutdown.
    acceptor: Option<Acceptor>,
    /// Rotating tie-break for [`Shared::pick_loop`].
    rotor: usize,
    /// Connections whose read budget ran out with input left, with their generation.
    ready: Vec<(usize, u64)>,
    next_generation: u64,
    /// Set when shutdown starts: sessions are cut at this time.
    grace_until: Option<Instant>,
    /// The read buffer, reused for every read on this loop.
    buf: Box<[u8; MAX_READ]>,
    /// Empty pipes for spliced connections.
    pipes: PipePool,
}

impl EventLoop {
    /// A loop around `poll` (whose waker is registered as [`WAKER`]).
    pub(crate) fn new(
        index: usize,
        poll: Poll,
        inbox: Receiver<Msg>,
        shared: Arc<Shared>,
        jobs: Submitter,
        acceptor: Option<Acceptor>,
    ) -> Self {
        EventLoop {
            index,
            poll,
            inbox,
            shared,
            jobs,
            conns: Slab::new(),
            timers: Timers::default(),
            acceptor,
            rotor: 0,
            ready: Vec::new(),
            next_generation: 0,
            grace_until: None,
            buf: Box::new([0; MAX_READ]),
            pipes: PipePool::default(),
        }
    }

    /// Runs until shutdown completes; a failure winds the other loops down too.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let _guard = StopOnPanic(self.shared.clone());
        let result = self.run_loop();
        if let Err(e) = &result {
            log::error!("event loop {} failed: {e}", self.index);
            self.shared.stop_all();
        }
        let open = self.conns.len();
        if open > 0 {
            log::info!(
                "event loop {}: cutting {open} connections still open",
                self.index
            );
        }
        // Cut: each session still gives back what it holds (a POP3 lock); the workers
        // run those requests before `serve` returns.
        let now = Instant::now();
        for key in self.conns.iter().map(|(key, _)| key).collect::<Vec<_>>() {
            if let Some(Slot {
                entry: Entry::Session(conn),
                ..
            }) = self.conns.get_mut(key)
            {
                conn.abort(now, &self.jobs);
            }
            self.remove(key);
        }
        result
    }

    fn run_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let now = Instant::now();
            self.drain_inbox(now);
            self.apply_listener_changes();
            if self.grace_until.is_none() && self.shared.stopping() {
                self.begin_stop(now);
            }
            if let Some(grace) = self.grace_until
                && (self.conns.is_empty() || now >= grace)
            {
                return Ok(());
            }
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    continue; // the inbox is drained every turn
                }
                if token.0 >= FIRST_RESERVED_TOKEN {
                    if let Some(i) = self.acceptor.as_ref().and_then(|a| a.listener_of(token)) {
                        self.accept(i, now);
                    }
                    continue;
                }
                let (key, peer) = sock::decode(token);
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let Some(slot) = self.conns.get_mut(key) else {
                    continue;
                };
                // Writable-only events just let the pump flush (or finish a connect).
                let pump = match &mut slot.entry {
                    Entry::Session(conn) => {
                        if readable {
                            conn.mark_readable(peer, event.is_read_closed() || event.is_error());
                        }
                        conn.pump(now, &mut self.buf, &self.jobs)
                    }
                    Entry::Spliced(spliced) => {
                        if readable {
                            spliced.mark_readable(peer, event.is_read_closed() || event.is_error());
                        }
                        spliced.pump(now, &mut self.pipes, &mut self.buf)
                    }
                };
                self.settle(key, pump, now);
            }
            self.run_timers(now);
            self.run_ready(now);
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let retry = self.acceptor.as_ref().and_then(Acceptor::retry_at);
        [self.timers.next(), self.grace_until, retry]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    fn begin_stop(&mut self, now: Instant) {
        self.grace_until = Some(now + self.shared.grace);
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.close(self.poll.registry());
            log::info!(
                "stopped accepting; open sessions have {:?} to finish",
                self.shared.grace
            );
        }
    }

    /// Loop 0: starts and stops the listeners a reload added or removed. Without an
    /// acceptor (another loop, or shutdown has begun) there is nothing to apply, and
    /// added sockets are closed as they are dropped.
    fn apply_listener_changes(&mut self) {
        let Some(acceptor) = self.acceptor.as_mut() else {
            return;
        };
        for change in self.shared.listener_changes.take() {
            match change {
                ListenerChange::Add { index, socket } => {
                    let local = socket.local_addr().ok();
                    match acceptor.add(index, socket, self.poll.registry()) {
                        Ok(()) => log::info!("listener {index} accepting on {local:?}"),
                        Err(e) => log::error!("listener {index} on {local:?}: {e}"),
                    }
                }
                ListenerChange::Remove { index } => {
                    if acceptor.remove(index, self.poll.registry()) {
                        log::info!("listener {index} stopped accepting");
                    }
                }
            }
        }
    }

    fn drain_inbox(&mut self, now: Instant) {
        while let Ok(msg) = self.inbox.try_recv() {
            match msg {
                Msg::Conn(new) => self.open_conn(new, now),
                Msg::Reply {
                    key,
                    generation,
                    id,
                    reply,
                } => {
                    let Some(Slot {
                        entry: Entry::Session(conn),
                        ..
                    }) = self
                        .conns
                        .get_mut(key)
                        .filter(|c| c.generation() == generation)
                    else {
                        continue; // the connection is gone (or no longer has a session)
                    };
                    let pump = conn.on_reply(now, id, reply, &mut self.buf, &self.jobs);
                    self.settle(key, pump, now);
                }
                Msg::Kick(id) => self.kick(id, now),
            }
        }
    }

    /// Accepts on `listener` until it would block, handing each socket to a loop.
    fn accept(&mut self, listener: usize, now: Instant) {
        loop {
            let Some(acceptor) = self.acceptor.as_mut() else {
                return;
            };
            let Some(new) = acceptor.accept_one(listener, now, &self.shared) else {
                return;
            };
            let target = self.shared.pick_loop(&mut self.rotor);
            if target == self.index {
                self.open_conn(new, now);
            } else if let Some(handle) = self.shared.loops.get(target) {
                if handle.send(Msg::Conn(new)).is_err() {
                    self.shared.release(target);
                }
            } else {
                self.shared.release(target);
            }
        }
    }

    /// Starts serving a socket accepted for this loop.
    fn open_conn(&mut self, new: NewConn, now: Instant) {
        let NewConn {
            mut socket,
            peer,
            listener,
            busy,
        } = new;
        if self.grace_until.is_some() {
            // Accepted just before shutdown: not started, the socket just closes.
            return self.shared.release(self.index);
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if key >= BACKEND_BIT || key >= FIRST_RESERVED_TOKEN {
            return self.shared.release(self.index);
        }
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, Token(key), Interest::READABLE)
        {
            log::warn!("{peer}: cannot register the connection: {e}");
            return self.shared.release(self.index);
        }
        let session = if busy {
            self.shared.factory.busy(listener, peer, now)
        } else {
            self.shared.factory.open(listener, peer, now)
        };
        log::debug!(
            "{peer}: accepted on listener {listener}, loop {}",
            self.index
        );
        self.next_generation += 1;
        let closer = self.shared.closers.get(self.index).cloned();
        let Some(closer) = closer else {
            return self.shared.release(self.index);
        };
        let registration = self.shared.sessions.register(listener, peer, now, closer);
        let conn = Conn::new(
            Sock::registered(socket, Interest::READABLE),
            peer,
            session,
            key,
            self.next_generation,
            self.shared.clone(),
            self.index,
            registration,
        );
        let slot = entry.insert(Slot {
            entry: Entry::Session(conn),
            timer: None,
            queued: false,
        });
        let Entry::Session(conn) = &mut slot.entry else {
            return;
        };
        let pump = conn.pump(now, &mut self.buf, &self.jobs);
        self.settle(key, pump, now);
    }

    /// Brings a connection's registration, timer and queue entry up to date after it was
    /// driven, or removes it, or turns it into a spliced one.
    fn settle(&mut self, key: usize, pump: Pump, now: Instant) {
        if pump == Pump::Splice {
            return self.splice(key, now);
        }
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if pump == Pump::Remove {
            return self.remove(key);
        }
        if pump == Pump::MoreInput && !slot.queued {
            slot.queued = true;
            self.ready.push((key, slot.generation()));
        }
        let registry = self.poll.registry();
        let (synced, deadline) = match &mut slot.entry {
            Entry::Session(conn) => (conn.sync_interest(registry, key), conn.deadline()),
            Entry::Spliced(spliced) => (spliced.sync_interest(registry, key), spliced.deadline()),
        };
        if let Err(e) = synced {
            log::debug!("cannot register a connection's sockets: {e}");
            return self.remove(key);
        }
        self.timers.update(key, &mut slot.timer, deadline);
    }

    /// Replaces a connection's session by a splice of its two sockets (same slot, same
    /// count), then runs its first turn.
    fn splice(&mut self, key: usize, now: Instant) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        self.timers.update(key, &mut slot.timer, None);
        slot.queued = false;
        let Some(Slot {
            entry: Entry::Session(conn),
            ..
        }) = self.conns.try_remove(key)
        else {
            return;
        };
        self.next_generation += 1;
        let entry = self.conns.vacant_entry();
        let new_key = entry.key();
        let spliced = match conn.into_spliced(now, self.next_generation) {
            Ok(spliced) => spliced,
            Err(why) => {
                log::error!("cannot splice: {why}; closing the connection");
                return self.shared.release(self.index);
            }
        };
        // Freed and taken again at once, the slot is normally the same one; should it
        // not be, the sockets' tokens follow the key.
        let slot = entry.insert(Slot {
            entry: Entry::Spliced(spliced),
            timer: None,
            queued: false,
        });
        let Entry::Spliced(spliced) = &mut slot.entry else {
            return;
        };
        if new_key != key
            && let Err(e) = spliced.retoken(self.poll.registry(), new_key)
        {
            log::debug!("cannot register a spliced connection: {e}");
            return self.remove(new_key);
        }
        let pump = spliced.pump(now, &mut self.pipes, &mut self.buf);
        self.settle(new_key, pump, now);
    }

    /// `ctl kick`: closes the connection registered as `id` at once, sending nothing
    /// more (a spliced one too). Kicks are rare, so the table is searched.
    fn kick(&mut self, id: SessionId, now: Instant) {
        let found = self.conns.iter().find_map(|(key, slot)| {
            let registered = match &slot.entry {
                Entry::Session(conn) => Some(conn.session_id()),
                Entry::Spliced(spliced) => spliced.session_id(),
            };
            (registered == Some(id)).then_some(key)
        });
        if let Some(key) = found {
            log::info!("control: closing connection {} (kick)", id.0);
            if let Some(Slot {
                entry: Entry::Session(conn),
                ..
            }) = self.conns.get_mut(key)
            {
                conn.abort(now, &self.jobs);
            }
            self.remove(key);
        }
    }

    fn remove(&mut self, key: usize) {
        let Some(mut slot) = self.conns.try_remove(key) else {
            return;
        };
        self.timers.update(key, &mut slot.timer, None);
        // Dropping the sockets closes them, which also removes them from epoll. A
        // back-end socket uncounts itself when dropped.
        drop(slot);
        self.shared.release(self.index);
    }

    fn run_timers(&mut self, now: Instant) {
        if self.acceptor.as_mut().is_some_and(|a| a.take_retry(now)) {
            for i in 0..self.acceptor.as_ref().map_or(0, Acceptor::count) {
                self.accept(i, now);
            }
        }
        // Collected first: a session that re-arms at or before `now` waits for the next
        // turn instead of spinning here.
        let mut expired = Vec::new();
        while let Some(key) = self.timers.pop_expired(now) {
            expired.push(key);
        }
        for key in expired {
            let Some(slot) = self.conns.get_mut(key) else {
                continue;
            };
            slot.timer = None;
            let pump = match &mut slot.entry {
                Entry::Session(conn) => conn.on_timeout(now, &mut self.buf, &self.jobs),
                Entry::Spliced(spliced) => spliced.on_timeout(now),
            };
            self.settle(key, pump, now);
        }
    }

    fn run_ready(&mut self, now: Instant) {
        for (key, generation) in std::mem::take(&mut self.ready) {
            let Some(slot) = self
                .conns
                .get_mut(key)
                .filter(|c| c.generation() == generation)
            else {
                continue;
            };
            slot.queued = false;
            let pump = match &mut slot.entry {
                Entry::Session(conn) => conn.pump(now, &mut self.buf, &self.jobs),
                Entry::Spliced(spliced) => spliced.pump(now, &mut self.pipes, &mut self.buf),
            };
            self.settle(key, pump, now);
        }
    }
}
