//! Requests a session asks the host to carry out, and the replies it expects.
//!
//! These are plain data: the core never performs them. The shell hands each
//! [`Request`] to the store (a worker thread, a blocking task) and feeds the answer back
//! with [`crate::Session::handle_reply`]. Each request has exactly one reply.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use crate::secret::Secret;
use crate::user::{AuthOutcome, Lookup};

/// A mailbox owner: the canonical address (`local@domain`) returned by authentication.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account(pub String);

/// Names one message file of a maildir, relative to the maildir (`new/NAME` or `cur/NAME`).
/// The store finds the message again under its unique name if another session moved it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageRef(pub String);

/// A message being received (SMTP DATA/BDAT, LMTP), named by the store when it opened
/// the message's temporary file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryId(pub u64);

/// What the store knows about an SMTP recipient address (RFC 5321 §3.3 RCPT).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecipientCheck {
    /// A local user; deliver to this account.
    Local(Account),
    /// A local domain without such a user (`550 5.1.1`).
    Unknown,
    /// A domain this server does not receive mail for.
    NotLocal,
    /// A local user whose mailbox is over its `quota=` (`552 5.2.2`).
    OverQuota,
    /// Proxy mode (design.md §1): a user of this cluster whose mailbox lives on another
    /// node. The inbound listener accepts it like a local user (`250 2.1.5`); at the end
    /// of the data the message is queued for that back-end and relayed over LMTP
    /// (RFC 2033).
    Backend(BackendRecipient),
}

/// A recipient whose mailbox is on a back-end ([`RecipientCheck::Backend`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRecipient {
    /// The canonical account name, used as the forward-path towards the back-end.
    pub account: Account,
    /// The back-end as the user database names it (`tohost`, else `default_host`).
    pub host: String,
}

/// The envelope of a message queued for outbound delivery
/// ([`Request::CommitSubmission`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayEnvelope {
    /// The reverse-path (the authenticated user's address).
    pub sender: String,
    /// Remote recipients in RCPT order, as the client wrote them.
    pub recipients: Vec<String>,
    /// The body was declared `8BITMIME` or `BINARYMIME` (RFC 6152, RFC 3030).
    pub eight_bit: bool,
    /// `SMTPUTF8` was given on MAIL (RFC 6531).
    pub smtputf8: bool,
    /// Proxy mode: recipients relayed to their back-ends over LMTP, in RCPT order
    /// (accounts named twice appear once).
    pub backends: Vec<BackendRecipient>,
    /// The SMTP client the message came from (address, port, HELO name, `SMTP` or
    /// `ESMTP`), kept with a proxy front-end's queue copy so the LMTP leg can name it
    /// to the back-end with XCLIENT (Postfix `XCLIENT_README`); `None` when unknown.
    pub client: Option<crate::proxy::xclient::Xclient>,
}

/// One message of a mailbox listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Where the message file is.
    pub file: MessageRef,
    /// The unique part of the file name: stable across sessions and restarts, the POP3
    /// UIDL (RFC 1939 §7: 1 to 70 printable characters).
    pub uid: String,
    /// Size in octets as stored (CRLF line ends).
    pub size: u64,
}

/// The protocols a user can be routed for (design.md `[proxy] backend_ports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// POP3 (RFC 1939).
    Pop3,
    /// IMAP (RFC 3501).
    Imap,
    /// Message submission (RFC 6409).
    Submission,
    /// LMTP delivery from a front-end (RFC 2033).
    Lmtp,
}

/// A back-end a proxy front-end connects to for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The host name as the user database gave it (`tohost`, or `default_host`), for logs.
    pub host: String,
    /// Its addresses with the service's port, in the order to try them.
    pub addrs: Vec<SocketAddr>,
}

/// Where a proxy front-end sends a user (design.md §1): the back-end that owns the
/// account. A node that serves some users itself runs its own back-end listeners and
/// is named in their `tohost`, so every route is a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The canonical account name to log in with.
    pub account: Account,
    /// Where the account lives.
    pub backend: Backend,
}

/// Something a session needs done outside the core.
#[derive(Debug)]
#[non_exhaustive]
pub enum Request {
    /// Check a password. Answered by [`Reply::Authenticated`] or [`Reply::Failed`].
    Authenticate {
        /// The name the client gave (not yet normalised).
        user: String,
        /// The password.
        password: Secret,
        /// The client's address, for logging and login penalties.
        client: IpAddr,
    },
    /// List the messages of an account's inbox (new/ and cur/), oldest first.
    /// Answered by [`Reply::Listing`].
    ListMailbox {
        /// Whose inbox.
        account: Account,
    },
    /// Read part of a message file. Answered by [`Reply::Chunk`], or
    /// [`Failure::Gone`] when the file no longer exists anywhere in the maildir.
    ReadMessage {
        /// Whose inbox.
        account: Account,
        /// Which message.
        file: MessageRef,
        /// First byte to return.
        offset: u64,
        /// At most this many bytes.
        max_len: usize,
    },
    /// Apply a POP3 UPDATE state (RFC 1939 §6): delete messages, move retrieved messages
    /// from new/ to cur/ with the Seen flag. Answered by [`Reply::Done`].
    CommitPop3 {
        /// Whose inbox.
        account: Account,
        /// Messages marked deleted.
        delete: Vec<MessageRef>,
        /// Messages retrieved and not deleted.
        seen: Vec<MessageRef>,
    },
    /// A POP3 session that listed `account` ended (QUIT, a dropped connection, the
    /// autologout): release the cluster-wide POP3 lock the listing took. Answered by
    /// [`Reply::Done`]; sent just before the session's `Close`, and only when
    /// [`crate::pop3::Pop3Config::mailbox_lock`] is on.
    ReleaseMailbox {
        /// Whose inbox.
        account: Account,
    },
    /// Look up an SMTP/LMTP recipient. Answered by [`Reply::Recipient`].
    CheckRecipient {
        /// The address from `RCPT TO:<…>`, without the angle brackets.
        address: String,
        /// The `SIZE=` the client declared, for an early quota check.
        size_hint: Option<u64>,
    },
    /// Open a temporary file for a message about to be received and write `header`
    /// (the trace fields: `Return-Path:`, `Received:`) at its start. Answered by
    /// [`Reply::DeliveryStarted`].
    BeginDelivery {
        /// Bytes that precede the message.
        header: bytes::Bytes,
    },
    /// Append message bytes (already unstuffed, CRLF line ends). Answered by
    /// [`Reply::Done`].
    AppendDelivery {
        /// The message.
        delivery: DeliveryId,
        /// The next bytes.
        bytes: Bytes,
    },
    /// Make the message durable and visible: fsync it, link it into every recipient's
    /// `new/`, fsync those directories. Answered by [`Reply::Delivered`] with one result
    /// per recipient, in order. With `all_or_nothing` (SMTP), a failure for any
    /// recipient means no recipient gets the message; without it (LMTP, RFC 2033 §4.2)
    /// each recipient succeeds or fails on its own. The temporary file is removed either
    /// way.
    CommitDelivery {
        /// The message.
        delivery: DeliveryId,
        /// Where it goes.
        recipients: Vec<Account>,
        /// SMTP semantics: every recipient or none.
        all_or_nothing: bool,
    },
    /// Submission with remote recipients (RFC 6409 with `[relay]`), or inbound mail
    /// with recipients on back-ends (proxy mode, [`RelayEnvelope::backends`]): like
    /// [`Request::CommitDelivery`] with `all_or_nothing`, and first a copy of the
    /// message is made durable in the outbound queue for `relay`'s recipients. Answered
    /// by [`Reply::Delivered`] with one result per local account, in order, then one
    /// result for the queue copy. Every part succeeds or nothing is left: a failed
    /// local delivery removes the queue copy, a failed queue copy delivers nothing.
    CommitSubmission {
        /// The message.
        delivery: DeliveryId,
        /// Local recipients.
        local: Vec<Account>,
        /// The envelope of the queue copy.
        relay: RelayEnvelope,
    },
    /// Discard a message being received (too large, client gone). Answered by
    /// [`Reply::Done`].
    AbortDelivery {
        /// The message.
        delivery: DeliveryId,
    },
    /// Proxy mode: check a password and decide where the user is served. Answered by
    /// [`Reply::Routed`], or [`Reply::Failed`] with [`Failure::Denied`],
    /// [`Failure::Disabled`] or [`Failure::Temporary`].
    Route {
        /// The name the client gave (not yet normalised).
        user: String,
        /// The password.
        password: Secret,
        /// The client's address, for logging and login penalties.
        client: IpAddr,
        /// The protocol, which picks the back-end port.
        service: Service,
    },
    /// Proxy mode: a back-end address could not be reached, or broke off the login
    /// dialogue, or did not answer in time; the host's circuit breaker counts it.
    /// Answered by [`Reply::Done`]; sessions do not wait for the answer.
    BackendFailed {
        /// The back-end as the route named it.
        host: String,
        /// The address that failed.
        addr: SocketAddr,
        /// What went wrong, for the log.
        reason: String,
    },
    /// Look a user up without a password (authd `LOOKUP`). Answered by [`Reply::User`].
    LookupUser {
        /// The address (not yet normalised).
        address: String,
    },
    /// Look several users up at once (pipelined authd `LOOKUP`s, one store round trip
    /// for all). Answered by [`Reply::Users`] with one [`Lookup`] per address, in order.
    LookupUsers {
        /// The addresses (not yet normalised).
        addresses: Vec<String>,
    },
    /// Check a password and return the user's record (authd `VERIFY`). Answered by
    /// [`Reply::Verified`].
    VerifyUser {
        /// The name the client gave (not yet normalised).
        user: String,
        /// The password.
        password: Secret,
        /// The address of the end client on whose behalf the check is made.
        client: IpAddr,
    },
    /// An IMAP mailbox operation (RFC 3501); see [`crate::imap::ImapRequest`].
    Imap(crate::imap::ImapRequest),
}

/// The answer to one [`Request`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Reply {
    /// The password was right; this is the account to open.
    Authenticated(Account),
    /// A mailbox listing.
    Listing(Vec<MessageInfo>),
    /// Bytes of a message; `end` is true when the message ends after them.
    Chunk {
        /// The bytes read.
        bytes: Bytes,
        /// True when no bytes follow.
        end: bool,
    },
    /// The request was carried out.
    Done,
    /// The answer to [`Request::CheckRecipient`].
    Recipient(RecipientCheck),
    /// A message file was opened: [`Request::BeginDelivery`].
    DeliveryStarted(DeliveryId),
    /// One result per recipient of [`Request::CommitDelivery`], in order.
    Delivered(Vec<Result<(), Failure>>),
    /// The request failed.
    Failed(Failure),
    /// Where to serve a user: [`Request::Route`].
    Routed(Route),
    /// The answer to [`Request::LookupUser`].
    User(Lookup),
    /// The answer to [`Request::LookupUsers`]: one lookup per address, in order.
    Users(Vec<Lookup>),
    /// The answer to [`Request::VerifyUser`].
    Verified(AuthOutcome),
    /// The answer to a [`Request::Imap`]; see [`crate::imap::ImapReply`].
    Imap(crate::imap::ImapReply),
}

/// Why a request failed. Each protocol maps these to its own reply codes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// Unknown user or wrong password: the two are indistinguishable on purpose.
    Denied,
    /// Like [`Failure::Denied`], and the client's address has failed to log in often
    /// recently (the login penalty): the session answers as for `Denied`, but no earlier
    /// than this long after the attempt.
    Throttled(std::time::Duration),
    /// The account exists but may not log in (`nologin`).
    Disabled,
    /// The message or mailbox no longer exists (another session deleted it).
    Gone,
    /// The mailbox is in use by another session (RFC 2449 `[IN-USE]`).
    InUse,
    /// The recipient's mailbox would exceed its quota (RFC 3463 `5.2.2`).
    OverQuota,
    /// A temporary problem (storage or user database unreachable); try again later.
    Temporary(String),
    /// A permanent problem that retrying will not fix.
    Permanent(String),
}
