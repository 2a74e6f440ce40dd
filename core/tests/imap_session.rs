//! The IMAP session against an in-memory store: byte-exact responses for every
//! command, RFC 3501's example exchanges, literals and their limits, pipelining and
//! splits at every byte, IDLE, streaming with backpressure, timers.
#![allow(clippy::disallowed_methods)]

mod imap_common;

use std::time::Duration;

use imap_common::{Harness, MESSAGE_1, MESSAGE_2, config, conn};
use tidegate_core::Session;

const CAPS: &str = "IMAP4rev1 LITERAL+ SASL-IR IDLE UIDPLUS MOVE NAMESPACE ID ENABLE UNSELECT SPECIAL-USE CHILDREN";

#[test]
fn greeting_capability_logout() {
    let mut h = Harness::new();
    assert_eq!(
        h.take(),
        format!("* OK [CAPABILITY {CAPS} AUTH=PLAIN] imap.example.com IMAP4rev1 ready\r\n")
    );
    h.send("abcd CAPABILITY\r\n");
    assert_eq!(
        h.take(),
        format!("* CAPABILITY {CAPS} AUTH=PLAIN\r\nabcd OK CAPABILITY completed\r\n")
    );
    h.send("A023 LOGOUT\r\n");
    assert_eq!(
        h.take(),
        "* BYE Logging out\r\nA023 OK LOGOUT completed\r\n"
    );
    assert!(h.closed);
}

#[test]
fn plaintext_login_disabled_without_tls() {
    let mut h = Harness::with(config(), conn(false, true));
    assert_eq!(
        h.take(),
        format!(
            "* OK [CAPABILITY {CAPS} STARTTLS LOGINDISABLED] imap.example.com IMAP4rev1 ready\r\n"
        )
    );
    h.send("a LOGIN alice secret\r\nb AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    assert_eq!(
        h.take(),
        "a NO [PRIVACYREQUIRED] LOGIN is disabled before STARTTLS\r\n\
         b NO [PRIVACYREQUIRED] Authentication is disabled before STARTTLS\r\n"
    );
    assert!(h.store.log.is_empty());
}

#[test]
fn login_failure_is_delayed_then_success() {
    let mut h = Harness::new();
    h.take();
    h.send("a1 LOGIN alice wrong\r\na2 NOOP\r\n");
    assert_eq!(h.take(), "", "no answer before the failure delay");
    h.advance(Duration::from_secs(2));
    assert_eq!(
        h.take(),
        "a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\na2 OK NOOP completed\r\n"
    );
    h.send("a3 LOGIN \"alice\" {6+}\r\nsecret\r\n");
    assert_eq!(h.take(), format!("a3 OK [CAPABILITY {CAPS}] Logged in\r\n"));
    h.send("a4 LOGIN alice secret\r\n");
    assert_eq!(h.take(), "a4 BAD Already authenticated\r\n");
}

#[test]
fn three_failed_logins_close() {
    let mut h = Harness::new();
    h.take();
    for i in 0..3 {
        h.send(&format!("t{i} LOGIN bob x\r\n"));
        h.advance(Duration::from_secs(2));
    }
    let out = h.take();
    assert!(
        out.ends_with(
            "t2 NO [AUTHENTICATIONFAILED] Authentication failed\r\n* BYE Too many failed logins\r\n"
        ),
        "{out}"
    );
    assert!(h.closed);
}

#[test]
fn authenticate_plain_with_and_without_initial_response() {
    let mut h = Harness::new();
    h.take();
    h.send("a AUTHENTICATE PLAIN\r\n");
    assert_eq!(h.take(), "+ \r\n");
    h.send("AGFsaWNlAHNlY3JldA==\r\n");
    assert!(h.take().starts_with("a OK [CAPABILITY"));
    let mut h = Harness::new();
    h.take();
    h.send("a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    assert!(h.take().starts_with("a OK [CAPABILITY"));
    let mut h = Harness::new();
    h.take();
    h.send("a AUTHENTICATE PLAIN\r\n*\r\nb AUTHENTICATE CRAM-MD5\r\n");
    assert_eq!(
        h.take(),
        "+ \r\na BAD Authentication cancelled\r\nb NO Unsupported mechanism\r\n"
    );
}

#[test]
fn commands_need_the_right_state() {
    let mut h = Harness::new();
    h.take();
    h.send("a SELECT INBOX\r\nb FETCH 1 FLAGS\r\nc XYZZY\r\n+x NOOP\r\n");
    assert_eq!(
        h.take(),
        "a BAD Log in first\r\nb BAD Log in first\r\nc BAD Unknown command\r\n* BAD Missing or invalid tag\r\n"
    );
    let mut h = Harness::logged_in();
    h.send("a FETCH 1 FLAGS\r\nb EXPUNGE\r\n");
    assert_eq!(
        h.take(),
        "a BAD No mailbox selected\r\nb BAD No mailbox selected\r\n"
    );
}

#[test]
fn select_examine_and_unselect() {
    let mut h = Harness::logged_in();
    h.send("A142 SELECT INBOX\r\n");
    assert_eq!(
        h.take(),
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
         * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted\r\n\
         * 2 EXISTS\r\n\
         * 1 RECENT\r\n\
         * OK [UNSEEN 2] First unseen\r\n\
         * OK [UIDVALIDITY 3857529045] UIDs valid\r\n\
         * OK [UIDNEXT 3] Predicted next UID\r\n\
         A142 OK [READ-WRITE] SELECT completed\r\n"
    );
    h.send("A932 EXAMINE inbox\r\n");
    assert_eq!(
        h.take(),
        "* OK [CLOSED] Previous mailbox closed\r\n\
         * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
         * OK [PERMANENTFLAGS ()] Flags permitted\r\n\
         * 2 EXISTS\r\n\
         * 0 RECENT\r\n\
         * OK [UNSEEN 2] First unseen\r\n\
         * OK [UIDVALIDITY 3857529045] UIDs valid\r\n\
         * OK [UIDNEXT 3] Predicted next UID\r\n\
         A932 OK [READ-ONLY] EXAMINE completed\r\n"
    );
    h.send("b STORE 1 +FLAGS (\\Deleted)\r\nc UNSELECT\r\nd SELECT nothere\r\n");
    assert_eq!(
        h.take(),
        "b NO [CANNOT] Mailbox is read-only\r\nc OK UNSELECT completed\r\nd NO [NONEXISTENT] No such mailbox or message\r\n"
    );
}

#[test]
fn fetch_from_snapshot_content_and_stream() {
    let mut h = Harness::selected();
    h.send("a FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE)\r\n");
    assert_eq!(
        h.take(),
        format!(
            "* 1 FETCH (FLAGS (\\Seen) UID 1 RFC822.SIZE {} INTERNALDATE \"17-Jul-1996 09:44:25 +0000\")\r\n\
             * 2 FETCH (FLAGS (\\Recent) UID 2 RFC822.SIZE {} INTERNALDATE \"17-Jul-1996 09:44:25 +0000\")\r\n\
             a OK FETCH completed\r\n",
            MESSAGE_1.len(),
            MESSAGE_2.len()
        )
    );
    h.send("b UID FETCH 1 (BODY.PEEK[] ENVELOPE BODY[HEADER] BODY.PEEK[TEXT]<0.2>)\r\n");
    let header = &MESSAGE_1[..MESSAGE_1.len() - 9];
    assert_eq!(
        h.take(),
        format!(
            "* 1 FETCH (UID 1 BODY[] {{{}}}\r\n{} ENVELOPE (\"envelope\") BODY[HEADER] {{{}}}\r\n{} BODY[TEXT]<0> {{2}}\r\nHi)\r\nb OK FETCH completed\r\n",
            MESSAGE_1.len(),
            String::from_utf8_lossy(MESSAGE_1),
            header.len(),
            String::from_utf8_lossy(header),
        )
    );
    // A non-PEEK body fetch sets \Seen and reports the new flags.
    h.send("c FETCH 2 BODY[]<3.4>\r\n");
    assert_eq!(
        h.take(),
        "* 2 FETCH (BODY[]<3> {4}\r\nm: C FLAGS (\\Seen \\Recent))\r\nc OK FETCH completed\r\n"
    );
    h.send("d FETCH 3 FLAGS\r\ne FETCH 1 BODY[9]\r\n");
    assert_eq!(
        h.take(),
        "d BAD Invalid message sequence number\r\n* 1 FETCH (BODY[9] NIL)\r\ne OK FETCH completed\r\n"
    );
}

#[test]
fn store_expunge_search_copy_move() {
    let mut h = Harness::selected();
    h.send("A003 STORE 1:2 +FLAGS (\\Deleted)\r\n");
    assert_eq!(
        h.take(),
        "* 1 FETCH (FLAGS (\\Seen \\Deleted))\r\n* 2 FETCH (FLAGS (\\Deleted \\Recent))\r\nA003 OK STORE completed\r\n"
    );
    h.send("b UID STORE 2 -FLAGS.SILENT (\\Deleted)\r\nc SEARCH DELETED\r\nd UID SEARCH UNDELETED\r\ne SEARCH BODY bob\r\n");
    assert_eq!(
        h.take(),
        "b OK STORE completed\r\n* SEARCH 1\r\nc OK SEARCH completed\r\n* SEARCH 2\r\nd OK SEARCH completed\r\n* SEARCH 1\r\ne OK SEARCH completed\r\n"
    );
    h.send("f SEARCH CHARSET KOI8-R ALL\r\n");
    assert_eq!(
        h.take(),
        "f NO [BADCHARSET (US-ASCII UTF-8)] Supported charsets: US-ASCII UTF-8\r\n"
    );
    h.send("g COPY 1:2 Sent\r\nh COPY 1 Nope\r\n");
    assert_eq!(
        h.take(),
        "g OK [COPYUID 42 1:2 1:2] COPY completed\r\nh NO [TRYCREATE] No such mailbox\r\n"
    );
    h.send("i EXPUNGE\r\n");
    assert_eq!(h.take(), "* 1 EXPUNGE\r\ni OK EXPUNGE completed\r\n");
    h.send("j UID MOVE 2 Sent\r\nk FETCH 1 FLAGS\r\n");
    assert_eq!(
        h.take(),
        "* OK [COPYUID 42 2 3] Moved UIDs\r\n* 1 EXPUNGE\r\nj OK MOVE completed\r\nk BAD Invalid message sequence number\r\n"
    );
}

#[test]
fn mailbox_management_and_list() {
    let mut h = Harness::logged_in();
    h.send("a CREATE Archive/2026\r\nb CREATE Sent\r\nc CREATE Entw&APw-rfe\r\n");
    assert_eq!(
        h.take(),
        "a OK CREATE completed\r\nb NO [ALREADYEXISTS] Mailbox already exists\r\nc OK CREATE completed\r\n"
    );
    h.send("d LIST \"\" *\r\n");
    assert_eq!(
        h.take(),
        "* LIST (\\HasNoChildren) \"/\" Archive/2026\r\n\
         * LIST (\\HasNoChildren) \"/\" Entw&APw-rfe\r\n\
         * LIST (\\HasNoChildren) \"/\" INBOX\r\n\
         * LIST (\\HasNoChildren \\Sent) \"/\" Sent\r\n\
         d OK LIST completed\r\n"
    );
    h.send("e LIST \"\" \"\"\r\nf LIST \"\" %/%\r\ng LSUB \"\" *\r\n");
    assert_eq!(
        h.take(),
        "* LIST (\\Noselect) \"/\" \"\"\r\ne OK LIST completed\r\n\
         * LIST (\\HasNoChildren) \"/\" Archive/2026\r\nf OK LIST completed\r\n\
         * LSUB (\\HasNoChildren) \"/\" INBOX\r\ng OK LSUB completed\r\n"
    );
    h.send("h RENAME Archive/2026 Old\r\ni DELETE Old\r\nj DELETE INBOX\r\nk STATUS INBOX (MESSAGES UNSEEN UIDNEXT)\r\n");
    assert_eq!(
        h.take(),
        "h OK RENAME completed\r\ni OK DELETE completed\r\nj NO [CANNOT] INBOX cannot be deleted\r\n\
         * STATUS INBOX (MESSAGES 2 UNSEEN 1 UIDNEXT 3)\r\nk OK STATUS completed\r\n"
    );
    h.send("l SUBSCRIBE Sent\r\nm NAMESPACE\r\nn ID (\"name\" \"test\")\r\no ENABLE CONDSTORE\r\n");
    assert_eq!(
        h.take(),
        "l OK SUBSCRIBE completed\r\n* NAMESPACE ((\"\" \"/\")) NIL NIL\r\nm OK NAMESPACE completed\r\n\
         * ID (\"name\" \"tidegate\")\r\nn OK ID completed\r\n* ENABLED\r\no OK ENABLE completed\r\n"
    );
}

#[test]
fn append_streams_and_limits() {
    let mut h = Harness::logged_in();
    // RFC 3501 §6.3.11's example, synchronising literal.
    let message = "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nSubject: afternoon meeting\r\n\r\nHello Joe\r\n";
    h.send(&format!(
        "A003 APPEND saved-messages (\\Seen) {{{}}}\r\n",
        message.len()
    ));
    assert_eq!(
        h.take(),
        "A003 NO [TRYCREATE] No such mailbox\r\n",
        "no + first"
    );
    h.send(&format!(
        "A004 APPEND Sent (\\Seen) \"17-Jul-1996 02:44:25 -0700\" {{{}}}\r\n",
        message.len()
    ));
    assert_eq!(h.take(), "+ Ready for literal data\r\n");
    h.send(message);
    assert_eq!(h.take(), "");
    h.send("\r\n");
    assert_eq!(h.take(), "A004 OK [APPENDUID 42 1] APPEND completed\r\n");
    assert_eq!(
        h.store.mailboxes["Sent"].messages[0].bytes,
        message.as_bytes()
    );
    // Too large: NO [TOOBIG] and never a +; a non-synchronising one is dropped unread.
    h.send("A005 APPEND Sent {999999999}\r\nA006 NOOP\r\n");
    assert_eq!(
        h.take(),
        "A005 NO [TOOBIG] Message too large\r\nA006 OK NOOP completed\r\n"
    );
    h.send("A007 APPEND Sent {60000000+}\r\n");
    h.send_bytes(&vec![b'x'; 1_000_000]);
    assert!(h.session.wants_read(tidegate_core::Peer::Client));
    assert_eq!(h.take(), "A007 NO [TOOBIG] Message too large\r\n");
}

#[test]
fn large_append_goes_in_bounded_chunks() {
    let mut h = Harness::logged_in();
    let body = vec![b'y'; 300_000];
    h.send(&format!("a APPEND INBOX {{{}+}}\r\n", body.len()));
    h.send_bytes(&body);
    h.send("\r\n");
    assert_eq!(
        h.take(),
        "a OK [APPENDUID 3857529045 3] APPEND completed\r\n"
    );
    let data_requests = h
        .store
        .log
        .iter()
        .filter(|l| l.starts_with("AppendData"))
        .count();
    assert!(data_requests >= 4, "{data_requests} chunks");
    assert_eq!(h.store.mailboxes["INBOX"].messages[2].bytes, body);
}

#[test]
fn literal_over_command_limit_is_refused_without_continuation() {
    let mut h = Harness::new();
    h.take();
    h.send("a LOGIN {9999999}\r\nb LOGIN {9999999+}\r\n");
    h.send_bytes(&[b'z'; 100]);
    let out = h.take();
    assert_eq!(
        out,
        "a BAD [TOOBIG] Literal too large\r\nb BAD [TOOBIG] Literal too large\r\n"
    );
    assert!(!out.contains('+'));
}

#[test]
fn idle_reports_new_and_expunged_messages() {
    let mut h = Harness::selected();
    h.send("A002 IDLE\r\n");
    assert_eq!(h.take(), "+ idling\r\n");
    if let Some(inbox) = h.store.mailboxes.get_mut("INBOX") {
        inbox.add(b"Subject: new\r\n\r\nx\r\n", &[], true);
        inbox.messages.remove(0);
    }
    h.advance(Duration::from_secs(31));
    assert_eq!(h.take(), "* 1 EXPUNGE\r\n* 2 EXISTS\r\n* 2 RECENT\r\n");
    h.send("DONE\r\n");
    assert_eq!(h.take(), "A002 OK IDLE terminated\r\n");
    if let Some(inbox) = h.store.mailboxes.get_mut("INBOX") {
        inbox.messages[0].flags.push("\\Flagged".into());
    }
    h.send("b NOOP\r\n");
    assert_eq!(
        h.take(),
        "* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\nb OK NOOP completed\r\n"
    );
}

#[test]
fn pipelined_script_is_the_same_split_anywhere() {
    let script: &[u8] = b"a LOGIN {5}\r\nalice \"secret\"\r\nb SELECT INBOX\r\nc FETCH 1:2 (UID BODY.PEEK[])\r\nd STORE 1 +FLAGS.SILENT (\\Flagged)\r\ne APPEND Sent {3+}\r\nabc\r\nf SEARCH FLAGGED\r\ng LOGOUT\r\n";
    let run = |cuts: &[usize]| {
        let mut h = Harness::new();
        let mut last = 0;
        for &cut in cuts.iter().chain(std::iter::once(&script.len())) {
            h.send_bytes(&script[last..cut]);
            last = cut;
        }
        assert!(h.closed);
        h.take()
    };
    let whole = run(&[]);
    assert!(whole.contains("f OK SEARCH completed"), "{whole}");
    for cut in 0..=script.len() {
        assert_eq!(run(&[cut]), whole, "split at {cut}");
    }
    let bytewise: Vec<usize> = (1..script.len()).collect();
    assert_eq!(run(&bytewise), whole);
}

#[test]
fn big_body_streams_with_backpressure() {
    let mut h = Harness::selected();
    let big: Vec<u8> = (0..2_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    if let Some(inbox) = h.store.mailboxes.get_mut("INBOX") {
        inbox.add(&big, &["\\Seen"], false);
    }
    h.send("n NOOP\r\n");
    h.take();
    h.auto_drain = false;
    h.send("f FETCH 3 BODY[]\r\n");
    let first = h.out.len();
    assert!(first < 400_000, "stopped near the high-water mark: {first}");
    assert!(!h.session.wants_read(tidegate_core::Peer::Client));
    let mut rounds = 0;
    while !h.take().ends_with("f OK FETCH completed\r\n") {
        h.session.handle_drained(h.now, tidegate_core::Peer::Client);
        h.pump();
        rounds += 1;
        assert!(rounds < 100);
    }
    assert!(rounds >= 5, "{rounds}");
}

#[test]
fn autologout_and_store_timeout() {
    let mut h = Harness::logged_in();
    h.advance(Duration::from_secs(29 * 60));
    assert_eq!(h.take(), "");
    h.advance(Duration::from_secs(60));
    assert_eq!(h.take(), "* BYE Autologout; idle for too long\r\n");
    assert!(h.closed);
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let mut h = Harness::with(config(), conn(false, true));
    h.take();
    h.send("a STARTTLS\r\nb LOGIN alice secret\r\n");
    assert_eq!(h.take(), "a OK Begin TLS negotiation now\r\n");
    assert!(h.store.log.is_empty());
}

#[test]
fn too_many_bad_commands_close() {
    let mut h = Harness::new();
    h.take();
    for i in 0..20 {
        h.send(&format!("t{i} BOGUS\r\n"));
    }
    assert!(
        h.take()
            .ends_with("t19 BAD Unknown command\r\n* BYE Too many invalid commands\r\n")
    );
    assert!(h.closed);
}

#[test]
fn check_uid_expunge_and_close() {
    let mut h = Harness::selected();
    h.send("a STORE 1:2 +FLAGS.SILENT (\\Deleted)\r\nb UID EXPUNGE 2\r\nc CHECK\r\n");
    assert_eq!(
        h.take(),
        "a OK STORE completed\r\n* 2 EXPUNGE\r\nb OK EXPUNGE completed\r\nc OK CHECK completed\r\n"
    );
    h.send("d CLOSE\r\ne FETCH 1 FLAGS\r\n");
    assert_eq!(
        h.take(),
        "d OK CLOSE completed\r\ne BAD No mailbox selected\r\n"
    );
    assert!(
        h.store.mailboxes["INBOX"].messages.is_empty(),
        "CLOSE expunged silently"
    );
}

#[test]
fn uid_fetch_rfc3501_example_shape() {
    let mut h = Harness::selected();
    // RFC 3501 §6.4.8: UID FETCH returns UID even when not asked, and a UID range past
    // the last message still matches the last one.
    h.send("A999 UID FETCH 2:4827313 FLAGS\r\n");
    assert_eq!(
        h.take(),
        "* 2 FETCH (UID 2 FLAGS (\\Recent))\r\nA999 OK FETCH completed\r\n"
    );
    h.send("A1 UID FETCH 9:* UID\r\n");
    assert_eq!(h.take(), "* 2 FETCH (UID 2)\r\nA1 OK FETCH completed\r\n");
}

#[test]
fn slow_store_gets_unavailable_and_late_replies_are_ignored() {
    let mut h = Harness::logged_in();
    h.hold = true;
    h.send("a STATUS INBOX (MESSAGES)\r\nb NOOP\r\n");
    assert_eq!(h.take(), "");
    h.advance(Duration::from_secs(30));
    assert_eq!(
        h.take(),
        "a NO [UNAVAILABLE] Storage did not answer, try again later\r\nb OK NOOP completed\r\n"
    );
    let (id, request) = h.held.remove(0);
    let late = h.store.execute(request);
    h.session.handle_reply(h.now, id, late);
    h.pump();
    assert_eq!(h.take(), "", "a late reply is ignored");
}

#[test]
fn throttled_and_temporary_login_failures() {
    let mut h = Harness::new();
    h.take();
    h.send("a LOGIN slow x\r\n");
    h.advance(Duration::from_secs(9));
    assert_eq!(h.take(), "", "the login penalty outlasts the usual delay");
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.take(),
        "a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    );
    h.send("b LOGIN down x\r\n");
    assert_eq!(
        h.take(),
        "b NO [UNAVAILABLE] Temporary failure, try again later\r\n"
    );
}

#[test]
fn body_of_a_message_expunged_elsewhere_is_nil() {
    let mut h = Harness::selected();
    if let Some(inbox) = h.store.mailboxes.get_mut("INBOX") {
        inbox.messages.remove(0);
    }
    h.send("a FETCH 1:2 (UID BODY.PEEK[])\r\n");
    assert_eq!(
        h.take(),
        format!(
            "* 1 FETCH (UID 1 BODY[] NIL)\r\n* 2 FETCH (UID 2 BODY[] {{{}}}\r\n{})\r\na OK FETCH completed\r\n",
            MESSAGE_2.len(),
            String::from_utf8_lossy(MESSAGE_2)
        )
    );
    h.send("b NOOP\r\n");
    assert_eq!(h.take(), "* 1 EXPUNGE\r\nb OK NOOP completed\r\n");
}

#[test]
fn before_login_only_login_and_id_take_literals() {
    let mut h = Harness::new();
    h.take();
    h.send("a SELECT {5}\r\nb LOGIN {9000}\r\nc LOGIN {5}\r\n");
    assert_eq!(
        h.take(),
        "a BAD Log in first\r\nb BAD [TOOBIG] Literal too large\r\n+ Ready for literal data\r\n"
    );
    h.send("alice secret\r\n");
    assert!(h.take().starts_with("c OK [CAPABILITY"));
}

#[test]
fn deleted_selected_mailbox_ends_the_session() {
    let mut h = Harness::selected();
    h.store.mailboxes.remove("INBOX");
    h.send("a NOOP\r\n");
    assert_eq!(h.take(), "* BYE Selected mailbox was deleted\r\n");
    assert!(h.closed);
}

#[test]
fn uidvalidity_change_ends_the_session_with_nothing_after_bye() {
    let mut h = Harness::selected();
    if let Some(inbox) = h.store.mailboxes.get_mut("INBOX") {
        inbox.uid_validity += 1;
    }
    h.send("a NOOP\r\nb NOOP\r\n");
    assert_eq!(h.take(), "* BYE Mailbox UIDVALIDITY changed\r\n");
    assert!(h.closed);
}

#[test]
fn append_begin_timeout_then_late_start_is_aborted() {
    let mut h = Harness::logged_in();
    h.hold = true;
    h.send("a APPEND INBOX {5}\r\n");
    assert_eq!(h.take(), "");
    h.advance(Duration::from_secs(30));
    assert_eq!(
        h.take(),
        "a NO [UNAVAILABLE] Storage did not answer, try again later\r\n"
    );
    // The client was never invited; its next command is read as one.
    h.hold = false;
    let (id, request) = h.held.remove(0);
    let late = h.store.execute(request);
    assert_eq!(h.store.appends.len(), 1);
    h.session.handle_reply(h.now, id, late);
    h.pump();
    assert!(h.store.appends.is_empty(), "the late append was aborted");
    h.send("b NOOP\r\n");
    assert_eq!(h.take(), "b OK NOOP completed\r\n");
}

#[test]
fn a_new_keyword_is_announced_before_its_fetch() {
    let mut h = Harness::selected();
    h.send("a STORE 1 +FLAGS ($Label1 Work)\r\n");
    assert_eq!(
        h.take(),
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 Work)\r\n\
         * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 Work \\*)] Flags permitted\r\n\
         * 1 FETCH (FLAGS (\\Seen $Label1 Work))\r\n\
         a OK STORE completed\r\n"
    );
    // Known keywords (in any case) are not announced again.
    h.send("b STORE 2 +FLAGS (work)\r\nc SEARCH KEYWORD WORK\r\n");
    assert_eq!(
        h.take(),
        "* 2 FETCH (FLAGS (work \\Recent))\r\nb OK STORE completed\r\n\
         * SEARCH 1 2\r\nc OK SEARCH completed\r\n"
    );
}
