//! IMAP keywords (RFC 3501 §2.3.2) in maildir folders through
//! `tidegate_store::imap::ImapExecutor` and `ImapMailboxes`: letters in file names, the
//! keywords file, the 26-letter limit, concurrent definitions by two store instances,
//! and COPY/MOVE translating letters between folders.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;

use tidegate_core::Reply;
use tidegate_core::imap::command::StoreMode;
use tidegate_core::imap::{ImapReply, ImapRequest, Snapshot};
use tidegate_core::keywords::{KeywordMap, MAX_KEYWORDS};
use tidegate_store::MaildirStore;
use tidegate_store::imap::{Flags, ImapExecutor, ImapMailboxes, KEYWORDS_FILE};

mod imap_common;
use imap_common::{Fixture, account, mailbox};

impl Fixture {
    fn mailboxes(&self, host: &str) -> ImapMailboxes {
        ImapMailboxes::new(&self.root, true, host)
    }

    fn executor(&self) -> ImapExecutor {
        ImapExecutor::new(self.mailboxes("mx1.test"))
    }

    fn inbox(&self) -> PathBuf {
        self.root.join("example.org").join("bob")
    }

    fn deliver(&self, n: usize) {
        MaildirStore::new(&self.root, false, "mx1.test")
            .deliver(
                &[account()],
                format!("Subject: {n}\r\n\r\nbody {n}\r\n").as_bytes(),
            )
            .unwrap();
    }
}

fn imap(reply: Reply) -> ImapReply {
    match reply {
        Reply::Imap(reply) => reply,
        other => panic!("expected an IMAP reply, got {other:?}"),
    }
}

fn select(exec: &ImapExecutor, name: &str) -> Snapshot {
    match imap(exec.execute(ImapRequest::Snapshot {
        mailbox: mailbox(name),
        claim_recent: true,
    })) {
        ImapReply::Snapshot(snapshot) => snapshot,
        other => panic!("{other:?}"),
    }
}

/// A STORE on INBOX; the new flags per UID.
fn store(
    exec: &ImapExecutor,
    uids: &[u32],
    mode: StoreMode,
    flags: &[&str],
) -> Vec<(u32, Vec<String>)> {
    match imap(exec.execute(ImapRequest::Store {
        mailbox: mailbox("INBOX"),
        uids: uids.to_vec(),
        mode,
        flags: flags.iter().map(|f| (*f).to_owned()).collect(),
    })) {
        ImapReply::Flags(changes) => changes,
        other => panic!("{other:?}"),
    }
}

fn flags_of(snapshot: &Snapshot) -> Vec<Vec<String>> {
    snapshot.messages.iter().map(|m| m.flags.clone()).collect()
}

/// The info letters of every file in `cur/`, sorted.
fn letters_in(folder: &Path) -> Vec<String> {
    let mut letters: Vec<String> = fs::read_dir(folder.join("cur"))
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.split_once(":2,").map(|(_, l)| l.to_owned()).unwrap()
        })
        .collect();
    letters.sort();
    letters
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn stored_keywords_are_letters_named_by_the_keywords_file() {
    let f = Fixture::new();
    f.deliver(1);
    f.deliver(2);
    let exec = f.executor();
    let first = select(&exec, "INBOX");
    assert!(first.keywords.is_empty());
    assert_eq!(
        store(&exec, &[1], StoreMode::Add, &["$Label1", "Work", "\\Seen"]),
        vec![(1, strings(&["\\Seen", "$Label1", "Work"]))]
    );
    assert_eq!(
        fs::read(f.inbox().join(KEYWORDS_FILE)).unwrap(),
        b"0 $Label1\n1 Work\n"
    );
    assert_eq!(letters_in(&f.inbox()), ["", "Sab"]);
    // Case-insensitive: `work` is the same keyword, shown as first stored.
    assert_eq!(
        store(&exec, &[2], StoreMode::Add, &["work"]),
        vec![(2, strings(&["Work"]))]
    );
    assert_eq!(
        store(&exec, &[1], StoreMode::Remove, &["$LABEL1", "Unknown"]),
        vec![(1, strings(&["\\Seen", "Work"]))]
    );
    // Removing an unknown keyword does not define it.
    assert_eq!(
        fs::read(f.inbox().join(KEYWORDS_FILE)).unwrap(),
        b"0 $Label1\n1 Work\n"
    );
    assert_eq!(
        store(&exec, &[2], StoreMode::Replace, &["$Label1"]),
        vec![(2, strings(&["$Label1"]))]
    );
    assert_eq!(letters_in(&f.inbox()), ["Sb", "a"]);
    // A STORE of system flags only still reports the keywords a message keeps.
    assert_eq!(
        store(&exec, &[1, 2], StoreMode::Add, &["\\Flagged"]),
        vec![
            (1, strings(&["\\Seen", "\\Flagged", "Work"])),
            (2, strings(&["\\Flagged", "$Label1"]))
        ]
    );
    store(&exec, &[1, 2], StoreMode::Remove, &["\\Flagged"]);

    // A new executor on a new store instance (a restart) sees the same.
    let again = ImapExecutor::new(f.mailboxes("mx2.test"));
    let snapshot = select(&again, "INBOX");
    assert_eq!(snapshot.keywords, ["$Label1", "Work"]);
    assert_eq!(
        flags_of(&snapshot),
        [strings(&["\\Seen", "Work"]), strings(&["$Label1"])]
    );
}

#[test]
fn copy_and_move_keep_keyword_names_under_the_targets_letters() {
    let f = Fixture::new();
    f.deliver(1);
    f.deliver(2);
    let exec = f.executor();
    for name in ["Keep", "Bin"] {
        assert!(matches!(
            exec.execute(ImapRequest::Create {
                mailbox: mailbox(name)
            }),
            Reply::Done
        ));
    }
    // Keep already gives `a` to another keyword.
    let mailboxes = f.mailboxes("mx1.test");
    let appended = mailboxes
        .append(
            &account(),
            "Keep",
            Flags::default(),
            None,
            &b"Subject: x\r\n\r\nx\r\n"[..],
        )
        .unwrap();
    mailboxes
        .define_keywords(&account(), "Keep", &["Other"])
        .unwrap();
    assert_eq!(appended.uid, 1);
    select(&exec, "INBOX");
    store(&exec, &[1], StoreMode::Add, &["$Label1", "Work"]);
    store(&exec, &[2], StoreMode::Add, &["Work", "\\Flagged"]);

    let copied = imap(exec.execute(ImapRequest::Copy {
        mailbox: mailbox("INBOX"),
        uids: vec![1],
        target: "Keep".into(),
        remove: false,
    }));
    assert!(matches!(copied, ImapReply::Copied { ref pairs, .. } if pairs == &[(1, 2)]));
    let keep = select(&exec, "Keep");
    assert_eq!(keep.keywords, ["Other", "$Label1", "Work"]);
    assert_eq!(
        flags_of(&keep),
        [Vec::<String>::new(), strings(&["$Label1", "Work"])]
    );
    assert_eq!(letters_in(&f.inbox().join(".Keep")), ["", "bc"]);

    select(&exec, "INBOX");
    let moved = imap(exec.execute(ImapRequest::Copy {
        mailbox: mailbox("INBOX"),
        uids: vec![2],
        target: "Bin".into(),
        remove: true,
    }));
    assert!(matches!(moved, ImapReply::Copied { ref pairs, .. } if pairs == &[(2, 1)]));
    let bin = select(&exec, "Bin");
    // Only the keyword the moved message carries is defined in Bin.
    assert_eq!(bin.keywords, ["Work"]);
    assert_eq!(flags_of(&bin), [strings(&["\\Flagged", "Work"])]);
    assert_eq!(letters_in(&f.inbox().join(".Bin")), ["Fa"]);
}

#[test]
fn append_defines_its_keywords_in_the_target() {
    let f = Fixture::new();
    f.deliver(1);
    let exec = f.executor();
    let started = imap(exec.execute(ImapRequest::AppendBegin {
        mailbox: mailbox("INBOX"),
        flags: strings(&["\\Seen", "$Forwarded"]),
        date: None,
        size: 9,
    }));
    let ImapReply::AppendStarted(append) = started else {
        panic!("{started:?}");
    };
    assert!(matches!(
        exec.execute(ImapRequest::AppendData {
            append,
            bytes: bytes::Bytes::from_static(b"\r\nhello\r\n"),
        }),
        Reply::Done
    ));
    let appended = imap(exec.execute(ImapRequest::AppendCommit { append }));
    assert!(
        matches!(appended, ImapReply::Appended { uid: 2, .. }),
        "{appended:?}"
    );
    let inbox = select(&exec, "INBOX");
    assert_eq!(inbox.keywords, ["$Forwarded"]);
    assert_eq!(flags_of(&inbox)[1], strings(&["\\Seen", "$Forwarded"]));
}

#[test]
fn twenty_six_keywords_at_most_then_new_ones_are_left_out() {
    let f = Fixture::new();
    f.deliver(1);
    let exec = f.executor();
    select(&exec, "INBOX");
    let names: Vec<String> = (0..MAX_KEYWORDS).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let map = f
        .mailboxes("mx1.test")
        .define_keywords(&account(), "INBOX", &refs)
        .unwrap();
    assert!(map.is_full());
    assert_eq!(
        store(&exec, &[1], StoreMode::Add, &["k25", "TooMany"]),
        vec![(1, strings(&["k25"]))]
    );
    assert_eq!(letters_in(&f.inbox()), ["z"]);
    let snapshot = select(&exec, "INBOX");
    assert_eq!(snapshot.keywords.len(), MAX_KEYWORDS);
    assert!(!snapshot.keywords.iter().any(|k| k == "TooMany"));
}

#[test]
fn two_instances_defining_keywords_at_once_never_reassign_a_letter() {
    let f = Fixture::new();
    f.deliver(1);
    f.executor();
    select(&f.executor(), "INBOX");
    let run = |host: &'static str, prefix: &'static str| {
        let mailboxes = f.mailboxes(host);
        move || {
            let mut seen: Vec<KeywordMap> = Vec::new();
            for i in 0..12 {
                let name = format!("{prefix}{i}");
                let map = mailboxes
                    .define_keywords(&account(), "INBOX", &[&name])
                    .unwrap();
                assert!(map.letter_of(&name).is_some());
                seen.push(map);
            }
            seen
        }
    };
    let a = thread::spawn(run("mx1.test", "a"));
    let b = thread::spawn(run("mx2.test", "b"));
    let maps: Vec<KeywordMap> = [a, b].into_iter().flat_map(|t| t.join().unwrap()).collect();
    let last = KeywordMap::parse(&fs::read(f.inbox().join(KEYWORDS_FILE)).unwrap()).unwrap();
    assert_eq!(last.len(), 24);
    // Every map either instance saw agrees with the final one on every letter it named.
    for map in &maps {
        for letter in 'a'..='z' {
            if let Some(name) = map.name_of(letter) {
                assert_eq!(last.name_of(letter), Some(name));
            }
        }
    }
}
