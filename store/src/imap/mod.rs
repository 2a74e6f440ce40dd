//! IMAP storage on maildir: folders, persistent UIDs, flags, append, copy, move and
//! expunge (RFC 3501 §2.3 message attributes, §6.3 mailbox commands; design.md §4
//! "Mail storage"). `docs/storage.md` describes the layout and guarantees.
//!
//! An account's INBOX is its maildir `<root>/<domain>/<localpart>/`; other folders are
//! Maildir++ sub-folders `.Name.Sub/` for the IMAP name `Name/Sub` (hierarchy delimiter
//! `/`, names stored as the client sends them, modified UTF-7 included). Each folder has
//! a `tidegate-uidlist` file ([`tidegate_core::uidlist`]) that is only changed under its
//! dotlock ([`crate::lock`]) and always replaced by `rename`, and, once a keyword is
//! stored, a `tidegate-keywords` file ([`tidegate_core::keywords`], [`KEYWORDS_FILE`])
//! naming the keyword letters, grown under the same dotlock. Message files are never
//! rewritten: a flag change is a rename, a copy is a hard link where possible.
//!
//! Everything here is blocking; the shells run it on their worker threads. The only
//! state kept between calls is a cache of folder snapshots that is checked against the
//! folder's change stamps before every use ([`folder_cache`]), so several processes and
//! hosts can serve one maildir.

mod exec;
mod folder_cache;
mod folders;
mod keywords;
mod messages;
mod snapshot;
mod uids;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tidegate_core::Account;
use tidegate_core::maildir::{UniqueName, parse_name, sanitize_host};
use tidegate_core::uidlist::UidListError;

use self::folder_cache::FolderCache;
use crate::lock::{LockError, LockOptions};
use crate::maildir::{MaildirStore, StoreError};

pub use exec::{
    DEFAULT_APPEND_TIMEOUT, ImapExecutor, MAX_CACHED_MAILBOXES, MAX_PARSE_SIZE, MAX_PENDING_APPENDS,
};
pub use folder_cache::{
    DEFAULT_CACHED_FOLDERS, FolderCacheStats, MAX_CACHED_MESSAGES, SETTLE as FOLDER_CACHE_SETTLE,
};
pub use folders::{FolderInfo, SpecialUse};
pub use messages::{Appended, Copied, CopyOutcome};
pub use snapshot::{ChangeStamp, MessageMeta, Snapshot, Status};

/// The uidlist file in every folder's directory.
pub const UIDLIST_FILE: &str = "tidegate-uidlist";

/// The keywords file in a folder's directory ([`tidegate_core::keywords`]), changed
/// only under the uidlist's dotlock and always replaced by `rename`.
pub const KEYWORDS_FILE: &str = "tidegate-keywords";

/// The subscriptions file in the account's maildir: one IMAP folder name a line.
pub const SUBSCRIPTIONS_FILE: &str = "subscriptions";

/// The most bytes [`ImapMailboxes::read`] returns at once, whatever the caller asks.
pub const MAX_READ: usize = 1 << 20;

/// Names made by this module: counted from here so they never equal a delivery's name
/// from the same process in the same microsecond (deliveries count from 0).
static COUNTER: AtomicU64 = AtomicU64::new(1 << 40);

/// Why an IMAP store operation failed.
#[derive(Debug)]
pub enum ImapStoreError {
    /// The account name cannot be a maildir (see [`MaildirStore::mailbox_dir`]).
    InvalidAccount,
    /// The folder name cannot be stored: empty, `.` (the on-disk separator), `*`, `%`,
    /// `\`, control characters, an empty level, or longer than 255 bytes.
    InvalidName,
    /// The folder does not exist (RFC 3501 `NO [NONEXISTENT]`).
    NoSuchFolder,
    /// The folder exists already (`NO [ALREADYEXISTS]`).
    AlreadyExists,
    /// The operation is not allowed on this folder: deleting INBOX, deleting a
    /// `\Noselect` name that has children (RFC 3501 §6.3.4).
    NotAllowed,
    /// The message no longer exists.
    Gone,
    /// The folder's UIDs ran out (2^32 - 1); it needs a new UIDVALIDITY.
    UidsExhausted,
    /// The folder's keywords file is unreadable, so no keyword can be added to it.
    BadKeywords,
    /// The uidlist lock could not be taken.
    Lock(LockError),
    /// The filesystem failed.
    Io(io::Error),
}

impl fmt::Display for ImapStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImapStoreError::InvalidAccount => f.write_str("invalid mailbox name"),
            ImapStoreError::InvalidName => f.write_str("invalid folder name"),
            ImapStoreError::NoSuchFolder => f.write_str("no such folder"),
            ImapStoreError::AlreadyExists => f.write_str("folder already exists"),
            ImapStoreError::NotAllowed => f.write_str("not allowed on this folder"),
            ImapStoreError::Gone => f.write_str("message no longer exists"),
            ImapStoreError::UidsExhausted => f.write_str("no UIDs left in this folder"),
            ImapStoreError::BadKeywords => f.write_str("unreadable keywords file"),
            ImapStoreError::Lock(e) => write!(f, "uidlist lock: {e}"),
            ImapStoreError::Io(e) => write!(f, "maildir I/O error: {e}"),
        }
    }
}

impl std::error::Error for ImapStoreError {}

impl From<io::Error> for ImapStoreError {
    fn from(e: io::Error) -> Self {
        ImapStoreError::Io(e)
    }
}

impl From<LockError> for ImapStoreError {
    fn from(e: LockError) -> Self {
        ImapStoreError::Lock(e)
    }
}

impl From<StoreError> for ImapStoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Gone => ImapStoreError::Gone,
            StoreError::Io(e) => ImapStoreError::Io(e),
            _ => ImapStoreError::InvalidAccount,
        }
    }
}

impl From<UidListError> for ImapStoreError {
    fn from(_: UidListError) -> Self {
        ImapStoreError::UidsExhausted
    }
}

/// The flags of RFC 3501 §2.3.2 that maildir stores in the `:2,` suffix: the system
/// flags as upper-case letters and keywords as the lower-case letters `a`..`z`, whose
/// names are in the folder's keywords file ([`KEYWORDS_FILE`]; a letter means different
/// keywords in different folders). `\Recent` is not a stored flag (see
/// [`MessageMeta::recent`]); other letters (`P`) are kept through flag changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    /// `\Seen`, maildir `S`.
    pub seen: bool,
    /// `\Answered`, maildir `R`.
    pub answered: bool,
    /// `\Flagged`, maildir `F`.
    pub flagged: bool,
    /// `\Deleted`, maildir `T`.
    pub deleted: bool,
    /// `\Draft`, maildir `D`.
    pub draft: bool,
    /// Keyword letters: bit `i` set for the letter `a + i` (bits 0..26).
    pub keywords: u32,
}

impl Flags {
    /// The flags in a maildir info suffix (the letters after `:2,`).
    pub fn from_maildir(letters: &str) -> Flags {
        Flags {
            seen: letters.contains('S'),
            answered: letters.contains('R'),
            flagged: letters.contains('F'),
            deleted: letters.contains('T'),
            draft: letters.contains('D'),
            keywords: letters
                .chars()
                .filter_map(tidegate_core::keywords::index_of)
                .fold(0, |mask, i| mask | (1 << i)),
        }
    }

    /// The letters for these flags plus the `kept` letters this type does not model,
    /// in ASCII order without duplicates (the Maildir convention).
    pub fn to_maildir(self, kept: &str) -> String {
        let mut letters: Vec<char> = kept
            .chars()
            .filter(|c| c.is_ascii_uppercase() && !"DFRST".contains(*c))
            .collect();
        for (set, letter) in [
            (self.draft, 'D'),
            (self.flagged, 'F'),
            (self.answered, 'R'),
            (self.seen, 'S'),
            (self.deleted, 'T'),
        ] {
            if set {
                letters.push(letter);
            }
        }
        letters.extend(self.keyword_letters());
        letters.sort_unstable();
        letters.dedup();
        letters.into_iter().collect()
    }

    /// The keyword letters set, in order.
    pub fn keyword_letters(self) -> impl Iterator<Item = char> {
        (0..tidegate_core::keywords::MAX_KEYWORDS)
            .filter(move |i| self.keywords & (1 << i) != 0)
            .filter_map(tidegate_core::keywords::letter)
    }

    /// Sets the keyword `letter` (ignored unless `a`..`z`).
    pub fn set_keyword(&mut self, letter: char) {
        if let Some(i) = tidegate_core::keywords::index_of(letter) {
            self.keywords |= 1 << i;
        }
    }
}

/// The IMAP folders of the maildirs under one `mailbox_path`.
#[derive(Debug, Clone)]
pub struct ImapMailboxes {
    maildirs: MaildirStore,
    host: String,
    fsync: bool,
    lock: LockOptions,
    /// Snapshots of recently opened folders, shared by clones.
    cache: Arc<FolderCache>,
}

impl ImapMailboxes {
    /// Folders under `root` (`[storage] mailbox_path`); `fsync` as `[storage] fsync`;
    /// `host` goes into new file names and lock files (as for delivery).
    pub fn new(root: impl AsRef<Path>, fsync: bool, host: &str) -> Self {
        ImapMailboxes {
            maildirs: MaildirStore::new(root, fsync, host),
            host: sanitize_host(host),
            fsync,
            lock: LockOptions::new(host),
            cache: Arc::new(FolderCache::new(DEFAULT_CACHED_FOLDERS)),
        }
    }

    /// Keeps the snapshots of at most `max_folders` recently opened folders between
    /// sessions for SELECT, EXAMINE and STATUS (RFC 3501 §6.3.1, §6.3.2, §6.3.10; 0:
    /// none, every SELECT scans its folder); the default is [`DEFAULT_CACHED_FOLDERS`].
    /// Clones made afterwards share the new cache.
    pub fn with_folder_cache(mut self, max_folders: usize) -> Self {
        self.cache = Arc::new(FolderCache::new(max_folders));
        self
    }

    /// How many snapshots (SELECT, EXAMINE, STATUS) came from the folder cache and how
    /// many needed a scan.
    pub fn folder_cache_stats(&self) -> FolderCacheStats {
        self.cache.stats()
    }

    /// Replaces the uidlist lock options (stale age, wait).
    pub fn with_lock_options(mut self, options: LockOptions) -> Self {
        self.lock = options;
        self
    }

    /// The account's maildir (its INBOX).
    fn maildir(&self, account: &Account) -> Result<PathBuf, ImapStoreError> {
        self.maildirs
            .mailbox_dir(account)
            .map_err(|_| ImapStoreError::InvalidAccount)
    }

    /// A fresh unique name for a file this module creates.
    fn next_unique(&self) -> UniqueName {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        UniqueName {
            seconds: now.as_secs(),
            micros: now.subsec_micros(),
            pid: std::process::id(),
            counter: COUNTER.fetch_add(1, Ordering::Relaxed),
            host: self.host.clone(),
        }
    }
}

/// Seconds since the epoch now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `name` is INBOX (case-insensitive, RFC 3501 §5.1).
pub fn is_inbox(name: &str) -> bool {
    name.eq_ignore_ascii_case("INBOX")
}

/// The directory of folder `name` in `maildir`: the maildir itself for INBOX,
/// `.A.B` for `A/B`. Checks the name (see [`ImapStoreError::InvalidName`]).
fn folder_dir(maildir: &Path, name: &str) -> Result<PathBuf, ImapStoreError> {
    if is_inbox(name) {
        return Ok(maildir.to_path_buf());
    }
    let valid = !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|level| !level.is_empty())
        && !name
            .chars()
            .any(|c| matches!(c, '.' | '*' | '%' | '\\') || c.is_control());
    if !valid {
        return Err(ImapStoreError::InvalidName);
    }
    Ok(maildir.join(format!(".{}", name.replace('/', "."))))
}

/// Where a message file is inside a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    New,
    Cur,
}

impl Sub {
    fn name(self) -> &'static str {
        match self {
            Sub::New => "new",
            Sub::Cur => "cur",
        }
    }
}

/// `new/NAME` or `cur/NAME` with a plain message name.
fn split_ref(file: &str) -> Option<(Sub, &str)> {
    let (dir, name) = file.split_once('/')?;
    let sub = match dir {
        "new" => Sub::New,
        "cur" => Sub::Cur,
        _ => return None,
    };
    (!name.contains('\0') && parse_name(name).is_some()).then_some((sub, name))
}

/// The unique part of a file name (the name itself if it does not parse).
fn unique_of(name: &str) -> &str {
    parse_name(name).map_or(name, |p| p.unique)
}

/// Finds the file of this unique name in new/ or cur/ of `folder`, whatever its flags.
fn find_by_unique(folder: &Path, unique: &str) -> io::Result<Option<(Sub, String)>> {
    for sub in [Sub::Cur, Sub::New] {
        let entries = match fs::read_dir(folder.join(sub.name())) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let file_name = entry?.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            if parse_name(name).is_some_and(|p| p.unique == unique) {
                return Ok(Some((sub, name.to_owned())));
            }
        }
    }
    Ok(None)
}

/// Locates a message: the path the reference names if it is still there, otherwise
/// wherever its unique name is now.
fn locate(folder: &Path, file: &str) -> Result<(Sub, String), ImapStoreError> {
    let (sub, name) = split_ref(file).ok_or(ImapStoreError::Gone)?;
    if fs::symlink_metadata(folder.join(sub.name()).join(name)).is_ok() {
        return Ok((sub, name.to_owned()));
    }
    find_by_unique(folder, unique_of(name))?.ok_or(ImapStoreError::Gone)
}

/// Creates a directory and its missing parents with mode 0700.
fn make_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Makes a directory's entries durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Creates `tmp/ new/ cur/` in `dir`.
fn make_maildir(dir: &Path) -> io::Result<()> {
    for sub in ["tmp", "new", "cur"] {
        make_dir(&dir.join(sub))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_map_to_maildir_plus_plus() {
        let root = Path::new("/m/x/u");
        assert_eq!(folder_dir(root, "inbox").unwrap(), root);
        assert_eq!(
            folder_dir(root, "Archive/2026").unwrap(),
            root.join(".Archive.2026")
        );
        assert_eq!(folder_dir(root, "&AOQ-b").unwrap(), root.join(".&AOQ-b"));
        for bad in [
            "", "a.b", "/a", "a/", "a//b", "a*", "a%", "a\\b", "a\nb", "..",
        ] {
            assert!(folder_dir(root, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_keep_foreign_letters() {
        let flags = Flags::from_maildir("PSa");
        assert!(flags.seen && !flags.deleted);
        let changed = Flags {
            deleted: true,
            seen: false,
            ..flags
        };
        assert_eq!(changed.to_maildir("PSa"), "PTa");
        assert_eq!(Flags::default().to_maildir(""), "");
        // Keyword letters are modelled: dropping them from the flags drops them.
        let plain = Flags {
            keywords: 0,
            ..changed
        };
        assert_eq!(plain.to_maildir("PSa"), "PT");
        let mut both = Flags::default();
        both.set_keyword('z');
        both.set_keyword('b');
        both.set_keyword('S');
        assert_eq!(both.to_maildir("P"), "Pbz");
        assert_eq!(Flags::from_maildir("Sbz").keywords, (1 << 1) | (1 << 25));
    }
}
