//! What one client session is told before it starts: how to talk (the client's name,
//! the STARTTLS policy, credentials, timeouts) and what to send (the envelope).

use std::time::Duration;

use crate::proxy::xclient::Xclient;
use crate::secret::Secret;

/// The longest address the client puts in MAIL or RCPT: RFC 5321 §4.5.3.1.3 limits a
/// path, angle brackets included, to 256 octets.
pub const MAX_ADDRESS: usize = 254;

/// The default body chunk the session asks for: 64 KiB keeps memory small and is large
/// enough that a BDAT command per chunk costs nothing noticeable.
pub const DEFAULT_BODY_CHUNK: usize = 64 * 1024;

/// RFC 3207 STARTTLS policy of one attempt (the certificate check itself belongs to the
/// TLS layer of the driver, which reports the result to the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    /// Never send STARTTLS.
    Disabled,
    /// STARTTLS when the server offers it, plaintext otherwise (RFC 7435).
    Opportunistic,
    /// STARTTLS must be offered and succeed, or the attempt fails temporarily.
    Required,
}

/// How the client talks to one server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The name sent in EHLO/HELO (RFC 5321 §4.1.1.1: the client's primary host name).
    pub helo_name: String,
    /// STARTTLS policy.
    pub starttls: StartTls,
    /// AUTH PLAIN, or LOGIN when PLAIN is not offered (RFC 4954), with this user name
    /// and password; `None` sends no AUTH.
    pub auth: Option<(String, Secret)>,
    /// Allow AUTH without TLS (otherwise credentials are never sent in the clear and the
    /// attempt fails temporarily).
    pub auth_plaintext: bool,
    /// The wait for the greeting and for each command's reply (RFC 5321 §4.5.3.2
    /// suggests 5 minutes for most commands).
    pub command_timeout: Duration,
    /// The wait for the reply to the end of the data (RFC 5321 §4.5.3.2.6: 10 minutes,
    /// the server may be delivering synchronously).
    pub data_timeout: Duration,
    /// The wait for the reply to QUIT once the outcome is known: short, since nothing
    /// depends on it any more.
    pub quit_timeout: Duration,
    /// The most message bytes asked for at once ([`super::ClientEvent::ReadBody`]).
    pub body_chunk: usize,
    /// Speak LMTP (RFC 2033) instead of SMTP: `LHLO` instead of `EHLO` (no `HELO`
    /// fallback, §4.1), DATA rather than BDAT, and after the data one reply per accepted
    /// recipient (§4.2), each deciding that recipient's result.
    pub lmtp: bool,
    /// Keep the connection for another message (RFC 5321 §3.3: after a completed
    /// transaction a new `MAIL` starts the next one): when a transaction ends with the
    /// server back in its initial state the session becomes idle instead of sending
    /// `QUIT`, and [`super::ClientSession::start_next`] sends the next envelope.
    pub reuse: bool,
}

impl ClientConfig {
    /// A configuration with the RFC 5321 §4.5.3.2 timeouts, opportunistic STARTTLS, no
    /// AUTH and one message per connection.
    pub fn new(helo_name: impl Into<String>) -> Self {
        ClientConfig {
            helo_name: helo_name.into(),
            starttls: StartTls::Opportunistic,
            auth: None,
            auth_plaintext: false,
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
            quit_timeout: Duration::from_secs(30),
            body_chunk: DEFAULT_BODY_CHUNK,
            lmtp: false,
            reuse: false,
        }
    }
}

/// The envelope of one message and what its content needs from the server.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The reverse path; empty for the null sender (bounces, RFC 5321 §4.5.5).
    pub mail_from: String,
    /// The forward paths, in order; outcomes are reported in the same order.
    pub recipients: Vec<String>,
    /// The message size in octets, announced with `SIZE=` (RFC 1870) and checked
    /// against the server's declared limit.
    pub size: u64,
    /// The body has 8-bit octets: `BODY=8BITMIME` is needed (RFC 6152).
    pub eight_bit: bool,
    /// The envelope or header needs `SMTPUTF8` (RFC 6531). Non-ASCII addresses imply it.
    pub smtputf8: bool,
    /// The original client to name with XCLIENT (Postfix `XCLIENT_README`) before this
    /// message's MAIL, when the server offers it: a proxy front-end relaying inbound
    /// mail over LMTP sets it so the back-end's `Received:` names the real client.
    /// `None` sends no XCLIENT. (Boxed: it is rare and keeps the envelope small.)
    pub xclient: Option<Box<Xclient>>,
}

impl Envelope {
    /// Checks that every address can be put in a command: at most [`MAX_ADDRESS`]
    /// octets, no control characters, spaces or angle brackets (which would end the path
    /// or inject a command), recipients not empty.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |a: &str| {
            a.len() > MAX_ADDRESS
                || a.chars()
                    .any(|c| c.is_control() || matches!(c, ' ' | '<' | '>'))
        };
        if bad(&self.mail_from) {
            return Err(format!("invalid sender address {:?}", self.mail_from));
        }
        for rcpt in &self.recipients {
            if rcpt.is_empty() || bad(rcpt) {
                return Err(format!("invalid recipient address {rcpt:?}"));
            }
        }
        Ok(())
    }

    /// Whether the transaction needs SMTPUTF8: asked for, or an address is not ASCII.
    pub fn needs_smtputf8(&self) -> bool {
        self.smtputf8 || !self.mail_from.is_ascii() || self.recipients.iter().any(|r| !r.is_ascii())
    }
}
