//! Streaming delivery against real files: begin, append, commit or abort.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tidegate_core::Account;
use tidegate_store::maildir::{MaildirStore, Recipient, STALE_AFTER, StoreError};

fn setup() -> (tempfile::TempDir, MaildirStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = MaildirStore::new(dir.path(), true, "mx1.test");
    (dir, store)
}

fn rcpt(address: &str) -> Recipient {
    Account(address.to_owned()).into()
}

fn over_quota(address: &str, quota: u64) -> Recipient {
    Recipient {
        account: Account(address.to_owned()),
        quota: Some(quota),
    }
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

/// Deterministic pseudo-random bytes (xorshift), so a mismatch is reproducible.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn deliver(store: &MaildirStore, body: &[u8], to: &[Recipient], all: bool) -> Vec<String> {
    let mut pending = store.begin().unwrap();
    pending.append(body).unwrap();
    pending
        .commit(to, all)
        .into_iter()
        .map(|r| match r {
            Ok(()) => "ok".to_owned(),
            Err(StoreError::Io(_)) => "io".to_owned(),
            Err(StoreError::OverQuota) => "quota".to_owned(),
            Err(StoreError::NotDelivered) => "not delivered".to_owned(),
            Err(e) => format!("{e:?}"),
        })
        .collect()
}

#[test]
fn a_20_mb_message_streams_in_64_kib_appends_byte_exact() {
    let (dir, store) = setup();
    let body = noise(20 * 1024 * 1024 + 123, 0x9e37_79b9_7f4a_7c15);
    let mut pending = store.begin().unwrap();
    assert!(pending.temp_path().starts_with(store.spool_dir()));
    for chunk in body.chunks(64 * 1024) {
        pending.append(chunk).unwrap();
    }
    assert_eq!(pending.size(), body.len() as u64);
    let name = pending.final_name();
    assert!(name.ends_with(&format!(",S={}", body.len())), "{name}");
    let results = pending.commit(&[rcpt("big@example.com")], true);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let file = dir.path().join("example.com/big/new").join(&name);
    assert!(fs::read(file).unwrap() == body, "stored bytes differ");
    assert!(names_in(&store.spool_dir()).is_empty(), "temp file removed");
    let listing = store.list(&Account("big@example.com".into())).unwrap();
    assert_eq!(listing[0].size, body.len() as u64);
}

#[test]
fn small_appends_are_buffered_and_kept_in_order() {
    let (dir, store) = setup();
    let body = noise(100_000, 7);
    let mut pending = store.begin().unwrap();
    for chunk in body.chunks(7) {
        pending.append(chunk).unwrap();
    }
    pending.append(&[]).unwrap();
    let name = pending.final_name();
    assert!(pending.commit(&[rcpt("s@x.org")], false)[0].is_ok());
    assert_eq!(
        fs::read(dir.path().join("x.org/s/new").join(name)).unwrap(),
        body
    );
}

#[test]
fn recipients_share_one_inode_and_one_copy_per_maildir() {
    let (dir, store) = setup();
    let mut pending = store.begin().unwrap();
    pending.append(b"hello\r\n").unwrap();
    let name = pending.final_name();
    let to = [rcpt("a@x.org"), rcpt("b@y.org"), rcpt("a@x.org")];
    let results = pending.commit(&to, true);
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let a = fs::metadata(dir.path().join("x.org/a/new").join(&name)).unwrap();
    let b = fs::metadata(dir.path().join("y.org/b/new").join(&name)).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2, "one link per maildir, temp file removed");
    assert_eq!(names_in(&dir.path().join("x.org/a/new")).len(), 1);
}

#[test]
fn all_or_nothing_rolls_back_when_a_maildir_cannot_be_made() {
    let (dir, store) = setup();
    // A file where b@y.org's maildir should be.
    fs::create_dir_all(dir.path().join("y.org")).unwrap();
    fs::write(dir.path().join("y.org/b"), b"in the way").unwrap();
    // Broken recipient last (a's link is made, then taken back) and first.
    for order in [["a@x.org", "b@y.org"], ["b@y.org", "a@x.org"]] {
        let to = [rcpt(order[0]), rcpt(order[1]), rcpt("c@z.org")];
        let results = deliver(&store, b"no\r\n", &to, true);
        let expect = |who: &str| {
            if who == "b@y.org" {
                "io"
            } else {
                "not delivered"
            }
        };
        assert_eq!(
            results,
            [expect(order[0]), expect(order[1]), "not delivered"]
        );
        for maildir in ["x.org/a", "z.org/c"] {
            assert!(names_in(&dir.path().join(maildir).join("new")).is_empty());
        }
        assert!(names_in(&store.spool_dir()).is_empty(), "temp file removed");
    }
}

#[test]
fn lmtp_mode_lets_each_recipient_succeed_or_fail_alone() {
    let (dir, store) = setup();
    assert_eq!(
        deliver(&store, &[b'x'; 60], &[rcpt("q@x.org")], true),
        ["ok"]
    );
    fs::write(dir.path().join("x.org/bad"), b"not a maildir").unwrap();
    let to = [
        rcpt("a@x.org"),
        over_quota("q@x.org", 100),
        rcpt("bad@x.org"),
        over_quota("b@x.org", 100),
    ];
    let results = deliver(&store, &[b'y'; 50], &to, false);
    assert_eq!(results, ["ok", "quota", "io", "ok"]);
    assert_eq!(names_in(&dir.path().join("x.org/a/new")).len(), 1);
    assert_eq!(names_in(&dir.path().join("x.org/b/new")).len(), 1);
    assert_eq!(
        names_in(&dir.path().join("x.org/q/new")).len(),
        1,
        "only the old one"
    );
    // Exactly at the quota is fine: 60 + 40 = 100.
    assert_eq!(
        deliver(&store, &[b'z'; 40], &[over_quota("q@x.org", 100)], true),
        ["ok"]
    );
    assert_eq!(store.usage(&Account("q@x.org".into())).unwrap(), 100);
    assert!(names_in(&store.spool_dir()).is_empty());
}

#[test]
fn all_or_nothing_over_quota_fails_every_recipient() {
    let (dir, store) = setup();
    let results = deliver(
        &store,
        &[b'y'; 50],
        &[rcpt("a@x.org"), over_quota("q@x.org", 49)],
        true,
    );
    assert_eq!(results, ["not delivered", "quota"]);
    assert!(names_in(&dir.path().join("x.org/a/new")).is_empty());
    assert!(names_in(&store.spool_dir()).is_empty());
}

#[test]
fn usage_counts_new_and_cur_by_name_or_stat() {
    let (dir, store) = setup();
    let who = Account("u@x.org".into());
    assert_eq!(store.usage(&who).unwrap(), 0, "no maildir yet");
    let maildir = dir.path().join("x.org/u");
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    fs::write(maildir.join("new/1.a.h,S=1000"), b"short").unwrap();
    fs::write(maildir.join("cur/2.b.h:2,S"), b"twelve bytes").unwrap();
    fs::write(maildir.join("tmp/3.c.h"), b"not counted").unwrap();
    assert_eq!(store.usage(&who).unwrap(), 1012);
}

#[test]
fn abort_and_drop_remove_the_temp_file() {
    let (_dir, store) = setup();
    let mut pending = store.begin().unwrap();
    pending.append(b"partial").unwrap();
    let path = pending.temp_path().to_owned();
    assert!(path.exists());
    pending.abort();
    assert!(!path.exists());
    let mut dropped = store.begin().unwrap();
    dropped.append(&noise(100_000, 3)).unwrap();
    let path = dropped.temp_path().to_owned();
    drop(dropped);
    assert!(!path.exists());
    assert!(names_in(&store.spool_dir()).is_empty());
}

#[test]
fn begin_fails_cleanly_when_the_spool_cannot_be_made() {
    let (dir, store) = setup();
    fs::write(dir.path().join(".tidegate-tmp"), b"in the way").unwrap();
    assert!(matches!(store.begin(), Err(StoreError::Io(_))));
    // begin_in writes to the recipient's own tmp/ instead.
    let mut pending = store.begin_in(&Account("a@x.org".into())).unwrap();
    assert!(
        pending
            .temp_path()
            .starts_with(dir.path().join("x.org/a/tmp"))
    );
    pending.append(b"x\r\n").unwrap();
    assert!(pending.commit(&[rcpt("a@x.org")], true)[0].is_ok());
    assert!(names_in(&dir.path().join("x.org/a/tmp")).is_empty());
}

#[test]
fn invalid_recipients_fail_alone_or_fail_everyone() {
    let (dir, store) = setup();
    let to = [rcpt("a@x.org"), rcpt("../evil@x.org")];
    let results = deliver(&store, b"x", &to, false);
    assert_eq!(results, ["ok", "InvalidAccount"]);
    let results = deliver(&store, b"x", &to, true);
    assert_eq!(results, ["not delivered", "InvalidAccount"]);
    assert_eq!(names_in(&dir.path().join("x.org/a/new")).len(), 1);
    assert!(deliver(&store, b"x", &[], true).is_empty());
    assert!(names_in(&store.spool_dir()).is_empty());
}

#[test]
fn stale_spool_files_are_cleaned_and_fresh_ones_kept() {
    let (_dir, store) = setup();
    assert_eq!(store.clean_spool(STALE_AFTER).unwrap(), 0, "no spool yet");
    let fresh = store.begin().unwrap();
    let old = store.spool_dir().join("1.M1P1Q1.crashed");
    fs::write(&old, b"left by a crash").unwrap();
    let long_ago = SystemTime::now() - STALE_AFTER - Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    assert_eq!(store.clean_spool(STALE_AFTER).unwrap(), 1);
    assert!(!old.exists());
    assert!(fresh.temp_path().exists());
}

#[test]
fn concurrent_commits_to_one_maildir_are_all_durable_and_distinct() {
    let (dir, store) = setup();
    let names: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let store = &store;
                s.spawn(move || {
                    (0..25)
                        .map(|i| {
                            let mut pending = store.begin().unwrap();
                            pending.append(format!("t{t} m{i}\r\n").as_bytes()).unwrap();
                            let name = pending.final_name();
                            let to = [rcpt("c@x.org"), rcpt(&format!("t{t}@y.org"))];
                            let results = pending.commit(&to, true);
                            assert!(results.iter().all(Result::is_ok), "{results:?}");
                            name
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
    let mut in_new = names_in(&dir.path().join("x.org/c/new"));
    let mut sent = names;
    in_new.sort();
    sent.sort();
    assert_eq!(in_new, sent);
    assert!(names_in(&store.spool_dir()).is_empty());
}

/// A directory on another filesystem than the temp dir, if this machine has one.
fn other_filesystem(near: &Path) -> Option<tempfile::TempDir> {
    let shm = tempfile::tempdir_in("/dev/shm").ok()?;
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    (dev(shm.path()) != dev(near)).then_some(shm)
}

#[test]
fn a_maildir_on_another_filesystem_gets_a_copy() {
    let (dir, store) = setup();
    let Some(other) = other_filesystem(dir.path()) else {
        eprintln!("skipped: no second filesystem");
        return;
    };
    std::os::unix::fs::symlink(other.path(), dir.path().join("y.org")).unwrap();
    let mut pending = store.begin().unwrap();
    pending.append(b"far\r\n").unwrap();
    let name = pending.final_name();
    let results = pending.commit(&[rcpt("a@x.org"), rcpt("b@y.org")], true);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        fs::read(other.path().join("b/new").join(&name)).unwrap(),
        b"far\r\n"
    );
    assert!(names_in(&other.path().join("b/tmp")).is_empty());
    assert!(names_in(&store.spool_dir()).is_empty());
}

#[test]
fn a_file_begun_in_a_recipients_tmp_is_renamed_there_and_linked_elsewhere() {
    let (dir, store) = setup();
    let mut pending = store.begin_in(&Account("a@x.org".into())).unwrap();
    pending.append(b"Subject: both\r\n\r\nbody\r\n").unwrap();
    let name = pending.final_name();
    let results = pending.commit(&[rcpt("a@x.org"), rcpt("b@y.org")], true);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let in_a = dir.path().join("x.org/a/new").join(&name);
    let in_b = dir.path().join("y.org/b/new").join(&name);
    assert_eq!(fs::read(&in_a).unwrap(), b"Subject: both\r\n\r\nbody\r\n");
    // One file under two names: the link to b and the rename into a's new/.
    assert_eq!(
        fs::metadata(&in_a).unwrap().ino(),
        fs::metadata(&in_b).unwrap().ino()
    );
    assert_eq!(fs::metadata(&in_a).unwrap().nlink(), 2);
    assert!(names_in(&dir.path().join("x.org/a/tmp")).is_empty());
    assert!(names_in(&dir.path().join("y.org/b/tmp")).is_empty());
}

#[test]
fn a_missing_new_dir_is_made_before_the_rename() {
    let (dir, store) = setup();
    let mut pending = store.begin_in(&Account("a@x.org".into())).unwrap();
    pending.append(b"x\r\n").unwrap();
    // Someone removed new/ and cur/ while the message was being received.
    fs::remove_dir(dir.path().join("x.org/a/new")).unwrap();
    fs::remove_dir(dir.path().join("x.org/a/cur")).unwrap();
    let name = pending.final_name();
    assert!(pending.commit(&[rcpt("a@x.org")], true)[0].is_ok());
    assert_eq!(names_in(&dir.path().join("x.org/a/new")), [name]);
    assert!(dir.path().join("x.org/a/cur").is_dir());
    assert!(names_in(&dir.path().join("x.org/a/tmp")).is_empty());
}

#[test]
fn an_all_or_nothing_failure_elsewhere_leaves_no_copy_and_no_temp_file() {
    let (dir, store) = setup();
    // b's maildir cannot be made: a file stands where its domain directory would be.
    fs::write(dir.path().join("y.org"), b"in the way").unwrap();
    let mut pending = store.begin_in(&Account("a@x.org".into())).unwrap();
    pending.append(b"x\r\n").unwrap();
    let results = pending.commit(&[rcpt("a@x.org"), rcpt("b@y.org")], true);
    assert!(results.iter().all(Result::is_err), "{results:?}");
    assert!(names_in(&dir.path().join("x.org/a/new")).is_empty());
    assert!(names_in(&dir.path().join("x.org/a/tmp")).is_empty());
}

/// Every thread delivers its first message to the same maildir at once, so one finds
/// `new/` missing while another is making it (through the spool and through the
/// maildir's own `tmp/`). Each must still deliver: a link or rename that fails because
/// `new/` was missing is retried after the maildir is made, whoever made it.
#[test]
fn first_deliveries_racing_into_a_fresh_maildir_all_succeed() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 200;
    let (dir, store) = setup();
    let barrier = std::sync::Barrier::new(THREADS);
    // Failures are collected, not asserted in the threads: a panicking thread would
    // leave the others waiting at the barrier.
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, barrier) = (&store, &barrier);
                s.spawn(move || {
                    let mut failures = Vec::new();
                    for round in 0..ROUNDS {
                        let to = rcpt(&format!("r{round}@fresh.org"));
                        barrier.wait();
                        let pending = if t % 2 == 0 {
                            store.begin()
                        } else {
                            store.begin_in(&to.account)
                        };
                        let results = pending.and_then(|mut pending| {
                            pending.append(format!("t{t} r{round}\r\n").as_bytes())?;
                            Ok(pending.commit(&[to], true))
                        });
                        match results {
                            Ok(results) if results.iter().all(Result::is_ok) => {}
                            other => failures.push(format!("thread {t} round {round}: {other:?}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(failures, Vec::<String>::new());
    for round in 0..ROUNDS {
        let new = dir.path().join(format!("fresh.org/r{round}/new"));
        assert_eq!(names_in(&new).len(), THREADS, "{}", new.display());
        assert!(names_in(&new.with_file_name("tmp")).is_empty());
    }
    assert!(names_in(&store.spool_dir()).is_empty());
}
