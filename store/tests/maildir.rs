//! Maildir store against real files: delivery, listing, reading, POP3 commit.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tidegate_core::{Account, MessageRef};
use tidegate_store::maildir::{MAX_CHUNK, MaildirStore, StoreError};

fn account(address: &str) -> Account {
    Account(address.to_owned())
}

fn setup() -> (tempfile::TempDir, MaildirStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = MaildirStore::new(dir.path(), true, "mx1.test");
    (dir, store)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn read_all(store: &MaildirStore, who: &Account, file: &MessageRef, chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let (bytes, end) = store
            .read_chunk(who, file, out.len() as u64, chunk)
            .unwrap();
        assert!(bytes.len() <= chunk);
        out.extend_from_slice(&bytes);
        if end {
            return out;
        }
        assert!(!bytes.is_empty(), "an empty chunk must end the message");
    }
}

#[test]
fn delivery_converts_lf_to_crlf_and_records_the_size() {
    let (dir, store) = setup();
    let alice = account("alice@Example.com");
    let name = store
        .deliver(
            std::slice::from_ref(&alice),
            &b"Subject: hi\n\nline one\r\nline two\n"[..],
        )
        .unwrap();
    let expected = b"Subject: hi\r\n\r\nline one\r\nline two\r\n";
    assert!(name.ends_with(&format!(",S={}", expected.len())), "{name}");
    assert!(name.contains(".mx1.test,"), "{name}");
    let maildir = dir.path().join("example.com/alice");
    assert_eq!(fs::read(maildir.join("new").join(&name)).unwrap(), expected);
    assert!(
        names_in(&maildir.join("tmp")).is_empty(),
        "tmp/ is cleaned up"
    );
    assert!(names_in(&maildir.join("cur")).is_empty());
    let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(maildir.join("new").join(&name)), 0o600);
    for sub in ["tmp", "new", "cur"] {
        assert_eq!(mode(maildir.join(sub)), 0o700, "{sub}");
    }

    let listing = store.list(&alice).unwrap();
    assert_eq!(listing.len(), 1);
    assert_eq!(listing[0].size, expected.len() as u64);
    assert_eq!(listing[0].file.0, format!("new/{name}"));
    assert_eq!(listing[0].uid, name.split(',').next().unwrap());
}

#[test]
fn large_delivery_streams_and_converts_across_buffers() {
    let (_dir, store) = setup();
    let bob = account("bob@example.com");
    let line = "x".repeat(999) + "\n";
    let input = line.repeat(300); // 300 KB, several read buffers
    let name = store
        .deliver(std::slice::from_ref(&bob), input.as_bytes())
        .unwrap();
    let want = input.replace('\n', "\r\n");
    assert!(name.ends_with(&format!(",S={}", want.len())));
    let listing = store.list(&bob).unwrap();
    assert_eq!(
        read_all(&store, &bob, &listing[0].file, 7000),
        want.as_bytes()
    );
}

#[test]
fn concurrent_deliveries_never_collide() {
    let (dir, store) = setup();
    let names: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let store = &store;
                s.spawn(move || {
                    (0..25)
                        .map(|i| {
                            let body = format!("thread {t} message {i}\n");
                            store
                                .deliver(&[account("c@x.org")], body.as_bytes())
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let unique: HashSet<_> = names.iter().collect();
    assert_eq!(unique.len(), 100);
    assert_eq!(names_in(&dir.path().join("x.org/c/new")).len(), 100);
    assert_eq!(store.list(&account("c@x.org")).unwrap().len(), 100);
}

#[test]
fn multi_recipient_delivery_links_one_file() {
    let (dir, store) = setup();
    let rcpts = [account("a@x.org"), account("b@y.org"), account("a@x.org")];
    let name = store.deliver(&rcpts, &b"hello\n"[..]).unwrap();
    let a = dir.path().join("x.org/a/new").join(&name);
    let b = dir.path().join("y.org/b/new").join(&name);
    assert_eq!(fs::read(&a).unwrap(), b"hello\r\n");
    assert_eq!(
        fs::metadata(&a).unwrap().ino(),
        fs::metadata(&b).unwrap().ino()
    );
    assert_eq!(fs::metadata(&a).unwrap().nlink(), 2, "tmp file removed");
    assert!(matches!(
        store.deliver(&[], &b"x"[..]),
        Err(StoreError::InvalidAccount)
    ));
    assert!(matches!(
        store.deliver(&[account("ok@x.org"), account("../evil@x.org")], &b"x"[..]),
        Err(StoreError::InvalidAccount)
    ));
}

/// A directory on another filesystem than the temp dir, if this machine has one.
fn other_filesystem(near: &Path) -> Option<tempfile::TempDir> {
    let shm = tempfile::tempdir_in("/dev/shm").ok()?;
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    (dev(shm.path()) != dev(near)).then_some(shm)
}

#[test]
fn cross_device_recipients_get_a_copy_and_failures_roll_back() {
    let (dir, store) = setup();
    let Some(other) = other_filesystem(dir.path()) else {
        eprintln!("skipped: no second filesystem");
        return;
    };
    // y.org lives on the other filesystem: link(2) fails with EXDEV, a copy is made.
    std::os::unix::fs::symlink(other.path(), dir.path().join("y.org")).unwrap();
    let name = store
        .deliver(&[account("a@x.org"), account("b@y.org")], &b"hi\n"[..])
        .unwrap();
    assert_eq!(
        fs::read(other.path().join("b/new").join(&name)).unwrap(),
        b"hi\r\n"
    );
    assert!(names_in(&other.path().join("b/tmp")).is_empty());

    // z.org's new/ is on the other filesystem but its tmp/ is not: the copy cannot be
    // renamed into new/, so the whole delivery fails and a@x.org's link is removed.
    let z = dir.path().join("z.org/c");
    fs::create_dir_all(&z).unwrap();
    fs::create_dir(other.path().join("znew")).unwrap();
    std::os::unix::fs::symlink(other.path().join("znew"), z.join("new")).unwrap();
    let before = names_in(&dir.path().join("x.org/a/new"));
    let result = store.deliver(&[account("a@x.org"), account("c@z.org")], &b"no\n"[..]);
    assert!(matches!(result, Err(StoreError::Io(_))), "{result:?}");
    assert_eq!(names_in(&dir.path().join("x.org/a/new")), before);
    assert!(names_in(&dir.path().join("x.org/a/tmp")).is_empty());
    assert!(names_in(&z.join("tmp")).is_empty());
}

#[test]
fn listing_is_oldest_first_with_sizes_and_skips_non_messages() {
    let (dir, store) = setup();
    let who = account("l@x.org");
    assert!(
        store.list(&who).unwrap().is_empty(),
        "missing maildir = empty"
    );
    let maildir = dir.path().join("x.org/l");
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let put = |rel: &str, body: &[u8]| fs::write(maildir.join(rel), body).unwrap();
    put("cur/200.M1P1Q1.h,S=5:2,S", b"12345");
    put("new/100.M1P1Q1.h,S=3", b"abc");
    put("new/1000.M1P1Q1.h", b"no size field");
    put("cur/200.M0P1Q1.h:2,", b"xy");
    put("new/.hidden", b"dot file");
    put("tmp/50.M1P1Q1.h", b"in tmp/");
    fs::create_dir(maildir.join("new/99.dir")).unwrap();
    let listing = store.list(&who).unwrap();
    let files: Vec<&str> = listing.iter().map(|m| m.file.0.as_str()).collect();
    assert_eq!(
        files,
        [
            "new/100.M1P1Q1.h,S=3",
            "cur/200.M0P1Q1.h:2,",
            "cur/200.M1P1Q1.h,S=5:2,S",
            "new/1000.M1P1Q1.h"
        ]
    );
    let sizes: Vec<u64> = listing.iter().map(|m| m.size).collect();
    assert_eq!(sizes, [3, 2, 5, 13]);
    assert_eq!(listing[2].uid, "200.M1P1Q1.h");
}

#[test]
fn read_chunk_pages_through_a_message() {
    let (_dir, store) = setup();
    let who = account("r@x.org");
    let body: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    store
        .deliver(std::slice::from_ref(&who), &body[..])
        .unwrap();
    let file = store.list(&who).unwrap()[0].file.clone();
    for chunk in [1, 999, 1000, 9_999, 10_000, 10_001, usize::MAX] {
        assert_eq!(read_all(&store, &who, &file, chunk), body, "chunk {chunk}");
    }
    let (bytes, end) = store.read_chunk(&who, &file, 9_000, 1000).unwrap();
    assert_eq!(
        (bytes.len(), end),
        (1000, true),
        "exact fit ends the message"
    );
    let (bytes, end) = store.read_chunk(&who, &file, 50_000, 10).unwrap();
    assert!(bytes.is_empty() && end, "past the end");
    let (bytes, _) = store.read_chunk(&who, &file, 0, usize::MAX).unwrap();
    assert!(bytes.len() <= MAX_CHUNK);
}

#[test]
fn a_message_moved_after_listing_is_still_read_and_a_deleted_one_is_gone() {
    let (dir, store) = setup();
    let who = account("m@x.org");
    let name = store
        .deliver(std::slice::from_ref(&who), &b"moved\n"[..])
        .unwrap();
    let listing = store.list(&who).unwrap();
    let maildir = dir.path().join("x.org/m");
    // Another session retrieved it: new/ -> cur/ with flags.
    fs::rename(
        maildir.join("new").join(&name),
        maildir.join("cur").join(format!("{name}:2,RS")),
    )
    .unwrap();
    let (bytes, end) = store.read_chunk(&who, &listing[0].file, 0, 100).unwrap();
    assert_eq!((&bytes[..], end), (&b"moved\r\n"[..], true));

    fs::remove_file(maildir.join("cur").join(format!("{name}:2,RS"))).unwrap();
    assert!(matches!(
        store.read_chunk(&who, &listing[0].file, 0, 100),
        Err(StoreError::Gone)
    ));
    for bad in ["tmp/x", "new/../../etc/passwd", "cur/.x", ""] {
        let result = store.read_chunk(&who, &MessageRef(bad.into()), 0, 10);
        assert!(matches!(result, Err(StoreError::Gone)), "{bad}");
    }
}

#[test]
fn commit_deletes_and_marks_seen() {
    let (dir, store) = setup();
    let who = account("p@x.org");
    let names: Vec<String> = (0..4)
        .map(|i| {
            store
                .deliver(std::slice::from_ref(&who), format!("m{i}\n").as_bytes())
                .unwrap()
        })
        .collect();
    let listing = store.list(&who).unwrap();
    let maildir = dir.path().join("x.org/p");
    // Message 3 was moved by another session meanwhile; message 1 already deleted.
    fs::rename(
        maildir.join("new").join(&names[3]),
        maildir.join("cur").join(format!("{}:2,F", names[3])),
    )
    .unwrap();
    fs::remove_file(maildir.join("new").join(&names[1])).unwrap();
    let files: Vec<MessageRef> = listing.iter().map(|m| m.file.clone()).collect();
    store
        .commit_pop3(
            &who,
            &[files[0].clone(), files[1].clone()],
            &[files[2].clone(), files[3].clone()],
        )
        .unwrap();
    assert!(names_in(&maildir.join("new")).is_empty());
    assert_eq!(
        names_in(&maildir.join("cur")),
        [format!("{}:2,S", names[2]), format!("{}:2,FS", names[3])]
    );
    // Committing again (everything already applied) is harmless.
    store.commit_pop3(&who, &files[..2], &files[2..]).unwrap();
    let after = store.list(&who).unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].uid, listing[2].uid, "UIDL survives the move");
}
