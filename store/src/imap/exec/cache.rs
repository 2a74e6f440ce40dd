//! The UID → message file map per mailbox: IMAP requests name messages by UID
//! (RFC 3501 §2.3.1.1), the maildir store by file ([`MessageRef`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tidegate_core::MessageRef;

use crate::imap::Snapshot;

/// Most mailboxes whose maps are kept; the least recently refreshed one is dropped
/// first. Each map is the mailbox's latest snapshot, usually shared with the store's
/// folder cache (a copy only after a flag change or expunge through this map).
pub const MAX_CACHED_MAILBOXES: usize = 1024;

/// (account, stored folder name).
type Key = (String, String);

struct Entry {
    /// When this map was last replaced (a counter, not a clock).
    refreshed: u64,
    /// The messages in UID order, looked up by binary search.
    snapshot: Arc<Snapshot>,
}

impl Entry {
    /// The message with this UID.
    fn slot(&mut self, uid: u32) -> Option<&mut crate::imap::MessageMeta> {
        let at = self
            .snapshot
            .messages
            .binary_search_by_key(&uid, |m| m.uid)
            .ok()?;
        Arc::make_mut(&mut self.snapshot).messages.get_mut(at)
    }
}

#[derive(Default)]
struct Inner {
    clock: u64,
    maps: HashMap<Key, Entry>,
}

/// UID maps of recently seen mailboxes, shared by the worker threads.
#[derive(Default)]
pub(super) struct UidCache {
    inner: Mutex<Inner>,
}

impl UidCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the maps inconsistent: every change is one
        // insert or remove.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the map of `key` with the messages of `snapshot`.
    pub(super) fn refresh(&self, account: &str, folder: &str, snapshot: &Arc<Snapshot>) {
        let snapshot = Arc::clone(snapshot);
        let mut inner = self.lock();
        inner.clock += 1;
        let refreshed = inner.clock;
        let key = (account.to_owned(), folder.to_owned());
        if !inner.maps.contains_key(&key) && inner.maps.len() >= MAX_CACHED_MAILBOXES {
            let oldest = inner
                .maps
                .iter()
                .min_by_key(|(_, entry)| entry.refreshed)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                inner.maps.remove(&oldest);
            }
        }
        inner.maps.insert(
            key,
            Entry {
                refreshed,
                snapshot,
            },
        );
    }

    /// The files of those `uids` the map knows, in the given order, and whether any
    /// UID was unknown.
    pub(super) fn lookup(
        &self,
        account: &str,
        folder: &str,
        uids: &[u32],
    ) -> (Vec<(u32, MessageRef)>, bool) {
        let inner = self.lock();
        let Some(entry) = inner.maps.get(&(account.to_owned(), folder.to_owned())) else {
            return (Vec::new(), !uids.is_empty());
        };
        let mut found = Vec::with_capacity(uids.len());
        let mut missed = false;
        let messages = &entry.snapshot.messages;
        for uid in uids {
            match messages.binary_search_by_key(uid, |m| m.uid) {
                Ok(at) => found.push((*uid, messages[at].file.clone())),
                Err(_) => missed = true,
            }
        }
        (found, missed)
    }

    /// Records the new file of a message after a flag change.
    pub(super) fn update(&self, account: &str, folder: &str, uid: u32, file: MessageRef) {
        let mut inner = self.lock();
        if let Some(entry) = inner.maps.get_mut(&(account.to_owned(), folder.to_owned()))
            && let Some(slot) = entry.slot(uid)
        {
            slot.file = file;
        }
    }

    /// Forgets messages that were expunged or moved away.
    pub(super) fn remove(&self, account: &str, folder: &str, uids: &[u32]) {
        let mut gone = uids.to_vec();
        gone.sort_unstable();
        let is_gone = |m: &crate::imap::MessageMeta| gone.binary_search(&m.uid).is_ok();
        let mut inner = self.lock();
        if let Some(entry) = inner.maps.get_mut(&(account.to_owned(), folder.to_owned()))
            && entry.snapshot.messages.iter().any(is_gone)
        {
            Arc::make_mut(&mut entry.snapshot)
                .messages
                .retain(|m| !is_gone(m));
        }
    }

    /// Forgets every map of an account (after DELETE or RENAME changed its folders).
    pub(super) fn forget_account(&self, account: &str) {
        self.lock().maps.retain(|(owner, _), _| owner != account);
    }

    /// How many mailboxes have a map.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().maps.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_mailbox_is_dropped_at_the_bound() {
        let cache = UidCache::default();
        let snapshot = Arc::new(Snapshot {
            uidvalidity: 1,
            uidnext: 2,
            messages: Vec::new(),
            keywords: Default::default(),
        });
        for n in 0..=MAX_CACHED_MAILBOXES {
            cache.refresh("a", &format!("f{n}"), &snapshot);
        }
        assert_eq!(cache.len(), MAX_CACHED_MAILBOXES);
        assert!(cache.lookup("a", "f0", &[1]).1);
        assert_eq!(cache.lookup("a", "f1", &[]), (Vec::new(), false));
    }
}
