//! Settings of the front-end sessions (design.md `[proxy]`) and the hop-count rule that
//! stops routing loops.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How the front-end reaches the back-end (`[proxy] backend_tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendTlsMode {
    /// Plain TCP: the back-ends sit on a trusted network.
    #[default]
    None,
    /// Plain TCP, then the protocol's STLS (RFC 2595 §4) or STARTTLS (RFC 3207,
    /// RFC 3501 §6.2.1) before any credentials are sent.
    StartTls,
    /// TLS from the first byte after the PROXY header (POP3S, IMAPS, submissions).
    Tls,
}

/// How the back-end learns the real client address (`[proxy] client_address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAddressMode {
    /// A PROXY protocol v2 header as the first bytes of the connection.
    #[default]
    ProxyV2,
    /// `XCLIENT ADDR=… PORT=… TTL=…` after the greeting (SMTP and POP3).
    Xclient,
    /// IMAP `ID ("x-originating-ip" …)` before LOGIN; other protocols send nothing.
    ImapId,
    /// The back-end sees the front-end's address.
    None,
}

/// Size and retry limits of a front-end session. Each default says why.
#[derive(Debug, Clone)]
pub struct ProxyLimits {
    /// Longest client command line before login, CRLF excluded: a SASL PLAIN response
    /// with a long password in base64 fits in 2 KiB, RFC 2449 §4 commands in 255.
    pub max_line: usize,
    /// Client input held while the route lookup and back-end login run (pipelined
    /// commands): it is handed to the back-end afterwards, so it is capped like the
    /// POP3 server's pipelining buffer.
    pub max_buffered_input: usize,
    /// Bytes written to one peer and not yet drained, above which the session stops
    /// reading from the other: a peer that never reads costs at most this much.
    pub output_high_water: usize,
    /// Unknown or malformed commands tolerated before the connection is closed.
    pub max_bad_commands: u32,
    /// Failed logins on one connection before it is closed.
    pub max_auth_failures: u32,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        ProxyLimits {
            max_line: 2048,
            max_buffered_input: 64 * 1024,
            output_high_water: 256 * 1024,
            max_bad_commands: 20,
            max_auth_failures: 3,
        }
    }
}

/// Settings shared by every front-end session of a listener.
#[derive(Clone)]
pub struct ProxyConfig {
    /// Host name shown in greetings.
    pub hostname: String,
    /// TLS towards back-ends.
    pub backend_tls: BackendTlsMode,
    /// The TLS client configuration for back-ends (its root store decides which
    /// certificates are trusted); required unless `backend_tls` is `None`.
    pub backend_tls_config: Option<Arc<rustls::ClientConfig>>,
    /// How the client address reaches the back-end.
    pub client_address: ClientAddressMode,
    /// Local addresses to connect from, picked by the client's port; empty lets the
    /// kernel choose. Several let one front-end open more than 64k connections to one
    /// back-end port.
    pub source_addrs: Vec<IpAddr>,
    /// Proxy hops allowed after this front-end when the client did not come through
    /// another one: each hop decrements the count and a front-end refuses at zero.
    pub max_hops: u8,
    /// Autologout before login (RFC 1939 §3: at least 10 minutes for POP3).
    pub idle_timeout: Duration,
    /// How long after connecting a client may take to log in, however busy it keeps
    /// the connection: bounds what a slow or silent client holds before the hand-over.
    pub login_timeout: Duration,
    /// After the hand-over: close both connections when neither carried a byte for this
    /// long (the splice's idle timeout).
    pub relay_idle_timeout: Duration,
    /// How long the route lookup may take before the client gets a temporary failure.
    pub route_timeout: Duration,
    /// How long connecting to a back-end and logging in there may take in all.
    pub backend_timeout: Duration,
    /// Delay before a failed login is answered (the same for every failure).
    pub auth_failure_delay: Duration,
    /// Buffer and retry limits.
    pub limits: ProxyLimits,
    /// POP3 and IMAP: send the login together with the PROXY header, before the
    /// back-end's greeting arrives, when nothing else must come first (no STARTTLS or
    /// TLS towards the back-end, no XCLIENT or ID step). Saves a round trip, a write
    /// and a wake-up per login on both tiers. RFC 1939 and RFC 9051 do not forbid a
    /// client to speak before the greeting, and servers read what was sent once they
    /// have greeted (tidegate and Dovecot do); set it false for a back-end that
    /// discards early input.
    pub pipelined_login: bool,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("hostname", &self.hostname)
            .field("backend_tls", &self.backend_tls)
            .field("client_address", &self.client_address)
            .field("max_hops", &self.max_hops)
            .finish_non_exhaustive()
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            hostname: "localhost".into(),
            backend_tls: BackendTlsMode::None,
            backend_tls_config: None,
            client_address: ClientAddressMode::ProxyV2,
            source_addrs: Vec::new(),
            max_hops: 4,
            idle_timeout: Duration::from_secs(600),
            login_timeout: Duration::from_secs(60),
            relay_idle_timeout: Duration::from_secs(1800),
            route_timeout: Duration::from_secs(30),
            backend_timeout: Duration::from_secs(15),
            auth_failure_delay: Duration::from_secs(2),
            limits: ProxyLimits::default(),
            pipelined_login: true,
        }
    }
}

impl ProxyConfig {
    /// Whether a POP3 or IMAP login goes out with the connection, before the greeting
    /// ([`ProxyConfig::pipelined_login`] and nothing that must precede the login).
    pub fn login_before_greeting(&self) -> bool {
        self.pipelined_login
            && self.backend_tls == BackendTlsMode::None
            && matches!(
                self.client_address,
                ClientAddressMode::ProxyV2 | ClientAddressMode::None
            )
    }

    /// The local address to connect from for a client at `client` (spread by port).
    pub fn source_for(&self, client: SocketAddr) -> Option<IpAddr> {
        let n = self.source_addrs.len();
        (n > 0).then(|| self.source_addrs[usize::from(client.port()) % n])
    }
}

/// Facts about one accepted client connection, decided by the shell and the config.
#[derive(Debug, Clone)]
pub struct FrontConn {
    /// The client's address (the real one, when a PROXY header from a trusted load
    /// balancer gave it).
    pub client: SocketAddr,
    /// The local address the client connected to: the PROXY header's destination.
    pub local: SocketAddr,
    /// TLS is active from the first byte (an implicit-TLS port).
    pub implicit_tls: bool,
    /// STLS/STARTTLS can be offered (a certificate is configured).
    pub starttls_available: bool,
    /// Whether passwords may be sent before TLS (`[tls] plaintext_auth` for this client).
    pub plaintext_auth: bool,
    /// Hops still allowed, when an upstream proxy said so (PROXY v2 TLV, XCLIENT `TTL`).
    pub hops: Option<u8>,
}

/// This front-end is one hop too many: the user's route leads back into the proxy
/// tier (a `tohost` that names a front-end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyLoop;

/// The hop count to send to the back-end: one less than what the client's upstream
/// allowed, or `max_hops` for a direct client. At zero the front-end must not proxy.
pub fn next_hops(incoming: Option<u8>, max_hops: u8) -> Result<u8, ProxyLoop> {
    match incoming {
        None => Ok(max_hops),
        Some(0) => Err(ProxyLoop),
        Some(n) => Ok(n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_count_down_to_a_refusal() {
        assert_eq!(next_hops(None, 4), Ok(4));
        assert_eq!(next_hops(Some(4), 4), Ok(3));
        assert_eq!(next_hops(Some(1), 4), Ok(0));
        assert_eq!(next_hops(Some(0), 4), Err(ProxyLoop));
        assert_eq!(next_hops(None, 255), Ok(255));
    }
}
