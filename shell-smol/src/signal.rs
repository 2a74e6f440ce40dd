//! A one-shot, level-triggered broadcast: once fired, every present and future waiter
//! returns at once. Used for "stop accepting", "cut connections" and "stop threads".

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use event_listener::{Event, EventListener};
use tidegate_store::{Closer, SessionId};

/// A flag that tasks can wait on. Firing is idempotent and never blocks, so it is safe
/// to call from [`tidegate_store::Shutdown::on_trigger`] callbacks on any thread.
#[derive(Default)]
pub(crate) struct Signal {
    fired: AtomicBool,
    event: Event,
}

impl Signal {
    /// Fires the signal and wakes every waiter.
    pub(crate) fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    /// Whether [`Signal::fire`] was called.
    pub(crate) fn is_fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Returns once the signal has fired (at once if it already has).
    pub(crate) async fn wait(&self) {
        wait_until(&self.event, || self.is_fired()).await
    }
}

/// Polls a [`Signal`] from hand-written `poll` code. Unlike a finished `async` block it
/// may be polled again after it reported the signal fired.
pub(crate) struct Waiter {
    signal: Arc<Signal>,
    listener: Option<EventListener>,
    /// A second signal that ends the wait as well (a connection's `ctl kick`).
    also: Option<Box<Waiter>>,
}

/// `ctl kick`: the registry fires a connection's own signal, which its task waits on
/// together with the shutdown cut.
impl Closer for Signal {
    fn close(&self, _id: SessionId) {
        self.fire();
    }
}

impl Waiter {
    /// A waiter for `signal`.
    pub(crate) fn new(signal: Arc<Signal>) -> Self {
        Waiter {
            signal,
            listener: None,
            also: None,
        }
    }

    /// This waiter, also ready once `other` has fired.
    pub(crate) fn or(mut self, other: Arc<Signal>) -> Self {
        self.also = Some(Box::new(Waiter::new(other)));
        self
    }

    /// Ready once the signal has fired; otherwise registers `cx` to be woken when it does.
    pub(crate) fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(also) = &mut self.also
            && also.poll_fired(cx).is_ready()
        {
            return Poll::Ready(());
        }
        loop {
            if self.signal.is_fired() {
                return Poll::Ready(());
            }
            match self.listener.as_mut() {
                // Listen first, then re-check the flag (top of the loop): no lost wakeup.
                None => self.listener = Some(self.signal.event.listen()),
                Some(listener) => {
                    ready!(Pin::new(listener).poll(cx));
                    self.listener = None;
                }
            }
        }
    }
}

/// Waits until `ready()` is true; `event` must be notified whenever it may have become
/// true. The listener is registered before the second check, so no notification is lost.
pub(crate) async fn wait_until(event: &Event, ready: impl Fn() -> bool) {
    loop {
        if ready() {
            return;
        }
        let listener = event.listen();
        if ready() {
            return;
        }
        listener.await;
    }
}
