//! # tidegate-shell-smol: tidegate's sans-IO sessions on the smol runtime
//!
//! [`serve`] runs a [`ServerSpec`]: a multi-threaded [`async_executor::Executor`] run
//! by [`ServerSpec::thread_count`] threads, one accept task per listener and one task
//! per connection. Requests run on the `blocking` thread pool, which sizes itself
//! (`ServerSpec::workers` sizes mio's worker pool and is not used here). TLS lives inside
//! the sessions (`tidegate_core::tls::Secured`), so this shell only moves ciphertext.
//!
//! ## A connection task
//!
//! After every `handle_*` call the task drains `poll_action` until `None` (the
//! single-mutation rule): `Write` appends to the connection's output queue, `Request`
//! runs `Executor::execute` via `blocking::unblock` while the connection keeps reading
//! and writing (the reply comes back through a small per-connection inbox), `Close` flushes and
//! then closes. It then waits for whichever comes first: the socket readable (only
//! while `wants_read`), writable (only while output is pending), a reply, the
//! session's `poll_timeout`, or the shutdown cut. Reads and writes never wait on each
//! other, so a client that sends a large command without reading cannot deadlock the
//! connection.
//!
//! **Cancellation safety.** The wait only observes readiness; bytes are read and
//! written with non-blocking calls outside of it, into buffers the connection owns.
//! Dropping the wait, or the whole task, never loses bytes that were read.
//!
//! ## Back-end connections
//!
//! A proxy session's `Action::Connect` gives the task a second socket: a non-blocking
//! TCP socket, bound to the action's `source` address first when it names one (so one
//! front-end can open more than 64k connections to one back-end), registered with the
//! reactor while its connect completes. Once it is writable the task checks `SO_ERROR`
//! and the peer address and answers with exactly one
//! `handle_connected(Peer::Backend, Ok | Err(reason))`; a socket that cannot even be
//! started is answered at once. From then on the back-end is driven like the client,
//! in the same turn and the same wait: read (at most `MAX_READ` a call) while
//! `wants_read(Peer::Backend)`, written in order from its own queue, `handle_drained`
//! when that queue empties, EOF or a read error as `handle_eof(Peer::Backend)`, a write
//! error as the same EOF with the socket dropped. `Close { to: Backend }` flushes and
//! closes it, or cancels a connect in progress. The session owns the connect and idle
//! deadlines. Each back-end socket counts as one more open connection (for
//! `max_connections` and shutdown) for as long as it lives.
//!
//! ## Splice
//!
//! `Action::Splice` ends the session: the task keeps the two sockets and the finished
//! session box (a session frees its state before it asks for a splice; what is left,
//! such as the per-address cap's slot, lives until the splice ends).
//! Each direction first writes what the session had queued for its destination and the
//! action's residual bytes, then copies: one non-blocking read into a 64 KiB stack
//! buffer, written on at once, the part the destination does not take kept (at most
//! that one buffer) and written before the source is read again. So a slow reader
//! pushes back through TCP onto the sender, and an idle spliced connection holds no
//! buffer. EOF is passed on with `shutdown(Write)` after the bytes before it; when both
//! directions have passed their EOF, either socket fails, neither carried a byte for
//! the action's `idle_timeout`, or the shutdown grace period ends, both sockets are
//! closed. The splice runs in a task of its own, sized for just the two sockets and
//! their heads (the connection task's future, sized for the session phase, is freed);
//! it keeps the connection counted, so shutdown waits for it like for a session.
//!
//! ## Memory bounds
//!
//! Per connection, memory is bounded without any limit of the shell's own being hit in
//! normal operation:
//!
//! * **Input:** one [`tidegate_core::MAX_READ`] buffer. The task reads only while the
//!   session's `wants_read` is true, at most `MAX_READ` bytes per `handle_input`, and
//!   the session bounds what it buffers.
//! * **Output:** the queue holds what the session produced since the last
//!   `handle_drained`, which the task calls only when the queue became empty. A session
//!   stops producing (and stops wanting input) once that amount reaches its high-water
//!   mark, so a client that never reads costs at most the high-water mark plus one
//!   reply (POP3: 256 KiB + one 64 KiB chunk). A session that ignores this contract is
//!   closed at 16 MiB. The back-end socket has its own queue under the same rules.
//! * **Splice:** at most one 64 KiB buffer of unwritten bytes per direction, and none
//!   while idle.
//! * **Replies:** at most one per outstanding request, and the session bounds those.
//!
//! Connections are counted: from `max_connections` open, new ones get the factory's
//! busy session; from twice that they are closed at once.
//!
//! ## Session registry and kick
//!
//! [`serve_with_sessions`] records every accepted connection in a
//! [`tidegate_store::SessionRegistry`] for `ctl who`, and after each drain copies the
//! session's `account()` into it until it has one (a splice keeps the entry). Each
//! connection registers its own signal as its closer; its task, and later its splice,
//! waits on it together with the shutdown cut, so `ctl kick` ends the connection at
//! once, sending nothing more.
//!
//! ## Shutdown
//!
//! When the [`Shutdown`] fires, listeners stop accepting and are closed. Open sessions
//! run on until they end or `shutdown_grace` passes; then they are cut (their sockets
//! closed without a flush, after `handle_abort`, whose requests still go to the blocking
//! pool). Then the executor threads stop and [`serve`] returns.
//! Requests still running on the blocking pool complete in the background; their
//! replies are discarded.

use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_executor::{Executor, Task};
use async_io::{Async, Timer};
use futures_lite::{FutureExt as _, future};
use tidegate_store::{ListenerChange, ListenerChanges, ServerSpec, SessionRegistry, Shutdown};

mod accept;
mod conn;
mod connect;
mod inbox;
mod output;
mod signal;
mod splice;

use accept::Shared;
use signal::Signal;

/// After the grace period, how long cut connections get to notice before the executor
/// threads stop anyway (dropping whatever tasks remain).
const CUT_WAIT: Duration = Duration::from_secs(1);

/// Serves `spec` on the smol runtime until `shutdown` fires and open sessions have
/// finished or been cut after `spec.shutdown_grace`.
///
/// Blocks the calling thread, which only coordinates; connections run on
/// `spec.thread_count()` executor threads. Fails only while starting: when a listener
/// cannot be registered with the reactor or a thread cannot be started.
pub fn serve(spec: ServerSpec, shutdown: Shutdown) -> io::Result<()> {
    serve_with_changes(spec, shutdown, ListenerChanges::new())
}

/// Like [`serve`], and applies the listener additions and removals submitted to
/// `changes` while serving (a config reload): an added socket gets its own accept task,
/// a removed one's task stops and closes the socket; connections accepted before go on.
pub fn serve_with_changes(
    spec: ServerSpec,
    shutdown: Shutdown,
    changes: ListenerChanges,
) -> io::Result<()> {
    serve_with_sessions(spec, shutdown, changes, Arc::new(SessionRegistry::new()))
}

/// Like [`serve_with_changes`], and records every open connection in `sessions` (its
/// listener, peer, start and, once logged in, its account) for `ctl who`; a
/// [`SessionRegistry::kick`] fires the connection's own signal, and its task (or its
/// splice) closes the sockets at once.
pub fn serve_with_sessions(
    spec: ServerSpec,
    shutdown: Shutdown,
    changes: ListenerChanges,
    sessions: Arc<SessionRegistry>,
) -> io::Result<()> {
    let threads = spec.thread_count();
    let ServerSpec {
        listeners,
        factory,
        executor,
        max_connections,
        shutdown_grace,
        ..
    } = spec;
    let listeners = listeners
        .into_iter()
        .map(Async::new)
        .collect::<io::Result<Vec<_>>>()?;
    let shared = Arc::new(Shared::new(factory, executor, max_connections, sessions));
    let tasks = Arc::new(Executor::new());
    let halt = Arc::new(Signal::default());
    let workers = start_threads(threads, &tasks, &halt)?;
    log::info!(
        "smol shell: {threads} executor threads, {} listeners, max {max_connections} connections",
        listeners.len()
    );

    let mut accepts = Accepts::default();
    for (index, listener) in listeners.into_iter().enumerate() {
        accepts.start(&shared, &tasks, index, listener);
    }
    let stopping = shared.stopping.clone();
    shutdown.on_trigger(move || stopping.fire());
    let changed = Arc::new(event_listener::Event::new());
    let notify = changed.clone();
    changes.on_change(move || {
        notify.notify(usize::MAX);
    });

    async_io::block_on(async {
        follow_changes(&shared, &tasks, &mut accepts, &changes, &changed).await;
        wind_down(&shared, accepts, shutdown_grace).await
    });
    stop_threads(&halt, workers);
    log::info!("smol shell stopped");
    Ok(())
}

/// The accept task of each listener, by the factory's index, with the signal that
/// stops it alone (a reload removed its listener).
#[derive(Default)]
struct Accepts(std::collections::BTreeMap<usize, (Task<()>, Arc<Signal>)>);

impl Accepts {
    /// Spawns the accept task of listener `index`.
    fn start(
        &mut self,
        shared: &Arc<Shared>,
        tasks: &Arc<Executor<'static>>,
        index: usize,
        listener: Async<std::net::TcpListener>,
    ) {
        let removed = Arc::new(Signal::default());
        let accept = accept::run(
            shared.clone(),
            tasks.clone(),
            listener,
            index,
            removed.clone(),
        );
        let task = tasks.spawn(contained("accept", accept));
        if let Some((old, signal)) = self.0.insert(index, (task, removed)) {
            // Indices are never reused; should one be, the old listener stops.
            signal.fire();
            old.detach();
        }
    }
}

/// Applies listener changes as they are submitted, until shutdown starts.
async fn follow_changes(
    shared: &Arc<Shared>,
    tasks: &Arc<Executor<'static>>,
    accepts: &mut Accepts,
    changes: &ListenerChanges,
    changed: &event_listener::Event,
) {
    loop {
        let stop = future::or(
            async {
                shared.stopping.wait().await;
                true
            },
            async {
                signal::wait_until(changed, || changes.is_pending()).await;
                false
            },
        )
        .await;
        if stop {
            return;
        }
        for change in changes.take() {
            match change {
                ListenerChange::Add { index, socket } => {
                    let local = socket.local_addr().ok();
                    match Async::new(socket) {
                        Ok(listener) => accepts.start(shared, tasks, index, listener),
                        Err(e) => log::error!("listener {index} on {local:?}: {e}"),
                    }
                }
                ListenerChange::Remove { index } => {
                    if let Some((task, removed)) = accepts.0.remove(&index) {
                        removed.fire();
                        task.await;
                    }
                }
            }
        }
    }
}

/// Starts the executor threads; on failure stops the ones already started.
fn start_threads(
    count: usize,
    tasks: &Arc<Executor<'static>>,
    halt: &Arc<Signal>,
) -> io::Result<Vec<JoinHandle<()>>> {
    let mut workers = Vec::with_capacity(count);
    for i in 0..count {
        let (tasks, until) = (tasks.clone(), halt.clone());
        let started = std::thread::Builder::new()
            .name(format!("tidegate-smol-{i}"))
            .spawn(move || async_io::block_on(tasks.run(async move { until.wait().await })));
        match started {
            Ok(worker) => workers.push(worker),
            Err(e) => {
                stop_threads(halt, workers);
                return Err(e);
            }
        }
    }
    Ok(workers)
}

fn stop_threads(halt: &Signal, workers: Vec<JoinHandle<()>>) {
    halt.fire();
    for worker in workers {
        if worker.join().is_err() {
            log::error!("an executor thread panicked");
        }
    }
}

/// Waits for the shutdown signal, then for the listeners to close and the connections
/// to end, cutting them when the grace period is over.
async fn wind_down(shared: &Shared, accepts: Accepts, grace: Duration) {
    shared.stopping.wait().await;
    for (accept, _) in accepts.0.into_values() {
        accept.await;
    }
    let open = shared.open_connections();
    log::info!("shutdown: listeners closed; waiting up to {grace:?} for {open} connections");
    if !within(grace, shared.wait_idle()).await {
        let open = shared.open_connections();
        log::info!("shutdown: grace period over, cutting {open} connections");
        shared.cut.fire();
        if !within(CUT_WAIT, shared.wait_idle()).await {
            log::warn!("shutdown: connections still open after the cut; dropping them");
        }
    }
}

/// Runs `task` for at most `limit`; true if it finished.
async fn within(limit: Duration, task: impl Future<Output = ()>) -> bool {
    future::or(
        async {
            task.await;
            true
        },
        async {
            Timer::after(limit).await;
            false
        },
    )
    .await
}

/// Runs a task, turning a panic into a log line: a bug in one session must not take
/// the server (or the accept loop's caller) down.
async fn contained(what: &'static str, task: impl Future<Output = ()>) {
    if AssertUnwindSafe(task).catch_unwind().await.is_err() {
        log::error!("a {what} task panicked and was ended");
    }
}
