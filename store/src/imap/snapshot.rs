//! Folder snapshots for SELECT/EXAMINE and polling (RFC 3501 §6.3.1, §6.3.10,
//! §7.3.1 EXISTS, §7.3.2 RECENT).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use tidegate_core::keywords::KeywordMap;
use tidegate_core::maildir::parse_name;
use tidegate_core::{Account, MessageRef};

use super::folder_cache::FolderStamp;
use super::{
    Flags, ImapMailboxes, ImapStoreError, KEYWORDS_FILE, Sub, UIDLIST_FILE, find_by_unique,
    folder_dir, split_ref, unique_of,
};

/// One message of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// Its UID (RFC 3501 §2.3.1.1).
    pub uid: u32,
    /// Its file, relative to the folder (`cur/NAME`), for [`ImapMailboxes::read`] and
    /// the other message calls.
    pub file: MessageRef,
    /// Its stored flags.
    pub flags: Flags,
    /// Its size in octets (RFC822.SIZE).
    pub size: u64,
    /// INTERNALDATE as seconds since the epoch: the file's modification time, which is
    /// the delivery time or the date APPEND gave.
    pub internal_date: i64,
    /// `\Recent`: this snapshot moved the message out of `new/`, so no other session
    /// saw it first (RFC 3501 §2.3.2).
    pub recent: bool,
}

/// A folder as [`ImapMailboxes::snapshot`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// UIDNEXT.
    pub uidnext: u32,
    /// The messages in UID order (their sequence numbers are their positions + 1).
    pub messages: Vec<MessageMeta>,
    /// The folder's keywords by letter (RFC 3501 §7.2.6), read under the uidlist lock
    /// after the messages' names were listed, so it names every letter they show.
    pub keywords: KeywordMap,
}

/// The counts STATUS reports (RFC 3501 §6.3.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// MESSAGES.
    pub messages: u32,
    /// RECENT: messages still in `new/`, which the next SELECT will see as recent.
    pub recent: u32,
    /// UIDNEXT.
    pub uidnext: u32,
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// UNSEEN: messages without `\Seen`.
    pub unseen: u32,
}

/// A cheap fingerprint of a folder's state: the modification times of `new/`, `cur/`,
/// the uidlist and the keywords file. Any delivery, flag change, expunge, UID
/// assignment or new keyword changes it, so
/// an IDLE or NOOP poll compares stamps and takes a new snapshot only when it differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChangeStamp {
    new: (i64, i64),
    cur: (i64, i64),
    uidlist: (i64, i64),
    keywords: (i64, i64),
}

fn mtime(path: &Path) -> io::Result<(i64, i64)> {
    match fs::metadata(path) {
        Ok(meta) => Ok((meta.mtime(), meta.mtime_nsec())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((0, 0)),
        Err(e) => Err(e),
    }
}

/// The message of the last snapshot `previous` with this UID, if it is still the file
/// of this unique name.
fn same_message<'a>(previous: &'a Snapshot, uid: u32, unique: &str) -> Option<&'a MessageMeta> {
    let at = previous
        .messages
        .binary_search_by_key(&uid, |m| m.uid)
        .ok()?;
    let seen = previous.messages.get(at)?;
    let (_, name) = split_ref(&seen.file.0)?;
    (unique_of(name) == unique).then_some(seen)
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl ImapMailboxes {
    /// Opens a folder for SELECT: moves `new/` messages to `cur/` (they are `recent` in
    /// this snapshot), gives UIDs to messages without one, drops vanished ones from the
    /// uidlist, and lists every message with its flags, size and internal date.
    pub fn snapshot(&self, account: &Account, folder: &str) -> Result<Snapshot, ImapStoreError> {
        self.open(account, folder, true).map(Arc::unwrap_or_clone)
    }

    /// Opens a folder for EXAMINE: like [`ImapMailboxes::snapshot`], but `new/` is left
    /// alone, so no message is `recent` and the next SELECT still sees them as recent
    /// (RFC 3501 §6.3.2: EXAMINE does not change the `\Recent` state).
    pub fn examine(&self, account: &Account, folder: &str) -> Result<Snapshot, ImapStoreError> {
        self.open(account, folder, false).map(Arc::unwrap_or_clone)
    }

    /// [`ImapMailboxes::snapshot`] (`take_recent`, SELECT, RFC 3501 §6.3.1) or
    /// [`ImapMailboxes::examine`] (EXAMINE, §6.3.2), shared with the folder cache
    /// instead of copied: a SELECT of an unchanged folder copies none of its messages.
    pub fn open_shared(
        &self,
        account: &Account,
        folder: &str,
        take_recent: bool,
    ) -> Result<Arc<Snapshot>, ImapStoreError> {
        self.open(account, folder, take_recent)
    }

    fn open(
        &self,
        account: &Account,
        folder: &str,
        take_recent: bool,
    ) -> Result<Arc<Snapshot>, ImapStoreError> {
        let dir = self.existing_folder(account, folder)?;
        let caching = self.cache.enabled();
        if caching {
            // A SELECT may only skip moving new/ to cur/ if new/ was empty.
            let stamp = FolderStamp::read(&dir)?;
            if let Some(hit) = self.cache.fresh(&dir, &stamp, take_recent) {
                return Ok(hit);
            }
        }
        let recent: HashSet<String> = if take_recent {
            self.take_new(&dir)?.into_iter().collect()
        } else {
            HashSet::new()
        };
        let previous = self.cache.previous(&dir);
        let (snapshot, reading) = self.sync_stamped(&dir, caching, |list, files, reading| {
            let known = previous
                .as_deref()
                .filter(|p| p.uidvalidity == list.uidvalidity);
            let mut messages = Vec::with_capacity(list.entries.len());
            for (uid, unique) in &list.entries {
                let Some((sub, name)) = files.get(unique) else {
                    continue;
                };
                // Message files are never rewritten and a rename keeps the mtime: what
                // the last snapshot found for this UID and file still holds.
                if let Some(seen) = known.and_then(|p| same_message(p, *uid, unique)) {
                    messages.push(MessageMeta {
                        uid: *uid,
                        file: MessageRef(format!("{}/{name}", sub.name())),
                        flags: Flags::from_maildir(parse_name(name).map_or("", |p| p.flags)),
                        size: seen.size,
                        internal_date: seen.internal_date,
                        recent: recent.contains(unique),
                    });
                    continue;
                }
                let (sub, name, meta) = match fs::metadata(dir.join(sub.name()).join(name)) {
                    Ok(meta) => (*sub, name.clone(), meta),
                    // Renamed since the scan (a flag change elsewhere): find it again, so a
                    // message that still exists never looks expunged.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        let found = match super::uids::probe(&dir, unique) {
                            Some(place) => Some(place),
                            None => find_by_unique(&dir, unique)?,
                        };
                        let Some((sub, name)) = found else {
                            continue; // expunged meanwhile
                        };
                        match fs::metadata(dir.join(sub.name()).join(&name)) {
                            Ok(meta) => (sub, name, meta),
                            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Err(e) => return Err(e.into()),
                };
                let name = name.as_str();
                let parsed = parse_name(name);
                messages.push(MessageMeta {
                    uid: *uid,
                    file: MessageRef(format!("{}/{name}", sub.name())),
                    flags: Flags::from_maildir(parsed.as_ref().map_or("", |p| p.flags)),
                    size: parsed.and_then(|p| p.size).unwrap_or(meta.len()),
                    internal_date: meta.mtime(),
                    recent: recent.contains(unique),
                });
            }
            let snapshot = Snapshot {
                uidvalidity: list.uidvalidity,
                uidnext: list.uidnext,
                messages,
                keywords: super::keywords::read_keywords(&dir)?,
            };
            Ok((snapshot, reading))
        })?;
        let snapshot = Arc::new(snapshot);
        if let Some(reading) = reading {
            // The cache keeps the folder as the next session will see it: nothing recent.
            let cached = if snapshot.messages.iter().any(|m| m.recent) {
                let mut cached = Snapshot::clone(&snapshot);
                for message in &mut cached.messages {
                    message.recent = false;
                }
                Arc::new(cached)
            } else {
                Arc::clone(&snapshot)
            };
            let new_empty = !cached.messages.iter().any(|m| m.file.0.starts_with("new/"));
            self.cache.store(&dir, reading, cached, new_empty);
        }
        Ok(snapshot)
    }

    /// STATUS counts, without moving anything out of `new/` (UIDs are assigned, as
    /// UIDNEXT must account for every message).
    pub fn status(&self, account: &Account, folder: &str) -> Result<Status, ImapStoreError> {
        let dir = self.existing_folder(account, folder)?;
        if self.cache.enabled() {
            let stamp = FolderStamp::read(&dir)?;
            if let Some(hit) = self.cache.fresh(&dir, &stamp, false) {
                let listed = || hit.messages.iter();
                return Ok(Status {
                    messages: count(listed().count()),
                    recent: count(listed().filter(|m| m.file.0.starts_with("new/")).count()),
                    uidnext: hit.uidnext,
                    uidvalidity: hit.uidvalidity,
                    unseen: count(listed().filter(|m| !m.flags.seen).count()),
                });
            }
        }
        let (list, files) = self.sync(&dir)?;
        let listed = || {
            list.entries
                .iter()
                .filter_map(|(_, unique)| files.get(unique))
        };
        Ok(Status {
            messages: count(listed().count()),
            recent: count(listed().filter(|(sub, _)| *sub == Sub::New).count()),
            uidnext: list.uidnext,
            uidvalidity: list.uidvalidity,
            unseen: count(
                listed()
                    .filter(|(_, name)| {
                        !Flags::from_maildir(parse_name(name).map_or("", |p| p.flags)).seen
                    })
                    .count(),
            ),
        })
    }

    /// The folder's [`ChangeStamp`]: four `stat` calls, no directory listing.
    pub fn change_stamp(
        &self,
        account: &Account,
        folder: &str,
    ) -> Result<ChangeStamp, ImapStoreError> {
        let dir = folder_dir(&self.maildir(account)?, folder)?;
        Ok(ChangeStamp {
            new: mtime(&dir.join("new"))?,
            cur: mtime(&dir.join("cur"))?,
            uidlist: mtime(&dir.join(UIDLIST_FILE))?,
            keywords: mtime(&dir.join(KEYWORDS_FILE))?,
        })
    }

    /// Moves every message of `new/` to `cur/` (adding the empty `:2,` info); returns the
    /// unique names this call moved. A message another session moved first is not ours.
    fn take_new(&self, dir: &Path) -> Result<Vec<String>, ImapStoreError> {
        let entries = match fs::read_dir(dir.join("new")) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut moved = Vec::new();
        for entry in entries {
            let file_name = entry?.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            let Some(parsed) = parse_name(name) else {
                continue;
            };
            let target = if name.contains(":2,") {
                name.to_owned()
            } else {
                format!("{name}:2,")
            };
            match fs::rename(dir.join("new").join(name), dir.join("cur").join(&target)) {
                Ok(()) => moved.push(parsed.unique.to_owned()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !moved.is_empty() && self.fsync {
            super::sync_dir(&dir.join("cur"))?;
        }
        Ok(moved)
    }
}
