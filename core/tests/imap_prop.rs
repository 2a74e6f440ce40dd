//! Chunking invariance of the whole IMAP session (design: "the same input split anywhere
//! yields the same output"): random pipelined command scripts, fed whole and cut at
//! random points, give byte-identical output and leave the store in the same state.
//!
//! `PROPTEST_CASES` sets the number of cases (32 when unset).
#![allow(clippy::disallowed_methods)]

mod imap_common;

use std::time::Duration;

use imap_common::Harness;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 32;
    }
    config
}

const COMMANDS: &[&str] = &[
    "NOOP\r\n",
    "CAPABILITY\r\n",
    "LOGIN alice secret\r\n",
    "LOGIN {5}\r\nalice {6+}\r\nsecret\r\n",
    "LOGIN bob nope\r\n",
    "SELECT INBOX\r\n",
    "EXAMINE Sent\r\n",
    "FETCH 1:* (FLAGS UID BODY.PEEK[] ENVELOPE BODY[HEADER])\r\n",
    "UID FETCH 1:* BODY[TEXT]<1.3>\r\n",
    "STORE 1 +FLAGS (\\Deleted \\Flagged)\r\n",
    "UID STORE 2 -FLAGS.SILENT (\\Seen)\r\n",
    "SEARCH OR SEEN BODY hi\r\n",
    "COPY 1:* Sent\r\n",
    "UID MOVE 1 Sent\r\n",
    "EXPUNGE\r\n",
    "APPEND INBOX (\\Seen) {7}\r\nSubj: x\r\n",
    "APPEND Sent {4+}\r\nabcd\r\n",
    "APPEND Nowhere {3}\r\n",
    "LIST \"\" *\r\n",
    "STATUS INBOX (MESSAGES UNSEEN)\r\n",
    "CREATE Box\r\n",
    "RENAME Box Other\r\n",
    "BOGUS\r\n",
    "LOGIN {99999999}\r\n",
    "CLOSE\r\n",
    "UNSELECT\r\n",
];

fn script(picks: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &p) in picks.iter().enumerate() {
        out.extend_from_slice(format!("t{i} ").as_bytes());
        out.extend_from_slice(COMMANDS[p % COMMANDS.len()].as_bytes());
    }
    out.extend_from_slice(b"z LOGOUT\r\n");
    out
}

fn run(data: &[u8], cuts: &[usize]) -> (String, String) {
    let mut h = Harness::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.push(data.len());
    cuts.sort_unstable();
    let mut last = 0;
    for cut in cuts {
        h.send_bytes(&data[last..cut]);
        last = cut;
    }
    // Failed logins are answered after a delay.
    for _ in 0..100 {
        if h.closed {
            break;
        }
        h.advance(Duration::from_secs(2));
    }
    assert!(h.closed, "LOGOUT or three failed logins end every script");
    (h.take(), format!("{:?}", h.store.mailboxes))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pipelined_scripts_are_chunking_invariant(
        picks in prop::collection::vec(any::<usize>(), 1..25),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let data = script(&picks);
        let whole = run(&data, &[]);
        prop_assert_eq!(&whole, &run(&data, &cuts));
    }
}
