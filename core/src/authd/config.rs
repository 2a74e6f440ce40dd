//! Settings of an authd listener, each with the reason for its default.

use std::time::Duration;

use crate::secret::Secret;

/// Size limits of one authd server session.
#[derive(Debug, Clone)]
pub struct AuthdLimits {
    /// Longest request line, CRLF excluded. A VERIFY with a 1 KiB password is about
    /// 2 KiB; 4 KiB leaves room without letting one line cost much.
    pub max_line: usize,
    /// Most pipelined input held while a request waits for the user database. 64 KiB is
    /// about a thousand LOOKUPs; beyond it the session stops reading, so the number of
    /// pipelined requests is bounded by this.
    pub max_buffered_input: usize,
    /// Answers handed to the shell but not yet drained, above which the session stops
    /// processing requests: a client that never reads costs at most this much.
    pub output_high_water: usize,
    /// Malformed lines tolerated before the connection is closed.
    pub max_bad_lines: u32,
    /// Most pipelined LOOKUPs sent to the user database as one
    /// [`crate::Request::LookupUsers`]: one store round trip instead of one each, which
    /// is what makes pipelining pay. 1 turns batching off (every LOOKUP is a
    /// [`crate::Request::LookupUser`]), for an executor that cannot answer batches.
    pub max_batch: usize,
}

impl Default for AuthdLimits {
    fn default() -> Self {
        AuthdLimits {
            max_line: 4096,
            max_buffered_input: 64 * 1024,
            output_high_water: 256 * 1024,
            max_bad_lines: 20,
            max_batch: 64,
        }
    }
}

/// Settings shared by every session of an authd listener.
#[derive(Debug, Clone)]
pub struct AuthdConfig {
    /// The shared secret clients must send in HELLO. An empty secret refuses everyone,
    /// so a missing secret can never mean "no authentication".
    pub secret: Secret,
    /// Buffer limits.
    pub limits: AuthdLimits,
    /// A connection with no request for this long is closed (`* BYE`). Clients keep
    /// pooled connections, so this only reaps forgotten ones.
    pub idle_timeout: Duration,
    /// How long the user database may take for one request before the session answers
    /// `TEMPFAIL` itself. Shorter than a client's read timeout, so the client hears
    /// the reason instead of timing out.
    pub store_timeout: Duration,
}

impl AuthdConfig {
    /// Default limits and timeouts with this secret.
    pub fn new(secret: Secret) -> Self {
        AuthdConfig {
            secret,
            limits: AuthdLimits::default(),
            idle_timeout: Duration::from_secs(300),
            store_timeout: Duration::from_secs(4),
        }
    }
}
