//! Requests a session asks the host to carry out, and the replies it expects.
//!
//! These are plain data: the core never performs them. The shell hands each
//! [`Request`] to the store (a worker thread, a blocking task) and feeds the answer back
//! with [`crate::Session::handle_reply`]. Each request has exactly one reply.

use std::net::IpAddr;

use bytes::Bytes;

use crate::secret::Secret;

/// A mailbox owner: the canonical address (`local@domain`) returned by authentication.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account(pub String);

/// Names one message file of a maildir, relative to the maildir (`new/NAME` or `cur/NAME`).
/// The store finds the message again under its unique name if another session moved it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageRef(pub String);

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
    /// The request failed.
    Failed(Failure),
}

/// Why a request failed. Each protocol maps these to its own reply codes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// Unknown user or wrong password: the two are indistinguishable on purpose.
    Denied,
    /// The account exists but may not log in (`nologin`).
    Disabled,
    /// The message or mailbox no longer exists (another session deleted it).
    Gone,
    /// The mailbox is in use by another session (RFC 2449 `[IN-USE]`).
    InUse,
    /// A temporary problem (storage or user database unreachable); try again later.
    Temporary(String),
    /// A permanent problem that retrying will not fix.
    Permanent(String),
}
