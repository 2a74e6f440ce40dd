//! A session that sends one fixed reply and closes: what a listener at its connection
//! cap answers instead of a greeting.

use std::time::Instant;

use bytes::Bytes;

use crate::io::{Action, Peer, RequestId, Session};
use crate::request::Reply;

/// Sends `reply` (for POP3 [`crate::pop3::BUSY_REPLY`]; empty sends nothing) and closes,
/// ignoring all input.
#[derive(Debug)]
pub struct Refusal {
    reply: Option<Bytes>,
    closed: bool,
}

impl Refusal {
    /// A session that answers `reply` and closes.
    pub fn new(reply: &'static [u8]) -> Self {
        Refusal {
            reply: Some(Bytes::from_static(reply)),
            closed: false,
        }
    }
}

impl Session for Refusal {
    fn handle_input(&mut self, _now: Instant, _from: Peer, _bytes: &[u8]) {}
    fn handle_eof(&mut self, _now: Instant, _from: Peer) {}
    fn handle_reply(&mut self, _now: Instant, _id: RequestId, _reply: Reply) {}
    fn handle_timeout(&mut self, _now: Instant) {}
    fn handle_drained(&mut self, _now: Instant, _to: Peer) {}

    fn poll_action(&mut self) -> Option<Action> {
        if let Some(bytes) = self.reply.take().filter(|b| !b.is_empty()) {
            return Some(Action::Write {
                to: Peer::Client,
                bytes,
            });
        }
        if !self.closed {
            self.closed = true;
            return Some(Action::Close { to: Peer::Client });
        }
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn wants_read(&self, _from: Peer) -> bool {
        false
    }
}
