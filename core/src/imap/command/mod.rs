//! IMAP commands (RFC 3501 §6 and the extensions in [`crate::imap`]) as data, and their
//! grammar ([`parse`]), run on one complete command: its lines joined by CRLF with the
//! literals' bytes in place, as the session assembles them from the fragmentizer.

mod parse;

pub use parse::{AppendPrefix, parse, parse_append_prefix};

use crate::imap::fetch::FetchAttribute;
use crate::imap::search::SearchKey;
use crate::imap::sequence::SequenceSet;
use crate::secret::Secret;

/// One parsed command: its tag and what it asks.
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    /// The client's tag, echoed in the tagged response.
    pub tag: String,
    /// The command.
    pub body: CommandBody,
}

/// STATUS data items (RFC 3501 §6.3.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    /// `MESSAGES`.
    Messages,
    /// `RECENT`.
    Recent,
    /// `UIDNEXT`.
    UidNext,
    /// `UIDVALIDITY`.
    UidValidity,
    /// `UNSEEN`.
    Unseen,
}

impl StatusItem {
    /// The item's name in the STATUS response.
    pub fn name(self) -> &'static str {
        match self {
            StatusItem::Messages => "MESSAGES",
            StatusItem::Recent => "RECENT",
            StatusItem::UidNext => "UIDNEXT",
            StatusItem::UidValidity => "UIDVALIDITY",
            StatusItem::Unseen => "UNSEEN",
        }
    }
}

/// How STORE changes flags (RFC 3501 §6.4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// `FLAGS`: replace.
    Replace,
    /// `+FLAGS`: add.
    Add,
    /// `-FLAGS`: remove.
    Remove,
}

/// What a command asks. Mailbox names are decoded from modified UTF-7 and INBOX is
/// canonical ([`crate::imap::mailbox`]).
#[derive(Debug, PartialEq, Eq)]
pub enum CommandBody {
    /// `CAPABILITY` (§6.1.1).
    Capability,
    /// `NOOP` (§6.1.2).
    Noop,
    /// `LOGOUT` (§6.1.3).
    Logout,
    /// `STARTTLS` (§6.2.1).
    StartTls,
    /// `AUTHENTICATE mechanism [initial-response]` (§6.2.2, RFC 4959 SASL-IR).
    Authenticate {
        /// The mechanism, upper-cased.
        mechanism: String,
        /// The initial response, still base64 (`=` for empty).
        initial: Option<Secret>,
    },
    /// `LOGIN user password` (§6.2.3).
    Login {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// `SELECT mailbox` (§6.3.1).
    Select(String),
    /// `EXAMINE mailbox` (§6.3.2).
    Examine(String),
    /// `CREATE mailbox` (§6.3.3).
    Create(String),
    /// `DELETE mailbox` (§6.3.4).
    Delete(String),
    /// `RENAME from to` (§6.3.5).
    Rename(String, String),
    /// `SUBSCRIBE mailbox` (§6.3.6).
    Subscribe(String),
    /// `UNSUBSCRIBE mailbox` (§6.3.7).
    Unsubscribe(String),
    /// `LIST reference pattern` (§6.3.8), or `LSUB` (§6.3.9) with `subscribed`.
    List {
        /// The reference name.
        reference: String,
        /// The pattern, with `*` and `%`.
        pattern: String,
        /// LSUB: only subscribed mailboxes.
        subscribed: bool,
    },
    /// `STATUS mailbox (items)` (§6.3.10).
    Status(String, Vec<StatusItem>),
    /// `CHECK` (§6.4.1).
    Check,
    /// `CLOSE` (§6.4.2).
    Close,
    /// `UNSELECT` (RFC 3691).
    Unselect,
    /// `EXPUNGE` (§6.4.3), or `UID EXPUNGE set` (RFC 4315 §2.1).
    Expunge(Option<SequenceSet>),
    /// `[UID] SEARCH [CHARSET c] keys` (§6.4.4).
    Search {
        /// UID SEARCH.
        uid: bool,
        /// `CHARSET`, upper-cased; the session accepts only US-ASCII and UTF-8
        /// (anything else gets `NO [BADCHARSET]`, RFC 3501 §6.4.4).
        charset: Option<String>,
        /// The keys, as one [`SearchKey::And`].
        key: SearchKey,
    },
    /// `[UID] FETCH set items` (§6.4.5).
    Fetch {
        /// UID FETCH (the set is UIDs, and UID is always returned).
        uid: bool,
        /// Which messages.
        set: SequenceSet,
        /// Which items, macros expanded.
        items: Vec<FetchAttribute>,
    },
    /// `[UID] STORE set [+-]FLAGS[.SILENT] flags` (§6.4.6).
    Store {
        /// UID STORE.
        uid: bool,
        /// Which messages.
        set: SequenceSet,
        /// Replace, add or remove.
        mode: StoreMode,
        /// `.SILENT`: no FETCH responses.
        silent: bool,
        /// The flags.
        flags: Vec<String>,
    },
    /// `[UID] COPY set mailbox` (§6.4.7), or `[UID] MOVE` (RFC 6851) with `remove`.
    Copy {
        /// UID COPY/MOVE.
        uid: bool,
        /// Which messages.
        set: SequenceSet,
        /// The target mailbox.
        mailbox: String,
        /// MOVE: expunge the originals.
        remove: bool,
    },
    /// `IDLE` (RFC 2177).
    Idle,
    /// `ENABLE capabilities` (RFC 5161).
    Enable(Vec<String>),
    /// `ID (field value …)` or `ID NIL` (RFC 2971).
    Id(Vec<(String, Option<String>)>),
    /// `NAMESPACE` (RFC 2342).
    Namespace,
    /// `APPEND mailbox … literal` (§6.3.11): never produced by [`parse`], because the
    /// session streams the message; see [`parse_append_prefix`].
    Append,
}

/// Why a command could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The tag, when one could be read (a tagged BAD); `None` means an untagged BAD.
    pub tag: Option<String>,
    /// What was wrong, for the BAD text.
    pub reason: &'static str,
}

/// The longest tag accepted: tags longer than this are no real client's.
pub const MAX_TAG_LEN: usize = 64;
