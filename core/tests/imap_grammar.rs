//! The IMAP command grammar on complete commands: every command of RFC 3501 §6 and the
//! extensions, with the RFC's own examples, and the BAD cases.

use tidegate_core::imap::command::{
    CommandBody as C, ParseError, StatusItem, StoreMode, parse, parse_append_prefix,
};
use tidegate_core::imap::date::Date;
use tidegate_core::imap::fetch::{FetchAttribute as F, Section, SectionText};
use tidegate_core::imap::search::SearchKey as K;
use tidegate_core::imap::sequence::{SeqNumber::*, SequenceSet};

fn body(input: &str) -> C {
    match parse(input.as_bytes()) {
        Ok(command) => command.body,
        Err(e) => panic!("{input:?} failed: {e:?}"),
    }
}

fn error(input: &[u8]) -> ParseError {
    match parse(input) {
        Ok(command) => panic!("{input:?} parsed as {command:?}"),
        Err(e) => e,
    }
}

fn set(ranges: &[(u32, Option<u32>)]) -> SequenceSet {
    SequenceSet(
        ranges
            .iter()
            .map(|&(a, b)| {
                let n = |v: u32| if v == 0 { Last } else { Value(v) };
                (n(a), b.map_or(n(a), n))
            })
            .collect(),
    )
}

#[test]
fn simple_commands_and_tags() {
    let command = parse(b"a001 capability").map_err(|e| e.reason);
    assert_eq!(command.as_ref().map(|c| c.tag.as_str()), Ok("a001"));
    assert_eq!(body("A NOOP"), C::Noop);
    assert_eq!(body("A LOGOUT"), C::Logout);
    assert_eq!(body("A STARTTLS"), C::StartTls);
    assert_eq!(body("A CHECK"), C::Check);
    assert_eq!(body("A CLOSE"), C::Close);
    assert_eq!(body("A UNSELECT"), C::Unselect);
    assert_eq!(body("A EXPUNGE"), C::Expunge(None));
    assert_eq!(body("A IDLE"), C::Idle);
    assert_eq!(body("A NAMESPACE"), C::Namespace);
    assert_eq!(
        body("A UID EXPUNGE 3000:3002"),
        C::Expunge(Some(set(&[(3000, Some(3002))])))
    );
}

#[test]
fn login_with_quoted_and_literal_strings() {
    match body("a001 LOGIN SMITH SESAME") {
        C::Login { user, password } => {
            assert_eq!(user, "SMITH");
            assert_eq!(password.expose(), b"SESAME");
        }
        other => panic!("{other:?}"),
    }
    match body("A LOGIN {4}\r\nfred \"p\\\"w d\"") {
        C::Login { user, password } => {
            assert_eq!(user, "fred");
            assert_eq!(password.expose(), b"p\"w d");
        }
        other => panic!("{other:?}"),
    }
    match body("A AUTHENTICATE plain AGFsaWNlAHB3") {
        C::Authenticate { mechanism, initial } => {
            assert_eq!(mechanism, "PLAIN");
            assert_eq!(
                initial.map(|s| s.expose().to_vec()),
                Some(b"AGFsaWNlAHB3".to_vec())
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn mailbox_commands() {
    assert_eq!(body("A SELECT inbox"), C::Select("INBOX".into()));
    assert_eq!(
        body("A EXAMINE \"blurdybloop\""),
        C::Examine("blurdybloop".into())
    );
    assert_eq!(
        body("A CREATE owatagusiam/"),
        C::Create("owatagusiam/".into())
    );
    assert_eq!(body("A DELETE &AOQ-"), C::Delete("ä".into()));
    assert_eq!(
        body("A RENAME blurdybloop sarasoop"),
        C::Rename("blurdybloop".into(), "sarasoop".into())
    );
    assert_eq!(
        body("A SUBSCRIBE #news.comp.mail.mime"),
        C::Subscribe("#news.comp.mail.mime".into())
    );
    assert_eq!(body("A UNSUBSCRIBE x"), C::Unsubscribe("x".into()));
    assert_eq!(
        body("A LIST \"\" %"),
        C::List {
            reference: String::new(),
            pattern: "%".into(),
            subscribed: false
        }
    );
    assert_eq!(
        body("A LSUB \"#news.\" comp.mail.*"),
        C::List {
            reference: "#news.".into(),
            pattern: "comp.mail.*".into(),
            subscribed: true
        }
    );
    assert_eq!(
        body("A STATUS blurdybloop (UIDNEXT MESSAGES unseen)"),
        C::Status(
            "blurdybloop".into(),
            vec![
                StatusItem::UidNext,
                StatusItem::Messages,
                StatusItem::Unseen
            ]
        )
    );
    assert_eq!(
        body("A ENABLE UTF8=ACCEPT condstore"),
        C::Enable(vec!["UTF8=ACCEPT".into(), "CONDSTORE".into()])
    );
    assert_eq!(body("A ID NIL"), C::Id(vec![]));
    assert_eq!(
        body("A ID (\"name\" \"sodr\" \"version\" NIL)"),
        C::Id(vec![
            ("name".into(), Some("sodr".into())),
            ("version".into(), None)
        ])
    );
}

#[test]
fn fetch_items_and_macros() {
    assert_eq!(
        body("A FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])"),
        C::Fetch {
            uid: false,
            set: set(&[(2, Some(4))]),
            items: vec![
                F::Flags,
                F::Section {
                    peek: false,
                    section: Section {
                        part: vec![],
                        text: Some(SectionText::HeaderFields(vec![
                            "DATE".into(),
                            "FROM".into()
                        ]))
                    },
                    partial: None
                }
            ]
        }
    );
    assert_eq!(
        body("A UID FETCH 1:* fast"),
        C::Fetch {
            uid: true,
            set: set(&[(1, Some(0))]),
            items: F::fast()
        }
    );
    assert_eq!(
        body("A FETCH 1 ALL"),
        C::Fetch {
            uid: false,
            set: set(&[(1, None)]),
            items: F::all()
        }
    );
    assert_eq!(
        body("A FETCH 1 FULL"),
        C::Fetch {
            uid: false,
            set: set(&[(1, None)]),
            items: F::full()
        }
    );
    match body(
        "A FETCH 1,3:5,* (BODY.PEEK[1.2.MIME]<0.1024> body[] RFC822.SIZE BODY BODYSTRUCTURE UID ENVELOPE RFC822 RFC822.HEADER RFC822.TEXT INTERNALDATE BODY[TEXT] BODY[2.HEADER.FIELDS.NOT (X-A)])",
    ) {
        C::Fetch { set: s, items, .. } => {
            assert_eq!(s, set(&[(1, None), (3, Some(5)), (0, None)]));
            assert_eq!(items.len(), 13);
            assert_eq!(
                items[0],
                F::Section {
                    peek: true,
                    section: Section {
                        part: vec![1, 2],
                        text: Some(SectionText::Mime)
                    },
                    partial: Some((0, 1024))
                }
            );
            assert_eq!(
                items[1],
                F::Section {
                    peek: false,
                    section: Section::default(),
                    partial: None
                }
            );
            assert_eq!(items[4], F::BodyStructure);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn store_copy_move() {
    assert_eq!(
        body("A003 STORE 2:4 +FLAGS (\\Deleted)"),
        C::Store {
            uid: false,
            set: set(&[(2, Some(4))]),
            mode: StoreMode::Add,
            silent: false,
            flags: vec!["\\Deleted".into()]
        }
    );
    assert_eq!(
        body("A UID STORE 5 -flags.silent \\Seen $Work"),
        C::Store {
            uid: true,
            set: set(&[(5, None)]),
            mode: StoreMode::Remove,
            silent: true,
            flags: vec!["\\Seen".into(), "$Work".into()]
        }
    );
    assert_eq!(
        body("A STORE 1 FLAGS ()"),
        C::Store {
            uid: false,
            set: set(&[(1, None)]),
            mode: StoreMode::Replace,
            silent: false,
            flags: vec![]
        }
    );
    assert_eq!(
        body("A003 COPY 2:4 MEETING"),
        C::Copy {
            uid: false,
            set: set(&[(2, Some(4))]),
            mailbox: "MEETING".into(),
            remove: false
        }
    );
    assert_eq!(
        body("A UID MOVE 42:69 foo"),
        C::Copy {
            uid: true,
            set: set(&[(42, Some(69))]),
            mailbox: "foo".into(),
            remove: true
        }
    );
}

#[test]
fn search_keys() {
    let d = |y, m, day| Date::from_ymd(y, m, day).unwrap_or(Date { days: 0 });
    assert_eq!(
        body("A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\""),
        C::Search {
            uid: false,
            charset: None,
            key: K::And(vec![
                K::Flagged,
                K::Since(d(1994, 2, 1)),
                K::Not(Box::new(K::From("Smith".into())))
            ])
        }
    );
    assert_eq!(
        body("A285 UID SEARCH CHARSET UTF-8 TEXT {6}\r\nXXXXXX"),
        C::Search {
            uid: true,
            charset: Some("UTF-8".into()),
            key: K::And(vec![K::Text("XXXXXX".into())])
        }
    );
    assert_eq!(
        body("A SEARCH OR (SEEN 1:3) UID 5,* HEADER X-Spam yes LARGER 10 2,4:*"),
        C::Search {
            uid: false,
            charset: None,
            key: K::And(vec![
                K::Or(
                    Box::new(K::And(vec![K::Seen, K::Sequence(set(&[(1, Some(3))]))])),
                    Box::new(K::Uid(set(&[(5, None), (0, None)])))
                ),
                K::Header("X-Spam".into(), "yes".into()),
                K::Larger(10),
                K::Sequence(set(&[(2, None), (4, Some(0))])),
            ])
        }
    );
    assert_eq!(
        body("A SEARCH SENTON \"7-Jul-2020\" UNKEYWORD $Junk"),
        C::Search {
            uid: false,
            charset: None,
            key: K::And(vec![K::SentOn(d(2020, 7, 7)), K::Unkeyword("$Junk".into())])
        }
    );
    // Nesting is bounded rather than recursing without limit.
    let deep = format!("A SEARCH {}ALL", "NOT ".repeat(1000));
    assert_eq!(error(deep.as_bytes()).reason, "Syntax error in arguments");
    let deep = format!("A SEARCH {}ALL{}", "(".repeat(1000), ")".repeat(1000));
    assert_eq!(error(deep.as_bytes()).tag.as_deref(), Some("A"));
}

#[test]
fn append_prefix() {
    let prefix = parse_append_prefix(
        b"A003 APPEND saved-messages (\\Seen) \"17-Jul-1996 02:44:25 -0700\" {310}",
    );
    let prefix = prefix.unwrap_or_else(|| panic!("no prefix"));
    assert_eq!(prefix.tag, "A003");
    assert_eq!(prefix.mailbox, "saved-messages");
    assert_eq!(prefix.flags, vec!["\\Seen".to_string()]);
    assert_eq!(prefix.date, Some((837_596_665, -420)));
    assert!(parse_append_prefix(b"A APPEND INBOX {5+}").is_some());
    assert!(
        parse_append_prefix(b"A APPEND {5}").is_none(),
        "mailbox literal comes first"
    );
    assert!(parse_append_prefix(b"A LOGIN x {5}").is_none());
}

#[test]
fn bad_syntax() {
    assert_eq!(error(b"").tag, None);
    assert_eq!(error(b"+tag NOOP").tag, None);
    assert_eq!(error(b"A").reason, "Missing command");
    assert_eq!(error(b"A XYZZY").reason, "Unknown command");
    assert_eq!(error(b"A NOOP extra").reason, "Syntax error in arguments");
    assert_eq!(
        error(b"A FETCH 0 FLAGS").reason,
        "Syntax error in arguments"
    );
    assert_eq!(
        error(b"A FETCH 1 (FLAGS").reason,
        "Syntax error in arguments"
    );
    assert_eq!(
        error(b"A FETCH 99999999999 FLAGS").reason,
        "Syntax error in arguments"
    );
    assert_eq!(
        error(b"A SELECT &Jjo!-").reason,
        "Syntax error in arguments"
    );
    assert_eq!(
        error(b"A LOGIN {5}\r\nab").reason,
        "Syntax error in arguments"
    );
    assert_eq!(
        error(b"A LOGIN \"a\rb\" c").reason,
        "Syntax error in arguments"
    );
    assert_eq!(error(b"A UID NOOP").reason, "Unknown command");
    assert_eq!(
        error(b"A APPEND INBOX {3}\r\nabc").reason,
        "Syntax error in arguments"
    );
    assert_eq!(error(b"A SEARCH").reason, "Syntax error in arguments");
}
