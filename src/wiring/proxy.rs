//! Front-end listeners (`[proxy] enabled`) and the PROXY-header gate of back-end
//! listeners (`[trust] proxy_protocol`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tidegate_core::imap::ImapListener;
use tidegate_core::net::{Cidr, PlaintextAuth};
use tidegate_core::pop3::Pop3Listener;
use tidegate_core::proxy::gate::{DEFAULT_HEADER_TIMEOUT, ProxiedClient};
use tidegate_core::proxy::{
    BackendTlsMode, ClientAddressMode, FrontConn, ImapFrontSession, Pop3FrontSession, ProxyConfig,
    ProxyHeaderGate, SubmissionFrontSession,
};
use tidegate_core::refusal::Refusal;
use tidegate_core::smtp::SmtpListener;
use tidegate_store::metrics::Protocol;
use tidegate_store::service::BoxedSession;
use tidegate_store::{Accept, Listener};

use crate::config::Config;
use crate::metrics::observe;

/// The front-end protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontKind {
    /// POP3 (RFC 1939).
    Pop3,
    /// Submission (RFC 6409).
    Submission,
    /// IMAP (RFC 3501).
    Imap,
}

/// A front-end listener: makes a proxy front-end session per connection.
pub struct FrontListener {
    /// Which protocol.
    pub kind: FrontKind,
    /// Shared by every session of this listener.
    pub config: Arc<ProxyConfig>,
    /// The client leg's TLS (STARTTLS, or from the first byte with `implicit_tls`).
    pub tls: Option<Arc<ServerConfig>>,
    /// TLS from the first byte.
    pub implicit_tls: bool,
    /// When a password may be sent before TLS.
    pub plaintext_auth: PlaintextAuth,
    /// The address the listener is bound to (the client's destination).
    pub local: SocketAddr,
}

/// The reply for a client that arrives while the server is full.
fn busy_reply(kind: FrontKind) -> &'static [u8] {
    match kind {
        FrontKind::Pop3 => b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
        FrontKind::Submission => b"421 4.3.2 Too many connections, try again later\r\n",
        FrontKind::Imap => b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
    }
}

impl FrontListener {
    fn session(&self, client: SocketAddr, hops: Option<u8>, now: Instant) -> BoxedSession {
        let conn = FrontConn {
            client,
            local: self.local,
            implicit_tls: self.implicit_tls,
            starttls_available: self.tls.is_some() && !self.implicit_tls,
            plaintext_auth: self.plaintext_auth.allows(client.ip()),
            hops,
        };
        let cfg = self.config.clone();
        match self.kind {
            FrontKind::Pop3 => self.secure(Pop3FrontSession::new(cfg, conn, now), client),
            FrontKind::Submission => {
                self.secure(SubmissionFrontSession::new(cfg, conn, now), client)
            }
            FrontKind::Imap => self.secure(ImapFrontSession::new(cfg, conn, now), client),
        }
    }

    fn secure<S: tidegate_core::Session + Send + 'static>(
        &self,
        session: S,
        client: SocketAddr,
    ) -> BoxedSession {
        let protocol = match self.kind {
            FrontKind::Pop3 => Protocol::Pop3,
            FrontKind::Submission => Protocol::Submission,
            FrontKind::Imap => Protocol::Imap,
        };
        let observed = observe::front(session, protocol, self.local, self.implicit_tls, client);
        tidegate_core::listener::secure(observed, self.tls.as_ref(), self.implicit_tls, b"")
    }
}

impl Accept for FrontListener {
    fn open(&self, peer: SocketAddr, now: Instant) -> BoxedSession {
        self.session(peer, None, now)
    }

    fn busy(&self, _peer: SocketAddr, _now: Instant) -> BoxedSession {
        if self.implicit_tls {
            Box::new(Refusal::new(b""))
        } else {
            Box::new(Refusal::new(busy_reply(self.kind)))
        }
    }
}

/// A listener whose trusted peers (front-ends, load balancers) start every connection
/// with a PROXY header naming the real client; other peers are served directly.
pub struct Gated {
    /// The listener behind the gate.
    pub inner: Gatable,
    /// Peers that must send a header (`[trust] networks`).
    pub trusted: Arc<Vec<Cidr>>,
    /// How long a trusted peer may take to send it.
    pub timeout: Duration,
    /// The listener's address, for the login log line.
    pub local: SocketAddr,
}

/// A listener the gate can open sessions of for the address a header names.
#[derive(Clone)]
pub enum Gatable {
    /// A server listener (POP3, SMTP, LMTP).
    Server(Listener),
    /// A front-end listener behind another front-end or a load balancer.
    Front(Arc<FrontListener>),
}

impl Gatable {
    /// The session for a client a trusted peer's PROXY header named. The peer (a
    /// front-end) already applied the TLS policy to its client, and the hop between
    /// them is trusted, so a password without TLS is accepted on this leg.
    fn open_for(&self, client: &ProxiedClient, local: SocketAddr, now: Instant) -> BoxedSession {
        let listener = match self {
            Gatable::Server(Listener::Pop3(pop3)) => Listener::Pop3(Pop3Listener {
                plaintext_auth: PlaintextAuth::Always,
                ..pop3.clone()
            }),
            Gatable::Server(Listener::Smtp(smtp)) => Listener::Smtp(SmtpListener {
                plaintext_auth: PlaintextAuth::Always,
                ..smtp.clone()
            }),
            Gatable::Server(Listener::Imap(imap)) => Listener::Imap(ImapListener {
                plaintext_auth: PlaintextAuth::Always,
                ..imap.clone()
            }),
            Gatable::Server(Listener::Custom(accept)) => return accept.open(client.addr, now),
            Gatable::Front(front) => return front.session(client.addr, client.hops, now),
            Gatable::Server(_) => return Box::new(Refusal::new(b"")),
        };
        observe::open(&listener, local, client.addr, now)
    }

    fn open(&self, peer: SocketAddr, local: SocketAddr, now: Instant) -> BoxedSession {
        match self {
            Gatable::Server(listener) => observe::open(listener, local, peer, now),
            Gatable::Front(front) => front.open(peer, now),
        }
    }

    fn busy(&self, peer: SocketAddr, now: Instant) -> BoxedSession {
        match self {
            Gatable::Server(Listener::Pop3(pop3)) => pop3.busy(),
            Gatable::Server(Listener::Smtp(smtp)) => smtp.busy(),
            Gatable::Server(Listener::Imap(imap)) => imap.busy(),
            Gatable::Server(Listener::Custom(accept)) => accept.busy(peer, now),
            Gatable::Front(front) => front.busy(peer, now),
            Gatable::Server(_) => Box::new(Refusal::new(b"")),
        }
    }
}

impl Accept for Gated {
    fn open(&self, peer: SocketAddr, now: Instant) -> BoxedSession {
        if !self.trusted.iter().any(|net| net.contains(peer.ip())) {
            return self.inner.open(peer, self.local, now);
        }
        let inner = self.inner.clone();
        let local = self.local;
        Box::new(ProxyHeaderGate::new(
            peer,
            &self.trusted,
            now,
            self.timeout,
            move |client: ProxiedClient| inner.open_for(&client, local, now),
        ))
    }

    fn busy(&self, peer: SocketAddr, now: Instant) -> BoxedSession {
        self.inner.busy(peer, now)
    }
}

/// Puts `listener` behind a PROXY-header gate when `[trust] proxy_protocol` is on.
pub fn gate(config: &Config, trusted: &[Cidr], listener: Gatable, local: SocketAddr) -> Listener {
    if !config.trust.proxy_protocol {
        return match listener {
            Gatable::Server(listener) => listener,
            Gatable::Front(front) => Listener::Custom(front),
        };
    }
    Listener::Custom(Arc::new(Gated {
        inner: listener,
        trusted: Arc::new(trusted.to_vec()),
        timeout: DEFAULT_HEADER_TIMEOUT,
        local,
    }))
}

/// The TLS client configuration towards the back-ends (`backend_tls` other than
/// `"none"`): `backend_ca`, else the certificate this node serves (a cluster that shares
/// one certificate needs no CA), else the generated self-signed one.
pub fn backend_client_tls(
    config: &Config,
    proxy: &crate::config::Proxy,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let own = config.tls.as_ref().and_then(|t| t.cert.clone());
    let ca =
        proxy.backend_ca.clone().or(own).unwrap_or_else(|| {
            tidegate_store::tls::self_signed_cert_path(&config.storage.workarea)
        });
    tidegate_store::tls::client_config(&ca)
}

/// The front-end settings of `[proxy]`; `None` when proxy mode is off.
pub fn proxy_config(config: &Config) -> Result<Option<Arc<ProxyConfig>>, String> {
    let Some(proxy) = config.proxy.as_ref().filter(|p| p.enabled) else {
        return Ok(None);
    };
    let backend_tls = match proxy.backend_tls.as_str() {
        "starttls" => BackendTlsMode::StartTls,
        "tls" => BackendTlsMode::Tls,
        _ => BackendTlsMode::None,
    };
    let backend_tls_config = match backend_tls {
        BackendTlsMode::None => None,
        _ => Some(backend_client_tls(config, proxy)?),
    };
    let client_address = match proxy.client_address.as_str() {
        "xclient" => ClientAddressMode::Xclient,
        "imap-id" => ClientAddressMode::ImapId,
        "none" => ClientAddressMode::None,
        _ => ClientAddressMode::ProxyV2,
    };
    let connect = Duration::from_secs(proxy.connect_timeout_secs);
    Ok(Some(Arc::new(ProxyConfig {
        hostname: config.hostname.clone(),
        backend_tls,
        backend_tls_config,
        client_address,
        source_addrs: proxy.source_addresses.clone(),
        max_hops: proxy.max_hops,
        pipelined_login: proxy.pipelined_login,
        backend_timeout: connect,
        // One front-end config serves every protocol: the shorter login timeout wins.
        login_timeout: Duration::from_secs(
            [
                config.pop3.as_ref().map(|p| p.login_timeout_secs),
                config.imap.as_ref().map(|i| i.login_timeout_secs),
                config.smtp.as_ref().map(|s| s.login_timeout_secs),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(60),
        ),
        auth_failure_delay: Duration::from_millis(
            config
                .pop3
                .as_ref()
                .map_or(2000, |pop3| pop3.auth_failure_delay_ms),
        ),
        ..ProxyConfig::default()
    })))
}
