//! IMAP4rev1 server (RFC 3501) with LITERAL+ (RFC 7888), IDLE (RFC 2177), UIDPLUS
//! (RFC 4315), MOVE (RFC 6851), NAMESPACE (RFC 2342), ID (RFC 2971), ENABLE (RFC 5161),
//! UNSELECT (RFC 3691), SASL-IR (RFC 4959), SPECIAL-USE (RFC 6154) and CHILDREN
//! (RFC 3348).
//!
//! The pieces, in the order input flows through them: [`fragment`] finds lines and
//! literals, [`command`] parses a complete command, the session runs it (asking the
//! store through [`ImapRequest`]s) and [`response`] encodes the answer.

mod append;
mod auth;
pub mod command;
pub mod config;
pub mod date;
mod dispatch;
pub mod fetch;
mod fetching;
pub mod fragment;
mod listener;
pub mod mailbox;
mod mailboxes;
mod replies;
pub mod request;
mod rescan;
pub mod response;
pub mod search;
mod selected;
pub mod sequence;
mod session;

pub use config::{ConnInfo, ImapConfig, ImapLimits};
pub use listener::ImapListener;
pub use request::{
    AppendId, ImapReply, ImapRequest, MailboxInfo, MailboxRef, MailboxStatus, MessageMeta,
    SearchCandidate, Snapshot,
};
pub use session::ImapSession;

/// The greeting a listener sends instead of serving when it already has its maximum
/// number of connections (RFC 3501 §7.1.5 BYE, RFC 5530 `[UNAVAILABLE]`).
pub const BUSY_REPLY: &[u8] = b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n";
