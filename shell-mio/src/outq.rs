//! The bytes a connection owes one socket: `Write` actions queued in order, written
//! with vectored non-blocking writes, never copied.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write as _};

use bytes::{Buf as _, Bytes};
use mio::net::TcpStream;

/// Most buffers handed to one `writev`.
const MAX_IOVECS: usize = 64;
/// Hard cap on one socket's pending output. Sessions stay far below it (POP3 stops at
/// 256 KiB until `handle_drained`); a session that does not is closed rather than
/// allowed to exhaust memory.
pub(crate) const MAX_PENDING: usize = 16 * 1024 * 1024;

/// Output not yet taken by the kernel.
#[derive(Default)]
pub(crate) struct OutQueue {
    chunks: VecDeque<Bytes>,
    len: usize,
    /// Bytes were queued since the last drain was reported.
    pub(crate) wrote: bool,
}

impl OutQueue {
    /// Queues `bytes` after everything before. Returns false if that would pass
    /// [`MAX_PENDING`] (the bytes are then not queued).
    pub(crate) fn push(&mut self, bytes: Bytes) -> bool {
        if bytes.is_empty() {
            return true;
        }
        if self.len.saturating_add(bytes.len()) > MAX_PENDING {
            return false;
        }
        self.len += bytes.len();
        self.chunks.push_back(bytes);
        self.wrote = true;
        true
    }

    /// Bytes not yet written.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Nothing left to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Writes until the queue is empty or the kernel pushes back.
    pub(crate) fn flush(&mut self, mut socket: &TcpStream) -> io::Result<()> {
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = slices
                .iter_mut()
                .zip(&self.chunks)
                .map(|(slice, bytes)| *slice = IoSlice::new(bytes))
                .count();
            match socket.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.consume(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Drops `written` bytes from the front.
    fn consume(&mut self, mut written: usize) {
        self.len -= written.min(self.len);
        while written > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if front.len() > written {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.chunks.pop_front();
        }
    }
}
