//! The request worker pool: blocking store calls off the event loops.
//!
//! Jobs travel on one bounded crossbeam channel; every worker holds a clone of its
//! receiver, so a job wakes exactly one idle worker, and none when a worker is about to
//! come back for the next one. (Sharing std's receiver behind a `Mutex` made each job
//! wake two threads: the worker blocked in `recv` and, once it let the lock go, the next
//! worker queued on the lock, which then went back to sleep in `recv`.)

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use tidegate_core::{Failure, Reply, Request, RequestId};
use tidegate_store::Executor;

use crate::event_loop::{LoopHandle, Msg};

/// One request on its way to a worker, with the address of the session that asked.
pub(crate) struct Job {
    /// The event loop that owns the connection.
    pub(crate) loop_index: usize,
    /// The connection's slot in that loop.
    pub(crate) key: usize,
    /// Tells a reused slot from the connection that asked.
    pub(crate) generation: u64,
    /// The session's request id.
    pub(crate) id: RequestId,
    /// What to do.
    pub(crate) request: Request,
}

/// An event loop's end of the job queue.
pub(crate) struct Submitter {
    tx: Sender<Job>,
    loop_index: usize,
    executor: Arc<dyn Executor>,
}

impl Submitter {
    /// Wraps the queue's sender for loop `loop_index`.
    pub(crate) fn new(tx: Sender<Job>, loop_index: usize, executor: Arc<dyn Executor>) -> Self {
        Submitter {
            tx,
            loop_index,
            executor,
        }
    }

    /// Hands a request on without blocking the loop. `Err` carries a reply the loop
    /// delivers itself: the executor answered at once ([`Executor::execute_inline`]), or
    /// the queue is full (the store is far behind) and the reply is a temporary failure,
    /// so every request still gets exactly one reply and the queue stays bounded.
    pub(crate) fn submit(
        &self,
        key: usize,
        generation: u64,
        id: RequestId,
        request: Request,
    ) -> Result<(), Reply> {
        match catch_unwind(AssertUnwindSafe(|| self.executor.execute_inline(&request))) {
            Ok(Some(reply)) => return Err(reply),
            Ok(None) => {}
            Err(_) => {
                log::error!("inline request executor panicked; answering a temporary failure");
                return Err(temporary("internal error"));
            }
        }
        let job = Job {
            loop_index: self.loop_index,
            key,
            generation,
            id,
            request,
        };
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                log::warn!("request queue full; answering a temporary failure");
                Err(temporary("request queue full"))
            }
            Err(TrySendError::Disconnected(_)) => Err(temporary("request workers stopped")),
        }
    }
}

fn temporary(why: &str) -> Reply {
    Reply::Failed(Failure::Temporary(why.to_owned()))
}

/// Starts `count` workers, pushing their handles onto `handles` (so the caller can join
/// the ones that started even if a later spawn fails). Workers exit once every
/// [`Submitter`] is dropped and the queue is empty.
pub(crate) fn spawn(
    count: usize,
    executor: Arc<dyn Executor>,
    jobs: Receiver<Job>,
    loops: Arc<[LoopHandle]>,
    handles: &mut Vec<JoinHandle<()>>,
) -> std::io::Result<()> {
    for i in 0..count.max(1) {
        let (jobs, executor, loops) = (jobs.clone(), executor.clone(), loops.clone());
        let handle = std::thread::Builder::new()
            .name(format!("tidegate-worker-{i}"))
            .spawn(move || run(&jobs, &*executor, &loops))?;
        handles.push(handle);
    }
    Ok(())
}

fn run(jobs: &Receiver<Job>, executor: &dyn Executor, loops: &[LoopHandle]) {
    // `recv` fails once every sender is gone and the queue is empty.
    while let Ok(job) = jobs.recv() {
        // A panicking store call must not take a worker (and the session's one reply)
        // with it: the session gets a temporary failure instead.
        let reply = catch_unwind(AssertUnwindSafe(|| executor.execute(job.request)))
            .unwrap_or_else(|_| {
                log::error!("request executor panicked; answering a temporary failure");
                temporary("internal error")
            });
        let Some(owner) = loops.get(job.loop_index) else {
            continue;
        };
        // A loop that already exited (shutdown) has no use for the reply.
        let _ = owner.send(Msg::Reply {
            key: job.key,
            generation: job.generation,
            id: job.id,
            reply,
        });
    }
}
