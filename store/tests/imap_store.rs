//! The IMAP maildir store (`tidegate_store::imap`) on real files in temporary
//! directories: persistent UIDs, flags, append/copy/move/expunge, folders and
//! subscriptions, concurrency.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;

use tidegate_core::{Account, MessageRef};
use tidegate_store::MaildirStore;
use tidegate_store::imap::{Flags, ImapMailboxes, ImapStoreError, SpecialUse, UIDLIST_FILE};

mod imap_common;
use imap_common::{Fixture, account};

impl Fixture {
    fn store(&self) -> ImapMailboxes {
        ImapMailboxes::new(&self.root, true, "mx1.test")
    }

    fn maildir(&self) -> PathBuf {
        self.root.join("example.org").join("bob")
    }

    /// Delivers through the SMTP/LMTP delivery path.
    fn deliver(&self, body: &str) {
        MaildirStore::new(&self.root, false, "mx1.test")
            .deliver(&[account()], body.as_bytes())
            .unwrap();
    }
}

fn message(n: usize) -> String {
    format!("Subject: message {n}\r\n\r\nbody {n}\r\n")
}

fn uids(store: &ImapMailboxes, folder: &str) -> Vec<u32> {
    store
        .snapshot(&account(), folder)
        .unwrap()
        .messages
        .iter()
        .map(|m| m.uid)
        .collect()
}

fn read(store: &ImapMailboxes, folder: &str, file: &MessageRef) -> Vec<u8> {
    store.read_all(&account(), folder, file, 1 << 20).unwrap()
}

#[test]
fn a_new_account_gets_the_special_folders_subscribed() {
    let f = Fixture::new();
    let folders = f.store().list_folders(&account()).unwrap();
    let names: Vec<&str> = folders.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"]
    );
    assert!(folders.iter().all(|f| f.subscribed && !f.noselect));
    let sent = folders.iter().find(|f| f.name == "Sent").unwrap();
    assert_eq!(sent.special_use, Some(SpecialUse::Sent));
    assert_eq!(sent.attributes(), ["\\HasNoChildren", "\\Sent"]);
    assert_eq!(folders[0].attributes(), ["\\HasNoChildren"]);
    for dir in [".Sent", ".Drafts", ".Trash", ".Junk", ".Archive"] {
        for sub in ["tmp", "new", "cur"] {
            assert!(f.maildir().join(dir).join(sub).is_dir(), "{dir}/{sub}");
        }
        assert!(f.maildir().join(dir).join("maildirfolder").is_file());
    }
    assert_eq!(
        fs::read_to_string(f.maildir().join("subscriptions")).unwrap(),
        "INBOX\nSent\nDrafts\nTrash\nJunk\nArchive\n"
    );
}

#[test]
fn uids_persist_across_snapshots_and_restarts() {
    let f = Fixture::new();
    for n in 0..3 {
        f.deliver(&message(n));
    }
    let store = f.store();
    let first = store.snapshot(&account(), "INBOX").unwrap();
    assert_eq!(first.uidnext, 4);
    assert_eq!(
        first
            .messages
            .iter()
            .map(|m| (m.uid, m.recent))
            .collect::<Vec<_>>(),
        [(1, true), (2, true), (3, true)]
    );
    for (n, m) in first.messages.iter().enumerate() {
        assert!(
            m.file.0.starts_with("cur/") && m.file.0.ends_with(":2,"),
            "{}",
            m.file.0
        );
        assert_eq!(read(&store, "INBOX", &m.file), message(n).as_bytes());
        assert_eq!(m.size, message(n).len() as u64);
        assert_eq!(m.flags, Flags::default());
    }
    // Seen once: no longer recent; same UIDs.
    let second = store.snapshot(&account(), "inbox").unwrap();
    assert!(second.messages.iter().all(|m| !m.recent));
    assert_eq!(second.uidvalidity, first.uidvalidity);
    // A new store over the same root, as after a restart.
    let restarted = f.store();
    assert_eq!(uids(&restarted, "INBOX"), [1, 2, 3]);
    f.deliver(&message(3));
    let third = restarted.snapshot(&account(), "INBOX").unwrap();
    assert_eq!(third.uidvalidity, first.uidvalidity);
    assert_eq!(
        third.messages.last().map(|m| (m.uid, m.recent)),
        Some((4, true))
    );
    assert_eq!(third.uidnext, 5);
    // The uidlist on disk says the same.
    let text = fs::read_to_string(f.maildir().join(UIDLIST_FILE)).unwrap();
    assert!(
        text.starts_with(&format!("1 V{} N5\n1 ", first.uidvalidity)),
        "{text}"
    );
    assert_eq!(text.lines().count(), 5);
}

#[test]
fn expunged_uids_are_never_reused() {
    let f = Fixture::new();
    let store = f.store();
    for n in 0..3 {
        f.deliver(&message(n));
    }
    let snap = store.snapshot(&account(), "INBOX").unwrap();
    let last = snap.messages[2].file.clone();
    assert_eq!(
        store
            .expunge(&account(), "INBOX", std::slice::from_ref(&last))
            .unwrap(),
        [3]
    );
    // Expunging it again finds nothing.
    assert!(
        store
            .expunge(&account(), "INBOX", &[last])
            .unwrap()
            .is_empty()
    );
    f.deliver(&message(9));
    assert_eq!(uids(&store, "INBOX"), [1, 2, 4]);
    // A message deleted behind our back (another tool) is dropped, its UID not reused.
    let snap = store.snapshot(&account(), "INBOX").unwrap();
    let path = f.maildir().join(&snap.messages[0].file.0);
    fs::remove_file(path).unwrap();
    f.deliver(&message(10));
    assert_eq!(uids(&store, "INBOX"), [2, 4, 5]);
}

#[test]
fn a_corrupt_uidlist_is_rebuilt_with_a_new_uidvalidity() {
    let f = Fixture::new();
    let store = f.store();
    f.deliver(&message(0));
    f.deliver(&message(1));
    let before = store.snapshot(&account(), "INBOX").unwrap();
    store
        .expunge(&account(), "INBOX", &[before.messages[0].file.clone()])
        .unwrap();
    assert_eq!(uids(&store, "INBOX"), [2]);
    let list = f.maildir().join(UIDLIST_FILE);
    let text = fs::read_to_string(&list).unwrap();
    fs::write(&list, text.replace(" N3", " N1")).unwrap(); // UID 2 not below N
    let after = store.snapshot(&account(), "INBOX").unwrap();
    assert!(after.uidvalidity > before.uidvalidity);
    assert_eq!(
        after.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
        [1]
    );
    // Garbage, and a cut last line (which is fine).
    fs::write(&list, b"\x00garbage\n").unwrap();
    let again = store.snapshot(&account(), "INBOX").unwrap();
    assert!(again.uidvalidity > after.uidvalidity || again.uidvalidity >= 1);
    let text = fs::read_to_string(&list).unwrap();
    fs::write(&list, format!("{text}7 cut-sho")).unwrap();
    assert_eq!(store.snapshot(&account(), "INBOX").unwrap(), {
        let mut same = again.clone();
        same.messages.iter_mut().for_each(|m| m.recent = false);
        same
    });
}

#[test]
fn flags_are_renames_and_survive() {
    let f = Fixture::new();
    let store = f.store();
    f.deliver(&message(0));
    let snap = store.snapshot(&account(), "INBOX").unwrap();
    let old = snap.messages[0].file.clone();
    let flags = Flags {
        seen: true,
        flagged: true,
        ..Flags::default()
    };
    let new = store.set_flags(&account(), "INBOX", &old, flags).unwrap();
    assert!(new.0.ends_with(":2,FS"), "{}", new.0);
    // The stale reference still reads the message.
    assert_eq!(read(&store, "INBOX", &old), message(0).as_bytes());
    let (chunk, end) = store.read(&account(), "INBOX", &old, 9, 7).unwrap();
    assert_eq!((&chunk[..], end), (&b"message"[..], false));
    let (chunk, end) = store.read(&account(), "INBOX", &old, 22, 100).unwrap();
    assert_eq!((&chunk[..], end), (&b"body 0\r\n"[..], true));
    let f2 = f.store();
    let again = f2.snapshot(&account(), "INBOX").unwrap();
    assert_eq!(again.messages[0].uid, 1);
    assert_eq!(again.messages[0].flags, flags);
    assert_eq!(again.messages[0].file, new);
    // Foreign letters survive; clearing flags keeps the message.
    let path = f.maildir().join(&new.0);
    let with_p = f
        .maildir()
        .join("cur")
        .join(format!("{}P", new.0.trim_start_matches("cur/")));
    fs::rename(path, &with_p).unwrap();
    let cleared = store
        .set_flags(&account(), "INBOX", &new, Flags::default())
        .unwrap();
    assert!(cleared.0.ends_with(":2,P"), "{}", cleared.0);
    assert_eq!(uids(&store, "INBOX"), [1]);
    let status = store.status(&account(), "INBOX").unwrap();
    assert_eq!((status.messages, status.unseen, status.recent), (1, 1, 0));
}

#[test]
fn append_stores_bytes_date_and_flags() {
    let f = Fixture::new();
    let store = f.store();
    f.deliver(&message(0));
    let body = b"Subject: appended\r\n\r\nbinary \x00\xff and a bare\nLF\r\n".to_vec();
    let seen = Flags {
        seen: true,
        ..Flags::default()
    };
    let appended = store
        .append(&account(), "Sent", seen, Some(1_000_000_000), &body[..])
        .unwrap();
    assert_eq!(appended.uid, 1);
    assert!(appended.file.0.starts_with("cur/") && appended.file.0.ends_with(":2,S"));
    let snap = store.snapshot(&account(), "Sent").unwrap();
    assert_eq!(snap.uidvalidity, appended.uidvalidity);
    let m = &snap.messages[0];
    assert_eq!(
        (m.uid, m.internal_date, m.flags, m.recent),
        (1, 1_000_000_000, seen, false)
    );
    assert_eq!(m.size, body.len() as u64);
    assert_eq!(read(&store, "Sent", &m.file), body);
    // Without flags it arrives in new/ and is recent for the next SELECT.
    let second = store
        .append(&account(), "INBOX", Flags::default(), None, &b"x\r\n"[..])
        .unwrap();
    assert_eq!(second.uid, 2, "INBOX had UID 1 already");
    let snap = store.snapshot(&account(), "INBOX").unwrap();
    assert_eq!(
        snap.messages
            .iter()
            .map(|m| (m.uid, m.recent))
            .collect::<Vec<_>>(),
        [(1, true), (2, true)]
    );
    assert!(
        fs::read_dir(f.maildir().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "tmp/ emptied"
    );
    assert!(matches!(
        store.append(&account(), "Nope", seen, None, &b"x"[..]),
        Err(ImapStoreError::NoSuchFolder)
    ));
}

#[test]
fn copy_and_move_keep_content_byte_exact() {
    let f = Fixture::new();
    let store = f.store();
    for n in 0..3 {
        f.deliver(&message(n));
    }
    let snap = store.snapshot(&account(), "INBOX").unwrap();
    let answered = Flags {
        answered: true,
        ..Flags::default()
    };
    let first = store
        .set_flags(&account(), "INBOX", &snap.messages[0].file, answered)
        .unwrap();
    let files = vec![first.clone(), snap.messages[2].file.clone()];
    let copied = store.copy(&account(), "INBOX", &files, "Archive").unwrap();
    let pairs: Vec<(u32, u32)> = copied
        .copied
        .iter()
        .map(|c| (c.from_uid, c.to_uid))
        .collect();
    assert_eq!(pairs, [(1, 1), (3, 2)]);
    let archive = store.snapshot(&account(), "Archive").unwrap();
    assert_eq!(archive.uidvalidity, copied.uidvalidity);
    assert_eq!(archive.messages.len(), 2);
    assert_eq!(archive.messages[0].flags, answered);
    assert_eq!(
        read(&store, "Archive", &archive.messages[0].file),
        message(0).as_bytes()
    );
    assert_eq!(
        read(&store, "Archive", &archive.messages[1].file),
        message(2).as_bytes()
    );
    assert_eq!(
        uids(&store, "INBOX"),
        [1, 2, 3],
        "copy leaves the source alone"
    );
    // Changing the copy's flags does not touch the original (separate names).
    store
        .set_flags(
            &account(),
            "Archive",
            &archive.messages[0].file,
            Flags::default(),
        )
        .unwrap();
    assert_eq!(
        store.snapshot(&account(), "INBOX").unwrap().messages[0].flags,
        answered
    );

    let moved = store
        .move_messages(
            &account(),
            "INBOX",
            &[snap.messages[1].file.clone()],
            "Trash",
        )
        .unwrap();
    assert_eq!(
        moved
            .copied
            .iter()
            .map(|c| (c.from_uid, c.to_uid))
            .collect::<Vec<_>>(),
        [(2, 1)]
    );
    assert_eq!(uids(&store, "INBOX"), [1, 3]);
    let trash = store.snapshot(&account(), "Trash").unwrap();
    assert_eq!(
        read(&store, "Trash", &trash.messages[0].file),
        message(1).as_bytes()
    );
    // A message that is gone is skipped.
    let gone = store
        .copy(
            &account(),
            "INBOX",
            &[snap.messages[1].file.clone()],
            "Archive",
        )
        .unwrap();
    assert!(gone.copied.is_empty());
}

#[test]
fn folder_create_rename_delete_rules() {
    let f = Fixture::new();
    let store = f.store();
    let a = account();
    store.create_folder(&a, "Projects/2026").unwrap();
    store.create_folder(&a, "Work/").unwrap();
    assert!(matches!(
        store.create_folder(&a, "Work"),
        Err(ImapStoreError::AlreadyExists)
    ));
    assert!(matches!(
        store.create_folder(&a, "inbox"),
        Err(ImapStoreError::AlreadyExists)
    ));
    for bad in ["a.b", "/x", "x//y", "*", "a%", ""] {
        assert!(
            matches!(
                store.create_folder(&a, bad),
                Err(ImapStoreError::InvalidName)
            ),
            "{bad}"
        );
    }
    assert!(f.maildir().join(".Projects.2026").join("cur").is_dir());
    let list = store.list_folders(&a).unwrap();
    let projects = list.iter().find(|f| f.name == "Projects").unwrap();
    assert!(projects.noselect && projects.has_children && !projects.subscribed);
    assert_eq!(projects.attributes(), ["\\Noselect", "\\HasChildren"]);
    assert!(
        !list
            .iter()
            .find(|f| f.name == "Projects/2026")
            .unwrap()
            .noselect
    );
    // DELETE of a \Noselect level with children is an error; of a folder, its
    // children stay.
    assert!(matches!(
        store.delete_folder(&a, "Projects"),
        Err(ImapStoreError::NotAllowed)
    ));
    assert!(matches!(
        store.delete_folder(&a, "INBOX"),
        Err(ImapStoreError::NotAllowed)
    ));
    assert!(matches!(
        store.delete_folder(&a, "Nope"),
        Err(ImapStoreError::NoSuchFolder)
    ));
    store.create_folder(&a, "Work/Old").unwrap();
    store
        .append(&a, "Work", Flags::default(), None, &b"w\r\n"[..])
        .unwrap();
    store.delete_folder(&a, "Work").unwrap();
    let list = store.list_folders(&a).unwrap();
    assert!(list.iter().find(|f| f.name == "Work").unwrap().noselect);
    assert!(matches!(
        store.snapshot(&a, "Work"),
        Err(ImapStoreError::NoSuchFolder)
    ));
    assert!(uids(&store, "Work/Old").is_empty());
    // RENAME takes the children along.
    store
        .append(&a, "Projects/2026", Flags::default(), None, &b"p\r\n"[..])
        .unwrap();
    store.rename_folder(&a, "Projects", "Done").unwrap();
    assert_eq!(uids(&store, "Done/2026"), [1]);
    assert!(matches!(
        store.snapshot(&a, "Projects/2026"),
        Err(ImapStoreError::NoSuchFolder)
    ));
    assert!(matches!(
        store.rename_folder(&a, "Done", "Sent"),
        Err(ImapStoreError::AlreadyExists)
    ));
    assert!(matches!(
        store.rename_folder(&a, "Gone", "New"),
        Err(ImapStoreError::NoSuchFolder)
    ));
    // A child's new name taken: nothing moves.
    store.create_folder(&a, "Next/2026").unwrap();
    assert!(matches!(
        store.rename_folder(&a, "Done", "Next"),
        Err(ImapStoreError::AlreadyExists)
    ));
    assert_eq!(uids(&store, "Done/2026"), [1]);
    // RENAME INBOX moves its messages into the new folder; INBOX stays, empty.
    f.deliver(&message(0));
    f.deliver(&message(1));
    assert_eq!(uids(&store, "INBOX"), [1, 2]);
    store.rename_folder(&a, "INBOX", "Old Inbox").unwrap();
    assert!(uids(&store, "INBOX").is_empty());
    let old = store.snapshot(&a, "Old Inbox").unwrap();
    assert_eq!(old.messages.len(), 2);
    assert_eq!(
        read(&store, "Old Inbox", &old.messages[1].file),
        message(1).as_bytes()
    );
    // Subscriptions are names, existing or not.
    store.subscribe(&a, "Done/2026").unwrap();
    store.subscribe(&a, "Done/2026").unwrap();
    store.unsubscribe(&a, "Trash").unwrap();
    store.subscribe(&a, "Later").unwrap();
    assert_eq!(
        store.subscriptions(&a).unwrap(),
        [
            "INBOX",
            "Sent",
            "Drafts",
            "Junk",
            "Archive",
            "Done/2026",
            "Later"
        ]
    );
}

#[test]
fn concurrent_appends_and_snapshots_never_share_a_uid() {
    let f = Fixture::new();
    let root: &Path = &f.root;
    f.store().list_folders(&account()).unwrap();
    let appended: Vec<Vec<u32>> = thread::scope(|scope| {
        let writers: Vec<_> = (0..3)
            .map(|t| {
                scope.spawn(move || {
                    let store = ImapMailboxes::new(root, false, "mx1.test");
                    (0..40)
                        .map(|n| {
                            let body = message(t * 100 + n);
                            store
                                .append(
                                    &account(),
                                    "INBOX",
                                    Flags::default(),
                                    None,
                                    body.as_bytes(),
                                )
                                .unwrap()
                                .uid
                        })
                        .collect()
                })
            })
            .collect();
        let reader = scope.spawn(move || {
            let store = ImapMailboxes::new(root, false, "mx2.test");
            for _ in 0..30 {
                let snap = store.snapshot(&account(), "INBOX").unwrap();
                let uids: Vec<u32> = snap.messages.iter().map(|m| m.uid).collect();
                assert!(uids.windows(2).all(|w| w[0] < w[1]), "{uids:?}");
            }
        });
        reader.join().unwrap();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let all: Vec<u32> = appended.concat();
    let distinct: HashSet<u32> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 120, "a UID was given twice");
    let snap = f.store().snapshot(&account(), "INBOX").unwrap();
    assert_eq!(snap.messages.len(), 120, "a message was lost");
    let listed: HashSet<u32> = snap.messages.iter().map(|m| m.uid).collect();
    assert_eq!(listed, distinct);
    assert_eq!(snap.uidnext, 121);
}

#[test]
fn status_and_change_stamp() {
    let f = Fixture::new();
    let store = f.store();
    let a = account();
    let empty = store.status(&a, "INBOX").unwrap();
    assert_eq!(
        (empty.messages, empty.recent, empty.unseen, empty.uidnext),
        (0, 0, 0, 1)
    );
    let stamp = store.change_stamp(&a, "INBOX").unwrap();
    assert_eq!(store.change_stamp(&a, "INBOX").unwrap(), stamp);
    std::thread::sleep(std::time::Duration::from_millis(20));
    f.deliver(&message(0));
    let after = store.change_stamp(&a, "INBOX").unwrap();
    assert_ne!(after, stamp);
    let status = store.status(&a, "INBOX").unwrap();
    assert_eq!(
        (
            status.messages,
            status.recent,
            status.unseen,
            status.uidnext
        ),
        (1, 1, 1, 2)
    );
    assert_eq!(status.uidvalidity, empty.uidvalidity);
    // Neither STATUS nor EXAMINE took the message out of new/: SELECT sees it recent.
    let examined = store.examine(&a, "INBOX").unwrap();
    assert_eq!(examined.messages.len(), 1);
    assert!(!examined.messages[0].recent && examined.messages[0].file.0.starts_with("new/"));
    assert!(store.snapshot(&a, "INBOX").unwrap().messages[0].recent);
    assert_eq!(store.status(&a, "INBOX").unwrap().recent, 0);
    assert!(matches!(
        store.status(&a, "Nope"),
        Err(ImapStoreError::NoSuchFolder)
    ));
    assert!(matches!(
        store.status(&Account("nobody".into()), "INBOX"),
        Err(ImapStoreError::InvalidAccount)
    ));
}

/// Set in the child process of [`two_processes_append_to_one_folder`]: the root.
const CHILD_ROOT: &str = "TIDEGATE_IMAP_STORE_CHILD_ROOT";

/// The child's half: appends 40 messages, printing their UIDs.
#[test]
#[ignore = "run as a child process by two_processes_append_to_one_folder"]
fn child_appends() {
    let Ok(root) = std::env::var(CHILD_ROOT) else {
        return;
    };
    let store = ImapMailboxes::new(&root, false, "mx2.test");
    for n in 0..40 {
        let uid = store
            .append(
                &account(),
                "INBOX",
                Flags::default(),
                None,
                message(1000 + n).as_bytes(),
            )
            .unwrap()
            .uid;
        println!("uid {uid}");
    }
}

#[test]
fn two_processes_append_to_one_folder() {
    let f = Fixture::new();
    f.store().list_folders(&account()).unwrap();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_appends",
            "--ignored",
            "--nocapture",
            "--quiet",
        ])
        .env(CHILD_ROOT, &f.root)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let store = f.store();
    let mut uids_here = Vec::new();
    for n in 0..40 {
        f.deliver(&message(n));
        uids_here.push(
            store
                .append(
                    &account(),
                    "INBOX",
                    Flags::default(),
                    None,
                    message(n).as_bytes(),
                )
                .unwrap()
                .uid,
        );
        let snap = store.snapshot(&account(), "INBOX").unwrap();
        assert!(snap.messages.windows(2).all(|w| w[0].uid < w[1].uid));
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let child_uids: Vec<u32> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("uid "))
        .map(|u| u.parse().unwrap())
        .collect();
    assert_eq!(child_uids.len(), 40);
    let snap = store.snapshot(&account(), "INBOX").unwrap();
    assert_eq!(snap.messages.len(), 120, "40 delivered, 40 + 40 appended");
    let listed: HashSet<u32> = snap.messages.iter().map(|m| m.uid).collect();
    let appended: HashSet<u32> = uids_here.iter().chain(&child_uids).copied().collect();
    assert_eq!(appended.len(), 80, "a UID was given twice");
    assert!(appended.is_subset(&listed));
    // Every appended message reads back as written.
    let contents: HashSet<Vec<u8>> = snap
        .messages
        .iter()
        .map(|m| read(&store, "INBOX", &m.file))
        .collect();
    assert!(contents.contains(message(1039).as_bytes()));
}

#[test]
fn flag_changes_during_snapshots_never_look_like_expunges() {
    let f = Fixture::new();
    for n in 0..50 {
        f.deliver(&message(n));
    }
    let store = f.store();
    let files: Vec<MessageRef> = store
        .snapshot(&account(), "INBOX")
        .unwrap()
        .messages
        .into_iter()
        .map(|m| m.file)
        .collect();
    let expected: Vec<u32> = (1..=50).collect();
    thread::scope(|scope| {
        let flipper = scope.spawn(|| {
            let store = f.store();
            let mut files = files.clone();
            for round in 0..20 {
                let flags = Flags {
                    seen: round % 2 == 0,
                    ..Flags::default()
                };
                for file in &mut files {
                    *file = store.set_flags(&account(), "INBOX", file, flags).unwrap();
                }
            }
        });
        let store = f.store();
        while !flipper.is_finished() {
            assert_eq!(uids(&store, "INBOX"), expected);
        }
        flipper.join().unwrap();
    });
    let last = store.snapshot(&account(), "INBOX").unwrap();
    assert!(
        last.messages.iter().all(|m| !m.flags.seen),
        "round 19 cleared \\Seen"
    );
}

#[test]
fn exhausted_uids_renumber_under_a_new_uidvalidity() {
    let f = Fixture::new();
    let store = f.store();
    f.deliver(&message(0));
    let before = store.snapshot(&account(), "INBOX").unwrap();
    let list = f.maildir().join(UIDLIST_FILE);
    let text = fs::read_to_string(&list).unwrap();
    fs::write(&list, text.replace(" N2\n", " N4294967295\n")).unwrap();
    f.deliver(&message(1));
    let after = store.snapshot(&account(), "INBOX").unwrap();
    assert!(after.uidvalidity > before.uidvalidity);
    assert_eq!(
        after.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
        [1, 2]
    );
    fs::write(
        &list,
        fs::read_to_string(&list)
            .unwrap()
            .replace(" N3\n", " N4294967295\n"),
    )
    .unwrap();
    let appended = store
        .append(&account(), "INBOX", Flags::default(), None, &b"x\r\n"[..])
        .unwrap();
    assert!(appended.uidvalidity > after.uidvalidity);
    assert_eq!(appended.uid, 3);
}
