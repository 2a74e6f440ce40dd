//! LocalStore end to end: requests in, replies out, over a real users file and maildir.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};

use tidegate_core::{Account, Failure, MessageRef, Reply, Request, Secret};
use tidegate_store::Executor;
use tidegate_store::local::LocalStore;
use tidegate_store::maildir::MaildirStore;
use tidegate_store::password::{Params, hash_argon2id_with};
use tidegate_store::users::UsersFile;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn setup() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let cheap = || Params::new(8, 1, 1, None).unwrap();
    let users = format!(
        "# test users\nalice@example.com {} tohost=10.0.0.1\n\
         blocked@example.com {} nologin\nplain@example.com {{PLAIN}}clear\n",
        hash_argon2id_with(cheap(), b"right"),
        hash_argon2id_with(cheap(), b"right"),
    );
    let path = dir.path().join("users");
    fs::write(&path, users).unwrap();
    let maildir = MaildirStore::new(dir.path().join("mail"), false, "h.test");
    let store = LocalStore::new(UsersFile::open(&path).unwrap(), maildir);
    (dir, store)
}

fn login(store: &LocalStore, user: &str, password: &str) -> Reply {
    store.execute(Request::Authenticate {
        user: user.into(),
        password: Secret::new(password.as_bytes().to_vec()),
        client: CLIENT,
    })
}

#[test]
fn authentication_outcomes() {
    let (_dir, store) = setup();
    match login(&store, " Alice@EXAMPLE.com", "right") {
        Reply::Authenticated(Account(a)) => assert_eq!(a, "alice@example.com"),
        other => panic!("{other:?}"),
    }
    // Repeated failures from one address are throttled by the login penalty.
    let denied = |reply: Reply| {
        matches!(
            reply,
            Reply::Failed(Failure::Denied | Failure::Throttled(_))
        )
    };
    assert!(denied(login(&store, "alice@example.com", "wrong")));
    assert!(denied(login(&store, "nobody@example.com", "right")));
    assert!(denied(login(&store, "alice", "right")));
    assert!(denied(login(&store, "blocked@example.com", "wrong")));
    assert!(matches!(
        login(&store, "blocked@example.com", "right"),
        Reply::Failed(Failure::Disabled)
    ));
    assert!(matches!(
        login(&store, "plain@example.com", "clear"),
        Reply::Authenticated(_)
    ));
    assert!(denied(login(&store, "plain@example.com", "Clear")));
}

#[test]
fn mailbox_requests_round_trip() {
    let (dir, store) = setup();
    let alice = Account("alice@example.com".into());
    let Reply::Listing(empty) = store.execute(Request::ListMailbox {
        account: alice.clone(),
    }) else {
        panic!("listing expected");
    };
    assert!(empty.is_empty());

    store
        .maildir()
        .deliver(std::slice::from_ref(&alice), &b"one\n"[..])
        .unwrap();
    store
        .maildir()
        .deliver(std::slice::from_ref(&alice), &b"two\n"[..])
        .unwrap();
    let Reply::Listing(listing) = store.execute(Request::ListMailbox {
        account: alice.clone(),
    }) else {
        panic!("listing expected");
    };
    assert_eq!(listing.len(), 2);
    let read = |file: &MessageRef, offset| {
        store.execute(Request::ReadMessage {
            account: alice.clone(),
            file: file.clone(),
            offset,
            max_len: 3,
        })
    };
    match read(&listing[0].file, 0) {
        Reply::Chunk { bytes, end } => assert_eq!((&bytes[..], end), (&b"one"[..], false)),
        other => panic!("{other:?}"),
    }
    match read(&listing[0].file, 3) {
        Reply::Chunk { bytes, end } => assert_eq!((&bytes[..], end), (&b"\r\n"[..], true)),
        other => panic!("{other:?}"),
    }
    let commit = store.execute(Request::CommitPop3 {
        account: alice.clone(),
        delete: vec![listing[1].file.clone()],
        seen: vec![listing[0].file.clone()],
    });
    assert!(matches!(commit, Reply::Done), "{commit:?}");
    assert!(matches!(
        read(&listing[1].file, 0),
        Reply::Failed(Failure::Gone)
    ));
    assert!(
        matches!(read(&listing[0].file, 0), Reply::Chunk { .. }),
        "moved to cur/"
    );
    let cur = dir.path().join("mail/example.com/alice/cur");
    assert_eq!(fs::read_dir(cur).unwrap().count(), 1);
}

#[test]
fn storage_errors_are_temporary_and_say_nothing_about_paths() {
    let (dir, store) = setup();
    let alice = Account("alice@example.com".into());
    let maildir = dir.path().join("mail/example.com/alice");
    fs::create_dir_all(&maildir).unwrap();
    fs::write(maildir.join("new"), b"not a directory").unwrap();
    match store.execute(Request::ListMailbox { account: alice }) {
        Reply::Failed(Failure::Temporary(text)) => {
            assert!(!text.contains('/'), "{text}");
        }
        other => panic!("{other:?}"),
    }
    let evil = Account("../../etc@example.com".into());
    assert!(matches!(
        store.execute(Request::ListMailbox { account: evil }),
        Reply::Failed(Failure::Permanent(_))
    ));
}
