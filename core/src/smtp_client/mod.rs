//! The SMTP client (RFC 5321) that delivers outbound mail: one message to one server
//! per session, or one after the other over the same connection with
//! [`ClientConfig::reuse`] (RFC 5321 §3.3), sans-IO like every session in this crate.
//!
//! The dialogue: greeting; EHLO (HELO when EHLO is not implemented); STARTTLS per
//! [`StartTls`] policy (RFC 3207) and EHLO again; AUTH PLAIN, or LOGIN when PLAIN is not
//! offered (RFC 4954, RFC 4616), only when configured and only over TLS unless allowed;
//! `MAIL FROM` with `SIZE=` (RFC 1870), `BODY=8BITMIME` (RFC 6152) and `SMTPUTF8`
//! (RFC 6531) as the message needs them — a message that needs an extension the server
//! lacks fails permanently, it is never downgraded; one `RCPT TO` per recipient; `DATA`
//! with dot-stuffing, or `BDAT` chunks when the server offers CHUNKING (RFC 3030); QUIT.
//! With PIPELINING (RFC 2920) MAIL, the RCPTs and DATA go as one group and every reply
//! is still read, in order.
//!
//! With [`ClientConfig::lmtp`] the same session speaks LMTP (RFC 2033), which a proxy
//! front-end uses to hand inbound mail to each recipient's back-end: `LHLO` and no
//! `HELO` fallback (§4.1), DATA only (the per-recipient replies of §4.2 are defined for
//! DATA), and after the data one reply per accepted recipient, each recipient's own
//! result.
//!
//! The driver ([`ClientSession`] documents the calls) owns the socket, TLS and the
//! message file; the session owns the dialogue and the reply deadlines. A reply that does
//! not parse, a closed connection or a deadline ends the attempt with a temporary
//! failure, never a panic; every buffer is bounded ([`reply::MAX_REPLY_LINE`],
//! [`reply::MAX_REPLY_LINES`], one body chunk of [`ClientConfig::body_chunk`] bytes).

pub mod capabilities;
pub mod config;
pub mod data;
pub mod reply;
pub mod report;
pub mod session;

pub use capabilities::Capabilities;
pub use config::{ClientConfig, Envelope, StartTls};
pub use reply::{ReplyError, ReplyReader, SmtpReply};
pub use report::{Failure, RecipientResult, RecipientStatus, Report};
pub use session::{ClientEvent, ClientSession};
