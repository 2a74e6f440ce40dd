//! Messages being received, between [`Request::BeginDelivery`] and their commit or abort.
//!
//! Each lives in a slot keyed by its [`DeliveryId`]. File I/O never happens under the
//! map's lock: a request takes the message out of its slot (leaving the slot marked
//! busy, so the count stays right), works on it, and puts it back. Sessions that vanish
//! without an abort (a crashed shell task, a bug) leave slots behind; a slot untouched
//! for the idle timeout is aborted by a sweep that runs during `BeginDelivery`.
//!
//! [`Request::BeginDelivery`]: tidegate_core::Request::BeginDelivery

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tidegate_core::DeliveryId;

use crate::maildir::PendingMessage;

/// Default bound on messages being received at once.
pub const DEFAULT_MAX_PENDING: usize = 10_000;

/// Default time after which an untouched pending message is aborted.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest time between two sweeps for abandoned messages.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Why a message could not be taken out of its slot.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Missing {
    /// No such delivery (never begun, committed, aborted, or expired).
    Unknown,
    /// Another request is working on it right now (a session bug).
    Busy,
}

/// The pending messages of a store.
#[derive(Debug)]
pub(super) struct Deliveries {
    next_id: AtomicU64,
    max_pending: usize,
    idle_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    slots: HashMap<u64, Slot>,
    last_sweep: Instant,
}

#[derive(Debug)]
struct Slot {
    /// `None` while a request works on the message.
    message: Option<PendingMessage>,
    touched: Instant,
}

impl Deliveries {
    pub(super) fn new(max_pending: usize, idle_timeout: Duration) -> Deliveries {
        Deliveries {
            next_id: AtomicU64::new(1),
            max_pending,
            idle_timeout,
            state: Mutex::new(State {
                slots: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves a busy slot for a message about to be opened, or `None` when
    /// `max_pending` messages are already being received.
    pub(super) fn reserve(&self) -> Option<DeliveryId> {
        let mut state = self.lock();
        if state.slots.len() >= self.max_pending {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        state.slots.insert(
            id,
            Slot {
                message: None,
                touched: Instant::now(),
            },
        );
        Some(DeliveryId(id))
    }

    /// Takes a message out of its slot to work on it; the slot stays, marked busy.
    pub(super) fn take(&self, id: DeliveryId) -> Result<PendingMessage, Missing> {
        let mut state = self.lock();
        let slot = state.slots.get_mut(&id.0).ok_or(Missing::Unknown)?;
        slot.message.take().ok_or(Missing::Busy)
    }

    /// Puts a message back after work on it. If its slot went away meanwhile (aborted),
    /// the message is handed back for the caller to abort outside the lock.
    #[must_use]
    pub(super) fn put_back(
        &self,
        id: DeliveryId,
        message: PendingMessage,
    ) -> Option<PendingMessage> {
        let mut state = self.lock();
        match state.slots.get_mut(&id.0) {
            Some(slot) => {
                slot.message = Some(message);
                slot.touched = Instant::now();
                None
            }
            None => Some(message),
        }
    }

    /// Removes a slot for good: its message, `Err(Busy)` if a request holds it (that
    /// request then aborts it), or `Err(Unknown)`.
    pub(super) fn remove(&self, id: DeliveryId) -> Result<PendingMessage, Missing> {
        let slot = self.lock().slots.remove(&id.0).ok_or(Missing::Unknown)?;
        slot.message.ok_or(Missing::Busy)
    }

    /// Takes out messages untouched for the idle timeout (at most once per sweep
    /// interval), for the caller to abort outside the lock.
    pub(super) fn expired(&self) -> Vec<(DeliveryId, PendingMessage)> {
        let mut state = self.lock();
        let now = Instant::now();
        if now.duration_since(state.last_sweep) < self.idle_timeout.min(SWEEP_EVERY) {
            return Vec::new();
        }
        state.last_sweep = now;
        let stale: Vec<u64> = state
            .slots
            .iter()
            .filter(|(_, slot)| {
                slot.message.is_some() && now.duration_since(slot.touched) >= self.idle_timeout
            })
            .map(|(id, _)| *id)
            .collect();
        stale
            .into_iter()
            .filter_map(|id| {
                let message = state.slots.remove(&id)?.message?;
                Some((DeliveryId(id), message))
            })
            .collect()
    }

    /// Messages being received now (including busy ones).
    pub(super) fn len(&self) -> usize {
        self.lock().slots.len()
    }
}
