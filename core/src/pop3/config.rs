//! Settings of a POP3 listener and of one accepted connection.

use std::net::SocketAddr;
use std::time::Duration;

/// Size limits of one POP3 session. Each default says why it is what it is.
#[derive(Debug, Clone)]
pub struct Pop3Limits {
    /// Longest command line, CRLF excluded. RFC 2449 §4 caps commands at 255 octets, but
    /// SASL responses (a long password in base64) can be longer; 2 KiB covers both.
    pub max_line: usize,
    /// Most input held while commands wait behind a store request (pipelining). 64 KiB
    /// is hundreds of pipelined commands; beyond it the session stops reading.
    pub max_buffered_input: usize,
    /// Output handed to the shell but not yet drained, above which the session stops
    /// producing: a client that never reads costs at most this much memory.
    pub output_high_water: usize,
    /// Bytes asked from the store per message read: large enough for one round trip per
    /// typical message, small enough that a 50 MB message never sits in memory whole.
    pub read_chunk: usize,
    /// Unknown or malformed commands tolerated before the session is closed.
    pub max_bad_commands: u32,
    /// Failed logins on one connection before it is closed.
    pub max_auth_failures: u32,
}

impl Default for Pop3Limits {
    fn default() -> Self {
        Pop3Limits {
            max_line: 2048,
            max_buffered_input: 64 * 1024,
            output_high_water: 256 * 1024,
            read_chunk: 64 * 1024,
            max_bad_commands: 20,
            max_auth_failures: 3,
        }
    }
}

/// Settings shared by every session of a POP3 listener.
#[derive(Debug, Clone)]
pub struct Pop3Config {
    /// Host name shown in the greeting.
    pub hostname: String,
    /// Buffer and retry limits.
    pub limits: Pop3Limits,
    /// Autologout: RFC 1939 §3 requires at least 10 minutes.
    pub idle_timeout: Duration,
    /// How long after connecting a client may stay unauthenticated (RFC 1939 §3 sets
    /// no floor before login): bounds what a slow or silent client holds.
    pub login_timeout: Duration,
    /// How long a store request may take before the client gets `[SYS/TEMP]`.
    pub store_timeout: Duration,
    /// Delay before a failed login is answered, identical for unknown users and wrong
    /// passwords.
    pub auth_failure_delay: Duration,
    /// The store locks a mailbox when it lists it for a session (`[pop3] lock`, the
    /// cluster-wide POP3 lock): the session then sends [`crate::Request::ReleaseMailbox`]
    /// when it ends, however it ends.
    pub mailbox_lock: bool,
}

impl Default for Pop3Config {
    fn default() -> Self {
        Pop3Config {
            hostname: "localhost".into(),
            limits: Pop3Limits::default(),
            idle_timeout: Duration::from_secs(600),
            login_timeout: Duration::from_secs(60),
            store_timeout: Duration::from_secs(30),
            auth_failure_delay: Duration::from_secs(2),
            mailbox_lock: false,
        }
    }
}

/// Facts about one accepted connection, decided by the shell and the server config.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub client: SocketAddr,
    /// TLS is active from the first byte (an implicit-TLS port such as 995).
    pub implicit_tls: bool,
    /// STLS can be offered (a TLS certificate is configured).
    pub starttls_available: bool,
    /// Whether USER/PASS and AUTH PLAIN may be used before TLS is active, from
    /// `[tls] plaintext_auth` and the client's address.
    pub plaintext_auth: bool,
    /// The peer is in `[trust] networks`: only then does the session believe the client
    /// address a proxy names with POP3/SMTP `XCLIENT` or the IMAP `ID` fields
    /// (`x-originating-ip`, RFC 2971 §3.3). `false` keeps both commands as they were.
    pub may_override_client: bool,
}
