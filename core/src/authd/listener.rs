//! How an authd listener makes sessions: the pure part of accepting a connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls::ServerConfig;

use super::{AuthdConfig, AuthdServerSession};
use crate::io::Session;
use crate::refusal::Refusal;
use crate::tls::Secured;

/// The line a full authd server sends instead of its greeting.
pub const BUSY_REPLY: &[u8] = b"* BYE too%20many%20connections\r\n";

/// One authd listening port: its settings and, for implicit TLS, its certificate.
#[derive(Debug, Clone)]
pub struct AuthdListener {
    /// Settings shared by its sessions.
    pub config: Arc<AuthdConfig>,
    /// With a certificate, TLS starts with the first byte (there is no STARTTLS).
    pub tls: Option<Arc<ServerConfig>>,
}

impl AuthdListener {
    /// The session for a client accepted at `now`.
    pub fn open(&self, _client: SocketAddr, now: Instant) -> Box<dyn Session + Send> {
        let session = AuthdServerSession::new(self.config.clone(), now);
        match &self.tls {
            Some(tls) => match Secured::implicit(session, tls.clone()) {
                Ok(secured) => Box::new(secured),
                Err(_) => Box::new(Refusal::new(b"")),
            },
            None => Box::new(session),
        }
    }

    /// The session for a client that arrives while the server is full: `* BYE` on a
    /// plain port; on a TLS port the connection is closed at once (a handshake would
    /// cost the full server more than the refusal is worth).
    pub fn busy(&self) -> Box<dyn Session + Send> {
        match self.tls {
            Some(_) => Box::new(Refusal::new(b"")),
            None => Box::new(Refusal::new(BUSY_REPLY)),
        }
    }
}
