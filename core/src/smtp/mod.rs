//! SMTP (RFC 5321) and LMTP (RFC 2033) server sessions: inbound mail, authenticated
//! submission (RFC 6409) and delivery from trusted front-ends, on one state machine.
//!
//! [`SmtpSession`] implements [`crate::Session`]; [`SmtpListener::open`] wraps it in
//! [`crate::tls::Secured`] so STARTTLS works. The [`SmtpRole`] of the listener decides
//! what a session accepts:
//!
//! | role | greeting verb | AUTH | RCPT outside the local domains |
//! | --- | --- | --- | --- |
//! | [`SmtpRole::Inbound`] | HELO/EHLO | `502 5.5.1` | `550 5.7.1 … Relaying denied` |
//! | [`SmtpRole::Submission`] | HELO/EHLO | required before MAIL (`530 5.7.0`) | with [`SmtpConfig::relay`]: accepted for the outbound queue; without: `554 5.7.1 … outbound delivery is not configured` |
//! | [`SmtpRole::Lmtp`] | LHLO | `502 5.5.1` | `550 5.7.1 … Relaying denied` |
//!
//! Extensions: PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152),
//! ENHANCEDSTATUSCODES (RFC 2034, RFC 3463 codes on every reply but the greeting and
//! the EHLO/LHLO answer), CHUNKING (RFC 3030), SMTPUTF8 (RFC 6531), STARTTLS (RFC 3207),
//! AUTH PLAIN LOGIN (RFC 4954; submission only, and only after TLS unless
//! `plaintext_auth` allows it). `BODY=BINARYMIME` is accepted with BDAT but not
//! advertised.
//!
//! # Requests, in order
//!
//! The session has at most one request outstanding and parses nothing while it waits
//! (the one exception is an AbortDelivery fired on the way out, below).
//!
//! * `AUTH` → [`Request::Authenticate`](crate::Request::Authenticate) →
//!   `Authenticated(account)` (`235`) or `Failed(Denied | Disabled)` (`535` after a delay
//!   that doubles per failure) or another failure (`454`).
//! * `RCPT` → [`Request::CheckRecipient`](crate::Request::CheckRecipient) →
//!   `Reply::Recipient(…)`. `Postmaster` (RFC 5321 §4.1.1.3) is passed as written,
//!   without a domain.
//! * `DATA` → `BeginDelivery { header }` → `DeliveryStarted(id)` → `354`; then
//!   `AppendDelivery` with exactly `append_chunk` bytes each (the last one shorter; none
//!   for an empty message), each answered `Done` before the next; then
//!   `CommitDelivery { recipients, all_or_nothing: role != Lmtp }` → `Delivered(results)`,
//!   one result per *distinct* account in the request (a mailbox named by two RCPTs gets
//!   one copy). The header is `Return-Path:` plus a `Received:` field (RFC 5321 §4.4),
//!   CRLF line ends. Appended bytes are unstuffed message bytes with CRLF line ends.
//!   With remote recipients (submission with [`SmtpConfig::relay`]) the commit is
//!   `CommitSubmission { local, relay }` instead, answered with one result per local
//!   account and then one for the queue copy; any failure is `451 4.3.0`. MAIL FROM
//!   must then be the authenticated account's address (`553 5.7.1`), never `<>`.
//!   On a proxy front-end the store answers RCPT for a user who lives on a back-end
//!   with [`RecipientCheck::Backend`](crate::RecipientCheck::Backend): the inbound and
//!   submission roles accept it (`250 2.1.5`) and the commit is `CommitSubmission` with
//!   the recipient in [`RelayEnvelope::backends`](crate::RelayEnvelope::backends), so
//!   the message is queued for relaying over LMTP; the LMTP role never forwards: it
//!   delivers such a recipient to its account here (no loop between nodes).
//! * `BDAT` → the first chunk sends `BeginDelivery` (unless that chunk is already too
//!   large), then appends and the commit as for DATA at `BDAT … LAST`.
//! * A refused message (too large, bad line ends, a line too long, a failed append) gets
//!   `AbortDelivery`, answered `Done`, then the refusal. RSET or EHLO between BDAT chunks
//!   aborts the same way.
//! * When the session closes with a message file open (EOF or timeout mid-DATA, QUIT
//!   between BDAT chunks, a fatal error), it emits `AbortDelivery` just before
//!   [`Action::Close`](crate::Action::Close) and does not wait for the reply: the shell
//!   must still run that request. After a store timeout the session may abort a
//!   delivery while an abandoned append for it is still running, and it aborts a file
//!   whose `DeliveryStarted` arrived after the deadline; the store must accept both.
//!
//! # End of data and bare line ends (the SMTP smuggling class)
//!
//! Only `<CRLF>.<CRLF>` ends DATA ([`crate::wire::DotUnstuffer`]): `<LF>.<LF>`,
//! `<LF>.<CRLF>` and `<CR>.<CR>` are message data, so a message can never end earlier
//! than another server along the path thinks it does. On top of that, a message that
//! contains a bare CR or a bare LF anywhere is **refused** after its terminator with
//! `550 5.6.0 Message contains a bare CR or LF; lines must end with CRLF`: it is not
//! normalised, because a message another server may read differently should not be
//! delivered at all. The rule applies to BDAT content too, except with
//! `BODY=BINARYMIME`. Dot-unstuffing and every check run on a byte position in the
//! message, so the outcome does not depend on how the input was split into reads.
//!
//! # Limits
//!
//! Command lines over `max_command_line` (512, RFC 5321 §4.5.3.1.4) and SASL responses
//! over `max_auth_line` get `500 5.5.6`; a longer line is discarded as it streams in. A
//! text line over `max_text_line` or a message over `max_message_size` is swallowed to
//! its end and refused once (`500 5.5.6`, `552 5.3.4`); BDAT octets are always read,
//! even for a refused BDAT, so they are never taken for commands. Input is buffered up to
//! `max_buffered_input` while a request is outstanding, then `wants_read` turns false.
//! Too many bad commands or failed logins, an idle client, or an overflowing buffer end
//! the session with a `421`.

mod address;
mod auth;
mod body;
pub mod command;
mod config;
mod data;
mod deadline;
mod envelope;
mod listener;
mod reply;
mod session;
mod trace;

pub use address::{AddressError, MAX_DOMAIN, MAX_LOCAL_PART, MAX_PATH, Param, Path, PathKind};
pub use config::{SmtpConfig, SmtpConnInfo, SmtpLimits, SmtpRole};
pub use listener::SmtpListener;
pub use session::SmtpSession;
pub(crate) use trace::rfc5322_date;

/// The reply a listener sends instead of a greeting when it already serves its maximum
/// number of connections (RFC 5321 §3.8: `421`, the client retries later).
pub const BUSY_REPLY: &[u8] = b"421 4.7.0 Too many connections, try again later\r\n";
