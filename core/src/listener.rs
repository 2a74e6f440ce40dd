//! How a listener makes sessions: the pure part of accepting a connection, shared by
//! the protocols whose sessions start from a [`ConnInfo`] (POP3, IMAP).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls::ServerConfig;

use crate::io::Session;
use crate::net::{Cidr, PlaintextAuth};
use crate::pop3::ConnInfo;
use crate::refusal::Refusal;
use crate::tls::Secured;

/// A protocol's session settings, which know how to start a session and how to refuse
/// a client when the server is full.
pub trait Protocol: Send + Sync + 'static {
    /// The session a connection gets.
    type Session: Session + Send + 'static;
    /// The line sent instead of a greeting when the server is full (RFC 2449 `[SYS/TEMP]`
    /// for POP3, RFC 3501 `BYE` for IMAP).
    const BUSY_REPLY: &'static [u8];
    /// A session for this connection.
    fn session(config: Arc<Self>, conn: ConnInfo, now: Instant) -> Self::Session;
}

/// One listening port: its settings, TLS certificate, login policy and trusted peers.
#[derive(Debug)]
pub struct Listener<P> {
    /// Settings shared by its sessions.
    pub config: Arc<P>,
    /// The certificate for STLS/STARTTLS (plain port) or for the handshake
    /// (implicit-TLS port).
    pub tls: Option<Arc<ServerConfig>>,
    /// True for an implicit-TLS port (995, 993): TLS starts with the first byte.
    pub implicit_tls: bool,
    /// When passwords may be sent without TLS.
    pub plaintext_auth: PlaintextAuth,
    /// Peers (`[trust] networks`) whose XCLIENT or ID may name the real client.
    pub trusted: Vec<Cidr>,
}

impl<P> Clone for Listener<P> {
    fn clone(&self) -> Self {
        Listener {
            config: self.config.clone(),
            tls: self.tls.clone(),
            implicit_tls: self.implicit_tls,
            plaintext_auth: self.plaintext_auth.clone(),
            trusted: self.trusted.clone(),
        }
    }
}

impl<P: Protocol> Listener<P> {
    /// The session for a client accepted at `now`. An implicit-TLS listener without a
    /// certificate cannot serve anyone, so it answers like a full server.
    pub fn open(&self, client: SocketAddr, now: Instant) -> Box<dyn Session + Send> {
        let conn = ConnInfo {
            client,
            implicit_tls: self.implicit_tls,
            starttls_available: self.tls.is_some() && !self.implicit_tls,
            plaintext_auth: self.plaintext_auth.allows(client.ip()),
            may_override_client: self.trusted.iter().any(|n| n.contains(client.ip())),
        };
        let session = P::session(self.config.clone(), conn, now);
        secure(session, self.tls.as_ref(), self.implicit_tls, P::BUSY_REPLY)
    }

    /// The session for a client that arrives while the server is full: the protocol's
    /// busy reply, then close. On an implicit-TLS port the connection is closed at once:
    /// a TLS handshake would cost the full server more than the refusal is worth.
    pub fn busy(&self) -> Box<dyn Session + Send> {
        if self.implicit_tls {
            Box::new(Refusal::new(b""))
        } else {
            Box::new(Refusal::new(P::BUSY_REPLY))
        }
    }
}

/// Wraps a new session for its port: TLS from the first byte on an implicit-TLS port,
/// else plain with STARTTLS available when there is a certificate. An implicit-TLS port
/// without a usable certificate answers `refusal` and closes.
pub fn secure<S: Session + Send + 'static>(
    session: S,
    tls: Option<&Arc<ServerConfig>>,
    implicit_tls: bool,
    refusal: &'static [u8],
) -> Box<dyn Session + Send> {
    match (tls, implicit_tls) {
        (Some(tls), true) => match Secured::implicit(session, tls.clone()) {
            Ok(secured) => Box::new(secured),
            Err(_) => Box::new(Refusal::new(refusal)),
        },
        (None, true) => Box::new(Refusal::new(refusal)),
        (tls, false) => Box::new(Secured::plain(session, tls.cloned())),
    }
}
