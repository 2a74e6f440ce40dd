//! A write error in the middle of a message (the disk filling up), simulated with a file
//! size limit (`RLIMIT_FSIZE`: writes past it fail with EFBIG) in a child process, since
//! the limit applies to the whole process. The delivery fails with a temporary error,
//! its temporary file is removed at once, and no recipient sees anything.

use std::fs;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use tidegate_core::{Account, Failure, Reply, Request};
use tidegate_store::Executor;
use tidegate_store::local::LocalStore;
use tidegate_store::maildir::MaildirStore;
use tidegate_store::users::UsersFile;

const CHILD_ENV: &str = "TIDEGATE_DISK_FULL_TEST_ROOT";
const LIMIT: u64 = 1 << 20;
const PASSED: &str = "DISK-FULL-CHECKS-PASSED";

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |entries| entries.count())
}

fn execute_append(store: &LocalStore, delivery: tidegate_core::DeliveryId, len: usize) -> Reply {
    store.execute(Request::AppendDelivery {
        delivery,
        bytes: Bytes::from(vec![b'x'; len]),
    })
}

fn begin(store: &LocalStore) -> tidegate_core::DeliveryId {
    match store.execute(Request::BeginDelivery {
        header: Bytes::from_static(b"Received: test\r\n"),
    }) {
        Reply::DeliveryStarted(id) => id,
        other => panic!("{other:?}"),
    }
}

/// Runs only as the child, under the file size limit.
#[test]
fn disk_full_child() {
    let Some(root) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let root = Path::new(&root);
    let users = UsersFile::open(root.join("users")).unwrap();
    let store = LocalStore::new(users, MaildirStore::new(root.join("mail"), true, "h"));
    let spool = root.join("mail/.tidegate-tmp");
    let limit = libc::rlimit {
        rlim_cur: LIMIT as libc::rlim_t,
        rlim_max: LIMIT as libc::rlim_t,
    };
    // SAFETY: plain system calls on this process, before any other thread writes files.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }

    let id = begin(&store);
    let mut failed_at = None;
    for chunk in 0..32 {
        match execute_append(&store, id, 64 * 1024) {
            Reply::Done => {}
            Reply::Failed(Failure::Temporary(text)) => {
                assert!(!text.contains('/'), "{text}");
                failed_at = Some(chunk);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        failed_at.is_some(),
        "2 MiB were written under a 1 MiB limit"
    );
    assert_eq!(count(&spool), 0, "the partial file is removed at once");
    assert!(matches!(
        execute_append(&store, id, 10),
        Reply::Failed(Failure::Temporary(_))
    ));
    let recipients = vec![
        Account("alice@example.com".into()),
        Account("bob@example.com".into()),
    ];
    match store.execute(Request::CommitDelivery {
        delivery: id,
        recipients: recipients.clone(),
        all_or_nothing: false,
    }) {
        Reply::Delivered(results) => {
            assert!(
                results
                    .iter()
                    .all(|r| matches!(r, Err(Failure::Temporary(_)))),
                "{results:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    for user in ["alice", "bob"] {
        assert_eq!(
            count(&root.join("mail/example.com").join(user).join("new")),
            0
        );
    }
    // The next message, under the limit, goes through.
    let id = begin(&store);
    assert!(matches!(execute_append(&store, id, 1000), Reply::Done));
    match store.execute(Request::CommitDelivery {
        delivery: id,
        recipients,
        all_or_nothing: true,
    }) {
        Reply::Delivered(results) => assert_eq!(results, [Ok(()), Ok(())]),
        other => panic!("{other:?}"),
    }
    assert_eq!(count(&spool), 0);
    assert_eq!(store.pending_deliveries(), 0);
    println!("{PASSED}");
}

#[test]
fn a_write_error_mid_message_is_temporary_and_leaves_nothing() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("users"),
        "alice@example.com {PLAIN}a\nbob@example.com {PLAIN}b\n",
    )
    .unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "disk_full_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(PASSED),
        "child failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}
