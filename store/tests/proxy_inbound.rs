//! A proxy front-end receiving inbound mail, on real files: recipients are answered
//! with their back-end, and the message is queued with each recipient tagged with it.

use std::fs;
use std::sync::Arc;

use bytes::Bytes;
use tidegate_core::{
    Account, BackendRecipient, Failure, RecipientCheck, RelayEnvelope, Reply, Request,
};
use tidegate_store::Executor;
use tidegate_store::local::LocalStore;
use tidegate_store::maildir::MaildirStore;
use tidegate_store::node::Node;
use tidegate_store::queue::{Destination, Queue};
use tidegate_store::router::{Router, RouterConfig};
use tidegate_store::users::UsersFile;

fn front(default_host: Option<&str>) -> (tempfile::TempDir, Node, Arc<Queue>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    fs::write(
        &path,
        "alice@example.com {PLAIN}a tohost=b2\n\
         bob@example.com {PLAIN}b\n\
         full@example.com {PLAIN}f tohost=b2 quota=1\n\
         here@example.com {PLAIN}h tohost=FRONT.test\n",
    )
    .unwrap();
    let maildir = MaildirStore::new(dir.path().join("mail"), true, "front.test");
    let queue = Arc::new(Queue::open(&dir.path().join("work/queue"), true, "front.test").unwrap());
    let store = LocalStore::new(UsersFile::open(&path).unwrap(), maildir).with_queue(queue.clone());
    let router = Router::new(RouterConfig {
        default_host: default_host.map(Into::into),
        local_names: vec!["front.test".into()],
        ..RouterConfig::default()
    });
    (dir, Node::new(Some(Arc::new(router)), store), queue)
}

fn check(node: &Node, address: &str) -> Reply {
    node.execute(Request::CheckRecipient {
        address: address.into(),
        size_hint: Some(1000),
    })
}

fn backend(account: &str, host: &str) -> BackendRecipient {
    BackendRecipient {
        account: Account(account.into()),
        host: host.into(),
    }
}

#[test]
fn recipients_are_answered_with_their_backend() {
    let (_dir, node, _queue) = front(Some("b1"));
    let answer = |address| match check(&node, address) {
        Reply::Recipient(check) => check,
        other => panic!("{address}: {other:?}"),
    };
    assert_eq!(
        answer("Alice@Example.com"),
        RecipientCheck::Backend(backend("alice@example.com", "b2"))
    );
    assert_eq!(
        answer("bob@example.com"),
        RecipientCheck::Backend(backend("bob@example.com", "b1"))
    );
    // The quota is the back-end's to check, at delivery.
    assert_eq!(
        answer("full@example.com"),
        RecipientCheck::Backend(backend("full@example.com", "b2"))
    );
    // A tohost naming this node stays here.
    assert_eq!(
        answer("here@example.com"),
        RecipientCheck::Local(Account("here@example.com".into()))
    );
    assert_eq!(answer("nobody@example.com"), RecipientCheck::Unknown);
    assert_eq!(answer("x@elsewhere.test"), RecipientCheck::NotLocal);

    // Without default_host, a user without tohost has no known mailbox: try later.
    let (_dir, node, _queue) = front(None);
    assert!(
        matches!(
            check(&node, "bob@example.com"),
            Reply::Failed(Failure::Temporary(_))
        ),
        "{:?}",
        check(&node, "bob@example.com")
    );
}

#[test]
fn the_message_is_queued_with_each_recipient_tagged_with_its_backend() {
    let (dir, node, queue) = front(Some("b1"));
    let id = match node.execute(Request::BeginDelivery {
        header: Bytes::from_static(b"Return-Path: <s@remote.test>\r\nReceived: from x\r\n"),
    }) {
        Reply::DeliveryStarted(id) => id,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        node.execute(Request::AppendDelivery {
            delivery: id,
            bytes: Bytes::from_static(b"Subject: hi\r\n\r\nhello\r\n"),
        }),
        Reply::Done
    ));
    let reply = node.execute(Request::CommitSubmission {
        delivery: id,
        local: vec![Account("here@example.com".into())],
        relay: RelayEnvelope {
            sender: "s@remote.test".into(),
            recipients: Vec::new(),
            eight_bit: false,
            smtputf8: false,
            client: None,
            backends: vec![
                backend("alice@example.com", "b2"),
                backend("bob@example.com", "b1"),
            ],
        },
    });
    let Reply::Delivered(results) = reply else {
        panic!("{reply:?}");
    };
    assert_eq!(results, vec![Ok(()), Ok(())]);
    // The local recipient has its copy.
    let here = dir.path().join("mail/example.com/here/new");
    assert_eq!(fs::read_dir(here).unwrap().count(), 1);
    // One queue entry, released, each recipient with its back-end.
    let entries = queue.list();
    assert_eq!(entries.len(), 1);
    let destinations: Vec<(String, Destination)> = entries[0]
        .recipients
        .iter()
        .map(|r| (r.address.clone(), r.destination()))
        .collect();
    assert_eq!(
        destinations,
        vec![
            (
                "alice@example.com".to_owned(),
                Destination::Backend("b2".into())
            ),
            (
                "bob@example.com".to_owned(),
                Destination::Backend("b1".into())
            ),
        ]
    );
    let state = fs::read_to_string(queue.dir().join(format!("{}.state", entries[0].id))).unwrap();
    assert!(
        state.contains(" alice@example.com - lmtp:b2\n")
            && state.contains(" bob@example.com - lmtp:b1\n"),
        "{state}"
    );
    let message = fs::read_to_string(queue.message_path(&entries[0].id)).unwrap();
    assert!(
        message.ends_with("Subject: hi\r\n\r\nhello\r\n"),
        "{message}"
    );
}
