//! How an IMAP listener makes sessions: the pure part of accepting a connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls::ServerConfig;

use super::{BUSY_REPLY, ConnInfo, ImapConfig, ImapSession};
use crate::io::Session;
use crate::net::{Cidr, PlaintextAuth};
use crate::refusal::Refusal;
use crate::tls::Secured;

/// One IMAP listening port: its settings, TLS certificate and login policy.
#[derive(Debug, Clone)]
pub struct ImapListener {
    /// Settings shared by its sessions.
    pub config: Arc<ImapConfig>,
    /// The certificate for STARTTLS (plain port) or for the handshake (implicit-TLS port).
    pub tls: Option<Arc<ServerConfig>>,
    /// True for an implicit-TLS port (993): TLS starts with the first byte.
    pub implicit_tls: bool,
    /// When passwords may be sent without TLS.
    pub plaintext_auth: PlaintextAuth,
    /// Peers (`[trust] networks`) whose XCLIENT or ID may name the real client.
    pub trusted: Vec<Cidr>,
}

impl ImapListener {
    /// The session for a client accepted at `now`. An implicit-TLS listener without a
    /// certificate cannot serve anyone, so it answers like a full server.
    pub fn open(&self, client: SocketAddr, now: Instant) -> Box<dyn Session + Send> {
        let conn = ConnInfo {
            client,
            implicit_tls: self.implicit_tls,
            starttls_available: self.tls.is_some() && !self.implicit_tls,
            plaintext_auth: self.plaintext_auth.allows(client.ip()),
            // Not wired to `[trust] networks` yet: ID fields are ignored.
            may_override_client: self.trusted.iter().any(|n| n.contains(client.ip())),
        };
        let session = ImapSession::new(self.config.clone(), conn, now);
        match (&self.tls, self.implicit_tls) {
            (Some(tls), true) => match Secured::implicit(session, tls.clone()) {
                Ok(secured) => Box::new(secured),
                Err(_) => Box::new(Refusal::new(BUSY_REPLY)),
            },
            (None, true) => Box::new(Refusal::new(BUSY_REPLY)),
            (tls, false) => Box::new(Secured::plain(session, tls.clone())),
        }
    }

    /// The session for a client that arrives while the server is full: `* BYE [UNAVAILABLE]`,
    /// then close. On an implicit-TLS port the connection is closed at once: a TLS
    /// handshake would cost the full server more than the refusal is worth.
    pub fn busy(&self) -> Box<dyn Session + Send> {
        if self.implicit_tls {
            Box::new(Refusal::new(b""))
        } else {
            Box::new(Refusal::new(BUSY_REPLY))
        }
    }
}
