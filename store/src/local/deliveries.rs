//! Messages being received, between [`Request::BeginDelivery`] and their commit or abort.
//!
//! Each lives in a slot keyed by its [`DeliveryId`]. File I/O never happens under the
//! map's lock: a request takes the message out of its slot (leaving the slot marked
//! busy, so the count stays right), works on it, and puts it back. Sessions that vanish
//! without an abort (a crashed shell task, a bug) leave slots behind; a slot untouched
//! for the idle timeout is aborted by a sweep that runs during `BeginDelivery`.
//!
//! A message begun on an event loop ([`Deliveries::begin_buffered`]) has no file yet:
//! its bytes stay in the slot ([`Held::Buffered`]) while they fit
//! [`BUFFERED_MESSAGE_MAX`] and all buffered messages together fit
//! [`BUFFERED_TOTAL_MAX`]. The first request that runs on a worker (the commit, for a
//! small message) writes them to a file. So a small message costs one trip to a worker
//! thread instead of one per request.
//!
//! [`Request::BeginDelivery`]: tidegate_core::Request::BeginDelivery

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidegate_core::{Account, DeliveryId};

use crate::maildir::{MaildirStore, PendingMessage, StoreError};

/// Default bound on messages being received at once.
pub const DEFAULT_MAX_PENDING: usize = 10_000;

/// Default time after which an untouched pending message is aborted.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest time between two sweeps for abandoned messages.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The most octets (trace header included) a message may have and still be kept in
/// memory without a file. Covers the usual mail (most messages are a few KiB) and two
/// of the SMTP session's appends at their default size (64 KiB); larger messages get
/// their file on the append that would pass this.
pub const BUFFERED_MESSAGE_MAX: usize = 128 * 1024;

/// The most octets all messages kept in memory may hold together: 512 messages at
/// [`BUFFERED_MESSAGE_MAX`]. Beyond it new messages get their file at once, as
/// without buffering, so memory stays bounded however many messages are pending
/// ([`DEFAULT_MAX_PENDING`]).
pub const BUFFERED_TOTAL_MAX: usize = 64 * 1024 * 1024;

/// A message being received, as its slot holds it.
#[derive(Debug)]
pub(super) enum Held {
    /// Begun on an event loop: no file yet, the bytes so far (trace header first).
    Buffered(Buffered),
    /// In its temporary file.
    File(PendingMessage),
}

/// The bytes of a message that has no file yet, in the order they came.
#[derive(Debug, Default)]
pub(super) struct Buffered {
    parts: Vec<Bytes>,
    len: usize,
}

impl Buffered {
    fn push(&mut self, bytes: Bytes) {
        self.len += bytes.len();
        self.parts.push(bytes);
    }
}

impl Held {
    /// Octets received so far.
    pub(super) fn size(&self) -> u64 {
        match self {
            Held::Buffered(buffered) => buffered.len as u64,
            Held::File(message) => message.size(),
        }
    }

    /// The message in its temporary file: a buffered one is written to a new file
    /// first (on a worker thread: this is file I/O), in the `tmp/` of `near` (the first
    /// recipient, when known) or else in the spool. Concurrent deliveries then create
    /// and remove their files in their recipients' directories rather than all in the
    /// one spool directory, whose lock they would otherwise queue on. Should `near`'s
    /// maildir not take it, the spool does, so that recipient still fails on its own.
    pub(super) fn into_file(
        self,
        maildir: &MaildirStore,
        near: Option<&Account>,
    ) -> Result<PendingMessage, StoreError> {
        match self {
            Held::File(message) => Ok(message),
            Held::Buffered(buffered) => {
                let opened = match near {
                    Some(account) => maildir.begin_in(account).or_else(|_| maildir.begin()),
                    None => maildir.begin(),
                };
                let mut message = opened?;
                for part in &buffered.parts {
                    message.append(part)?;
                }
                Ok(message)
            }
        }
    }

    /// Discards the message: removes its file (I/O) or frees its bytes.
    pub(super) fn abort(self) {
        if let Held::File(message) = self {
            message.abort();
        }
    }
}

/// What [`Deliveries::abort_buffered`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum InlineAbort {
    /// The message is gone (it had no file, or was unknown, or a request working on it
    /// aborts it when it puts it back).
    Done,
    /// The message has a file: removing it is I/O for a worker.
    HasFile,
}

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
    /// Octets of the [`Held::Buffered`] messages in `slots`.
    buffered: usize,
}

impl State {
    /// Takes the message out of `slot`, keeping `buffered` right.
    fn take_from(&mut self, slot: &mut Slot) -> Option<Held> {
        let held = slot.message.take()?;
        if let Held::Buffered(buffered) = &held {
            self.buffered -= buffered.len;
        }
        Some(held)
    }
}

#[derive(Debug)]
struct Slot {
    /// `None` while a request works on the message.
    message: Option<Held>,
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
                buffered: 0,
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

    /// Begins a message without a file, its trace `header` kept in memory (for an event
    /// loop: no I/O). `None` when that is not possible now and a worker must begin it:
    /// a sweep for abandoned messages is due (it removes files), `max_pending` messages
    /// are being received, or the header does not fit the memory limits.
    pub(super) fn begin_buffered(&self, header: &Bytes) -> Option<DeliveryId> {
        let mut state = self.lock();
        let now = Instant::now();
        let sweep_due = now.duration_since(state.last_sweep) >= self.idle_timeout.min(SWEEP_EVERY);
        if sweep_due
            || state.slots.len() >= self.max_pending
            || header.len() > BUFFERED_MESSAGE_MAX
            || state.buffered + header.len() > BUFFERED_TOTAL_MAX
        {
            return None;
        }
        let mut buffered = Buffered::default();
        buffered.push(header.clone());
        state.buffered += buffered.len;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        state.slots.insert(
            id,
            Slot {
                message: Some(Held::Buffered(buffered)),
                touched: now,
            },
        );
        Some(DeliveryId(id))
    }

    /// Appends `bytes` to a message that has no file, when the result still fits the
    /// memory limits (no I/O). False when a worker must append: the message has a file,
    /// would grow too large, is busy or unknown.
    pub(super) fn append_buffered(&self, id: DeliveryId, bytes: &Bytes) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(slot) = state.slots.get_mut(&id.0) else {
            return false;
        };
        let Some(Held::Buffered(buffered)) = &mut slot.message else {
            return false;
        };
        if buffered.len + bytes.len() > BUFFERED_MESSAGE_MAX
            || state.buffered + bytes.len() > BUFFERED_TOTAL_MAX
        {
            return false;
        }
        buffered.push(bytes.clone());
        state.buffered += bytes.len();
        slot.touched = Instant::now();
        true
    }

    /// Aborts a message without doing I/O: one without a file (or an unknown one) is
    /// removed; one a request is working on loses its slot, and that request aborts it
    /// when it puts it back. A message with a file is left for a worker.
    pub(super) fn abort_buffered(&self, id: DeliveryId) -> InlineAbort {
        let mut state = self.lock();
        if let Some(Slot {
            message: Some(Held::File(_)),
            ..
        }) = state.slots.get(&id.0)
        {
            return InlineAbort::HasFile;
        }
        if let Some(mut slot) = state.slots.remove(&id.0) {
            // Buffered or busy: dropping the bytes frees them.
            drop(state.take_from(&mut slot));
        }
        InlineAbort::Done
    }

    /// Takes a message out of its slot to work on it; the slot stays, marked busy.
    pub(super) fn take(&self, id: DeliveryId) -> Result<Held, Missing> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let slot = state.slots.get_mut(&id.0).ok_or(Missing::Unknown)?;
        let held = slot.message.take().ok_or(Missing::Busy)?;
        if let Held::Buffered(buffered) = &held {
            state.buffered -= buffered.len;
        }
        Ok(held)
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
                slot.message = Some(Held::File(message));
                slot.touched = Instant::now();
                None
            }
            None => Some(message),
        }
    }

    /// Removes a slot for good: its message, `Err(Busy)` if a request holds it (that
    /// request then aborts it), or `Err(Unknown)`.
    pub(super) fn remove(&self, id: DeliveryId) -> Result<Held, Missing> {
        let mut state = self.lock();
        let mut slot = state.slots.remove(&id.0).ok_or(Missing::Unknown)?;
        state.take_from(&mut slot).ok_or(Missing::Busy)
    }

    /// Takes out messages untouched for the idle timeout (at most once per sweep
    /// interval), for the caller to abort outside the lock.
    pub(super) fn expired(&self) -> Vec<(DeliveryId, Held)> {
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
                let mut slot = state.slots.remove(&id)?;
                let message = state.take_from(&mut slot)?;
                Some((DeliveryId(id), message))
            })
            .collect()
    }

    /// Messages being received now (including busy ones).
    pub(super) fn len(&self) -> usize {
        self.lock().slots.len()
    }
}
