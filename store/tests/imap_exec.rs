//! The IMAP executor (`tidegate_store::imap::ImapExecutor`) on real maildirs in
//! temporary directories: every request kind with its exact answer, the UID map across
//! executors, and pending APPENDs.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use tidegate_core::imap::command::StoreMode;
use tidegate_core::imap::fetch::{ContentItem, Section, SectionText};
use tidegate_core::imap::search::SearchKey;
use tidegate_core::imap::{AppendId, ImapReply, ImapRequest, SearchCandidate, Snapshot};
use tidegate_core::{Failure, Reply};
use tidegate_store::MaildirStore;
use tidegate_store::imap::{Flags, ImapExecutor, ImapMailboxes};

mod imap_common;
use imap_common::{Fixture, account, mailbox};

const MESSAGE: &str = "Date: Mon, 2 Feb 2026 10:00:00 +0000\r\n\
From: Alice <alice@example.com>\r\n\
To: bob@example.org\r\n\
Subject: Hello\r\n\
Message-ID: <m1@example.com>\r\n\
\r\n\
Hello Bob\r\n";

const SECOND: &str = "From: carol@example.net\r\nSubject: Weekly report\r\n\r\nNumbers\r\n";

impl Fixture {
    fn mailboxes(&self) -> ImapMailboxes {
        ImapMailboxes::new(&self.root, false, "mx1.test")
    }

    fn executor(&self) -> ImapExecutor {
        ImapExecutor::new(self.mailboxes())
    }

    fn maildir(&self) -> PathBuf {
        self.root.join("example.org").join("bob")
    }

    fn deliver(&self, body: &str) {
        MaildirStore::new(&self.root, false, "mx1.test")
            .deliver(&[account()], body.as_bytes())
            .unwrap();
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn imap(reply: Reply) -> ImapReply {
    match reply {
        Reply::Imap(reply) => reply,
        other => panic!("expected an IMAP reply, got {other:?}"),
    }
}

fn failed(reply: Reply) -> Failure {
    match reply {
        Reply::Failed(failure) => failure,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn done(reply: Reply) {
    assert!(matches!(reply, Reply::Done), "{reply:?}");
}

fn snapshot(exec: &ImapExecutor, name: &str, claim_recent: bool) -> Snapshot {
    match imap(exec.execute(ImapRequest::Snapshot {
        mailbox: mailbox(name),
        claim_recent,
    })) {
        ImapReply::Snapshot(snapshot) => snapshot,
        other => panic!("{other:?}"),
    }
}

fn uids_of(snapshot: &Snapshot) -> Vec<u32> {
    snapshot.messages.iter().map(|m| m.uid).collect()
}

fn content(exec: &ImapExecutor, uid: u32, items: Vec<ContentItem>) -> Vec<Option<Bytes>> {
    match imap(exec.execute(ImapRequest::FetchContent {
        mailbox: mailbox("INBOX"),
        uid,
        items,
    })) {
        ImapReply::Content(content) => content,
        other => panic!("{other:?}"),
    }
}

fn store(exec: &ImapExecutor, uids: Vec<u32>, mode: StoreMode, flags: &[&str]) -> ImapReply {
    imap(exec.execute(ImapRequest::Store {
        mailbox: mailbox("INBOX"),
        uids,
        mode,
        flags: flags.iter().map(|f| (*f).to_owned()).collect(),
    }))
}

fn strings(flags: &[&str]) -> Vec<String> {
    flags.iter().map(|f| (*f).to_owned()).collect()
}

fn begin(exec: &ImapExecutor, name: &str, flags: &[&str], size: u32) -> Reply {
    exec.execute(ImapRequest::AppendBegin {
        mailbox: mailbox(name),
        flags: strings(flags),
        date: Some((1_700_000_000, 60)),
        size,
    })
}

fn started(reply: Reply) -> AppendId {
    match imap(reply) {
        ImapReply::AppendStarted(id) => id,
        other => panic!("{other:?}"),
    }
}

fn data(exec: &ImapExecutor, append: AppendId, bytes: &[u8]) -> Reply {
    exec.execute(ImapRequest::AppendData {
        append,
        bytes: Bytes::copy_from_slice(bytes),
    })
}

#[test]
fn folders_list_create_rename_delete_subscribe() {
    let fx = Fixture::new();
    let exec = fx.executor();
    let list = |exec: &ImapExecutor| match imap(
        exec.execute(ImapRequest::ListMailboxes { account: account() }),
    ) {
        ImapReply::Mailboxes(list) => list,
        other => panic!("{other:?}"),
    };
    let first = list(&exec);
    let names: Vec<&str> = first.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"]
    );
    let sent = first.iter().find(|m| m.name == "Sent").unwrap();
    assert_eq!(sent.attributes, ["\\HasNoChildren", "\\Sent"]);
    assert!(sent.subscribed);

    done(exec.execute(ImapRequest::Create {
        mailbox: mailbox("Projekte/Entwürfe"),
    }));
    assert!(fx.maildir().join(".Projekte.Entw&APw-rfe/cur").is_dir());
    assert!(matches!(
        imap(exec.execute(ImapRequest::Create {
            mailbox: mailbox("Projekte/Entwürfe"),
        })),
        ImapReply::AlreadyExists
    ));
    let names: Vec<String> = list(&exec).into_iter().map(|m| m.name).collect();
    assert!(names.contains(&"Projekte/Entwürfe".to_owned()), "{names:?}");
    assert!(matches!(
        failed(exec.execute(ImapRequest::Create {
            mailbox: mailbox("a.b"),
        })),
        Failure::Permanent(_)
    ));

    assert!(matches!(
        imap(exec.execute(ImapRequest::Rename {
            mailbox: mailbox("Projekte/Entwürfe"),
            to: "Sent".into(),
        })),
        ImapReply::AlreadyExists
    ));
    done(exec.execute(ImapRequest::Rename {
        mailbox: mailbox("Projekte/Entwürfe"),
        to: "Résumé".into(),
    }));
    assert!(fx.maildir().join(".R&AOk-sum&AOk-/cur").is_dir());

    done(exec.execute(ImapRequest::Subscribe {
        mailbox: mailbox("Junk"),
        subscribe: false,
    }));
    let junk = list(&exec).into_iter().find(|m| m.name == "Junk").unwrap();
    assert!(!junk.subscribed);

    done(exec.execute(ImapRequest::Delete {
        mailbox: mailbox("Résumé"),
    }));
    assert_eq!(
        failed(exec.execute(ImapRequest::Delete {
            mailbox: mailbox("Résumé"),
        })),
        Failure::Gone
    );
    assert_eq!(
        failed(exec.execute(ImapRequest::Status {
            mailbox: mailbox("Nowhere"),
        })),
        Failure::Gone
    );
}

#[test]
fn snapshot_status_read_and_fetch_content() {
    let fx = Fixture::new();
    fx.deliver(MESSAGE);
    fx.deliver(SECOND);
    let exec = fx.executor();
    match imap(exec.execute(ImapRequest::Status {
        mailbox: mailbox("INBOX"),
    })) {
        ImapReply::Status(status) => {
            assert_eq!(
                (
                    status.messages,
                    status.recent,
                    status.unseen,
                    status.uid_next
                ),
                (2, 2, 2, 3)
            );
            assert_ne!(status.uid_validity, 0);
        }
        other => panic!("{other:?}"),
    }
    let first = snapshot(&exec, "INBOX", true);
    assert_eq!(uids_of(&first), [1, 2]);
    assert_eq!(first.uid_next, 3);
    assert!(
        first
            .messages
            .iter()
            .all(|m| m.recent && m.flags.is_empty())
    );
    assert_eq!(first.messages[0].size, MESSAGE.len() as u64);
    let again = snapshot(&exec, "INBOX", true);
    assert!(again.messages.iter().all(|m| !m.recent));

    match exec.execute(ImapRequest::Read {
        mailbox: mailbox("INBOX"),
        uid: 1,
        offset: 6,
        max_len: 10,
    }) {
        Reply::Chunk { bytes, end } => {
            assert_eq!(&bytes[..], &MESSAGE.as_bytes()[6..16]);
            assert!(!end);
        }
        other => panic!("{other:?}"),
    }
    match exec.execute(ImapRequest::Read {
        mailbox: mailbox("INBOX"),
        uid: 1,
        offset: 0,
        max_len: 1 << 16,
    }) {
        Reply::Chunk { bytes, end } => {
            assert_eq!(&bytes[..], MESSAGE.as_bytes());
            assert!(end);
        }
        other => panic!("{other:?}"),
    }

    let section =
        |part: Vec<u32>, text: Option<SectionText>| ContentItem::Section(Section { part, text });
    let answer = content(
        &exec,
        1,
        vec![
            ContentItem::Envelope,
            ContentItem::Body,
            section(vec![], Some(SectionText::Header)),
            section(vec![], Some(SectionText::Text)),
            section(
                vec![],
                Some(SectionText::HeaderFields(vec![
                    "subject".into(),
                    "To".into(),
                ])),
            ),
            section(vec![1], None),
            section(vec![2, 1], None),
            ContentItem::BodyStructure,
        ],
    );
    let text = |i: usize| String::from_utf8(answer[i].clone().unwrap().to_vec()).unwrap();
    assert_eq!(
        text(0),
        "(\"Mon, 2 Feb 2026 10:00:00 +0000\" \"Hello\" \
         ((\"Alice\" NIL \"alice\" \"example.com\")) \
         ((\"Alice\" NIL \"alice\" \"example.com\")) \
         ((\"Alice\" NIL \"alice\" \"example.com\")) \
         ((NIL NIL \"bob\" \"example.org\")) NIL NIL NIL \"<m1@example.com>\")"
    );
    assert_eq!(
        text(1),
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 11 1)"
    );
    let header_end = MESSAGE.find("\r\n\r\n").unwrap() + 4;
    assert_eq!(text(2), &MESSAGE[..header_end]);
    assert_eq!(text(3), "Hello Bob\r\n");
    assert_eq!(text(4), "To: bob@example.org\r\nSubject: Hello\r\n\r\n");
    assert_eq!(text(5), "Hello Bob\r\n");
    assert_eq!(answer[6], None);
    assert!(
        text(7).starts_with(&text(1)[..text(1).len() - 1]),
        "{}",
        text(7)
    );

    assert_eq!(
        failed(exec.execute(ImapRequest::FetchContent {
            mailbox: mailbox("INBOX"),
            uid: 42,
            items: vec![ContentItem::Envelope],
        })),
        Failure::Gone
    );
}

#[test]
fn store_sets_flags_and_skips_missing_uids() {
    let fx = Fixture::new();
    fx.deliver(MESSAGE);
    fx.deliver(SECOND);
    let exec = fx.executor();
    snapshot(&exec, "INBOX", true);
    match store(
        &exec,
        vec![1, 2, 99],
        StoreMode::Add,
        &["\\seen", "$Keyword"],
    ) {
        ImapReply::Flags(flags) => assert_eq!(
            flags,
            [
                (1, strings(&["\\Seen", "$Keyword"])),
                (2, strings(&["\\Seen", "$Keyword"]))
            ]
        ),
        other => panic!("{other:?}"),
    }
    match store(
        &exec,
        vec![2],
        StoreMode::Replace,
        &["\\Flagged", "\\DELETED"],
    ) {
        ImapReply::Flags(flags) => assert_eq!(flags, [(2, strings(&["\\Flagged", "\\Deleted"]))]),
        other => panic!("{other:?}"),
    }
    match store(
        &exec,
        vec![1, 2],
        StoreMode::Remove,
        &["\\Seen", "\\Flagged"],
    ) {
        ImapReply::Flags(flags) => {
            assert_eq!(
                flags,
                [(1, strings(&["$Keyword"])), (2, strings(&["\\Deleted"]))]
            )
        }
        other => panic!("{other:?}"),
    }
    let names = files_in(&fx.maildir().join("cur"));
    assert_eq!(names.len(), 2);
    assert!(names.iter().any(|n| n.ends_with(":2,T")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(":2,a")), "{names:?}");
    let seen = snapshot(&exec, "INBOX", false);
    assert_eq!(seen.messages[1].flags, strings(&["\\Deleted"]));
}

#[test]
fn copy_move_and_expunge() {
    let fx = Fixture::new();
    fx.deliver(MESSAGE);
    fx.deliver(SECOND);
    let exec = fx.executor();
    snapshot(&exec, "INBOX", true);
    let archive_validity = match imap(exec.execute(ImapRequest::Status {
        mailbox: mailbox("Archive"),
    })) {
        ImapReply::Status(status) => status.uid_validity,
        other => panic!("{other:?}"),
    };
    match imap(exec.execute(ImapRequest::Copy {
        mailbox: mailbox("INBOX"),
        uids: vec![1, 2, 7],
        target: "Archive".into(),
        remove: false,
    })) {
        ImapReply::Copied {
            uid_validity,
            pairs,
        } => {
            assert_eq!(uid_validity, archive_validity);
            assert_eq!(pairs, [(1, 1), (2, 2)]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(uids_of(&snapshot(&exec, "Archive", false)), [1, 2]);
    match imap(exec.execute(ImapRequest::Copy {
        mailbox: mailbox("INBOX"),
        uids: vec![2],
        target: "Trash".into(),
        remove: true,
    })) {
        ImapReply::Copied { pairs, .. } => assert_eq!(pairs, [(2, 1)]),
        other => panic!("{other:?}"),
    }
    assert_eq!(uids_of(&snapshot(&exec, "INBOX", false)), [1]);
    assert_eq!(
        failed(exec.execute(ImapRequest::Copy {
            mailbox: mailbox("INBOX"),
            uids: vec![1],
            target: "Nowhere".into(),
            remove: false,
        })),
        Failure::Gone
    );
    match imap(exec.execute(ImapRequest::Expunge {
        mailbox: mailbox("INBOX"),
        uids: vec![1, 2, 5],
    })) {
        ImapReply::Expunged(uids) => assert_eq!(uids, [1]),
        other => panic!("{other:?}"),
    }
    assert_eq!(files_in(&fx.maildir().join("cur")), Vec::<String>::new());
    assert_eq!(files_in(&fx.maildir().join(".Archive/cur")).len(), 2);
}

#[test]
fn search_reads_content() {
    let fx = Fixture::new();
    fx.deliver(MESSAGE);
    fx.deliver(SECOND);
    let exec = fx.executor();
    let snap = snapshot(&exec, "INBOX", true);
    let candidates: Vec<SearchCandidate> = snap
        .messages
        .iter()
        .enumerate()
        .map(|(i, meta)| SearchCandidate {
            seq: i as u32 + 1,
            meta: meta.clone(),
        })
        .collect();
    let search = |key: SearchKey| match imap(exec.execute(ImapRequest::Search {
        mailbox: mailbox("INBOX"),
        key,
        candidates: candidates.clone(),
        last: (2, 2),
    })) {
        ImapReply::Matches(uids) => uids,
        other => panic!("{other:?}"),
    };
    assert_eq!(search(SearchKey::Body("bob".into())), [1]);
    assert_eq!(
        search(SearchKey::Header("subject".into(), "REPORT".into())),
        [2]
    );
    assert_eq!(search(SearchKey::Text("example".into())), [1, 2]);
    assert_eq!(search(SearchKey::Text("absent".into())), Vec::<u32>::new());
}

#[test]
fn append_commit_abort_and_limits() {
    let fx = Fixture::new();
    let exec = fx.executor();
    let body = MESSAGE.as_bytes();
    let id = started(begin(&exec, "Sent", &["\\Seen"], body.len() as u32));
    done(data(&exec, id, &body[..20]));
    done(data(&exec, id, &body[20..]));
    let (validity, uid) = match imap(exec.execute(ImapRequest::AppendCommit { append: id })) {
        ImapReply::Appended { uid_validity, uid } => (uid_validity, uid),
        other => panic!("{other:?}"),
    };
    assert_eq!(uid, 1);
    let sent = snapshot(&exec, "Sent", true);
    assert_eq!(sent.uid_validity, validity);
    assert_eq!(sent.messages.len(), 1);
    let meta = &sent.messages[0];
    assert_eq!(meta.flags, strings(&["\\Seen"]));
    assert_eq!(meta.internal_date, 1_700_000_000);
    assert_eq!(meta.size, body.len() as u64);
    let sent_dir = fx.maildir().join(".Sent");
    assert_eq!(files_in(&sent_dir.join("tmp")), Vec::<String>::new());
    let stored = files_in(&sent_dir.join("cur"));
    assert_eq!(
        fs::read(sent_dir.join("cur").join(&stored[0])).unwrap(),
        body
    );

    // More than announced: refused and dropped.
    let id = started(begin(&exec, "Sent", &[], 5));
    assert!(matches!(
        failed(data(&exec, id, b"123456")),
        Failure::Permanent(_)
    ));
    assert!(matches!(
        failed(exec.execute(ImapRequest::AppendCommit { append: id })),
        Failure::Permanent(_)
    ));
    // Aborted: its file goes.
    let id = started(begin(&exec, "Sent", &[], 5));
    done(data(&exec, id, b"12"));
    assert_eq!(files_in(&sent_dir.join("tmp")).len(), 1);
    done(exec.execute(ImapRequest::AppendAbort { append: id }));
    assert_eq!(files_in(&sent_dir.join("tmp")), Vec::<String>::new());
    assert_eq!(uids_of(&snapshot(&exec, "Sent", false)), [1]);
    // No such folder: [TRYCREATE].
    assert_eq!(failed(begin(&exec, "Nowhere", &[], 5)), Failure::Gone);
}

#[test]
fn abandoned_append_is_removed_after_its_timeout() {
    let fx = Fixture::new();
    let exec = fx
        .executor()
        .with_append_timeout(Duration::from_millis(100));
    let id = started(begin(&exec, "INBOX", &[], 10));
    done(data(&exec, id, b"Subject"));
    let tmp = fx.maildir().join("tmp");
    assert_eq!(files_in(&tmp).len(), 1);
    thread::sleep(Duration::from_millis(300));
    snapshot(&exec, "INBOX", false);
    assert_eq!(files_in(&tmp), Vec::<String>::new());
    assert!(matches!(
        failed(data(&exec, id, b": x")),
        Failure::Permanent(_)
    ));
}

#[test]
fn other_executors_changes_are_seen() {
    let fx = Fixture::new();
    fx.deliver(MESSAGE);
    fx.deliver(SECOND);
    let mine = fx.executor();
    let other = fx.executor();
    assert_eq!(uids_of(&snapshot(&mine, "INBOX", true)), [1, 2]);

    // Another executor (no map yet) expunges UID 2: Gone for one message, skipped for
    // several.
    match imap(other.execute(ImapRequest::Expunge {
        mailbox: mailbox("INBOX"),
        uids: vec![2],
    })) {
        ImapReply::Expunged(uids) => assert_eq!(uids, [2]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        failed(mine.execute(ImapRequest::Read {
            mailbox: mailbox("INBOX"),
            uid: 2,
            offset: 0,
            max_len: 100,
        })),
        Failure::Gone
    );
    match store(&mine, vec![1, 2], StoreMode::Add, &["\\Answered"]) {
        ImapReply::Flags(flags) => assert_eq!(flags, [(1, strings(&["\\Answered"]))]),
        other => panic!("{other:?}"),
    }

    // Another process appends UID 3: a miss in the map, served by a fresh snapshot.
    fx.mailboxes()
        .append(
            &account(),
            "INBOX",
            Flags::default(),
            None,
            SECOND.as_bytes(),
        )
        .unwrap();
    let answer = content(
        &mine,
        3,
        vec![ContentItem::Section(Section {
            part: vec![],
            text: Some(SectionText::Text),
        })],
    );
    assert_eq!(answer, [Some(Bytes::from_static(b"Numbers\r\n"))]);
    // That snapshot did not claim \Recent: the next SELECT still sees UID 3 as recent.
    let next = snapshot(&other, "INBOX", true);
    assert_eq!(uids_of(&next), [1, 3]);
    assert!(next.messages[1].recent && !next.messages[0].recent);
}

/// The real IMAP session on the smol shell with this executor behind it: every login
/// opens bob's account.
struct E2eExecutor(ImapExecutor);

impl tidegate_store::Executor for E2eExecutor {
    fn execute(&self, request: tidegate_core::Request) -> Reply {
        match request {
            tidegate_core::Request::Authenticate { .. } => Reply::Authenticated(account()),
            tidegate_core::Request::Imap(request) => self.0.execute(request),
            _ => Reply::Failed(Failure::Permanent("not in this test".into())),
        }
    }
}

struct E2eSessions;

impl tidegate_store::SessionFactory for E2eSessions {
    fn open(
        &self,
        _listener: usize,
        peer: std::net::SocketAddr,
        now: std::time::Instant,
    ) -> tidegate_store::service::BoxedSession {
        let conn = tidegate_core::imap::ConnInfo {
            client: peer,
            implicit_tls: false,
            starttls_available: false,
            plaintext_auth: true,
            may_override_client: false,
        };
        Box::new(tidegate_core::imap::ImapSession::new(
            std::sync::Arc::new(tidegate_core::imap::ImapConfig::default()),
            conn,
            now,
        ))
    }

    fn busy(
        &self,
        listener: usize,
        peer: std::net::SocketAddr,
        now: std::time::Instant,
    ) -> tidegate_store::service::BoxedSession {
        self.open(listener, peer, now)
    }
}

const CLIENT: &str = r#"
import imaplib, sys
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
m.login("bob@example.org", "secret")
typ, data = m.list('""', "*")
print("list", typ, len(data))
typ, data = m.select("INBOX")
print("select", typ, data[0].decode())
typ, data = m.fetch("1:*", "(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)")
print("fetch", typ, b"\"Hello\"" in data[0], b"\"Weekly report\"" in data[1])
typ, data = m.uid("FETCH", "1", "BODY.PEEK[]")
print("body", typ, data[0][1] == sys.argv[2].encode().decode("unicode_escape").encode())
typ, data = m.store("1", "+FLAGS", "(\\Seen)")
print("store", typ, b"\\Seen" in data[0])
typ, data = m.append("Sent", "(\\Seen)", None, b"Subject: sent\r\n\r\nhi\r\n")
print("append", typ)
typ, data = m.copy("1:2", "Archive")
print("copy", typ)
typ, data = m.store("2", "+FLAGS", "(\\Deleted)")
typ, data = m.expunge()
print("expunge", typ, data)
print("logout", m.logout()[0])
"#;

#[test]
fn python_imaplib_against_the_server() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("python3 is not installed; skipping the imaplib test");
        return;
    }
    let fx = Fixture::new();
    fx.deliver(MESSAGE);
    fx.deliver(SECOND);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let spec = tidegate_store::ServerSpec {
        listeners: vec![listener],
        factory: std::sync::Arc::new(E2eSessions),
        executor: std::sync::Arc::new(E2eExecutor(fx.executor())),
        max_connections: 10,
        shutdown_grace: Duration::ZERO,
        threads: 1,
        workers: 2,
    };
    let shutdown = tidegate_store::Shutdown::new();
    let stop = shutdown.clone();
    let server = thread::spawn(move || tidegate_shell_smol::serve(spec, stop));
    let escaped = MESSAGE.replace('\r', "\\r").replace('\n', "\\n");
    let output = std::process::Command::new("python3")
        .args(["-c", CLIENT, &port.to_string(), &escaped])
        .output()
        .unwrap();
    shutdown.trigger();
    server.join().unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout,
        "list OK 6\n\
         select OK 2\n\
         fetch OK True True\n\
         body OK True\n\
         store OK True\n\
         append OK\n\
         copy OK\n\
         expunge OK [b'2']\n\
         logout BYE\n"
    );
    assert_eq!(files_in(&fx.maildir().join(".Sent/cur")).len(), 1);
    assert_eq!(files_in(&fx.maildir().join(".Archive/cur")).len(), 2);
    assert_eq!(files_in(&fx.maildir().join("cur")).len(), 1);
}

#[test]
fn store_read_and_expunge_after_a_snapshot_from_the_folder_cache() {
    let fx = Fixture::new();
    fx.deliver(MESSAGE);
    fx.deliver(SECOND);
    let mailboxes = fx.mailboxes();
    let exec = ImapExecutor::new(mailboxes.clone());
    snapshot(&exec, "INBOX", true); // claims both messages, writes the uidlist
    let scanned = snapshot(&exec, "INBOX", true);
    thread::sleep(tidegate_store::imap::FOLDER_CACHE_SETTLE);
    assert_eq!(snapshot(&exec, "INBOX", true), scanned);
    let hits = mailboxes.folder_cache_stats().hits;
    assert_eq!(snapshot(&exec, "INBOX", true), scanned);
    assert_eq!(mailboxes.folder_cache_stats().hits, hits + 1);

    match store(&exec, vec![1], StoreMode::Add, &["\\Flagged"]) {
        ImapReply::Flags(flags) => assert_eq!(flags, [(1, strings(&["\\Flagged"]))]),
        other => panic!("{other:?}"),
    }
    // The UID map follows the rename; the cached snapshot it shared is not touched
    // (the next SELECT scans, as cur/ changed).
    match exec.execute(ImapRequest::Read {
        mailbox: mailbox("INBOX"),
        uid: 1,
        offset: 0,
        max_len: 4096,
    }) {
        Reply::Chunk { bytes, end } => {
            assert_eq!(&bytes[..], MESSAGE.as_bytes());
            assert!(end);
        }
        other => panic!("{other:?}"),
    }
    let seen = snapshot(&exec, "INBOX", false);
    assert_eq!(seen.messages[0].flags, strings(&["\\Flagged"]));
    assert_eq!(mailboxes.folder_cache_stats().hits, hits + 1);
    match imap(exec.execute(ImapRequest::Expunge {
        mailbox: mailbox("INBOX"),
        uids: vec![2],
    })) {
        ImapReply::Expunged(uids) => assert_eq!(uids, [2]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        failed(exec.execute(ImapRequest::Read {
            mailbox: mailbox("INBOX"),
            uid: 2,
            offset: 0,
            max_len: 4096,
        })),
        Failure::Gone
    );
    assert_eq!(uids_of(&snapshot(&exec, "INBOX", true)), [1]);
}
