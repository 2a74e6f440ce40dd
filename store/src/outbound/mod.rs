//! Outbound delivery of one message to one destination: the blocking driver of the
//! sans-IO SMTP client ([`tidegate_core::smtp_client`]) over a real socket, with STARTTLS
//! through rustls (the `ring` provider).
//!
//! The queue runner calls [`send`] (or [`send_pooled`]) from its own threads; nothing
//! here touches an event loop, so outbound delivery behaves the same under both shells.
//! One call is one attempt: connect to the first address that accepts (or reuse an idle
//! connection to the same destination from a [`ConnectionPool`]), run the dialogue,
//! report one outcome per recipient (or a failure of the whole attempt).

mod pool;
mod send;
mod tls;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tidegate_core::secret::Secret;
pub use tidegate_core::smtp_client::SmtpReply;

pub use pool::{ConnectionPool, ReuseLimits};
pub use send::{send, send_pooled};

/// Where one delivery attempt goes: addresses tried in order (the first that accepts a
/// connection is used), and the name the certificate must match (MX host or smarthost
/// host).
#[derive(Debug, Clone)]
pub struct Destination {
    /// Addresses to connect to, in order.
    pub addrs: Vec<SocketAddr>,
    /// The host name the server certificate must be valid for (RFC 7672 §3.2.2 matches
    /// the MX host name; a smarthost is matched by its configured name).
    pub tls_name: String,
}

/// RFC 3207 STARTTLS policy for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Use STARTTLS when offered without verifying the certificate (RFC 7435
    /// opportunistic); plaintext otherwise.
    Opportunistic,
    /// STARTTLS must be offered and the certificate must verify against
    /// `SendOptions::roots` for `tls_name`; otherwise a temporary failure (the message
    /// stays queued).
    Required,
    /// Never STARTTLS (tests, local sinks).
    Disabled,
}

/// How to send (one per destination kind; cheap to clone).
#[derive(Clone)]
pub struct SendOptions {
    /// The name given in EHLO/HELO (RFC 5321 §4.1.1.1): this host's `hostname`.
    pub helo_name: String,
    /// STARTTLS policy.
    pub tls: TlsPolicy,
    /// Roots for [`TlsPolicy::Required`] (webpki-roots or a configured CA file).
    pub roots: Arc<rustls::RootCertStore>,
    /// AUTH PLAIN (or LOGIN if PLAIN is not offered) to a smarthost (RFC 4954), only over
    /// TLS unless `auth_plaintext`.
    pub auth: Option<(String, Secret)>,
    /// Allow AUTH on a connection without TLS.
    pub auth_plaintext: bool,
    /// The wait for a TCP connection to one address.
    pub connect_timeout: Duration,
    /// The wait for each reply and for each write (RFC 5321 §4.5.3.2 suggests minutes;
    /// default 5 min).
    pub command_timeout: Duration,
    /// The wait for the reply to the end of the data (default 10 min).
    pub data_timeout: Duration,
    /// Speak LMTP (RFC 2033): a proxy front-end relaying to a back-end.
    pub lmtp: bool,
    /// A ready client configuration for verified TLS (a front-end's back-end CA),
    /// used instead of one built from `roots`.
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    /// Local addresses to connect from (the first of the destination's family); empty:
    /// the kernel chooses. A front-end connects to its back-ends from the address they
    /// trust (`[proxy] source_addresses`).
    pub source_addrs: Vec<IpAddr>,
    /// Bytes written right after the TCP connection is made, before TLS or any SMTP
    /// byte: a PROXY v2 header for back-ends that expect one from this node.
    pub preamble: Vec<u8>,
}

impl SendOptions {
    /// Options with the RFC 5321 §4.5.3.2 timeouts (connect 30 s), opportunistic TLS,
    /// no roots and no AUTH.
    pub fn new(helo_name: impl Into<String>) -> Self {
        SendOptions {
            helo_name: helo_name.into(),
            tls: TlsPolicy::Opportunistic,
            roots: Arc::new(rustls::RootCertStore::empty()),
            auth: None,
            auth_plaintext: false,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
            lmtp: false,
            tls_config: None,
            source_addrs: Vec::new(),
            preamble: Vec::new(),
        }
    }
}

impl std::fmt::Debug for SendOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendOptions")
            .field("helo_name", &self.helo_name)
            .field("tls", &self.tls)
            .field("roots", &self.roots.len())
            .field("auth", &self.auth.as_ref().map(|(user, _)| user))
            .field("auth_plaintext", &self.auth_plaintext)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("data_timeout", &self.data_timeout)
            .field("lmtp", &self.lmtp)
            .field("tls_config", &self.tls_config.is_some())
            .field("source_addrs", &self.source_addrs)
            .field("preamble", &self.preamble.len())
            .finish()
    }
}

/// The message of one attempt. `prefix` (e.g. a DKIM-Signature header field,
/// CRLF-terminated) is sent before the file's bytes; the file holds the whole message
/// with CRLF line ends, not dot-stuffed.
#[derive(Debug, Clone, Copy)]
pub struct OutboundMessage<'a> {
    /// The reverse path; "" for the null sender (bounces).
    pub mail_from: &'a str,
    /// The forward paths; outcomes come back in this order.
    pub recipients: &'a [String],
    /// Bytes sent before the file's (a header field, CRLF-terminated).
    pub prefix: &'a [u8],
    /// The message file.
    pub path: &'a Path,
    /// The body needs 8BITMIME (RFC 6152).
    pub eight_bit: bool,
    /// The envelope or headers need SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// The original client to name with XCLIENT before MAIL when the server offers it
    /// (proxy mode's LMTP leg with `[proxy] client_address = "xclient"`); else `None`.
    pub xclient: Option<&'a tidegate_core::proxy::xclient::Xclient>,
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server took the message (the reply to the end of the data).
    Delivered(SmtpReply),
    /// A temporary failure: the RCPT or final 4xx, or the attempt broke off after the
    /// recipient was sent (then the reply is made up: `451 4.4.2 …`).
    Deferred(SmtpReply),
    /// A permanent failure (5xx): bounce.
    Failed(SmtpReply),
}

/// One recipient's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientOutcome {
    /// The recipient as given in [`OutboundMessage::recipients`].
    pub recipient: String,
    /// What happened.
    pub outcome: Outcome,
}

/// The whole attempt failed before any recipient result (connect refused or timed out,
/// greeting 4xx/5xx, TLS required but not offered/verified, MAIL FROM refused,
/// 8BITMIME/SMTPUTF8 needed but not offered, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    /// True when retrying cannot help: bounce every recipient.
    pub permanent: bool,
    /// The server's reply, when one caused the failure.
    pub reply: Option<SmtpReply>,
    /// What went wrong, for logs and DSNs.
    pub detail: String,
}

impl std::fmt::Display for SendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.permanent {
            "permanent"
        } else {
            "temporary"
        };
        write!(f, "{kind} failure: {}", self.detail)
    }
}
