//! Settings of an IMAP listener and of one accepted connection.

use std::time::Duration;

pub use crate::pop3::ConnInfo;

/// Size limits of one IMAP session. Each default says why it is what it is.
#[derive(Debug, Clone)]
pub struct ImapLimits {
    /// Longest line of a command, CRLF excluded. RFC 7162 §4 asks servers to accept
    /// lines of at least 8192 octets (long UID sets); 64 KiB is Dovecot's default.
    pub max_line: usize,
    /// Longest command with its literals (LOGIN, SEARCH strings, mailbox names),
    /// APPEND messages excluded. A literal that would pass it is refused before the
    /// client sends it.
    pub max_command: usize,
    /// Largest APPEND message; larger ones get `NO [TOOBIG]` (RFC 7889) and, when
    /// synchronising, are never invited with `+`. 50 MiB matches `[smtp]
    /// max_message_size`.
    pub max_append: u32,
    /// Most input held while commands wait behind a store request (pipelining).
    pub max_buffered_input: usize,
    /// Output handed to the shell but not yet drained, above which the session stops
    /// producing until `handle_drained`.
    pub output_high_water: usize,
    /// Bytes asked from the store per message read, and per APPEND data request.
    pub chunk: usize,
    /// BAD commands tolerated before the session is closed.
    pub max_bad_commands: u32,
    /// Failed logins on one connection before it is closed.
    pub max_auth_failures: u32,
}

impl Default for ImapLimits {
    fn default() -> Self {
        ImapLimits {
            max_line: 64 * 1024,
            max_command: 256 * 1024,
            max_append: 50 * 1024 * 1024,
            max_buffered_input: 256 * 1024,
            output_high_water: 256 * 1024,
            chunk: 64 * 1024,
            max_bad_commands: 20,
            max_auth_failures: 3,
        }
    }
}

/// Settings shared by every session of an IMAP listener.
#[derive(Debug, Clone)]
pub struct ImapConfig {
    /// Host name shown in the greeting.
    pub hostname: String,
    /// Buffer and retry limits.
    pub limits: ImapLimits,
    /// Autologout: RFC 3501 §5.4 requires at least 30 minutes.
    pub idle_timeout: Duration,
    /// How long after connecting a client may stay in the not-authenticated state
    /// (RFC 3501 §5.4 allows a shorter autologout there): bounds what a slow or
    /// silent client holds.
    pub login_timeout: Duration,
    /// How long a store request may take before the client gets `NO [UNAVAILABLE]`.
    pub store_timeout: Duration,
    /// Delay before a failed login is answered, identical for unknown users and wrong
    /// passwords.
    pub auth_failure_delay: Duration,
    /// While a client IDLEs, how often the selected mailbox is rescanned for new,
    /// expunged and re-flagged messages.
    pub idle_poll_interval: Duration,
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig {
            hostname: "localhost".into(),
            limits: ImapLimits::default(),
            idle_timeout: Duration::from_secs(30 * 60),
            login_timeout: Duration::from_secs(60),
            store_timeout: Duration::from_secs(30),
            auth_failure_delay: Duration::from_secs(2),
            idle_poll_interval: Duration::from_secs(30),
        }
    }
}
