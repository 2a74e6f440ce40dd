//! The IMAP listener: [`crate::listener::Listener`] with IMAP sessions.

use std::sync::Arc;
use std::time::Instant;

use super::{BUSY_REPLY, ConnInfo, ImapConfig, ImapSession};
use crate::listener::{Listener, Protocol};

/// One IMAP listening port (143 with STARTTLS, or 993).
pub type ImapListener = Listener<ImapConfig>;

impl Protocol for ImapConfig {
    type Session = ImapSession;
    const BUSY_REPLY: &'static [u8] = BUSY_REPLY;

    fn session(config: Arc<Self>, conn: ConnInfo, now: Instant) -> ImapSession {
        ImapSession::new(config, conn, now)
    }
}
