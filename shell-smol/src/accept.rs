//! Accepting connections: one task per listener, the connection cap, and the state every
//! task of a server shares.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_executor::Executor;
use async_io::{Async, Timer};
use event_listener::Event;
use futures_lite::future;
use tidegate_store::{Executor as RequestExecutor, SessionFactory, SessionRegistry};

use crate::signal::{self, Signal};

/// Pause after an accept error that is not about one connection (out of file
/// descriptors or memory): retrying at once would spin on the same error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What every accept and connection task of one `serve` call shares.
pub(crate) struct Shared {
    /// Makes sessions for accepted connections.
    pub(crate) factory: Arc<dyn SessionFactory>,
    /// Runs requests on the blocking pool.
    pub(crate) executor: Arc<dyn RequestExecutor>,
    /// Open connections from which new ones get the busy session.
    pub(crate) max_connections: usize,
    /// Fired by [`tidegate_store::Shutdown`]: stop accepting.
    pub(crate) stopping: Arc<Signal>,
    /// Fired when the shutdown grace period is over: end every connection now.
    pub(crate) cut: Arc<Signal>,
    /// Every open connection, for `ctl who` and `ctl kick`.
    pub(crate) sessions: Arc<SessionRegistry>,
    /// Connection tasks alive (busy sessions included).
    open: AtomicUsize,
    /// Notified when `open` drops to zero.
    idle: Event,
}

impl Shared {
    /// Shared state for a server with these parts.
    pub(crate) fn new(
        factory: Arc<dyn SessionFactory>,
        executor: Arc<dyn RequestExecutor>,
        max_connections: usize,
        sessions: Arc<SessionRegistry>,
    ) -> Self {
        Shared {
            factory,
            executor,
            max_connections,
            sessions,
            stopping: Arc::default(),
            cut: Arc::default(),
            open: AtomicUsize::new(0),
            idle: Event::new(),
        }
    }

    /// Connection tasks alive now.
    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Returns once no connection task is alive.
    pub(crate) async fn wait_idle(&self) {
        signal::wait_until(&self.idle, || self.open_connections() == 0).await
    }
}

/// One counted connection: taken when a connection is accepted, released when its task
/// ends, however it ends (returned, cancelled or panicked).
pub(crate) struct Slot(Arc<Shared>);

impl Slot {
    /// Counts a new connection; also returns how many were open before it.
    fn take(shared: &Arc<Shared>) -> (Slot, usize) {
        let before = shared.open.fetch_add(1, Ordering::SeqCst);
        (Slot(shared.clone()), before)
    }

    /// Counts a back-end socket a connection opened, so `max_connections` and shutdown
    /// see it too. Never refused: the connection that opens it was admitted already.
    pub(crate) fn backend(shared: &Arc<Shared>) -> Slot {
        Slot::take(shared).0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify(usize::MAX);
        }
    }
}

/// Accepts connections on `listener` (index `index` of the factory's listeners) until
/// shutdown or until `removed` fires (a reload removed the listener), spawning one
/// connection task on `tasks` for each. The socket closes when this returns.
pub(crate) async fn run(
    shared: Arc<Shared>,
    tasks: Arc<Executor<'static>>,
    listener: Async<TcpListener>,
    index: usize,
    removed: Arc<Signal>,
) {
    let local = listener.get_ref().local_addr().ok();
    log::info!("listener {index} accepting on {local:?}");
    loop {
        // `stopping` comes first so that a flood of connections cannot delay shutdown.
        // Dropping the accept future is harmless: it accepts only when it completes.
        let next = future::or(
            async {
                future::or(shared.stopping.wait(), removed.wait()).await;
                None
            },
            async { Some(listener.accept().await) },
        )
        .await;
        match next {
            None => break,
            Some(Ok((stream, peer))) => admit(&shared, &tasks, stream, peer, index),
            Some(Err(e)) => accept_failed(&shared, index, e).await,
        }
    }
    log::info!("listener {index} on {local:?} stopped accepting");
}

/// Counts a new connection and starts its task: a normal session below the cap, the
/// busy session up to twice the cap, and above that the socket is just closed (each busy
/// session still costs a task, so a flood must not get one each).
fn admit(
    shared: &Arc<Shared>,
    tasks: &Arc<Executor<'static>>,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    index: usize,
) {
    let (slot, before) = Slot::take(shared);
    // Per-connection refusals are logged at debug level only: a flood would otherwise
    // flood the log too. Crossing each threshold is logged once per crossing.
    let hard_cap = shared.max_connections.saturating_mul(2);
    if before >= hard_cap {
        if before == hard_cap {
            log::warn!("{before} connections open: closing new ones without a reply");
        }
        log::debug!("{peer}: closed, {before} connections open");
        return;
    }
    let busy = before >= shared.max_connections;
    if busy {
        if before == shared.max_connections {
            log::info!("connection limit ({before}) reached: new clients get the busy reply");
        }
        log::debug!("{peer}: server full, sending the busy reply");
    }
    if let Err(e) = stream.get_ref().set_nodelay(true) {
        log::debug!("{peer}: TCP_NODELAY: {e}");
    }
    let task = crate::conn::run(
        shared.clone(),
        tasks.clone(),
        slot,
        stream,
        peer,
        index,
        busy,
    );
    tasks.spawn(crate::contained("connection", task)).detach();
}

/// Logs an accept error and, unless it concerned only one connection, backs off.
async fn accept_failed(shared: &Shared, index: usize, e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) {
        log::debug!("listener {index}: accept: {e}");
        return;
    }
    log::warn!("listener {index}: accept failed: {e}; retrying shortly");
    future::or(shared.stopping.wait(), async {
        Timer::after(ACCEPT_BACKOFF).await;
    })
    .await;
}
