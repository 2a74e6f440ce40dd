//! What the IMAP session asks the store, and the answers it expects.
//!
//! Each [`ImapRequest`] travels as [`crate::Request::Imap`] and is answered by exactly
//! one [`crate::Reply`]: the [`ImapReply`] variant named in its documentation (as
//! [`crate::Reply::Imap`]), [`crate::Reply::Done`], [`crate::Reply::Chunk`], or
//! [`crate::Reply::Failed`]. Failures map to response codes: [`crate::Failure::Gone`]
//! is `[NONEXISTENT]` (or `[TRYCREATE]` for a COPY/MOVE/APPEND target),
//! [`crate::Failure::Temporary`] is `[UNAVAILABLE]`, [`crate::Failure::OverQuota`] is
//! `[OVERQUOTA]` (RFC 9208), anything else `[SERVERBUG]`.
//!
//! Mailbox names are decoded UTF-8 with `/` as the hierarchy delimiter and `INBOX`
//! canonical; the store maps them to Maildir++ folders.

use bytes::Bytes;

use crate::imap::command::StoreMode;
use crate::imap::fetch::ContentItem;
use crate::imap::search::SearchKey;
use crate::request::Account;

/// A mailbox of an account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MailboxRef {
    /// The owner.
    pub account: Account,
    /// The decoded name (`INBOX`, `Archive/2026`).
    pub name: String,
}

/// An APPEND being received, named by the store when it opened the temporary file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppendId(pub u64);

/// One message of a mailbox snapshot: what the session needs without reading the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// The message's UID (RFC 3501 §2.3.1.1).
    pub uid: u32,
    /// Its flags: system flags (`\Seen`) and keywords; never `\Recent`.
    pub flags: Vec<String>,
    /// RFC822.SIZE: octets with CRLF line ends.
    pub size: u64,
    /// INTERNALDATE: Unix seconds.
    pub internal_date: i64,
    /// The store saw the message for the first time in this session's snapshot
    /// (it was in `new/`): `\Recent` (RFC 3501 §2.3.2).
    pub recent: bool,
}

/// A mailbox as SELECT/EXAMINE and the rescans see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// UIDNEXT: the UID the next message will get.
    pub uid_next: u32,
    /// The messages in ascending UID order.
    pub messages: Vec<MessageMeta>,
    /// The keywords defined in the mailbox (RFC 3501 §7.2.6 FLAGS), in the store's
    /// order; at most [`crate::keywords::MAX_KEYWORDS`].
    pub keywords: Vec<String>,
}

/// One mailbox in a LIST answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    /// The decoded name.
    pub name: String,
    /// Name attributes as they are sent: `\HasChildren`/`\HasNoChildren` (RFC 3348),
    /// `\Noselect`, SPECIAL-USE ones such as `\Sent` or `\Trash` (RFC 6154).
    pub attributes: Vec<String>,
    /// The account subscribed to it.
    pub subscribed: bool,
}

/// The STATUS counters of a mailbox (RFC 3501 §6.3.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxStatus {
    /// Number of messages.
    pub messages: u32,
    /// Messages in `new/`.
    pub recent: u32,
    /// UIDNEXT.
    pub uid_next: u32,
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// Messages without `\Seen`.
    pub unseen: u32,
}

/// A message the store checks against SEARCH content keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchCandidate {
    /// Its sequence number in the session.
    pub seq: u32,
    /// Its snapshot entry.
    pub meta: MessageMeta,
}

impl SearchCandidate {
    /// What [`crate::imap::search::evaluate`] needs besides the bytes; `last` is the
    /// request's `(highest sequence number, highest UID)`.
    pub fn facts(&self, last: (u32, u32)) -> crate::imap::search::MessageFacts<'_> {
        crate::imap::search::MessageFacts {
            seq: self.seq,
            uid: self.meta.uid,
            flags: &self.meta.flags,
            size: self.meta.size,
            internal_date: self.meta.internal_date,
            recent: self.meta.recent,
            last_seq: last.0,
            last_uid: last.1,
        }
    }
}

/// A mailbox operation for the store.
#[derive(Debug)]
#[non_exhaustive]
pub enum ImapRequest {
    /// Every mailbox of an account (LIST, LSUB); the session applies the pattern.
    /// Answered by [`ImapReply::Mailboxes`].
    ListMailboxes {
        /// Whose mailboxes.
        account: Account,
    },
    /// STATUS. Answered by [`ImapReply::Status`].
    Status {
        /// Which mailbox.
        mailbox: MailboxRef,
    },
    /// CREATE (RFC 3501 §6.3.3). Answered by [`crate::Reply::Done`], or
    /// [`ImapReply::AlreadyExists`].
    Create {
        /// The new mailbox.
        mailbox: MailboxRef,
    },
    /// DELETE (§6.3.4). Answered by [`crate::Reply::Done`].
    Delete {
        /// The mailbox.
        mailbox: MailboxRef,
    },
    /// RENAME (§6.3.5; renaming INBOX moves its messages). Answered by
    /// [`crate::Reply::Done`] or [`ImapReply::AlreadyExists`].
    Rename {
        /// The mailbox.
        mailbox: MailboxRef,
        /// Its new name.
        to: String,
    },
    /// SUBSCRIBE / UNSUBSCRIBE. Answered by [`crate::Reply::Done`].
    Subscribe {
        /// The mailbox.
        mailbox: MailboxRef,
        /// True to subscribe, false to unsubscribe.
        subscribe: bool,
    },
    /// SELECT/EXAMINE, and every rescan of the selected mailbox (NOOP, CHECK, IDLE).
    /// Answered by [`ImapReply::Snapshot`]. With `claim_recent`, messages in `new/` move to
    /// `cur/` and are reported `recent` this once.
    Snapshot {
        /// The mailbox.
        mailbox: MailboxRef,
        /// Read-write access: claim `\Recent` messages.
        claim_recent: bool,
    },
    /// Bytes of a message file by range (BODY[], RFC822 and their partials, streamed).
    /// Answered by [`crate::Reply::Chunk`], or [`crate::Failure::Gone`].
    Read {
        /// The mailbox.
        mailbox: MailboxRef,
        /// The message.
        uid: u32,
        /// First byte.
        offset: u64,
        /// At most this many bytes.
        max_len: usize,
    },
    /// What only a MIME parse gives: ENVELOPE, BODY, BODYSTRUCTURE renderings and
    /// section bytes. Answered by [`ImapReply::Content`], one entry per item, in order.
    FetchContent {
        /// The mailbox.
        mailbox: MailboxRef,
        /// The message.
        uid: u32,
        /// What is wanted.
        items: Vec<ContentItem>,
    },
    /// STORE: change flags. Answered by [`ImapReply::Flags`] with the new flags of each
    /// message that still exists.
    Store {
        /// The mailbox.
        mailbox: MailboxRef,
        /// Which messages.
        uids: Vec<u32>,
        /// Replace, add or remove.
        mode: StoreMode,
        /// The flags.
        flags: Vec<String>,
    },
    /// COPY or MOVE (RFC 6851). Answered by [`ImapReply::Copied`], or
    /// [`crate::Failure::Gone`] when the target does not exist (`[TRYCREATE]`).
    Copy {
        /// The source mailbox.
        mailbox: MailboxRef,
        /// Which messages, ascending.
        uids: Vec<u32>,
        /// The target mailbox name.
        target: String,
        /// MOVE: remove the originals.
        remove: bool,
    },
    /// EXPUNGE these messages (the session picked those with `\Deleted`). Answered by
    /// [`ImapReply::Expunged`] with the UIDs actually removed.
    Expunge {
        /// The mailbox.
        mailbox: MailboxRef,
        /// Which messages.
        uids: Vec<u32>,
    },
    /// SEARCH with content keys: the store reads each candidate and keeps those for
    /// which [`crate::imap::search::evaluate`] is true. Answered by
    /// [`ImapReply::Matches`].
    Search {
        /// The mailbox.
        mailbox: MailboxRef,
        /// The search.
        key: SearchKey,
        /// The messages to check (every message of the session's snapshot).
        candidates: Vec<SearchCandidate>,
        /// The highest sequence number and UID, what `*` means.
        last: (u32, u32),
    },
    /// Open a temporary file for an APPEND of `size` octets. Answered by
    /// [`ImapReply::AppendStarted`], or [`crate::Failure::Gone`] (`[TRYCREATE]`).
    AppendBegin {
        /// The target mailbox.
        mailbox: MailboxRef,
        /// Flags to set.
        flags: Vec<String>,
        /// INTERNALDATE (Unix seconds, zone minutes); `None` for now.
        date: Option<(i64, i32)>,
        /// The announced size.
        size: u32,
    },
    /// The next bytes of the message. Answered by [`crate::Reply::Done`].
    AppendData {
        /// The append.
        append: AppendId,
        /// The bytes.
        bytes: Bytes,
    },
    /// Make the message durable and give it a UID. Answered by [`ImapReply::Appended`].
    AppendCommit {
        /// The append.
        append: AppendId,
    },
    /// Drop an unfinished append. Answered by [`crate::Reply::Done`].
    AppendAbort {
        /// The append.
        append: AppendId,
    },
}

/// A store answer to an [`ImapRequest`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ImapReply {
    /// The mailboxes of an account.
    Mailboxes(Vec<MailboxInfo>),
    /// STATUS counters.
    Status(MailboxStatus),
    /// A mailbox snapshot.
    Snapshot(Snapshot),
    /// One entry per requested [`ContentItem`], in order: a rendered ENVELOPE/BODY/
    /// BODYSTRUCTURE (sent as is) or the raw bytes of a section (sent as a literal);
    /// `None` for a section that does not exist (sent as an empty string).
    Content(Vec<Option<Bytes>>),
    /// New flags per UID after a STORE.
    Flags(Vec<(u32, Vec<String>)>),
    /// COPY/MOVE done: the target's UIDVALIDITY and (source, target) UID pairs.
    Copied {
        /// The target's UIDVALIDITY.
        uid_validity: u32,
        /// Source UID and the new UID, in source order.
        pairs: Vec<(u32, u32)>,
    },
    /// The UIDs actually expunged.
    Expunged(Vec<u32>),
    /// The UIDs that matched a SEARCH.
    Matches(Vec<u32>),
    /// An APPEND's temporary file is open.
    AppendStarted(AppendId),
    /// An APPEND is stored.
    Appended {
        /// The mailbox's UIDVALIDITY.
        uid_validity: u32,
        /// The new message's UID.
        uid: u32,
    },
    /// CREATE/RENAME: the name is taken (`[ALREADYEXISTS]`, RFC 5530).
    AlreadyExists,
}
