//! The POP3 listener: [`crate::listener::Listener`] with POP3 sessions.

use std::sync::Arc;
use std::time::Instant;

use super::{BUSY_REPLY, ConnInfo, Pop3Config, Pop3Session};
use crate::listener::{Listener, Protocol};

/// One POP3 listening port (110 with STLS, or 995).
pub type Pop3Listener = Listener<Pop3Config>;

impl Protocol for Pop3Config {
    type Session = Pop3Session;
    const BUSY_REPLY: &'static [u8] = BUSY_REPLY;

    fn session(config: Arc<Self>, conn: ConnInfo, now: Instant) -> Pop3Session {
        Pop3Session::new(config, conn, now)
    }
}
