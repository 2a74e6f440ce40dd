//! The folder snapshot cache of `tidegate_store::imap::ImapMailboxes` on real maildirs:
//! a settled folder is served without a scan, and every change made by another store
//! instance on the same directory (another host on a shared `mailbox_path`) is seen at
//! the next SELECT, including changes within the same second as the cached scan.

use std::fs;
use std::path::PathBuf;
use std::thread;

use tidegate_store::MaildirStore;
use tidegate_store::imap::{FOLDER_CACHE_SETTLE, FolderCacheStats, ImapMailboxes, Snapshot};

mod imap_common;
use imap_common::{Fixture, account};

impl Fixture {
    /// A store instance as one host has it.
    fn host(&self, name: &str) -> ImapMailboxes {
        ImapMailboxes::new(&self.root, false, name)
    }

    fn inbox(&self) -> PathBuf {
        self.root.join("example.org").join("bob")
    }

    /// Delivers through the SMTP/LMTP delivery path of another host.
    fn deliver(&self, n: usize) {
        MaildirStore::new(&self.root, false, "mx2.test")
            .deliver(&[account()], message(n).as_bytes())
            .unwrap();
    }
}

fn message(n: usize) -> String {
    format!("Subject: message {n}\r\n\r\nbody {n}\r\n")
}

fn select(store: &ImapMailboxes) -> Snapshot {
    store.snapshot(&account(), "INBOX").unwrap()
}

fn uids(snapshot: &Snapshot) -> Vec<u32> {
    snapshot.messages.iter().map(|m| m.uid).collect()
}

/// Selects INBOX until the cache serves it: a scan that may still change the folder
/// (claim new messages, assign UIDs), a scan of the quiet folder, the settle time, a
/// confirming scan, then a hit. Returns the hit.
fn settle(store: &ImapMailboxes) -> Snapshot {
    select(store);
    let before = store.folder_cache_stats();
    let scanned = select(store);
    thread::sleep(FOLDER_CACHE_SETTLE);
    assert_eq!(select(store), scanned, "nothing changed meanwhile");
    let hit = select(store);
    let after = store.folder_cache_stats();
    assert_eq!(after.hits, before.hits + 1, "the third SELECT is a hit");
    assert_eq!(hit, scanned);
    hit
}

#[test]
fn a_settled_folder_is_served_from_the_cache() {
    let f = Fixture::new();
    let a = f.host("mx1.test");
    for n in 0..3 {
        f.deliver(n);
    }
    let first = select(&a);
    assert_eq!(uids(&first), [1, 2, 3]);
    assert!(first.messages.iter().all(|m| m.recent));
    let hit = settle(&a);
    // The hit reports what the scan found, no longer recent (another SELECT took them).
    assert!(hit.messages.iter().all(|m| !m.recent));
    for (cached, scanned) in hit.messages.iter().zip(&first.messages) {
        assert_eq!(
            (&cached.file, cached.size, cached.internal_date),
            (&scanned.file, scanned.size, scanned.internal_date)
        );
    }
    let read = a
        .read_all(&account(), "INBOX", &hit.messages[1].file, 1 << 20)
        .unwrap();
    assert_eq!(read, message(1).as_bytes());
    // Clones share the cache.
    let clone = a.clone();
    select(&clone);
    assert_eq!(a.folder_cache_stats().hits, 2);
}

#[test]
fn a_delivery_by_another_host_right_after_a_hit_is_seen() {
    let f = Fixture::new();
    let a = f.host("mx1.test");
    f.deliver(0);
    settle(&a);
    f.deliver(1);
    let seen = select(&a);
    assert_eq!(uids(&seen), [1, 2]);
    assert!(seen.messages[1].recent && !seen.messages[0].recent);
    // A second message within the same second (the same timestamp tick as the scan
    // that just ran): the cache has not trusted the new stamp yet.
    f.deliver(2);
    let seen = select(&a);
    assert_eq!(uids(&seen), [1, 2, 3]);
    assert!(seen.messages[2].recent);
    f.deliver(3);
    assert_eq!(uids(&select(&a)), [1, 2, 3, 4]);
}

#[test]
fn a_directory_mtime_put_back_does_not_hide_a_message() {
    let f = Fixture::new();
    let a = f.host("mx1.test");
    f.deliver(0);
    settle(&a);
    let cur = f.inbox().join("cur");
    let mtime = fs::metadata(&cur).unwrap().modified().unwrap();
    // Another tool drops a message into cur/ and restores the directory's mtime.
    fs::write(
        cur.join("1700000000.M1P1.other.test:2,S"),
        message(9).as_bytes(),
    )
    .unwrap();
    fs::File::open(&cur).unwrap().set_modified(mtime).unwrap();
    assert_eq!(fs::metadata(&cur).unwrap().modified().unwrap(), mtime);
    let seen = select(&a);
    assert_eq!(uids(&seen), [1, 2]);
    assert!(seen.messages[1].flags.seen);
}

#[test]
fn flags_expunges_and_appends_by_another_host_are_seen() {
    let f = Fixture::new();
    let a = f.host("mx1.test");
    let b = f.host("mx2.test");
    for n in 0..3 {
        f.deliver(n);
    }
    let hit = settle(&a);
    let acct = account();

    let mut flags = hit.messages[0].flags;
    flags.flagged = true;
    b.set_flags(&acct, "INBOX", &hit.messages[0].file, flags)
        .unwrap();
    let seen = select(&a);
    assert!(seen.messages[0].flags.flagged);
    assert_ne!(seen.messages[0].file, hit.messages[0].file, "renamed");
    // Its size and date came from the cache, the file name from the new listing.
    assert_eq!(seen.messages[0].size, hit.messages[0].size);
    assert_eq!(
        a.read_all(&acct, "INBOX", &seen.messages[0].file, 1 << 20)
            .unwrap(),
        message(0).as_bytes()
    );

    let expunged = b
        .expunge(&acct, "INBOX", &[seen.messages[1].file.clone()])
        .unwrap();
    assert_eq!(expunged, [2]);
    assert_eq!(uids(&select(&a)), [1, 3]);

    let appended = b
        .append(
            &acct,
            "INBOX",
            Default::default(),
            Some(1_600_000_000),
            message(7).as_bytes(),
        )
        .unwrap();
    let mut seen = select(&a);
    assert_eq!(uids(&seen), [1, 3, appended.uid]);
    assert_eq!(seen.messages[2].internal_date, 1_600_000_000);
    assert_eq!(seen.uidnext, appended.uid + 1);

    // Settled again after all that: served from the cache, with every change in it
    // (and nothing recent any more: this SELECT claimed the appended message).
    assert!(seen.messages[2].recent);
    seen.messages[2].recent = false;
    assert_eq!(settle(&a), seen);
    assert_eq!(a.status(&acct, "INBOX").unwrap().messages, 3);
}

#[test]
fn examine_hits_leave_new_messages_for_select() {
    let f = Fixture::new();
    let a = f.host("mx1.test");
    let acct = account();
    f.deliver(0);
    a.examine(&acct, "INBOX").unwrap(); // assigns the UID: the uidlist changes
    a.examine(&acct, "INBOX").unwrap();
    thread::sleep(FOLDER_CACHE_SETTLE);
    a.examine(&acct, "INBOX").unwrap();
    let hits = a.folder_cache_stats().hits;
    let examined = a.examine(&acct, "INBOX").unwrap();
    assert_eq!(a.folder_cache_stats().hits, hits + 1);
    assert!(examined.messages[0].file.0.starts_with("new/") && !examined.messages[0].recent);
    let status = a.status(&acct, "INBOX").unwrap();
    assert_eq!((status.messages, status.recent, status.unseen), (1, 1, 1));
    // The message still waits in new/: SELECT must not take it from the cache.
    let selected = select(&a);
    assert!(selected.messages[0].recent && selected.messages[0].file.0.starts_with("cur/"));
    assert_eq!(a.status(&acct, "INBOX").unwrap().recent, 0);
}

#[test]
fn a_zero_cap_scans_every_time() {
    let f = Fixture::new();
    let a = f.host("mx1.test").with_folder_cache(0);
    f.deliver(0);
    select(&a);
    thread::sleep(FOLDER_CACHE_SETTLE);
    select(&a);
    select(&a);
    assert_eq!(a.folder_cache_stats(), FolderCacheStats::default());
}

#[test]
fn a_keyword_defined_elsewhere_is_seen_by_a_cached_folder() {
    let f = Fixture::new();
    let a = f.host("mx1.test");
    let b = f.host("mx2.test");
    f.deliver(0);
    assert!(settle(&a).keywords.is_empty());
    // Another host defines a keyword without renaming any message file: only the
    // keywords file changes, and the cached snapshot must not hide it.
    b.define_keywords(&account(), "INBOX", &["$Label1"])
        .unwrap();
    let after = select(&a);
    assert_eq!(after.keywords.names().collect::<Vec<_>>(), ["$Label1"]);
}
