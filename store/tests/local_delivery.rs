//! LocalStore SMTP/LMTP requests end to end: recipient checks and streaming delivery.

use std::fs;
use std::time::Duration;

mod delivery_files;

use bytes::Bytes;
use delivery_files::{new_mail, spool};
use tidegate_core::{Account, DeliveryId, Failure, RecipientCheck, Reply, Request};
use tidegate_store::Executor;
use tidegate_store::local::LocalStore;
use tidegate_store::maildir::MaildirStore;
use tidegate_store::users::UsersFile;

fn setup() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let users = "alice@example.com {PLAIN}a\n\
                 blocked@example.com {PLAIN}b nologin\n\
                 small@example.com {PLAIN}c quota=100\n\
                 bob@example.org {PLAIN}d\n";
    let path = dir.path().join("users");
    fs::write(&path, users).unwrap();
    let maildir = MaildirStore::new(dir.path().join("mail"), true, "h.test");
    let store = LocalStore::new(UsersFile::open(&path).unwrap(), maildir);
    (dir, store)
}

fn account(address: &str) -> Account {
    Account(address.to_owned())
}

fn check(store: &LocalStore, address: &str, size_hint: Option<u64>) -> RecipientCheck {
    match store.execute(Request::CheckRecipient {
        address: address.into(),
        size_hint,
    }) {
        Reply::Recipient(answer) => answer,
        other => panic!("{other:?}"),
    }
}

fn begin(store: &LocalStore, header: &'static [u8]) -> DeliveryId {
    match store.execute(Request::BeginDelivery {
        header: Bytes::from_static(header),
    }) {
        Reply::DeliveryStarted(id) => id,
        other => panic!("{other:?}"),
    }
}

fn append(store: &LocalStore, delivery: DeliveryId, bytes: &'static [u8]) -> Reply {
    store.execute(Request::AppendDelivery {
        delivery,
        bytes: Bytes::from_static(bytes),
    })
}

fn commit(store: &LocalStore, delivery: DeliveryId, to: &[&str], all: bool) -> Reply {
    store.execute(Request::CommitDelivery {
        delivery,
        recipients: to.iter().map(|a| account(a)).collect(),
        all_or_nothing: all,
    })
}

fn send(
    store: &LocalStore,
    body: &'static [u8],
    to: &[&str],
    all: bool,
) -> Vec<Result<(), Failure>> {
    let id = begin(store, b"Return-Path: <s@x.org>\r\n");
    assert!(matches!(append(store, id, body), Reply::Done));
    match commit(store, id, to, all) {
        Reply::Delivered(results) => results,
        other => panic!("{other:?}"),
    }
}

#[test]
fn check_recipient_answers_every_case() {
    let (_dir, store) = setup();
    let local = |a: &str| RecipientCheck::Local(account(a));
    assert_eq!(
        check(&store, " Alice@EXAMPLE.com", None),
        local("alice@example.com")
    );
    assert_eq!(
        check(&store, "bob@example.org", Some(1 << 30)),
        local("bob@example.org")
    );
    assert_eq!(
        check(&store, "blocked@example.com", None),
        local("blocked@example.com")
    );
    assert_eq!(
        check(&store, "carol@example.com", None),
        RecipientCheck::Unknown
    );
    assert_eq!(check(&store, "postmaster", None), RecipientCheck::Unknown);
    assert_eq!(
        check(&store, "alice@example.net", None),
        RecipientCheck::NotLocal
    );
    assert_eq!(check(&store, "alice@", None), RecipientCheck::NotLocal);
    // Quota 100: a declared size must fit; without one, the mailbox must not be full.
    assert_eq!(
        check(&store, "small@example.com", Some(100)),
        local("small@example.com")
    );
    assert_eq!(
        check(&store, "small@example.com", Some(101)),
        RecipientCheck::OverQuota
    );
    // The header `send` writes is 24 octets: 90 of 100 are used after this.
    assert_eq!(
        send(&store, &[b'x'; 66], &["small@example.com"], true),
        [Ok(())]
    );
    assert_eq!(
        check(&store, "small@example.com", Some(10)),
        local("small@example.com")
    );
    assert_eq!(
        check(&store, "small@example.com", Some(11)),
        RecipientCheck::OverQuota
    );
    assert_eq!(
        check(&store, "small@example.com", None),
        local("small@example.com")
    );
    assert_eq!(
        send(&store, &[b'x'; 0], &["small@example.com"], true),
        [Err(Failure::OverQuota)]
    );
    assert_eq!(
        send(&store, b"123456", &["small@example.com"], true),
        [Err(Failure::OverQuota)]
    );
    let lmtp = send(&store, &[], &["small@example.com"], false);
    assert_eq!(lmtp, [Err(Failure::OverQuota)], "24 more octets do not fit");
}

#[test]
fn a_delivery_streams_through_requests_and_reads_back() {
    let (dir, store) = setup();
    let id = begin(&store, b"Received: from x\r\n");
    for part in [&b"Subject: hi\r\n"[..], b"\r\n", b"body\r\n"] {
        let reply = store.execute(Request::AppendDelivery {
            delivery: id,
            bytes: Bytes::copy_from_slice(part),
        });
        assert!(matches!(reply, Reply::Done), "{reply:?}");
    }
    assert_eq!(store.pending_deliveries(), 1);
    let Reply::Delivered(results) =
        commit(&store, id, &["alice@example.com", "bob@example.org"], true)
    else {
        panic!("delivered expected");
    };
    assert_eq!(results, [Ok(()), Ok(())]);
    assert_eq!(store.pending_deliveries(), 0);
    let want = b"Received: from x\r\nSubject: hi\r\n\r\nbody\r\n".to_vec();
    assert_eq!(
        new_mail(&dir, "example.com/alice"),
        std::slice::from_ref(&want)
    );
    assert_eq!(new_mail(&dir, "example.org/bob"), [want]);
    assert!(spool(&dir).is_empty());
    let Reply::Listing(listing) = store.execute(Request::ListMailbox {
        account: account("alice@example.com"),
    }) else {
        panic!("listing expected");
    };
    assert_eq!(listing.len(), 1);
}

#[test]
fn lmtp_commit_reports_each_recipient() {
    let (_dir, store) = setup();
    let results = send(
        &store,
        &[b'y'; 200],
        &["alice@example.com", "small@example.com"],
        false,
    );
    assert_eq!(results, [Ok(()), Err(Failure::OverQuota)]);
    let results = send(
        &store,
        &[b'y'; 200],
        &["alice@example.com", "small@example.com"],
        true,
    );
    assert!(
        matches!(results[0], Err(Failure::Temporary(_))),
        "{results:?}"
    );
    assert_eq!(results[1], Err(Failure::OverQuota));
}

#[test]
fn a_storage_error_at_commit_is_temporary_and_nothing_is_visible() {
    let (dir, store) = setup();
    let bob = dir.path().join("mail/example.org/bob");
    fs::create_dir_all(&bob).unwrap();
    fs::write(bob.join("new"), b"not a directory").unwrap();
    let results = send(
        &store,
        b"hi\r\n",
        &["alice@example.com", "bob@example.org"],
        true,
    );
    for result in &results {
        match result {
            Err(Failure::Temporary(text)) => assert!(!text.contains('/'), "{text}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(new_mail(&dir, "example.com/alice").is_empty());
    assert!(spool(&dir).is_empty());
}

#[test]
fn a_storage_error_at_begin_is_temporary() {
    let (dir, store) = setup();
    fs::create_dir_all(dir.path().join("mail")).unwrap();
    fs::write(dir.path().join("mail/.tidegate-tmp"), b"in the way").unwrap();
    match store.execute(Request::BeginDelivery {
        header: Bytes::new(),
    }) {
        Reply::Failed(Failure::Temporary(text)) => assert!(!text.contains('/'), "{text}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.pending_deliveries(), 0);
}

#[test]
fn abort_and_unknown_deliveries() {
    let (dir, store) = setup();
    let id = begin(&store, b"X: 1\r\n");
    assert!(matches!(append(&store, id, b"part"), Reply::Done));
    assert_eq!(spool(&dir).len(), 1);
    assert!(matches!(
        store.execute(Request::AbortDelivery { delivery: id }),
        Reply::Done
    ));
    assert!(
        spool(&dir).is_empty(),
        "client gone mid-DATA: temp file removed"
    );
    assert_eq!(store.pending_deliveries(), 0);
    // The same id is now unknown, like one never handed out.
    for unknown in [id, DeliveryId(999_999)] {
        assert!(matches!(
            append(&store, unknown, b"x"),
            Reply::Failed(Failure::Permanent(_))
        ));
        assert!(matches!(
            commit(&store, unknown, &["alice@example.com"], true),
            Reply::Failed(Failure::Temporary(_))
        ));
        assert!(matches!(
            store.execute(Request::AbortDelivery { delivery: unknown }),
            Reply::Done
        ));
    }
    assert!(new_mail(&dir, "example.com/alice").is_empty());
}

#[test]
fn pending_deliveries_are_bounded() {
    let (dir, store) = setup();
    let store = store.with_delivery_limits(2, Duration::from_secs(3600));
    let first = begin(&store, b"");
    let _second = begin(&store, b"");
    match store.execute(Request::BeginDelivery {
        header: Bytes::new(),
    }) {
        Reply::Failed(Failure::Temporary(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(spool(&dir).len(), 2);
    store.execute(Request::AbortDelivery { delivery: first });
    begin(&store, b"");
    assert_eq!(store.pending_deliveries(), 2);
}

#[test]
fn abandoned_deliveries_expire() {
    let (dir, store) = setup();
    let store = store.with_delivery_limits(10, Duration::ZERO);
    let abandoned = begin(&store, b"old");
    std::thread::sleep(Duration::from_millis(5));
    let fresh = begin(&store, b"new");
    assert_eq!(store.pending_deliveries(), 1);
    assert_eq!(spool(&dir).len(), 1, "the abandoned file is removed");
    assert!(matches!(
        append(&store, abandoned, b"x"),
        Reply::Failed(Failure::Permanent(_))
    ));
    assert!(matches!(append(&store, fresh, b"!"), Reply::Done));
    let Reply::Delivered(results) = commit(&store, fresh, &["bob@example.org"], false) else {
        panic!("delivered expected");
    };
    assert_eq!(results, [Ok(())]);
    assert_eq!(new_mail(&dir, "example.org/bob"), [b"new!".to_vec()]);
}

#[test]
fn postmaster_without_a_domain_goes_to_a_local_postmaster() {
    let (dir, store) = setup();
    assert_eq!(
        check(&store, "Postmaster", None),
        RecipientCheck::Unknown,
        "no postmaster@ user yet"
    );
    let users = dir.path().join("users");
    let mut text = fs::read_to_string(&users).unwrap();
    text.push_str("postmaster@example.org {PLAIN}p\n");
    fs::write(&users, text).unwrap();
    store.users().reload().unwrap();
    assert_eq!(
        check(&store, "Postmaster", None),
        RecipientCheck::Local(account("postmaster@example.org"))
    );
    assert_eq!(
        check(&store, "postmaster", None),
        check(&store, "POSTMASTER", None)
    );
}
