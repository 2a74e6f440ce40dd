//! The IMAP side of the [`MemStore`](super::MemStore): real maildirs in a temporary
//! directory, served by the store's own [`ImapExecutor`], so IMAP scripts exercise the
//! real folder, uidlist and flag code on real files.
//!
//! Scripts compare server bytes across chunkings, so everything time-dependent is fixed
//! when a script seeds a mailbox: every account's INBOX gets a uidlist with
//! [`UIDVALIDITY`] before its first session, and `@message` files get a fixed
//! modification time (their INTERNALDATE), one second apart.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use tempfile::TempDir;
use tidegate_core::uidlist::UidList;
use tidegate_store::imap::{ImapExecutor, ImapMailboxes, UIDLIST_FILE};

/// The UIDVALIDITY of every scripted account's INBOX; its special-use folders get the
/// next values, in [`SPECIAL_FOLDERS`] order.
pub const UIDVALIDITY: u32 = 1_700_000_000;

/// The folders the store creates for a new account (RFC 6154), made here first so their
/// UIDVALIDITY is fixed too.
pub const SPECIAL_FOLDERS: [&str; 5] = ["Archive", "Drafts", "Junk", "Sent", "Trash"];

/// Seconds since the epoch of the INTERNALDATE of the first `@message` (Tue, 14 Nov 2023
/// 22:13:20 UTC); the n-th message is n seconds later.
pub const FIRST_INTERNAL_DATE: u64 = 1_700_000_000;

/// Maildirs under a temporary root and the executor that serves them.
pub(super) struct ImapSide {
    root: TempDir,
    executor: ImapExecutor,
}

impl std::fmt::Debug for ImapSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapSide")
            .field("root", &self.root.path())
            .finish_non_exhaustive()
    }
}

impl ImapSide {
    /// An empty mailbox root. `fsync` is off: the suite checks protocol bytes, and the
    /// durability of the store is tested where it lives.
    pub(super) fn new() -> io::Result<Self> {
        let root = tempfile::tempdir()?;
        let executor = ImapExecutor::new(ImapMailboxes::new(root.path(), false, "conformance"));
        Ok(ImapSide { root, executor })
    }

    pub(super) fn executor(&self) -> &ImapExecutor {
        &self.executor
    }

    /// The INBOX maildir of `user` (`local@domain`), or `None` for a name without a domain
    /// (those users only speak POP3 and SMTP).
    fn inbox(&self, user: &str) -> Option<PathBuf> {
        let (local, domain) = user.rsplit_once('@')?;
        if local.is_empty() || domain.is_empty() || local.contains('/') || domain.contains('/') {
            return None;
        }
        Some(self.root.path().join(domain.to_lowercase()).join(local))
    }

    /// Creates `user`'s INBOX and special-use folders, each with a uidlist of fixed
    /// UIDVALIDITY (once).
    pub(super) fn add_user(&self, user: &str) -> io::Result<()> {
        let Some(inbox) = self.inbox(user) else {
            return Ok(());
        };
        make_dated_maildir(&inbox, UIDVALIDITY)?;
        for (n, folder) in (1..).zip(SPECIAL_FOLDERS) {
            make_dated_maildir(&inbox.join(format!(".{folder}")), UIDVALIDITY + n)?;
        }
        Ok(())
    }

    /// Writes message number `n` (1-based, in order of arrival) into `user`'s `new/` as
    /// `unique`, with its INTERNALDATE fixed.
    pub(super) fn add_message(
        &self,
        user: &str,
        unique: &str,
        bytes: &[u8],
        n: u64,
    ) -> io::Result<()> {
        let Some(inbox) = self.inbox(user) else {
            return Ok(());
        };
        self.add_user(user)?;
        let path = inbox.join("new").join(unique);
        write_dated(&path, bytes, FIRST_INTERNAL_DATE + n)
    }
}

/// A maildir (`tmp/ new/ cur/`) whose uidlist starts with `uidvalidity`, unless it has one.
fn make_dated_maildir(dir: &Path, uidvalidity: u32) -> io::Result<()> {
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let uidlist = dir.join(UIDLIST_FILE);
    if !uidlist.exists() {
        fs::write(uidlist, UidList::new(uidvalidity).render())?;
    }
    Ok(())
}

fn write_dated(path: &Path, bytes: &[u8], unix_seconds: u64) -> io::Result<()> {
    fs::write(path, bytes)?;
    let file = fs::File::options().write(true).open(path)?;
    file.set_modified(UNIX_EPOCH + Duration::from_secs(unix_seconds))
}
