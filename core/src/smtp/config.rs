//! Settings of an SMTP/LMTP listener and of one accepted connection.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// What a listener is for (the config contract's three SMTP listener kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpRole {
    /// `[smtp] listen`: inbound mail exchanger. Accepts mail for local recipients only;
    /// no AUTH.
    Inbound,
    /// `[smtp] submission`: mail from the server's own users (RFC 6409). AUTH is
    /// required before MAIL.
    Submission,
    /// `[lmtp] listen`: delivery from trusted front-ends (RFC 2033), one reply per
    /// recipient after the data.
    Lmtp,
}

/// Size limits of one SMTP session. Each default says why.
#[derive(Debug, Clone)]
pub struct SmtpLimits {
    /// Longest command line, CRLF included: RFC 5321 §4.5.3.1.4 says 512 octets. AUTH
    /// responses may be longer (RFC 4954 §4: 12288 octets), see `max_auth_line`.
    pub max_command_line: usize,
    /// Longest SASL response line (RFC 4954 §4).
    pub max_auth_line: usize,
    /// Longest text line of a message, CRLF included: RFC 5321 §4.5.3.1.6.
    pub max_text_line: usize,
    /// Most input held while the session waits for the store; beyond it, it stops reading.
    pub max_buffered_input: usize,
    /// Message bytes collected before they are handed to the store in one append.
    pub append_chunk: usize,
    /// Recipients per transaction: RFC 5321 §4.5.3.1.8 requires at least 100.
    pub max_recipients: usize,
    /// Unknown or malformed commands tolerated before `421` and close.
    pub max_bad_commands: u32,
    /// Failed AUTH attempts before `421` and close.
    pub max_auth_failures: u32,
    /// Output handed to the shell but not yet drained, above which the session stops
    /// reading commands. SMTP replies are short, so 64 KiB is only reached by a client
    /// that pipelines commands without ever reading the answers (RFC 2920 §3.1 requires
    /// clients to read); it then costs at most this much memory.
    pub output_high_water: usize,
}

impl Default for SmtpLimits {
    fn default() -> Self {
        SmtpLimits {
            max_command_line: 512,
            max_auth_line: 12288,
            max_text_line: 1000,
            max_buffered_input: 64 * 1024,
            append_chunk: 64 * 1024,
            max_recipients: 100,
            max_bad_commands: 20,
            max_auth_failures: 3,
            output_high_water: 64 * 1024,
        }
    }
}

/// Settings shared by every session of one listener.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Our name: greeting, EHLO reply, `Received: … by`.
    pub hostname: String,
    /// Which listener this is.
    pub role: SmtpRole,
    /// Largest message accepted, advertised as `SIZE` (RFC 1870).
    pub max_message_size: u64,
    /// Buffer and retry limits.
    pub limits: SmtpLimits,
    /// Server timeout waiting for the next command or data: RFC 5321 §4.5.3.2.7 (5 min).
    pub idle_timeout: Duration,
    /// How long after connecting a client may go without logging in, counted from the
    /// connect and not reset by input (a client trickling bytes cannot hold the
    /// connection): on submission until AUTH succeeds (RFC 4954), on inbound and LMTP
    /// until its first MAIL is accepted (the fair equivalent: a whole pre-transaction
    /// dialogue, TLS handshake included, within this time). Past it the session answers
    /// `421 4.4.2` and closes (RFC 5321 §4.5.3.2 style); afterwards only `idle_timeout`
    /// applies. Below 5 minutes it deliberately undercuts RFC 5321 §4.5.3.2.7's SHOULD
    /// for clients that have not got that far.
    pub login_timeout: Duration,
    /// How long a store request may take before the client gets a `451`.
    pub store_timeout: Duration,
    /// Delay before the first failed AUTH is answered; it doubles with each failure.
    pub auth_failure_delay: Duration,
    /// Outbound delivery is configured (`[relay]`): a submission listener accepts
    /// recipients outside the local domains for the queue (RFC 6409 §4.3), and the
    /// reverse-path must then be the authenticated account's own address. Other roles
    /// ignore it: inbound and LMTP never relay.
    pub relay: bool,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            hostname: "localhost".into(),
            role: SmtpRole::Inbound,
            max_message_size: 50 * 1024 * 1024,
            limits: SmtpLimits::default(),
            idle_timeout: Duration::from_secs(300),
            login_timeout: Duration::from_secs(60),
            store_timeout: Duration::from_secs(30),
            auth_failure_delay: Duration::from_secs(1),
            relay: false,
        }
    }
}

/// Facts about one accepted connection, decided by the shell and the server config.
#[derive(Debug, Clone)]
pub struct SmtpConnInfo {
    /// The client's address.
    pub client: SocketAddr,
    /// Wall-clock time at accept, for `Received:` dates: the session adds the
    /// monotonic time elapsed since, so it never reads a clock.
    pub accepted_at: SystemTime,
    /// STARTTLS can be offered (a certificate is configured).
    pub starttls_available: bool,
    /// Whether AUTH may be used before TLS (`[tls] plaintext_auth` for this client).
    pub plaintext_auth: bool,
    /// The client is in `[trust] networks` or on loopback (LMTP accepts only these).
    pub trusted: bool,
    /// The peer is in `[trust] networks` (loopback alone is not enough): only then is
    /// Postfix-style `XCLIENT` accepted and advertised; otherwise it gets `550 5.7.0`.
    pub may_override_client: bool,
}
