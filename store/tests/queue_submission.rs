//! Submission with remote recipients (`Request::CommitSubmission`) on real files: the
//! queue copy and the local copies land together, or nothing is left.

use std::fs;
use std::sync::Arc;

use bytes::Bytes;
use tidegate_core::{Account, DeliveryId, Failure, RelayEnvelope, Reply, Request};
use tidegate_store::Executor;
use tidegate_store::local::LocalStore;
use tidegate_store::maildir::MaildirStore;
use tidegate_store::queue::{Queue, RecipientState};
use tidegate_store::users::UsersFile;

fn setup() -> (tempfile::TempDir, LocalStore, Arc<Queue>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    fs::write(
        &path,
        "alice@example.com {PLAIN}a\nsmall@example.com {PLAIN}c quota=10\n",
    )
    .unwrap();
    let maildir = MaildirStore::new(dir.path().join("mail"), true, "h.test");
    let queue = Arc::new(Queue::open(&dir.path().join("work/queue"), true, "h.test").unwrap());
    let store = LocalStore::new(UsersFile::open(&path).unwrap(), maildir).with_queue(queue.clone());
    (dir, store, queue)
}

fn submit(store: &LocalStore, local: &[&str], remote: &[&str]) -> Vec<Result<(), Failure>> {
    let id = match store.execute(Request::BeginDelivery {
        header: Bytes::from_static(b"Return-Path: <alice@example.com>\r\nReceived: from x\r\n"),
    }) {
        Reply::DeliveryStarted(id) => id,
        other => panic!("{other:?}"),
    };
    let body = Bytes::from_static(b"Subject: hello\r\n\r\nHello, world.\r\n");
    assert!(matches!(
        store.execute(Request::AppendDelivery {
            delivery: id,
            bytes: body
        }),
        Reply::Done
    ));
    commit(store, id, local, remote)
}

fn commit(
    store: &LocalStore,
    delivery: DeliveryId,
    local: &[&str],
    remote: &[&str],
) -> Vec<Result<(), Failure>> {
    match store.execute(Request::CommitSubmission {
        delivery,
        local: local.iter().map(|a| Account(a.to_string())).collect(),
        relay: RelayEnvelope {
            sender: "alice@example.com".into(),
            recipients: remote.iter().map(|a| a.to_string()).collect(),
            eight_bit: false,
            smtputf8: false,
            client: None,
            backends: Vec::new(),
        },
    }) {
        Reply::Delivered(results) => results,
        other => panic!("{other:?}"),
    }
}

fn inbox(dir: &tempfile::TempDir, user: &str) -> Vec<Vec<u8>> {
    let new = dir.path().join("mail/example.com").join(user).join("new");
    match fs::read_dir(new) {
        Ok(entries) => entries
            .map(|e| fs::read(e.unwrap().path()).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn mixed_transaction_delivers_locally_and_queues_without_return_path() {
    let (dir, store, queue) = setup();
    let results = submit(
        &store,
        &["alice@example.com"],
        &["bob@remote.test", "c@other.test"],
    );
    assert_eq!(results, vec![Ok(()), Ok(())]);
    let local = inbox(&dir, "alice");
    assert_eq!(local.len(), 1);
    assert!(local[0].starts_with(b"Return-Path: <alice@example.com>\r\n"));
    let entries = queue.list();
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.sender, "alice@example.com");
    let to: Vec<_> = entry
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(to, vec!["bob@remote.test", "c@other.test"]);
    assert!(
        entry
            .recipients
            .iter()
            .all(|r| r.state == RecipientState::Pending)
    );
    assert_eq!(
        fs::read(queue.message_path(&entry.id)).unwrap(),
        b"Received: from x\r\nSubject: hello\r\n\r\nHello, world.\r\n"
    );
    // The spool file is gone; the entry survives a restart.
    assert_eq!(
        fs::read_dir(dir.path().join("mail/.tidegate-tmp"))
            .unwrap()
            .count(),
        0
    );
    let reopened = Queue::open(queue.dir(), true, "h.test").unwrap();
    assert_eq!(reopened.list(), entries);
}

#[test]
fn remote_only_and_a_failed_local_part_leaves_nothing_queued() {
    let (dir, store, queue) = setup();
    assert_eq!(submit(&store, &[], &["bob@remote.test"]), vec![Ok(())]);
    assert_eq!(queue.len(), 1);
    // small@ is over its quota: the whole transaction fails, the queue copy goes too.
    let results = submit(&store, &["small@example.com"], &["bob@remote.test"]);
    assert_eq!(results[0], Err(Failure::OverQuota));
    assert!(matches!(results[1], Err(Failure::Temporary(_))));
    assert_eq!(queue.len(), 1);
    assert!(inbox(&dir, "small").is_empty());
    let files = fs::read_dir(queue.dir()).unwrap().count();
    assert_eq!(files, 2, "one message and one state file");
}
