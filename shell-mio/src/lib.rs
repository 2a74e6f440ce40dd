//! # tidegate-shell-mio: the blocking mio event-loop shell
//!
//! Drives tidegate's sans-IO sessions ([`tidegate_core::Session`]) over real sockets with
//! [`mio`]. [`serve`] takes the listeners, session factory and request executor the
//! binary prepared ([`ServerSpec`]) and runs until the [`Shutdown`] signal fires and the
//! open sessions have finished.
//!
//! ## Threads
//!
//! * `spec.thread_count()` **event loops**, each with its own `mio::Poll`, connection
//!   table, timer table and inbox (a channel plus a `mio::Waker`). Loop 0 also owns the
//!   listeners: it accepts until `WouldBlock` and hands each socket to the loop with the
//!   fewest connections (itself included). Why one acceptor rather than the listeners in
//!   every poll: see the `accept` module (no thundering herd, an exact connection count
//!   for `max_connections`, one place to back off on EMFILE).
//! * `spec.worker_count()` **workers** run [`tidegate_store::Executor::execute`] for the
//!   sessions' requests, taken from one bounded job queue, and post each reply to the
//!   owning loop's inbox, waking it. A reply for a connection that has gone (its slot
//!   now holds another generation) is dropped.
//!
//! ## Driving a session
//!
//! Per connection the loop keeps the socket, the session, a queue of output `Bytes`, and
//! its close phase. It reads (at most [`tidegate_core::MAX_READ`] bytes a call) only
//! while `session.wants_read(Peer::Client)` is true, until `WouldBlock`; `Ok(0)` or an
//! error becomes `handle_eof`. After every `handle_*` call it drains `poll_action()`
//! until `None`: `Write` is queued and written at once, `Request` goes to the workers,
//! `Close` stops reading, flushes (for at most 5 s), sends FIN and, if the client is
//! still sending, discards its bytes until it closes (at most 2 s), so the final reply
//! is not lost to a reset. When the output queue empties after holding data the session gets
//! `handle_drained`. mio is edge-triggered, so every read and write goes on until
//! `WouldBlock`, `WRITABLE` interest is registered only while output is queued, and a
//! connection remembers that its socket may hold unread input: when `wants_read` turns
//! true again after a reply or a drain it is read without waiting for a new event. Each
//! connection gets at most 256 KiB of reads per turn so one fast client cannot starve
//! the others on its loop. Deadlines come from `poll_timeout()` into a per-loop ordered
//! table, updated only when a connection's deadline changes.
//!
//! ## Back-end connections
//!
//! A proxy session's `Action::Connect` gives the connection a second socket: a
//! non-blocking TCP socket, bound to the action's `source` address first when it names
//! one (so one front-end can open more than 64k connections to one back-end), whose
//! connect completes in the background. It is registered under the connection's key
//! with a high bit set, so one slot of the connection table owns both sockets. When it
//! becomes writable the shell checks `SO_ERROR` and the peer address and answers with
//! exactly one `handle_connected(Peer::Backend, Ok | Err(reason))`; a socket that cannot
//! even be started is answered at once. From then on the back-end is driven like the
//! client: read (at most `MAX_READ` a call, sharing the connection's read budget) while
//! `wants_read(Peer::Backend)`, written in order from its own queue, `handle_drained`
//! when that queue empties, EOF or a read error as `handle_eof(Peer::Backend)`, and a
//! write error as the same EOF with the socket dropped. `Close { to: Backend }` flushes
//! and closes it, or cancels a connect in progress. The session owns the connect and
//! idle deadlines. Each back-end socket counts as one more open connection (for
//! `max_connections`, the choice of loop, and shutdown) for as long as it lives.
//!
//! ## Splice
//!
//! `Action::Splice` ends the session: the loop keeps only the two sockets and the finished
//! session box (a session frees its state before it asks for a splice; what is left,
//! such as the per-address cap's slot, lives until the splice ends).
//! Each direction first writes what the session had queued for its destination and the
//! action's residual bytes, then moves bytes with `splice(2)` (`SPLICE_F_MOVE |
//! SPLICE_F_NONBLOCK`): socket → pipe → socket, never copied through user space. A
//! direction borrows a pipe from its loop's pool only while it has bytes in flight and
//! returns it when the pipe is empty, so an idle spliced connection holds no pipe, no
//! buffer and no extra file descriptor; the pool keeps at most 64 empty pipes. When no
//! pipe can be created (out of descriptors) the direction copies through the loop's
//! 16 KiB read buffer instead, keeping at most that much unwritten. Either way a source
//! is read only once everything read before has been written, so a slow reader pushes
//! back through TCP onto the sender. EOF is passed on with `shutdown(Write)` after the
//! bytes before it; when both directions have passed their EOF, either socket fails, or
//! neither carried a byte for the action's `idle_timeout`, both sockets are closed.
//! Spliced connections stay in the connection table, so they count as two open
//! connections and shutdown waits for them like for sessions (and cuts them after the
//! grace period).
//!
//! ## Memory is bounded
//!
//! Nothing here grows with what a client sends or refuses to read:
//!
//! * **Input:** one 16 KiB read buffer per loop; the session buffers input itself, up to
//!   its own limit, and the shell does not read while `wants_read` is false, so TCP
//!   pushes back on the client.
//! * **Output:** the queue holds only bytes the session handed out since its last
//!   `handle_drained`. Sessions stop producing at their output high-water mark (POP3:
//!   256 KiB) until the shell reports the drain, so a client that never reads costs at
//!   most about that much, and its connection ends with the session's idle timeout. A
//!   session that ignores the contract is closed when one socket's queue would pass
//!   16 MiB. The back-end socket has its own queue under the same rules.
//! * **Splice:** per direction at most one pipe (64 KiB by default, kernel memory) or
//!   one 16 KiB buffer of bytes in flight, and nothing while idle.
//! * **Requests:** each session has at most one outstanding request; the job queue is
//!   bounded (`max_connections`, clamped to 64..=16384) and a full queue answers a
//!   temporary failure at once, so abandoned requests behind a stalled store cannot pile
//!   up. Loop inboxes hold at most one message per admitted socket or queued job.
//! * **Connections:** at or above `max_connections` a new connection gets the factory's
//!   busy session; at twice that it is closed without a session.
//!
//! ## Session registry and kick
//!
//! [`serve_with_sessions`] records every accepted connection in a
//! [`tidegate_store::SessionRegistry`] for `ctl who`, and after each drain copies the
//! session's `account()` into it until it has one (a spliced connection keeps its
//! entry). Each loop registers one closer: `ctl kick` posts a kick message with the
//! connection's registry id to the owning loop, which finds the connection (a session
//! or a splice) and drops it at once, sending nothing more.
//!
//! ## Shutdown
//!
//! When the [`Shutdown`] fires, loop 0 closes the listeners and every loop gives its
//! sessions `spec.shutdown_grace` to close on their own, then drops the rest (after
//! `handle_abort`, whose requests, such as a POP3 lock release, still run). `serve`
//! joins the loops, then the workers (which finish the jobs already queued), and returns.

mod accept;
mod conn;
mod connect;
mod event_loop;
mod outq;
mod pipes;
mod sock;
mod splice;
mod timers;
mod workers;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use mio::{Poll, Waker};
use tidegate_store::{Closer, ListenerChanges, ServerSpec, SessionRegistry, Shutdown};

use crate::accept::Acceptor;
use crate::event_loop::{EventLoop, LoopCloser, LoopHandle, Shared, WAKER};
use crate::workers::Submitter;

/// Serves `spec.listeners` until `shutdown` fires and the open sessions have finished
/// (or `spec.shutdown_grace` has passed), then joins every thread it started.
///
/// Returns an error if the event loops cannot be set up, a thread cannot be started, or
/// a loop fails (its `poll` errors or it panics); the other loops are then wound down
/// the same way as on shutdown before the error is returned.
pub fn serve(spec: ServerSpec, shutdown: Shutdown) -> io::Result<()> {
    serve_with_changes(spec, shutdown, ListenerChanges::new())
}

/// Like [`serve`], and applies the listener additions and removals submitted to
/// `changes` while serving (a config reload): loop 0 registers an added socket and
/// accepts on it from its next turn, and closes a removed one; connections accepted
/// before go on.
pub fn serve_with_changes(
    spec: ServerSpec,
    shutdown: Shutdown,
    changes: ListenerChanges,
) -> io::Result<()> {
    serve_with_sessions(spec, shutdown, changes, Arc::new(SessionRegistry::new()))
}

/// Like [`serve_with_changes`], and records every open connection in `sessions` (its
/// listener, peer, start and, once logged in, its account) for `ctl who`; a
/// [`SessionRegistry::kick`] makes the owning loop close the connection at once.
pub fn serve_with_sessions(
    spec: ServerSpec,
    shutdown: Shutdown,
    changes: ListenerChanges,
    sessions: Arc<SessionRegistry>,
) -> io::Result<()> {
    let loop_count = spec.thread_count().max(1);
    let worker_count = spec.worker_count().max(1);
    let mut polls = Vec::with_capacity(loop_count);
    let mut handles = Vec::with_capacity(loop_count);
    let mut inboxes = Vec::with_capacity(loop_count);
    for _ in 0..loop_count {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        handles.push(LoopHandle::new(tx, waker));
        inboxes.push(rx);
        polls.push(poll);
    }
    let acceptor = Acceptor::new(spec.listeners, polls[0].registry())?;
    let loops: Arc<[LoopHandle]> = handles.into();
    for handle in loops.iter() {
        // Weak: the signal may outlive this server; it must not keep wakers alive.
        let waker = Arc::downgrade(handle.waker());
        shutdown.on_trigger(move || {
            if let Some(waker) = waker.upgrade() {
                let _ = waker.wake();
            }
        });
    }
    if let Some(first) = loops.first() {
        let waker = Arc::downgrade(first.waker());
        changes.on_change(move || {
            if let Some(waker) = waker.upgrade() {
                let _ = waker.wake();
            }
        });
    }
    let shared = Arc::new(Shared {
        factory: spec.factory,
        shutdown,
        listener_changes: changes,
        stop: AtomicBool::new(false),
        open: AtomicUsize::new(0),
        per_loop: (0..loop_count).map(|_| AtomicUsize::new(0)).collect(),
        loops: loops.clone(),
        max_connections: spec.max_connections,
        grace: spec.shutdown_grace,
        closers: (0..loop_count)
            .map(|index| {
                Arc::new(LoopCloser {
                    loops: loops.clone(),
                    index,
                }) as Arc<dyn Closer>
            })
            .collect(),
        sessions,
    });

    let (job_tx, job_rx) = crossbeam_channel::bounded(spec.max_connections.clamp(64, 16_384));
    let mut worker_threads = Vec::with_capacity(worker_count);
    let executor = spec.executor;
    let mut result = workers::spawn(
        worker_count,
        executor.clone(),
        job_rx,
        loops,
        &mut worker_threads,
    );
    let mut loop_threads: Vec<JoinHandle<io::Result<()>>> = Vec::with_capacity(loop_count);
    if result.is_ok() {
        let mut acceptor = Some(acceptor);
        for (index, (poll, inbox)) in polls.into_iter().zip(inboxes).enumerate() {
            let jobs = Submitter::new(job_tx.clone(), index, executor.clone());
            let event_loop =
                EventLoop::new(index, poll, inbox, shared.clone(), jobs, acceptor.take());
            let spawned = std::thread::Builder::new()
                .name(format!("tidegate-loop-{index}"))
                .spawn(move || event_loop.run());
            match spawned {
                Ok(thread) => loop_threads.push(thread),
                Err(e) => {
                    result = Err(e);
                    shared.stop_all();
                    break;
                }
            }
        }
    }
    // The loops hold the only other senders: the workers stop once the loops are gone
    // and the jobs already queued are done.
    drop(job_tx);
    for thread in loop_threads {
        let outcome = thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("an event loop thread panicked")));
        if result.is_ok() {
            result = outcome;
        }
    }
    for thread in worker_threads {
        if thread.join().is_err() && result.is_ok() {
            result = Err(io::Error::other("a request worker thread panicked"));
        }
    }
    result
}
