//! Pipes for zero-copy splicing, lent out per readiness event and kept in a small pool.
//!
//! `splice(2)` moves bytes between two sockets only through a pipe: socket → pipe →
//! socket, the pages never copied into user space. A pipe costs two file descriptors
//! and, while it holds data, its pages; an idle spliced connection needs neither. So a
//! direction borrows a pipe only while it has bytes to move and gives it back as soon
//! as the pipe is empty again; the loop keeps up to [`POOL_MAX`] empty pipes for reuse,
//! so a busy loop does not create a pipe per event.

use std::io;
use std::os::fd::OwnedFd;

/// Most empty pipes a loop keeps (2 descriptors each). Only directions carrying bulk
/// data borrow pipes (see `splice.rs`), so a few suffice.
const POOL_MAX: usize = 16;
/// The capacity asked for each pipe: bytes in flight per direction, in kernel pages,
/// only while a transfer is under way. Four times the default, so a bulk transfer
/// needs a quarter of the `splice(2)` calls; if the system refuses (its
/// `pipe-max-size` or per-user pipe quota), the default 64 KiB is kept. 1 MiB pipes
/// (the usual `pipe-max-size`) measured no better on loopback: a wake-up finds less
/// than 256 KiB queued on the socket.
pub(crate) const PIPE_SIZE: usize = 256 * 1024;

/// One pipe: bytes spliced into `write` come out of `read`.
pub(crate) struct Pipe {
    /// The end bytes are spliced out of.
    pub(crate) read: OwnedFd,
    /// The end bytes are spliced into.
    pub(crate) write: OwnedFd,
}

impl Pipe {
    /// A new non-blocking pipe.
    fn new() -> io::Result<Pipe> {
        #[cfg(target_os = "linux")]
        {
            use rustix::pipe::PipeFlags;
            let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
            let _ = rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE);
            Ok(Pipe { read, write })
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err(io::ErrorKind::Unsupported.into())
        }
    }
}

/// A loop's empty pipes.
#[derive(Default)]
pub(crate) struct PipePool {
    idle: Vec<Pipe>,
    /// Whether creating a pipe has failed since the last success (logged once).
    failing: bool,
}

impl PipePool {
    /// An empty pipe, reused or new; `None` when none can be created (out of file
    /// descriptors, or no `splice(2)` on this system): the caller copies through a
    /// bounded buffer instead.
    pub(crate) fn take(&mut self) -> Option<Pipe> {
        if let Some(pipe) = self.idle.pop() {
            return Some(pipe);
        }
        match Pipe::new() {
            Ok(pipe) => {
                self.failing = false;
                Some(pipe)
            }
            Err(e) => {
                if !self.failing {
                    log::warn!("cannot create a pipe for splicing ({e}); copying through a buffer");
                    self.failing = true;
                }
                None
            }
        }
    }

    /// Takes back a pipe that holds no bytes.
    pub(crate) fn give(&mut self, pipe: Pipe) {
        if self.idle.len() < POOL_MAX {
            self.idle.push(pipe);
        }
    }
}
