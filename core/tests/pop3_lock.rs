//! The cluster-wide POP3 lock from the session's side: with `mailbox_lock`, a session
//! whose mailbox was listed sends `ReleaseMailbox` right before it closes, however it
//! ends (QUIT, a dropped connection, the autologout); without it, or without a listing,
//! it never does; a lock the store could not take is `-ERR [IN-USE]`.
// A test plays the shell, whose clock this is.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidegate_core::pop3::{ConnInfo, Pop3Config, Pop3Session};
use tidegate_core::{Account, Action, Failure, Peer, Reply, Request, Session};

struct Run {
    session: Pop3Session,
    now: Instant,
    /// Every action, rendered: `S: line`, `R: request kind`, `CLOSE`.
    log: Vec<String>,
}

impl Run {
    fn new(mailbox_lock: bool) -> Run {
        let cfg = Pop3Config {
            mailbox_lock,
            ..Pop3Config::default()
        };
        let conn = ConnInfo {
            client: "192.0.2.7:50000".parse().unwrap(),
            implicit_tls: false,
            starttls_available: false,
            plaintext_auth: true,
            may_override_client: false,
        };
        let now = Instant::now();
        let mut run = Run {
            session: Pop3Session::new(Arc::new(cfg), conn, now),
            now,
            log: Vec::new(),
        };
        run.drain(|_| None);
        run
    }

    /// Drains actions, answering requests with `store` (None: leave unanswered).
    fn drain(&mut self, mut store: impl FnMut(&Request) -> Option<Reply>) {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Write { bytes, .. } => {
                    for line in String::from_utf8_lossy(&bytes).lines() {
                        self.log.push(format!("S: {line}"));
                    }
                }
                Action::Request { id, request } => {
                    let kind = format!("{request:?}");
                    let kind = kind.split([' ', '{', '(']).next().unwrap_or("").to_owned();
                    self.log.push(format!("R: {kind}"));
                    if let Some(reply) = store(&request) {
                        self.session.handle_reply(self.now, id, reply);
                    }
                }
                Action::Close { .. } => self.log.push("CLOSE".into()),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn send(&mut self, line: &str, listing: Reply) {
        let mut listing = Some(listing);
        self.session
            .handle_input(self.now, Peer::Client, format!("{line}\r\n").as_bytes());
        self.drain(|request| match request {
            Request::Authenticate { .. } => {
                Some(Reply::Authenticated(Account("alice@example.com".into())))
            }
            Request::ListMailbox { .. } => listing.take(),
            Request::CommitPop3 { .. } | Request::ReleaseMailbox { .. } => Some(Reply::Done),
            _ => None,
        });
    }

    fn login(&mut self, listing: Reply) {
        self.send("USER alice@example.com", Reply::Listing(Vec::new()));
        self.send("PASS pw", listing);
    }

    fn tail(&self, n: usize) -> Vec<&str> {
        self.log[self.log.len().saturating_sub(n)..]
            .iter()
            .map(String::as_str)
            .collect()
    }
}

#[test]
fn quit_releases_the_lock_just_before_the_close() {
    let mut run = Run::new(true);
    run.login(Reply::Listing(Vec::new()));
    run.send("QUIT", Reply::Done);
    // Nothing was deleted or read, so no commit is needed before the close.
    assert_eq!(
        run.tail(3),
        [
            "S: +OK localhost POP3 closing (0 messages deleted)",
            "R: ReleaseMailbox",
            "CLOSE"
        ]
    );
}

#[test]
fn a_dropped_connection_and_the_autologout_release_it_too() {
    let mut run = Run::new(true);
    run.login(Reply::Listing(Vec::new()));
    run.session.handle_eof(run.now, Peer::Client);
    run.drain(|_| Some(Reply::Done));
    assert_eq!(run.tail(2), ["R: ReleaseMailbox", "CLOSE"]);

    let mut run = Run::new(true);
    run.login(Reply::Listing(Vec::new()));
    run.now += Duration::from_secs(601);
    run.session.handle_timeout(run.now);
    run.drain(|_| Some(Reply::Done));
    assert_eq!(
        run.tail(3),
        [
            "S: -ERR Autologout: idle for too long",
            "R: ReleaseMailbox",
            "CLOSE"
        ]
    );
}

#[test]
fn no_release_without_the_lock_or_without_a_listing() {
    let mut run = Run::new(false);
    run.login(Reply::Listing(Vec::new()));
    run.send("QUIT", Reply::Done);
    assert!(
        !run.log.iter().any(|l| l.contains("ReleaseMailbox")),
        "{:?}",
        run.log
    );

    // The store could not take the lock: IN-USE, and nothing to release.
    let mut run = Run::new(true);
    run.login(Reply::Failed(Failure::InUse));
    assert!(
        run.log
            .contains(&"S: -ERR [IN-USE] Mailbox is in use by another POP3 session".into()),
        "{:?}",
        run.log
    );
    run.send("QUIT", Reply::Done);
    assert_eq!(run.tail(2), ["S: +OK localhost POP3 closing", "CLOSE"]);
}

#[test]
fn the_account_shows_from_the_login_and_an_abort_releases_the_lock() {
    let mut run = Run::new(true);
    assert_eq!(run.session.account(), None);
    run.send("USER alice@example.com", Reply::Done);
    assert_eq!(run.session.account(), None);
    run.send("PASS pw", Reply::Listing(Vec::new()));
    assert_eq!(run.session.account(), Some("alice@example.com"));
    // `ctl kick`: the shell drops the connection; the session only releases its lock.
    let before = run.log.len();
    run.session.handle_abort(run.now);
    run.drain(|_| None);
    assert_eq!(run.log[before..], ["R: ReleaseMailbox", "CLOSE"]);
    // Nothing follows an abort.
    run.session.handle_abort(run.now);
    run.send("NOOP", Reply::Done);
    assert_eq!(run.log.len(), before + 2, "{:?}", run.log);
}
