//! POP3 UPDATE state (RFC 1939 §6) on a maildir: deletions are unlinks, retrieved
//! messages move from new/ to cur/ with the Seen flag (`:2,S`). Each change is one
//! atomic rename or unlink, and a message another session moved meanwhile is followed
//! by its unique name.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;

use tidegate_core::maildir::with_flag;
use tidegate_core::{Account, MessageRef};

use super::{
    MaildirStore, StoreError, Sub, find_by_unique, make_dir, split_ref, sync_dir, unique_of,
};

impl MaildirStore {
    /// Applies a POP3 UPDATE state (RFC 1939 §6): unlinks `delete` (already gone is
    /// fine) and moves `seen` from new/ to cur/ with the `S` flag (`:2,S`), following
    /// messages another session moved. With `fsync`, new/ and cur/ are synced afterwards.
    pub fn commit_pop3(
        &self,
        account: &Account,
        delete: &[MessageRef],
        seen: &[MessageRef],
    ) -> Result<(), StoreError> {
        let maildir = self.mailbox_dir(account)?;
        let mut deleted = HashSet::new();
        for file in delete {
            let Some((sub, name)) = split_ref(file) else {
                log::warn!("commit: ignoring invalid message reference {:?}", file.0);
                continue;
            };
            deleted.insert(unique_of(name));
            delete_message(&maildir, sub, name)?;
        }
        for file in seen {
            let Some((sub, name)) = split_ref(file) else {
                log::warn!("commit: ignoring invalid message reference {:?}", file.0);
                continue;
            };
            if deleted.contains(unique_of(name)) {
                continue;
            }
            mark_seen(&maildir, sub, name)?;
        }
        if self.fsync && (!delete.is_empty() || !seen.is_empty()) {
            for sub in [Sub::New, Sub::Cur] {
                match sync_dir(&maildir.join(sub.name())) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Unlinks a message wherever it is now; one already gone is fine.
fn delete_message(maildir: &Path, sub: Sub, name: &str) -> io::Result<()> {
    let mut current = (sub, name.to_owned());
    // Each retry follows one more move by another session.
    for _ in 0..3 {
        let (sub, name) = &current;
        match fs::remove_file(maildir.join(sub.name()).join(name)) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match find_by_unique(maildir, unique_of(name))? {
                    Some(found) => current = found,
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Renames a message to `cur/<name>:2,…S`; a message that vanished meanwhile is skipped.
fn mark_seen(maildir: &Path, sub: Sub, name: &str) -> io::Result<()> {
    let mut current = (sub, name.to_owned());
    for _ in 0..3 {
        let (sub, name) = &current;
        let target = with_flag(name, 'S');
        if *sub == Sub::Cur && target == *name {
            return Ok(());
        }
        let cur = maildir.join("cur");
        make_dir(&cur)?;
        match fs::rename(maildir.join(sub.name()).join(name), cur.join(&target)) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match find_by_unique(maildir, unique_of(name))? {
                    Some(found) => current = found,
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
