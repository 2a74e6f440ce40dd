//! The login timeout of the POP3 and IMAP sessions: a client that has not logged in
//! `login_timeout` after connecting is disconnected even if it keeps sending bytes
//! (a slowloris), while a logged-in client gets the full RFC autologout.
// A test plays the shell, whose clock this is.
#![allow(clippy::disallowed_methods)]

mod imap_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use imap_common::{Harness, Store, config, conn};
use tidegate_core::imap::ImapSession;
use tidegate_core::pop3::{Pop3Config, Pop3Session};
use tidegate_core::{Account, Reply, Request, Session};

fn pop3() -> Harness<Pop3Session> {
    let now = Instant::now();
    let cfg = Pop3Config {
        login_timeout: Duration::from_secs(60),
        ..Pop3Config::default()
    };
    let mut h = Harness {
        session: Pop3Session::new(Arc::new(cfg), conn(true, false), now),
        store: Store::new(),
        now,
        out: Vec::new(),
        closed: false,
        auto_drain: true,
        answered: Vec::new(),
        started_tls: false,
        hold: false,
        held: Vec::new(),
    };
    h.pump();
    h.take();
    h
}

#[test]
fn pop3_trickling_bytes_do_not_keep_an_unauthenticated_session() {
    let mut h = pop3();
    // Complete lines that are not a login, and a line that never ends.
    for _ in 0..5 {
        h.advance(Duration::from_secs(10));
        h.send("CAPA\r\n");
    }
    h.send("US");
    h.advance(Duration::from_secs(9));
    assert!(!h.closed);
    h.send("E");
    h.advance(Duration::from_secs(1));
    assert!(h.closed, "still open 60 s after connecting");
    assert!(h.take().ends_with("-ERR Autologout: no login in time\r\n"));
}

#[test]
fn pop3_after_login_the_rfc_autologout_applies() {
    let mut h = pop3();
    h.advance(Duration::from_secs(50));
    h.hold = true;
    h.send("USER alice\r\nPASS secret\r\n");
    // Play the store: the password is right, the mailbox is empty.
    while let Some((id, request)) = h.held.pop() {
        let reply = match request {
            Request::Authenticate { .. } => Reply::Authenticated(Account("alice@x.test".into())),
            Request::ListMailbox { .. } => Reply::Listing(Vec::new()),
            other => panic!("unexpected {other:?}"),
        };
        h.session.handle_reply(h.now, id, reply);
        h.pump();
    }
    assert!(h.take().contains("+OK Logged in"), "login failed");
    h.advance(Duration::from_secs(599));
    assert!(!h.closed, "closed before the 600 s autologout");
    h.advance(Duration::from_secs(1));
    assert!(h.closed);
    assert!(h.take().ends_with("-ERR Autologout: idle for too long\r\n"));
}

#[test]
fn imap_login_timeout_and_full_autologout_after_login() {
    let mut h = Harness::with(config(), conn(true, false));
    h.take();
    h.advance(Duration::from_secs(30));
    h.send("a NOOP\r\n");
    h.send("b LOG");
    h.advance(Duration::from_secs(30));
    assert!(h.closed, "still open 60 s after connecting");
    assert!(h.take().ends_with("* BYE Autologout; no login in time\r\n"));

    let mut h = Harness::<ImapSession>::new();
    h.advance(Duration::from_secs(59));
    h.send("a LOGIN alice secret\r\n");
    assert!(h.take().contains("a OK"));
    h.advance(Duration::from_secs(30 * 60 - 1));
    assert!(!h.closed, "closed before the 30 minute autologout");
    h.advance(Duration::from_secs(1));
    assert!(h.closed);
}
