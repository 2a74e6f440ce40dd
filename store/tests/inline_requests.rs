//! `Executor::execute_inline` of the local store and the node: recipient checks from the
//! users file in memory, and small messages kept in memory until their commit, which
//! writes, fsyncs and links them in the one request that goes to a worker.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

mod delivery_files;

use bytes::Bytes;
use delivery_files::{files_in, new_mail, spool};
use tidegate_core::{Account, DeliveryId, Failure, RecipientCheck, RelayEnvelope, Reply, Request};
use tidegate_store::Executor;
use tidegate_store::local::{BUFFERED_MESSAGE_MAX, BUFFERED_TOTAL_MAX, LocalStore};
use tidegate_store::maildir::MaildirStore;
use tidegate_store::node::Node;
use tidegate_store::queue::Queue;
use tidegate_store::users::UsersFile;

const USERS: &str = "alice@example.com {PLAIN}a\n\
                     blocked@example.com {PLAIN}b nologin\n\
                     small@example.com {PLAIN}c quota=100\n\
                     bob@example.org {PLAIN}d\n";

fn setup() -> (tempfile::TempDir, LocalStore) {
    setup_with(Duration::from_secs(3600))
}

/// A store whose users file is looked at for changes every `check_interval`.
fn setup_with(check_interval: Duration) -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    fs::write(&path, USERS).unwrap();
    let users = UsersFile::open(&path)
        .unwrap()
        .with_check_interval(check_interval);
    let maildir = MaildirStore::new(dir.path().join("mail"), true, "h.test");
    (dir, LocalStore::new(users, maildir))
}

fn rcpt(address: &str) -> Request {
    Request::CheckRecipient {
        address: address.into(),
        size_hint: None,
    }
}

fn inline_check(executor: &dyn Executor, address: &str) -> Option<RecipientCheck> {
    match executor.execute_inline(&rcpt(address))? {
        Reply::Recipient(check) => Some(check),
        other => panic!("{other:?}"),
    }
}

fn worker_check(executor: &dyn Executor, address: &str) -> RecipientCheck {
    match executor.execute(rcpt(address)) {
        Reply::Recipient(check) => check,
        other => panic!("{other:?}"),
    }
}

fn inline_begin(store: &LocalStore, header: &'static [u8]) -> DeliveryId {
    match store.execute_inline(&Request::BeginDelivery {
        header: Bytes::from_static(header),
    }) {
        Some(Reply::DeliveryStarted(id)) => id,
        other => panic!("{other:?}"),
    }
}

fn append_request(delivery: DeliveryId, bytes: Bytes) -> Request {
    Request::AppendDelivery { delivery, bytes }
}

fn commit(store: &LocalStore, delivery: DeliveryId, to: &[&str], all: bool) -> Reply {
    store.execute(Request::CommitDelivery {
        delivery,
        recipients: to.iter().map(|a| Account(a.to_string())).collect(),
        all_or_nothing: all,
    })
}

#[test]
fn recipients_without_a_quota_are_answered_inline_like_on_a_worker() {
    let (_dir, store) = setup();
    for address in [
        " Alice@EXAMPLE.com",
        "bob@example.org",
        "blocked@example.com",
        "carol@example.com",
        "postmaster",
        "alice@example.net",
        "alice@",
    ] {
        let inline = inline_check(&store, address).expect("answered inline");
        assert_eq!(inline, worker_check(&store, address), "{address}");
    }
    assert_eq!(
        inline_check(&store, "alice@example.com"),
        Some(RecipientCheck::Local(Account("alice@example.com".into())))
    );
    // A quota needs the mailbox's usage: a scan of the maildir, for a worker.
    assert_eq!(inline_check(&store, "small@example.com"), None);
    assert_eq!(
        worker_check(&store, "small@example.com"),
        RecipientCheck::Local(Account("small@example.com".into()))
    );
}

#[test]
fn a_due_look_at_the_users_file_sends_the_check_to_a_worker() {
    // Interval zero: every lookup first looks at the file (a stat), which is I/O.
    let (_dir, store) = setup_with(Duration::ZERO);
    assert_eq!(inline_check(&store, "alice@example.com"), None);
    assert_eq!(
        worker_check(&store, "alice@example.com"),
        RecipientCheck::Local(Account("alice@example.com".into()))
    );
}

#[test]
fn a_small_message_has_no_file_until_its_commit() {
    let (dir, store) = setup();
    let id = inline_begin(&store, b"Received: from x\r\n");
    for part in [&b"Subject: hi\r\n"[..], b"\r\n", b"body\r\n"] {
        let reply = store.execute_inline(&append_request(id, Bytes::copy_from_slice(part)));
        assert!(matches!(reply, Some(Reply::Done)), "{reply:?}");
    }
    assert_eq!(store.pending_deliveries(), 1);
    assert!(spool(&dir).is_empty(), "no file before the commit");
    // The commit is not inline: it writes, fsyncs and links.
    let request = Request::CommitDelivery {
        delivery: id,
        recipients: vec![Account("alice@example.com".into())],
        all_or_nothing: true,
    };
    assert!(store.execute_inline(&request).is_none());
    let Reply::Delivered(results) =
        commit(&store, id, &["alice@example.com", "bob@example.org"], true)
    else {
        panic!("delivered expected");
    };
    assert_eq!(results, [Ok(()), Ok(())]);
    let want = b"Received: from x\r\nSubject: hi\r\n\r\nbody\r\n".to_vec();
    assert_eq!(
        new_mail(&dir, "example.com/alice"),
        std::slice::from_ref(&want)
    );
    assert_eq!(new_mail(&dir, "example.org/bob"), [want]);
    assert!(spool(&dir).is_empty());
    assert_eq!(store.pending_deliveries(), 0);
}

#[test]
fn a_large_message_gets_its_file_on_the_append_that_would_pass_the_limit() {
    let (dir, store) = setup();
    let header = b"Return-Path: <s@x.org>\r\n";
    let id = inline_begin(&store, header);
    let chunk = Bytes::from(vec![b'a'; BUFFERED_MESSAGE_MAX / 2]);
    let mut want = header.to_vec();
    // The first append fits; the second would pass the limit and goes to a worker.
    assert!(matches!(
        store.execute_inline(&append_request(id, chunk.clone())),
        Some(Reply::Done)
    ));
    want.extend_from_slice(&chunk);
    let overflowing = append_request(id, chunk.clone());
    assert!(store.execute_inline(&overflowing).is_none());
    assert!(matches!(store.execute(overflowing), Reply::Done));
    want.extend_from_slice(&chunk);
    assert_eq!(spool(&dir).len(), 1, "the message is in its file now");
    // Once in a file, even a small append is a worker's.
    let tail = append_request(id, Bytes::from_static(b"\r\nend\r\n"));
    assert!(store.execute_inline(&tail).is_none());
    assert!(matches!(store.execute(tail), Reply::Done));
    want.extend_from_slice(b"\r\nend\r\n");
    let Reply::Delivered(results) = commit(&store, id, &["bob@example.org"], true) else {
        panic!("delivered expected");
    };
    assert_eq!(results, [Ok(())]);
    assert_eq!(new_mail(&dir, "example.org/bob"), [want]);
    assert!(spool(&dir).is_empty());
}

#[test]
fn aborts_without_a_file_are_inline_and_with_one_go_to_a_worker() {
    let (dir, store) = setup();
    let id = inline_begin(&store, b"X: 1\r\n");
    let abort = Request::AbortDelivery { delivery: id };
    assert!(matches!(store.execute_inline(&abort), Some(Reply::Done)));
    assert_eq!(store.pending_deliveries(), 0);
    // Unknown now, like one never handed out: nothing to do, answered inline.
    assert!(matches!(store.execute_inline(&abort), Some(Reply::Done)));
    assert!(
        store
            .execute_inline(&append_request(id, Bytes::from_static(b"x")))
            .is_none()
    );
    assert!(matches!(
        store.execute(append_request(id, Bytes::from_static(b"x"))),
        Reply::Failed(Failure::Permanent(_))
    ));
    // A message begun on a worker has its file: removing it is a worker's job.
    let Reply::DeliveryStarted(on_disk) = store.execute(Request::BeginDelivery {
        header: Bytes::from_static(b"X: 2\r\n"),
    }) else {
        panic!("started expected");
    };
    assert_eq!(spool(&dir).len(), 1);
    let abort = Request::AbortDelivery { delivery: on_disk };
    assert!(store.execute_inline(&abort).is_none());
    assert!(matches!(store.execute(abort), Reply::Done));
    assert!(spool(&dir).is_empty());
    assert_eq!(store.pending_deliveries(), 0);
}

#[test]
fn a_storage_error_at_the_commit_of_a_buffered_message_fails_every_recipient() {
    let (dir, store) = setup();
    // Neither the first recipient's maildir nor the spool can take the file.
    fs::create_dir_all(dir.path().join("mail/example.com")).unwrap();
    fs::write(dir.path().join("mail/example.com/alice"), b"in the way").unwrap();
    fs::write(dir.path().join("mail/.tidegate-tmp"), b"in the way").unwrap();
    for all_or_nothing in [true, false] {
        let id = inline_begin(&store, b"X: 1\r\n");
        assert!(matches!(
            store.execute_inline(&append_request(id, Bytes::from_static(b"hi\r\n"))),
            Some(Reply::Done)
        ));
        let Reply::Delivered(results) = commit(
            &store,
            id,
            &["alice@example.com", "bob@example.org"],
            all_or_nothing,
        ) else {
            panic!("delivered expected");
        };
        assert_eq!(results.len(), 2);
        for result in &results {
            match result {
                Err(Failure::Temporary(text)) => assert!(!text.contains('/'), "{text}"),
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(new_mail(&dir, "example.org/bob").is_empty());
    assert_eq!(store.pending_deliveries(), 0);
}

#[test]
fn a_first_recipient_whose_maildir_fails_fails_alone_over_lmtp() {
    let (dir, store) = setup();
    fs::create_dir_all(dir.path().join("mail/example.com")).unwrap();
    fs::write(dir.path().join("mail/example.com/alice"), b"in the way").unwrap();
    let id = inline_begin(&store, b"X: 1\r\n");
    assert!(matches!(
        store.execute_inline(&append_request(id, Bytes::from_static(b"hi\r\n"))),
        Some(Reply::Done)
    ));
    let Reply::Delivered(results) =
        commit(&store, id, &["alice@example.com", "bob@example.org"], false)
    else {
        panic!("delivered expected");
    };
    assert!(
        matches!(results[0], Err(Failure::Temporary(_))),
        "{results:?}"
    );
    assert_eq!(results[1], Ok(()));
    assert_eq!(
        new_mail(&dir, "example.org/bob"),
        [b"X: 1\r\nhi\r\n".to_vec()]
    );
    assert!(spool(&dir).is_empty());
}

#[test]
fn the_file_of_a_buffered_message_is_made_in_its_first_recipients_tmp() {
    let (dir, store) = setup();
    let id = inline_begin(&store, b"X: 1\r\n");
    // Bob's maildir exists already; its tmp/ is where the file is written and removed.
    fs::create_dir_all(dir.path().join("mail/example.org/bob/tmp")).unwrap();
    fs::create_dir_all(dir.path().join("mail/example.org/bob/new")).unwrap();
    fs::create_dir_all(dir.path().join("mail/example.org/bob/cur")).unwrap();
    let Reply::Delivered(results) = commit(&store, id, &["bob@example.org"], true) else {
        panic!("delivered expected");
    };
    assert_eq!(results, [Ok(())]);
    assert_eq!(new_mail(&dir, "example.org/bob"), [b"X: 1\r\n".to_vec()]);
    assert!(files_in(&dir.path().join("mail/example.org/bob/tmp")).is_empty());
    assert!(
        !dir.path().join("mail/.tidegate-tmp").exists(),
        "the spool was never needed"
    );
}

#[test]
fn memory_for_buffered_messages_is_bounded_in_total() {
    let (_dir, store) = setup();
    // Static bytes: the store's clones cost no memory here, but count against the limit.
    static BIG: [u8; BUFFERED_MESSAGE_MAX] = [b'z'; BUFFERED_MESSAGE_MAX];
    let mut ids = Vec::new();
    loop {
        let Some(Reply::DeliveryStarted(id)) = store.execute_inline(&Request::BeginDelivery {
            header: Bytes::from_static(&BIG),
        }) else {
            break;
        };
        ids.push(id);
        assert!(ids.len() <= BUFFERED_TOTAL_MAX / BUFFERED_MESSAGE_MAX);
    }
    assert_eq!(ids.len(), BUFFERED_TOTAL_MAX / BUFFERED_MESSAGE_MAX);
    // Full: a begin goes to a worker, which opens a file as before.
    let Reply::DeliveryStarted(_) = store.execute(Request::BeginDelivery {
        header: Bytes::from_static(b"X: 1\r\n"),
    }) else {
        panic!("started expected");
    };
    // Aborting one frees its share.
    let abort = Request::AbortDelivery { delivery: ids[0] };
    assert!(matches!(store.execute_inline(&abort), Some(Reply::Done)));
    assert!(matches!(
        store.execute_inline(&Request::BeginDelivery {
            header: Bytes::from_static(&BIG),
        }),
        Some(Reply::DeliveryStarted(_))
    ));
}

#[test]
fn a_buffered_message_commits_into_the_queue_and_the_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    fs::write(&path, USERS).unwrap();
    let maildir = MaildirStore::new(dir.path().join("mail"), true, "h.test");
    let queue = Arc::new(Queue::open(&dir.path().join("work/queue"), true, "h.test").unwrap());
    let users = UsersFile::open(&path)
        .unwrap()
        .with_check_interval(Duration::from_secs(3600));
    let store = LocalStore::new(users, maildir).with_queue(queue);
    let id = inline_begin(&store, b"Return-Path: <alice@example.com>\r\n");
    assert!(matches!(
        store.execute_inline(&append_request(
            id,
            Bytes::from_static(b"Subject: q\r\n\r\nhi\r\n")
        )),
        Some(Reply::Done)
    ));
    let Reply::Delivered(results) = store.execute(Request::CommitSubmission {
        delivery: id,
        local: vec![Account("bob@example.org".into())],
        relay: RelayEnvelope {
            sender: "alice@example.com".into(),
            recipients: vec!["carol@remote.test".into()],
            eight_bit: false,
            smtputf8: false,
            client: None,
            backends: Vec::new(),
        },
    }) else {
        panic!("delivered expected");
    };
    assert_eq!(results, [Ok(()), Ok(())]);
    assert_eq!(
        new_mail(&dir, "example.org/bob"),
        [b"Return-Path: <alice@example.com>\r\nSubject: q\r\n\r\nhi\r\n".to_vec()]
    );
    assert!(spool(&dir).is_empty());
}

#[test]
fn a_node_without_a_router_answers_like_its_store() {
    let (_dir, store) = setup();
    let node = Node::new(None, store);
    assert_eq!(
        inline_check(&node, "bob@example.org"),
        Some(RecipientCheck::Local(Account("bob@example.org".into())))
    );
    assert_eq!(inline_check(&node, "small@example.com"), None);
    assert!(matches!(
        node.execute_inline(&Request::BeginDelivery {
            header: Bytes::from_static(b"X: 1\r\n"),
        }),
        Some(Reply::DeliveryStarted(_))
    ));
}
