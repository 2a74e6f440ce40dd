//! POP3 server (RFC 1939) with CAPA and response codes (RFC 2449), STLS (RFC 2595),
//! SASL PLAIN (RFC 5034, RFC 4616) and the RFC 3206 `[AUTH]`/`[SYS/*]` codes.
//!
//! [`Pop3Session`] implements [`crate::Session`]; wrap it in [`crate::tls::Secured`] to
//! offer STLS or to serve an implicit-TLS port.

mod auth;
pub mod command;
mod config;
mod listener;
mod session;
mod transaction;

pub use config::{ConnInfo, Pop3Config, Pop3Limits};
pub use listener::Pop3Listener;
pub use session::Pop3Session;

/// The reply a listener sends instead of a greeting when it already serves its maximum
/// number of connections (RFC 3206 §4: `[SYS/TEMP]`, the client should retry later).
pub const BUSY_REPLY: &[u8] = b"-ERR [SYS/TEMP] Too many connections, try again later\r\n";
