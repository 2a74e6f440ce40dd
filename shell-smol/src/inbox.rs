//! Store replies on their way back to one connection task.
//!
//! A blocking-pool thread [`Poster::post`]s the reply of a request it ran; the
//! connection task takes it with [`Inbox::take`] in a turn or waits for one with
//! [`Inbox::poll_take`]. One small shared allocation per connection (a queue that holds
//! the replies of outstanding requests only, and one waker) instead of a general
//! channel: every idle connection keeps one, so its size counts (docs/performance.md,
//! "Memory per idle connection").
//!
//! Bounded by the session: each reply answers one request the session issued, and a
//! session has at most one outstanding request at a time (plus the rare abandoned one
//! whose late reply it ignores). Once the [`Inbox`] is dropped, posts are discarded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tidegate_core::{Reply, RequestId};

/// A reply and the id of the request it answers. Boxed so the queue's slots stay small.
pub(crate) type Answer = (RequestId, Box<Reply>);

#[derive(Default)]
struct State {
    queue: VecDeque<Answer>,
    waker: Option<Waker>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under the lock is a single step, so a poisoned state is whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The connection task's end.
pub(crate) struct Inbox {
    shared: Arc<Shared>,
}

/// The end a request carries to the blocking pool; cloned per request.
#[derive(Clone)]
pub(crate) struct Poster {
    shared: Arc<Shared>,
}

/// A new inbox and the poster that feeds it.
pub(crate) fn inbox() -> (Inbox, Poster) {
    let shared = Arc::new(Shared::default());
    (
        Inbox {
            shared: shared.clone(),
        },
        Poster { shared },
    )
}

impl Poster {
    /// Delivers `answer` and wakes the task if it waits; dropped if the inbox is gone.
    pub(crate) fn post(&self, answer: Answer) {
        let waker = {
            let mut state = self.shared.lock();
            if state.closed {
                return;
            }
            state.queue.push_back(answer);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Inbox {
    /// The oldest reply that arrived, if any.
    pub(crate) fn take(&self) -> Option<Answer> {
        let mut state = self.shared.lock();
        let answer = state.queue.pop_front();
        if state.queue.is_empty() && state.queue.capacity() > 0 {
            // Idle connections keep no queue allocation.
            state.queue = VecDeque::new();
        }
        answer
    }

    /// The oldest reply, or `Pending` with the task's waker registered.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Answer> {
        if let Some(answer) = self.take() {
            return Poll::Ready(answer);
        }
        let mut state = self.shared.lock();
        // A reply may have arrived between the two locks.
        match state.queue.pop_front() {
            Some(answer) => Poll::Ready(answer),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.queue.clear();
        state.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use tidegate_core::Failure;

    use super::*;

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn answer(id: u64) -> Answer {
        (
            RequestId(id),
            Box::new(Reply::Failed(Failure::Temporary(format!("reply {id}")))),
        )
    }

    #[test]
    fn replies_come_out_in_order_and_a_waiting_task_is_woken() {
        let (inbox, poster) = inbox();
        let count = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(inbox.poll_take(&mut cx).is_pending());
        poster.post(answer(1));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        poster.clone().post(answer(2));
        // Woken once: the waker was taken by the first post.
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        match inbox.poll_take(&mut cx) {
            Poll::Ready((id, _)) => assert_eq!(id, RequestId(1)),
            Poll::Pending => panic!("a reply is waiting"),
        }
        assert_eq!(inbox.take().map(|(id, _)| id), Some(RequestId(2)));
        assert!(inbox.take().is_none());
        assert_eq!(inbox.shared.lock().queue.capacity(), 0);
    }

    #[test]
    fn posts_after_the_inbox_is_gone_are_dropped() {
        let (inbox, poster) = inbox();
        poster.post(answer(1));
        drop(inbox);
        poster.post(answer(2));
        assert!(poster.shared.lock().queue.is_empty());
    }
}
