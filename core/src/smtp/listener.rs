//! How an SMTP, submission or LMTP listener makes sessions: the pure part of accepting
//! a connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rustls::ServerConfig;

use super::{BUSY_REPLY, SmtpConfig, SmtpConnInfo, SmtpRole, SmtpSession, reply};
use crate::io::Session;
use crate::net::{Cidr, PlaintextAuth};
use crate::refusal::Refusal;
use crate::tls::Secured;

/// One SMTP-family listening port: its settings, STARTTLS certificate, login policy and
/// trusted networks.
#[derive(Debug, Clone)]
pub struct SmtpListener {
    /// Settings shared by its sessions; `config.role` says which listener this is.
    pub config: Arc<SmtpConfig>,
    /// The certificate for STARTTLS (RFC 3207); `None` does not offer it.
    pub tls: Option<Arc<ServerConfig>>,
    /// When AUTH may be used without TLS (submission only).
    pub plaintext_auth: PlaintextAuth,
    /// `[trust] networks`: with loopback, the only clients an LMTP listener serves.
    pub trusted: Vec<Cidr>,
}

impl SmtpListener {
    /// The session for a client accepted at `now` (`accepted_at` is the same moment on
    /// the wall clock, for `Received:` dates). It is wrapped in [`Secured`] so STARTTLS
    /// works; an LMTP listener refuses untrusted clients with a `554` greeting
    /// (RFC 5321 §3.1) and closes.
    pub fn open(
        &self,
        client: SocketAddr,
        accepted_at: SystemTime,
        now: Instant,
    ) -> Box<dyn Session + Send> {
        let trusted = self.is_trusted(client.ip());
        let conn = SmtpConnInfo {
            client,
            accepted_at,
            starttls_available: self.tls.is_some(),
            plaintext_auth: self.plaintext_auth.allows(client.ip()),
            trusted,
            may_override_client: self.trusted.iter().any(|n| n.contains(client.ip())),
        };
        if self.config.role == SmtpRole::Lmtp && !trusted {
            let line = reply::lmtp_untrusted(&self.config.hostname);
            return Box::new(SmtpSession::refused(self.config.clone(), conn, now, &line));
        }
        let session = SmtpSession::new(self.config.clone(), conn, now);
        Box::new(Secured::plain(session, self.tls.clone()))
    }

    /// The session for a client that arrives while the server is full: [`BUSY_REPLY`],
    /// then close.
    pub fn busy(&self) -> Box<dyn Session + Send> {
        Box::new(Refusal::new(BUSY_REPLY))
    }

    /// Loopback or inside one of the trusted networks.
    fn is_trusted(&self, ip: IpAddr) -> bool {
        ip.is_loopback()
            || ip.to_canonical().is_loopback()
            || self.trusted.iter().any(|n| n.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Action, Peer};

    fn listener(role: SmtpRole, trusted: &[&str]) -> SmtpListener {
        SmtpListener {
            config: Arc::new(SmtpConfig {
                hostname: "mx.example".into(),
                role,
                ..SmtpConfig::default()
            }),
            tls: None,
            plaintext_auth: PlaintextAuth::Never,
            trusted: trusted.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    fn first_write(session: &mut dyn Session) -> (String, bool) {
        let mut text = String::new();
        let mut closed = false;
        while let Some(action) = session.poll_action() {
            match action {
                Action::Write { bytes, .. } => text.push_str(&String::from_utf8_lossy(&bytes)),
                Action::Close { .. } => closed = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        (text, closed)
    }

    #[test]
    fn lmtp_serves_trusted_clients_only() {
        #[allow(clippy::disallowed_methods)] // tests need a base instant
        let now = Instant::now();
        let lmtp = listener(SmtpRole::Lmtp, &["10.0.0.0/8"]);
        let at = SystemTime::UNIX_EPOCH;
        let mut refused = lmtp.open("192.0.2.1:1000".parse().unwrap(), at, now);
        assert_eq!(
            first_write(refused.as_mut()),
            (
                "554 5.7.1 mx.example LMTP is only for trusted networks\r\n".into(),
                true
            )
        );
        assert!(!refused.wants_read(Peer::Client));
        for client in [
            "10.1.2.3:1000",
            "127.0.0.1:1000",
            "[::1]:1000",
            "[::ffff:127.0.0.1]:1",
        ] {
            let mut ok = lmtp.open(client.parse().unwrap(), at, now);
            assert_eq!(
                first_write(ok.as_mut()),
                ("220 mx.example LMTP tidegate\r\n".into(), false),
                "{client}"
            );
        }
        let smtp = listener(SmtpRole::Inbound, &[]);
        let mut inbound = smtp.open("192.0.2.1:1000".parse().unwrap(), at, now);
        assert_eq!(
            first_write(inbound.as_mut()),
            ("220 mx.example ESMTP tidegate\r\n".into(), false)
        );
        assert_eq!(
            first_write(smtp.busy().as_mut()),
            (
                "421 4.7.0 Too many connections, try again later\r\n".into(),
                true
            )
        );
    }
}
