//! The output side every protocol session shares: reply bytes being built, actions in
//! order, request ids, and the count of bytes the client has not drained yet.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::io::{Action, Peer, RequestId};
use crate::request::Request;

/// Replies and actions of one session, kept in the order the shell must carry them out.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Reply bytes not yet handed out as a `Write`; sessions append to it directly.
    /// Allocated on demand and handed out whole, so an idle session holds no reply
    /// buffer and a large reply's buffer does not outlive its `Write`.
    pub(crate) out: BytesMut,
    actions: VecDeque<Action>,
    next_id: u64,
    /// Bytes handed out since the shell last reported the client drained.
    unflushed: usize,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Outbox {
            out: BytesMut::new(),
            actions: VecDeque::new(),
            next_id: 0,
            unflushed: 0,
        }
    }

    /// Appends one reply line (text without CRLF).
    pub(crate) fn line(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Queues a request under a fresh, increasing id.
    pub(crate) fn request(&mut self, request: Request) -> RequestId {
        self.next_id += 1;
        let id = RequestId(self.next_id);
        self.push(Action::Request { id, request });
        id
    }

    /// Queues a non-write action after every reply byte produced so far.
    pub(crate) fn push(&mut self, action: Action) {
        self.flush();
        self.actions.push_back(action);
    }

    /// Hands the reply bytes built so far out as one `Write`.
    pub(crate) fn flush(&mut self) {
        if !self.out.is_empty() {
            let bytes = std::mem::take(&mut self.out).freeze();
            self.unflushed += bytes.len();
            self.actions.push_back(Action::Write {
                to: Peer::Client,
                bytes,
            });
        }
    }

    /// The next action for the shell (`Session::poll_action`).
    pub(crate) fn poll(&mut self) -> Option<Action> {
        self.flush();
        self.actions.pop_front()
    }

    /// The shell wrote everything out (`Session::handle_drained`).
    pub(crate) fn drained(&mut self) {
        self.unflushed = 0;
    }

    /// Output produced but not yet drained by the client, in bytes.
    pub(crate) fn backlog(&self) -> usize {
        self.unflushed + self.out.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_bytes_are_handed_out_whole_and_no_buffer_stays_behind() {
        let mut outbox = Outbox::new();
        assert_eq!(outbox.out.capacity(), 0);
        outbox.line("+OK first");
        outbox.line("+OK second");
        match outbox.poll() {
            Some(Action::Write { bytes, .. }) => {
                assert_eq!(&bytes[..], b"+OK first\r\n+OK second\r\n")
            }
            other => panic!("expected a write, got {other:?}"),
        }
        assert!(outbox.poll().is_none());
        assert_eq!(outbox.out.capacity(), 0);
        assert_eq!(outbox.backlog(), 23);
        outbox.drained();
        assert_eq!(outbox.backlog(), 0);
    }
}
