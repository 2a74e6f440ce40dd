//! The uidlist of a folder on disk: read, merged with the folder's files, and replaced
//! by rename, all under the folder's dotlock.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::atomic::Ordering;

use tidegate_core::maildir::parse_name;
use tidegate_core::uidlist::{UidList, new_uidvalidity};

use super::folder_cache::StampReading;
use super::{COUNTER, ImapMailboxes, ImapStoreError, Sub, UIDLIST_FILE, unix_now};
use crate::lock::Dotlock;

/// Extra listings of a folder while listed messages seem missing. A listing can miss a
/// file that another session renames at that moment (a flag change); a message missing
/// from every listing is really gone.
const RESCANS: usize = 3;

/// The files of a folder by unique name: where each is and its full file name.
pub(super) type Files = HashMap<String, (Sub, String)>;

/// What a uidlist file held.
enum Stored {
    Missing,
    /// Unreadable; the UIDVALIDITY it seemed to have, if any, so the new one is greater.
    Corrupt(Option<u32>),
    Valid(UidList),
}

fn read_list(folder: &Path) -> io::Result<Stored> {
    let bytes = match fs::read(folder.join(UIDLIST_FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stored::Missing),
        Err(e) => return Err(e),
    };
    Ok(match UidList::parse(&bytes) {
        Ok(list) => Stored::Valid(list),
        Err(e) => {
            log::warn!(
                "{}: {e}; rebuilding with a new UIDVALIDITY",
                folder.display()
            );
            Stored::Corrupt(salvage_uidvalidity(&bytes))
        }
    })
}

/// The `V` number of a damaged header line, if one can be read.
fn salvage_uidvalidity(bytes: &[u8]) -> Option<u32> {
    let line = bytes.split(|&b| b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    text.split(' ')
        .find_map(|w| w.strip_prefix('V'))
        .and_then(|v| v.parse().ok())
}

/// The message files in new/ and cur/ of `folder` by unique name (cur/ wins when a
/// message is seen in both, moving between them).
pub(super) fn scan(folder: &Path) -> io::Result<Files> {
    let mut files = Files::new();
    for sub in [Sub::New, Sub::Cur] {
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
            if let Some(parsed) = parse_name(name) {
                files.insert(parsed.unique.to_owned(), (sub, name.to_owned()));
            }
        }
    }
    Ok(files)
}

/// Finds a message by its unique name without listing a directory: `new/UNIQUE`, or
/// `cur/UNIQUE:2,FLAGS` for every combination of the standard flag letters (in the
/// maildir's alphabetical order). A listing can miss a file that is renamed while it
/// runs; a lookup by name cannot. Files with other letters (keyword letters, `P`) are
/// not found this way (2^31 names would be too many); for them the rescans must do.
pub(super) fn probe(folder: &Path, unique: &str) -> Option<(Sub, String)> {
    // A file renamed between two of the lookups is missed by one pass; a few passes
    // make that need several renames landing exactly in between.
    (0..PROBE_PASSES).find_map(|_| probe_once(folder, unique))
}

/// How many times [`probe`] looks for a file under all its names.
const PROBE_PASSES: usize = 8;

fn probe_once(folder: &Path, unique: &str) -> Option<(Sub, String)> {
    if fs::symlink_metadata(folder.join(Sub::New.name()).join(unique)).is_ok() {
        return Some((Sub::New, unique.to_owned()));
    }
    const LETTERS: [char; 5] = ['D', 'F', 'R', 'S', 'T'];
    let cur = folder.join(Sub::Cur.name());
    let bare = std::iter::once(unique.to_owned());
    let flagged = (0u8..32).map(|mask| {
        let letters: String = LETTERS
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, c)| *c)
            .collect();
        format!("{unique}:2,{letters}")
    });
    bare.chain(flagged)
        .find(|name| fs::symlink_metadata(cur.join(name)).is_ok())
        .map(|name| (Sub::Cur, name))
}

/// Starts the folder's numbering again under a new UIDVALIDITY, when its UIDs ran out
/// (RFC 3501 §2.3.1.1: UIDs may then be renumbered, with a new UIDVALIDITY).
fn renumber(list: &mut UidList, files: &Files) -> Result<(), ImapStoreError> {
    log::warn!("UIDs exhausted; renumbering under a new UIDVALIDITY");
    *list = UidList::new(new_uidvalidity(unix_now(), Some(list.uidvalidity)));
    list.merge(files.keys().map(String::as_str))?;
    Ok(())
}

impl ImapMailboxes {
    /// Runs `change` on the folder's uidlist under its lock and writes the list back if
    /// `change` says it changed it (or the list was missing or corrupt and was rebuilt
    /// under a new UIDVALIDITY; `change` is told so by its second argument).
    pub(super) fn with_uidlist<T>(
        &self,
        folder: &Path,
        change: impl FnOnce(&mut UidList, bool) -> Result<(T, bool), ImapStoreError>,
    ) -> Result<T, ImapStoreError> {
        let lock = Dotlock::acquire(&folder.join(UIDLIST_FILE), &self.lock)?;
        let (mut list, rebuilt) = match read_list(folder)? {
            Stored::Valid(list) => (list, false),
            Stored::Missing => (UidList::new(new_uidvalidity(unix_now(), None)), true),
            Stored::Corrupt(old) => (UidList::new(new_uidvalidity(unix_now(), old)), true),
        };
        let (value, changed) = change(&mut list, rebuilt)?;
        if changed || rebuilt {
            self.write_list(folder, &list)?;
        }
        lock.release()?;
        Ok(value)
    }

    /// Replaces the uidlist by a complete new file (write, fsync, rename).
    fn write_list(&self, folder: &Path, list: &UidList) -> io::Result<()> {
        let temp = folder.join(format!(
            "{UIDLIST_FILE}.tmp.{}.{}.{}",
            self.host,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(&list.render())?;
            if self.fsync {
                file.sync_data()?;
            }
            fs::rename(&temp, folder.join(UIDLIST_FILE))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Brings the uidlist in line with the folder's files: new files get UIDs in arrival
    /// order, vanished ones are dropped. While a listed message is missing from the
    /// directory listing the folder is listed again, up to [`RESCANS`] times, before it
    /// counts as gone (a rename by another session can hide it from one listing).
    /// Returns the list and the files.
    pub(super) fn sync(&self, folder: &Path) -> Result<(UidList, Files), ImapStoreError> {
        self.sync_then(folder, |list, files| Ok((list.clone(), files.clone())))
    }

    /// [`Self::sync`], then `then` on the result while the uidlist lock is still held:
    /// flag changes (which rename under the same lock) cannot move a file between the
    /// listing and what `then` does with it.
    pub(super) fn sync_then<T>(
        &self,
        folder: &Path,
        then: impl FnOnce(&UidList, &Files) -> Result<T, ImapStoreError>,
    ) -> Result<T, ImapStoreError> {
        self.sync_stamped(folder, false, |list, files, _| then(list, files))
    }

    /// [`Self::sync_then`], also handing `then` the folder's change stamp read just
    /// before the first listing when `stamp` is set (for the folder cache: a change
    /// after that reading is either in the listing or outdates the stamp).
    pub(super) fn sync_stamped<T>(
        &self,
        folder: &Path,
        stamp: bool,
        then: impl FnOnce(&UidList, &Files, Option<StampReading>) -> Result<T, ImapStoreError>,
    ) -> Result<T, ImapStoreError> {
        self.with_uidlist(folder, |list, _| {
            let reading = if stamp {
                Some(StampReading::take(folder)?)
            } else {
                None
            };
            let mut files = scan(folder)?;
            for _ in 0..RESCANS {
                let missed = list
                    .entries
                    .iter()
                    .any(|(_, unique)| !files.contains_key(unique));
                if !missed {
                    break;
                }
                for (unique, place) in scan(folder)? {
                    files.insert(unique, place);
                }
            }
            // Still missing after the rescans: look for the file under every name a
            // flag change can give it, so a message being renamed again and again is
            // never dropped from the list (which would give it a new UID later).
            let missing: Vec<String> = list
                .entries
                .iter()
                .filter(|(_, unique)| !files.contains_key(unique))
                .map(|(_, unique)| unique.clone())
                .collect();
            for unique in missing {
                if let Some(place) = probe(folder, &unique) {
                    files.insert(unique, place);
                }
            }
            let changed = match list.merge(files.keys().map(String::as_str)) {
                Ok(outcome) => outcome.changed(),
                Err(_) => {
                    renumber(list, &files)?;
                    true
                }
            };
            Ok((then(list, &files, reading)?, changed))
        })
    }

    /// Lists these unique names (files just added to the folder) and returns their UIDs
    /// in the same order; `None` for a name that cannot be listed.
    pub(super) fn add_uids(
        &self,
        folder: &Path,
        uniques: &[String],
    ) -> Result<(u32, Vec<Option<u32>>), ImapStoreError> {
        self.with_uidlist(folder, |list, rebuilt| {
            if rebuilt {
                // A new list: number the folder's other messages first, in arrival order.
                let files = scan(folder)?;
                list.merge(files.keys().map(String::as_str))?;
            }
            let before = (list.uidvalidity, list.uidnext);
            let uids = match list.add_all(uniques.iter().map(String::as_str)) {
                Ok(uids) => uids,
                Err(_) => {
                    renumber(list, &scan(folder)?)?;
                    list.add_all(uniques.iter().map(String::as_str))?
                }
            };
            Ok((
                (list.uidvalidity, uids),
                (list.uidvalidity, list.uidnext) != before,
            ))
        })
    }

    /// Drops these unique names from the uidlist; returns the UIDs they had.
    pub(super) fn remove_uids(
        &self,
        folder: &Path,
        uniques: &[String],
    ) -> Result<Vec<u32>, ImapStoreError> {
        self.with_uidlist(folder, |list, _| {
            let uids = list.remove_names(uniques.iter().map(String::as_str));
            let changed = !uids.is_empty();
            Ok((uids, changed))
        })
    }

    /// The folder's current uidlist (read under its lock, rebuilt if missing or corrupt).
    pub(super) fn current_list(&self, folder: &Path) -> Result<UidList, ImapStoreError> {
        self.with_uidlist(folder, |list, _| Ok((list.clone(), false)))
    }
}
