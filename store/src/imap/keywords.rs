//! The keywords file of a folder on disk ([`KEYWORDS_FILE`], format in
//! [`tidegate_core::keywords`]): read freely (it is only ever replaced whole, by
//! `rename`), grown under the folder's uidlist dotlock (RFC 3501 §2.3.2 keywords kept
//! as maildir letters `a`..`z`).

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::atomic::Ordering;

use tidegate_core::Account;
use tidegate_core::keywords::{KeywordMap, KeywordsError};

use super::{COUNTER, ImapMailboxes, ImapStoreError, KEYWORDS_FILE, UIDLIST_FILE};
use crate::lock::Dotlock;

/// The keywords file of `folder`: `None` when it is damaged (logged), an empty map when
/// it does not exist.
fn read_map(folder: &Path) -> io::Result<Option<KeywordMap>> {
    let bytes = match fs::read(folder.join(KEYWORDS_FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(KeywordMap::new())),
        Err(e) => return Err(e),
    };
    match KeywordMap::parse(&bytes) {
        Ok(map) => Ok(Some(map)),
        Err(e) => {
            log::warn!("{}: {e}; its keywords are not shown", folder.display());
            Ok(None)
        }
    }
}

/// The keywords of `folder` for a snapshot; a damaged file reads as no keywords (the
/// letters then show no names, and no keyword can be added until it is repaired).
pub(super) fn read_keywords(folder: &Path) -> io::Result<KeywordMap> {
    Ok(read_map(folder)?.unwrap_or_default())
}

impl ImapMailboxes {
    /// The keywords defined in `folder` (RFC 3501 §7.2.6 FLAGS), read without a lock.
    pub fn keywords(&self, account: &Account, folder: &str) -> Result<KeywordMap, ImapStoreError> {
        let dir = self.existing_folder(account, folder)?;
        Ok(read_keywords(&dir)?)
    }

    /// Gives each of `names` a letter in `folder` unless it has one (STORE, APPEND,
    /// COPY of keywords, RFC 3501 §6.4.6), and returns the folder's map. Names that fit
    /// no more (all 26 letters taken) or are not keyword atoms are left out: the caller
    /// finds them missing from the map. Under the uidlist dotlock the file is re-read,
    /// grown, written to a temporary file, synced (with `fsync`) and renamed into place,
    /// so every reader sees a whole file and a letter never changes its name. Must not
    /// be called while that lock is held.
    pub fn define_keywords(
        &self,
        account: &Account,
        folder: &str,
        names: &[&str],
    ) -> Result<KeywordMap, ImapStoreError> {
        let dir = self.existing_folder(account, folder)?;
        self.define_in(&dir, names)
    }

    /// [`Self::define_keywords`] for a folder directory.
    pub(super) fn define_in(
        &self,
        folder: &Path,
        names: &[&str],
    ) -> Result<KeywordMap, ImapStoreError> {
        let known = read_keywords(folder)?;
        if names.iter().all(|n| known.letter_of(n).is_some()) {
            return Ok(known);
        }
        let lock = Dotlock::acquire(&folder.join(UIDLIST_FILE), &self.lock)?;
        let result = (|| {
            let mut map = read_map(folder)?.ok_or(ImapStoreError::BadKeywords)?;
            let before = map.clone();
            for name in names {
                match map.add(name) {
                    Ok(_) | Err(KeywordsError::Full | KeywordsError::InvalidName) => {}
                    Err(KeywordsError::Corrupt { .. }) => return Err(ImapStoreError::BadKeywords),
                }
            }
            if map != before {
                self.write_keywords(folder, &map)?;
            }
            Ok(map)
        })();
        lock.release()?;
        result
    }

    /// Replaces the keywords file by a complete new one (write, fsync, rename).
    fn write_keywords(&self, folder: &Path, map: &KeywordMap) -> io::Result<()> {
        let temp = folder.join(format!(
            "{KEYWORDS_FILE}.tmp.{}.{}.{}",
            self.host,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(&map.render())?;
            if self.fsync {
                file.sync_data()?;
            }
            fs::rename(&temp, folder.join(KEYWORDS_FILE))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
}
