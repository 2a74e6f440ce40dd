//! The outcome of one client session: one result per recipient, or a failure of the
//! whole attempt before any recipient result.

use super::reply::SmtpReply;

/// What happened to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientStatus {
    /// The server accepted responsibility for the message (RFC 5321 §6.1).
    Delivered,
    /// A transient failure (4xx, or the attempt broke off): try again later.
    Deferred,
    /// A permanent failure (5xx): bounce.
    Failed,
}

/// One recipient's result and the reply it rests on: the RCPT reply when the recipient
/// was refused, otherwise the reply to the end of the data (for every accepted recipient,
/// RFC 5321 §3.3), or a reply the client made up when the attempt broke off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResult {
    /// The outcome.
    pub status: RecipientStatus,
    /// The reply it rests on.
    pub reply: SmtpReply,
}

impl RecipientResult {
    /// The result a reply means: 2xx delivered, 5xx failed, anything else (4xx, or a
    /// 3xx where a completion was due) deferred.
    pub fn from_reply(reply: SmtpReply) -> Self {
        let status = if reply.is_completion() {
            RecipientStatus::Delivered
        } else if reply.is_permanent() {
            RecipientStatus::Failed
        } else {
            RecipientStatus::Deferred
        };
        RecipientResult { status, reply }
    }
}

/// The attempt failed before any recipient result: the connection broke or timed out,
/// the greeting or MAIL was refused, TLS was required and failed, or the server lacks an
/// extension the message needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// True when retrying cannot help (a 5xx reply, an extension the message needs).
    pub permanent: bool,
    /// The server's reply, when one caused the failure.
    pub reply: Option<SmtpReply>,
    /// What went wrong, for logs and DSNs.
    pub detail: String,
}

/// The final report of a session: per-recipient results in envelope order, or a failure.
pub type Report = Result<Vec<RecipientResult>, Failure>;
