//! The bytes a connection owes its client: `Write` actions queued in order, written with
//! vectored non-blocking writes, never copied.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes};

/// Most slices handed to one `write_vectored` call (Linux `IOV_MAX` is 1024; a few dozen
/// already fill a socket buffer with POP3-sized lines).
const MAX_SLICES: usize = 64;

/// Pending output of one connection.
///
/// Its size is bounded by the session, not here: a session stops producing once the
/// bytes it handed out since the last [`tidegate_core::Session::handle_drained`] reach
/// its high-water mark, and the shell only reports "drained" when this queue is empty.
/// The connection still enforces a hard cap ([`crate::conn`]) against a faulty session.
#[derive(Debug, Default)]
pub(crate) struct Output {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl Output {
    /// Appends bytes after everything queued so far.
    pub(crate) fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.chunks.push_back(bytes);
        }
    }

    /// Bytes not yet written.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// True when everything was written.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets unwritten bytes (the connection broke).
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    /// Writes until the queue is empty or the socket would block. Returns the number of
    /// bytes written; `WouldBlock` is only returned when nothing could be written.
    pub(crate) fn write_to(&mut self, mut sink: impl Write) -> io::Result<usize> {
        let mut written = 0;
        while !self.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (slot, chunk) in slices.iter_mut().zip(&self.chunks) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            match sink.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.consume(n);
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && written > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// Drops `n` written bytes from the front.
    fn consume(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts at most `limit` bytes per call, then reports `WouldBlock` once full.
    struct Trickle {
        got: Vec<u8>,
        per_call: usize,
        capacity: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let room = self.capacity - self.got.len();
            if room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.per_call).min(room);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order_and_count() {
        let mut out = Output::default();
        out.push(Bytes::from_static(b"hello "));
        out.push(Bytes::new());
        out.push(Bytes::from_static(b"world"));
        assert_eq!(out.len(), 11);
        let mut sink = Trickle {
            got: Vec::new(),
            per_call: 4,
            capacity: 7,
        };
        assert_eq!(out.write_to(&mut sink).unwrap(), 7);
        assert_eq!(out.len(), 4);
        let err = out.write_to(&mut sink).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        sink.capacity = 100;
        assert_eq!(out.write_to(&mut sink).unwrap(), 4);
        assert!(out.is_empty());
        assert_eq!(sink.got, b"hello world");
    }
}
