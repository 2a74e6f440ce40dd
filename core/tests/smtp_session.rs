//! The SMTP/LMTP session driven directly, with a tiny in-test store answering its
//! requests: exact replies, exact request sequences, chunking invariance, limits, roles,
//! AUTH, STARTTLS (through `Secured` and an in-memory rustls client) and timeouts.
#![allow(clippy::disallowed_methods)] // tests take a base instant from the clock

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig};
use tidegate_core::smtp::{SmtpConfig, SmtpConnInfo, SmtpRole, SmtpSession};
use tidegate_core::tls::Secured;
use tidegate_core::{
    Account, Action, BackendRecipient, DeliveryId, Failure, Peer, RecipientCheck, Reply, Request,
    RequestId, Session,
};

// ---- A tiny store ----------------------------------------------------------------------

/// Users of `local.test`: `alice`, `bob`, `full` (over quota at commit), `quota` (over
/// quota at RCPT); `nobody` is unknown; other domains are not local.
#[derive(Debug, Default)]
struct Store {
    next: u64,
    open: BTreeMap<u64, Vec<u8>>,
    /// (account, message) for every copy delivered.
    delivered: Vec<(String, Vec<u8>)>,
    aborted: Vec<u64>,
    /// One line per request, in order.
    log: Vec<String>,
    /// `"begin"` or `"append"`: that request fails as on a full disk.
    fail: Option<&'static str>,
}

impl Store {
    fn answer(&mut self, request: Request) -> Reply {
        match request {
            Request::Authenticate { user, password, .. } => {
                self.log.push(format!("auth {user}"));
                match (user.as_str(), password.expose()) {
                    ("alice@local.test", b"secret") => Reply::Authenticated(account("alice")),
                    ("down", _) => Reply::Failed(Failure::Temporary("db down".into())),
                    _ => Reply::Failed(Failure::Denied),
                }
            }
            Request::CheckRecipient { address, size_hint } => {
                self.log.push(format!("rcpt {address} {size_hint:?}"));
                let check = match address.split_once('@') {
                    Some(("nobody", "local.test")) => RecipientCheck::Unknown,
                    Some(("quota", "local.test")) => RecipientCheck::OverQuota,
                    Some((user, "local.test")) => RecipientCheck::Local(account(user)),
                    // Users of this cluster who live on the back-end `b1`.
                    Some((user, "back.test")) => RecipientCheck::Backend(BackendRecipient {
                        account: Account(format!("{}@back.test", user.to_ascii_lowercase())),
                        host: "b1".into(),
                    }),
                    _ => RecipientCheck::NotLocal,
                };
                Reply::Recipient(check)
            }
            Request::BeginDelivery { .. } if self.fail == Some("begin") => {
                self.log.push("begin failed".into());
                Reply::Failed(Failure::Temporary("disk full".into()))
            }
            Request::AppendDelivery { delivery, .. } if self.fail == Some("append") => {
                self.log.push(format!("append {} failed", delivery.0));
                Reply::Failed(Failure::Temporary("disk full".into()))
            }
            Request::BeginDelivery { header } => {
                self.next += 1;
                self.log.push(format!("begin {}", self.next));
                self.open.insert(self.next, header.to_vec());
                Reply::DeliveryStarted(DeliveryId(self.next))
            }
            Request::AppendDelivery { delivery, bytes } => {
                self.log
                    .push(format!("append {} {}", delivery.0, bytes.len()));
                match self.open.get_mut(&delivery.0) {
                    Some(file) => {
                        file.extend_from_slice(&bytes);
                        Reply::Done
                    }
                    None => Reply::Failed(Failure::Gone),
                }
            }
            Request::CommitDelivery {
                delivery,
                recipients,
                all_or_nothing,
            } => {
                let names: Vec<&str> = recipients.iter().map(|a| a.0.as_str()).collect();
                self.log
                    .push(format!("commit {} {names:?} {all_or_nothing}", delivery.0));
                let file = self.open.remove(&delivery.0).unwrap_or_default();
                let results: Vec<Result<(), Failure>> = recipients
                    .iter()
                    .map(|a| {
                        if a.0.starts_with("full@") {
                            Err(Failure::OverQuota)
                        } else {
                            Ok(())
                        }
                    })
                    .collect();
                let all_ok = results.iter().all(Result::is_ok);
                for (a, r) in recipients.iter().zip(&results) {
                    if r.is_ok() && (all_ok || !all_or_nothing) {
                        self.delivered.push((a.0.clone(), file.clone()));
                    }
                }
                Reply::Delivered(results)
            }
            Request::CommitSubmission {
                delivery,
                local,
                relay,
            } => {
                let names: Vec<&str> = local.iter().map(|a| a.0.as_str()).collect();
                self.log
                    .push(format!("commit+queue {} {names:?} {relay:?}", delivery.0));
                let file = self.open.remove(&delivery.0).unwrap_or_default();
                let queue_ok = self.fail != Some("queue");
                let mut results: Vec<Result<(), Failure>> = local.iter().map(|_| Ok(())).collect();
                results.push(if queue_ok {
                    Ok(())
                } else {
                    Err(Failure::Temporary("queue disk full".into()))
                });
                if queue_ok {
                    for a in &local {
                        self.delivered.push((a.0.clone(), file.clone()));
                    }
                    self.delivered.push(("queue".into(), file));
                }
                Reply::Delivered(results)
            }
            Request::AbortDelivery { delivery } => {
                self.log.push(format!("abort {}", delivery.0));
                self.open.remove(&delivery.0);
                self.aborted.push(delivery.0);
                Reply::Done
            }
            other => panic!("unexpected request {other:?}"),
        }
    }
}

fn account(user: &str) -> Account {
    Account(format!("{user}@local.test"))
}

// ---- A client driving the session --------------------------------------------------------

const PORT: u16 = 40000;
/// Fri, 13 Feb 2009 23:31:30 +0000.
const ACCEPTED: u64 = 1_234_567_890;

fn config(role: SmtpRole) -> SmtpConfig {
    SmtpConfig {
        hostname: "mx.test".into(),
        role,
        max_message_size: 1024 * 1024,
        ..SmtpConfig::default()
    }
}

fn conn(plaintext_auth: bool, starttls: bool) -> SmtpConnInfo {
    SmtpConnInfo {
        client: format!("192.0.2.9:{PORT}").parse().unwrap(),
        accepted_at: UNIX_EPOCH + Duration::from_secs(ACCEPTED),
        starttls_available: starttls,
        plaintext_auth,
        trusted: true,
        may_override_client: false,
    }
}

struct Client<S: Session> {
    session: S,
    store: Store,
    now: Instant,
    /// Requests are left unanswered in `held` instead of going to the store.
    hold: bool,
    held: VecDeque<(RequestId, Request)>,
    closed: bool,
    starttls: bool,
}

impl Client<SmtpSession> {
    fn new(cfg: SmtpConfig, conn: SmtpConnInfo) -> Self {
        let now = Instant::now();
        Client::wrap(SmtpSession::new(Arc::new(cfg), conn, now), now)
    }

    fn inbound() -> Self {
        Client::new(config(SmtpRole::Inbound), conn(false, false))
    }
}

impl<S: Session> Client<S> {
    fn wrap(session: S, now: Instant) -> Self {
        Client {
            session,
            store: Store::default(),
            now,
            hold: false,
            held: VecDeque::new(),
            closed: false,
            starttls: false,
        }
    }

    /// Sends `bytes` in one read; returns everything the session wrote.
    fn send(&mut self, bytes: &[u8]) -> String {
        self.session.handle_input(self.now, Peer::Client, bytes);
        self.drain()
    }

    /// Drains actions, answering requests from the store one at a time (each answer
    /// after the session's output is fully drained: the single-mutation rule).
    fn drain(&mut self) -> String {
        let mut out = Vec::new();
        let mut replies = VecDeque::new();
        loop {
            while let Some(action) = self.session.poll_action() {
                assert!(!self.closed, "action after Close: {action:?}");
                match action {
                    Action::Write { bytes, .. } => out.extend_from_slice(&bytes),
                    Action::Request { id, request } if self.hold => {
                        self.held.push_back((id, request))
                    }
                    Action::Request { id, request } => {
                        replies.push_back((id, self.store.answer(request)))
                    }
                    Action::Close { .. } => self.closed = true,
                    Action::StartTls { .. } => self.starttls = true,
                    other => panic!("an SMTP session never asks for {other:?}"),
                }
            }
            match replies.pop_front() {
                Some((id, reply)) => self.session.handle_reply(self.now, id, reply),
                None => break,
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// Answers the oldest held request from the store.
    fn release(&mut self) -> String {
        let (id, request) = self.held.pop_front().expect("a held request");
        let reply = self.store.answer(request);
        self.session.handle_reply(self.now, id, reply);
        self.drain()
    }

    fn advance(&mut self, by: Duration) -> String {
        self.now += by;
        self.session.handle_timeout(self.now);
        self.drain()
    }

    fn eof(&mut self) -> String {
        self.session.handle_eof(self.now, Peer::Client);
        self.drain()
    }
}

const EHLO_INBOUND: &str = "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1048576\r\n250-8BITMIME\r\n\
    250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250 HELP\r\n";

/// `Return-Path:` and `Received:` as the session writes them for the first message of
/// a test client (no time has passed: id = accept time in µs, port, 1).
fn trace_header(sender: &str, protocol: &str, rcpt: Option<&str>) -> String {
    // The second line takes the date too when it fits in 78 characters.
    let mut second = "\tid 462D53C88D8809C401".to_owned();
    match rcpt {
        Some(r) => second.push_str(&format!(" for <{r}>;")),
        None => second.push(';'),
    }
    let date = "Fri, 13 Feb 2009 23:31:30 +0000";
    let sep = if second.len() + 1 + date.len() > 78 {
        "\r\n\t"
    } else {
        " "
    };
    format!(
        "Return-Path: <{sender}>\r\n\
         Received: from client.test ([192.0.2.9]) by mx.test (tidegate) with {protocol}\r\n\
         {second}{sep}{date}\r\n"
    )
}

// ---- Inbound ------------------------------------------------------------------------------

#[test]
fn a_full_inbound_transaction_with_exact_replies() {
    let mut c = Client::inbound();
    assert_eq!(c.drain(), "220 mx.test ESMTP tidegate\r\n");
    assert_eq!(c.send(b"EHLO client.test\r\n"), EHLO_INBOUND);
    assert_eq!(
        c.send(b"MAIL FROM:<sender@remote.test> SIZE=40\r\n"),
        "250 2.1.0 Sender ok\r\n"
    );
    assert_eq!(
        c.send(b"RCPT TO:<alice@local.test>\r\n"),
        "250 2.1.5 Recipient ok\r\n"
    );
    assert_eq!(
        c.send(b"RCPT TO:<nobody@local.test>\r\n"),
        "550 5.1.1 <nobody@local.test>: Recipient address rejected: User unknown\r\n"
    );
    assert_eq!(
        c.send(b"RCPT TO:<quota@local.test>\r\n"),
        "552 5.2.2 <quota@local.test>: Mailbox full\r\n"
    );
    assert_eq!(
        c.send(b"RCPT TO:<x@elsewhere.test>\r\n"),
        "550 5.7.1 <x@elsewhere.test>: Relaying denied\r\n"
    );
    assert_eq!(
        c.send(b"DATA\r\n"),
        "354 Start mail input; end with <CRLF>.<CRLF>\r\n"
    );
    assert_eq!(
        c.send(b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n"),
        "250 2.0.0 Ok: queued as 462D53C88D8809C401\r\n"
    );
    assert_eq!(
        c.send(b"QUIT\r\n"),
        "221 2.0.0 mx.test closing connection\r\n"
    );
    assert!(c.closed && c.session.is_closed());
    let message = "Return-Path: <sender@remote.test>\r\n\
        Received: from client.test ([192.0.2.9]) by mx.test (tidegate) with ESMTP\r\n\
        \tid 462D53C88D8809C401 for <alice@local.test>; Fri, 13 Feb 2009 23:31:30 +0000\r\n\
        Subject: hi\r\n\r\n.dot\r\nbody\r\n";
    assert_eq!(
        message,
        trace_header("sender@remote.test", "ESMTP", Some("alice@local.test"))
            + "Subject: hi\r\n\r\n.dot\r\nbody\r\n"
    );
    assert_eq!(
        c.store.delivered,
        vec![("alice@local.test".into(), message.as_bytes().to_vec())]
    );
    assert_eq!(
        c.store.log,
        [
            "rcpt alice@local.test Some(40)",
            "rcpt nobody@local.test Some(40)",
            "rcpt quota@local.test Some(40)",
            "rcpt x@elsewhere.test Some(40)",
            "begin 1",
            "append 1 27",
            "commit 1 [\"alice@local.test\"] true",
        ]
    );
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let mut c = Client::inbound();
    c.drain();
    let out = c.send(
        b"EHLO client.test\r\nMAIL FROM:<>\r\nRCPT TO:<alice@local.test>\r\n\
          RCPT TO:<nobody@local.test>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\n",
    );
    assert_eq!(
        out,
        format!(
            "{EHLO_INBOUND}250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n\
             550 5.1.1 <nobody@local.test>: Recipient address rejected: User unknown\r\n\
             250 2.1.5 Recipient ok\r\n354 Start mail input; end with <CRLF>.<CRLF>\r\n"
        )
    );
    assert_eq!(
        c.send(b"x\r\n.\r\nNOOP\r\nRSET\r\nQUIT\r\n"),
        "250 2.0.0 Ok: queued as 462D53C88D8809C401\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n\
         221 2.0.0 mx.test closing connection\r\n"
    );
    assert_eq!(
        c.store.log.last().unwrap(),
        "commit 1 [\"alice@local.test\", \"bob@local.test\"] true"
    );
    // Two recipients: `for` is left out (RFC 5321 §4.4).
    let mut want = trace_header("", "ESMTP", None).into_bytes();
    want.extend_from_slice(b"x\r\n");
    assert_eq!(c.store.delivered[0].1, want);
    assert_eq!(c.store.delivered[1].1, want);
}

#[test]
fn a_mailbox_named_twice_gets_one_copy() {
    let mut c = Client::inbound();
    c.drain();
    c.send(b"HELO client.test\r\nMAIL FROM:<s@r.test>\r\n");
    c.send(b"RCPT TO:<bob@local.test>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(
        c.store.log.last().unwrap(),
        "commit 1 [\"bob@local.test\"] true"
    );
    // HELO: the RFC 3848 protocol is plain SMTP.
    let mut want = trace_header("s@r.test", "SMTP", None).into_bytes();
    want.extend_from_slice(b"x\r\n");
    assert_eq!(c.store.delivered, vec![("bob@local.test".into(), want)]);
}

/// What a client saw, the store's request log and the delivered copies.
type Transcript = (String, Vec<String>, Vec<(String, Vec<u8>)>);

/// Everything a client saw and the store did, for one way of splitting the input.
fn transcript(chunks: &[&[u8]]) -> Transcript {
    let mut cfg = config(SmtpRole::Inbound);
    cfg.limits.append_chunk = 16;
    let mut c = Client::new(cfg, conn(false, false));
    let mut out = c.drain();
    for chunk in chunks {
        out.push_str(&c.send(chunk));
    }
    (out, c.store.log, c.store.delivered)
}

fn session_input() -> Vec<u8> {
    let mut input = b"EHLO client.test\r\nMAIL FROM:<s@remote.test>\r\n\
        RCPT TO:<alice@local.test>\r\nDATA\r\n"
        .to_vec();
    input.extend_from_slice(
        b"Subject: dots\r\n\r\n..\r\n...\r\n...three\r\n.x\r\nline\r\n\r\n.\r\n\
          MAIL FROM:<s@remote.test>\r\nRCPT TO:<bob@local.test>\r\nBDAT 12\r\n0123\r\n.\r\n\nxy\
          BDAT 5 LAST\r\nend\r\nQUIT\r\n",
    );
    input
}

#[test]
fn the_same_input_split_anywhere_gives_the_same_output() {
    let input = session_input();
    let whole = transcript(&[&input]);
    assert_eq!(
        whole.0,
        format!(
            "220 mx.test ESMTP tidegate\r\n{EHLO_INBOUND}250 2.1.0 Sender ok\r\n\
             250 2.1.5 Recipient ok\r\n354 Start mail input; end with <CRLF>.<CRLF>\r\n\
             250 2.0.0 Ok: queued as 462D53C88D8809C401\r\n250 2.1.0 Sender ok\r\n\
             250 2.1.5 Recipient ok\r\n550 5.6.0 Message contains a bare CR or LF; \
             lines must end with CRLF\r\n503 5.5.1 Need MAIL command first\r\n\
             221 2.0.0 mx.test closing connection\r\n"
        )
    );
    let header = trace_header("s@remote.test", "ESMTP", Some("alice@local.test"));
    let body = "Subject: dots\r\n\r\n.\r\n..\r\n..three\r\nx\r\nline\r\n\r\n";
    assert_eq!(
        whole.2,
        vec![(
            "alice@local.test".into(),
            format!("{header}{body}").into_bytes()
        )]
    );
    assert_eq!(
        whole.1,
        [
            "rcpt alice@local.test None",
            "begin 1",
            "append 1 16",
            "append 1 16",
            "append 1 12",
            "commit 1 [\"alice@local.test\"] true",
            "rcpt bob@local.test None",
            "begin 2",
            "abort 2",
        ]
    );

    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(transcript(&bytes), whole, "byte by byte");
    let mut seed = 0x2545_f491_u64;
    for _ in 0..50 {
        let mut chunks = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 23 + 1) as usize;
            let (head, tail) = rest.split_at(n.min(rest.len()));
            chunks.push(head);
            rest = tail;
        }
        assert_eq!(transcript(&chunks), whole, "split {chunks:?}");
    }
}

#[test]
fn bdat_chunks_are_appended_as_they_are() {
    let mut c = Client::inbound();
    c.drain();
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<s@r.test> BODY=BINARYMIME\r\nRCPT TO:<bob@local.test>\r\n",
    );
    assert_eq!(
        c.send(b"DATA\r\n"),
        "503 5.5.1 BODY=BINARYMIME requires BDAT\r\n"
    );
    assert_eq!(c.send(b"BDAT 10\r\n\0\r.\r\n\n\xff"), "");
    assert_eq!(c.send(b"\xfe\x01\x02"), "250 2.0.0 10 octets received\r\n");
    assert_eq!(
        c.send(b"RCPT TO:<alice@local.test>\r\n"),
        "503 5.5.1 RCPT is not allowed after BDAT\r\n"
    );
    assert_eq!(
        c.send(b"DATA\r\n"),
        "503 5.5.1 DATA is not allowed after BDAT\r\n"
    );
    assert_eq!(
        c.send(b"BDAT 0 LAST\r\n"),
        "250 2.0.0 Ok: queued as 462D53C88D8809C401\r\n"
    );
    let header = trace_header("s@r.test", "ESMTP", Some("bob@local.test"));
    let mut want = header.into_bytes();
    want.extend_from_slice(b"\0\r.\r\n\n\xff\xfe\x01\x02");
    assert_eq!(c.store.delivered, vec![("bob@local.test".into(), want)]);
}

#[test]
fn bdat_octets_are_swallowed_even_when_the_command_is_refused() {
    let mut c = Client::inbound();
    c.drain();
    assert_eq!(
        c.send(b"EHLO client.test\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n"),
        format!("{EHLO_INBOUND}503 5.5.1 Need MAIL command first\r\n250 2.0.0 Ok\r\n")
    );
    assert_eq!(
        c.send(b"MAIL FROM:<s@r.test>\r\nBDAT 4 LAST\r\nQUIT"),
        "250 2.1.0 Sender ok\r\n503 5.5.1 Need RCPT command first\r\n"
    );
    assert!(!c.closed);
}

#[test]
fn a_message_over_the_size_limit_is_swallowed_and_refused_once() {
    let mut cfg = config(SmtpRole::Inbound);
    cfg.max_message_size = 100;
    cfg.limits.append_chunk = 64;
    let mut c = Client::new(cfg, conn(false, false));
    c.drain();
    c.send(b"EHLO client.test\r\n");
    assert_eq!(
        c.send(b"MAIL FROM:<s@r.test> SIZE=101\r\n"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    c.send(b"MAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n");
    let line = [b'x'; 48];
    for _ in 0..10 {
        assert_eq!(c.send(&[&line[..], b"\r\n"].concat()), "");
    }
    assert_eq!(
        c.send(b".\r\n"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert_eq!(c.store.log[1..], ["begin 1", "append 1 64", "abort 1"]);
    // The session goes on: the next transaction is delivered.
    c.send(b"MAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n");
    assert_eq!(
        c.send(b"small\r\n.\r\n"),
        "250 2.0.0 Ok: queued as 462D53C88D8809C402\r\n"
    );
    // BDAT announcing too much: swallowed, refused, the transaction reset.
    c.send(b"MAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\n");
    let mut bdat = b"BDAT 200\r\n".to_vec();
    bdat.extend_from_slice(&[b'y'; 200]);
    assert_eq!(
        c.send(&bdat),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert_eq!(
        c.send(b"BDAT 5 LAST\r\nhelloNOOP\r\n"),
        "503 5.5.1 Need MAIL command first\r\n250 2.0.0 Ok\r\n"
    );
    assert_eq!(c.store.aborted, [1]);
    assert!(
        !c.store.log.contains(&"begin 3".to_owned()),
        "no file for a too-large first chunk"
    );
}

#[test]
fn bare_line_ends_and_long_lines_are_refused() {
    let mut c = Client::inbound();
    c.drain();
    c.send(b"EHLO client.test\r\nMAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n");
    assert_eq!(
        c.send(b"a\nb\r\n.\r\n"),
        "550 5.6.0 Message contains a bare CR or LF; lines must end with CRLF\r\n"
    );
    // LF.LF does not end the data (smuggling); the whole thing is refused.
    c.send(b"MAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n");
    assert_eq!(c.send(b"a\n.\nMAIL FROM:<evil@x>\r\n"), "");
    assert_eq!(
        c.send(b".\r\n"),
        "550 5.6.0 Message contains a bare CR or LF; lines must end with CRLF\r\n"
    );
    c.send(b"MAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n");
    let long = vec![b'z'; 999];
    assert_eq!(
        c.send(&[&long[..], b"\r\n.\r\n"].concat()),
        "500 5.5.6 Message line too long\r\n"
    );
    assert_eq!(c.store.aborted, [1, 2, 3]);
    assert!(c.store.delivered.is_empty());
}

#[test]
fn sequence_syntax_and_limit_errors() {
    let mut cfg = config(SmtpRole::Inbound);
    cfg.limits.max_recipients = 2;
    let mut c = Client::new(cfg, conn(false, false));
    c.drain();
    assert_eq!(
        c.send(b"MAIL FROM:<a@b>\r\n"),
        "503 5.5.1 Send EHLO or HELO first\r\n"
    );
    assert_eq!(
        c.send(b"LHLO x\r\n"),
        "500 5.5.1 LHLO is for LMTP; use EHLO\r\n"
    );
    assert_eq!(c.send(b"HELO client.test\r\n"), "250 mx.test\r\n");
    assert_eq!(
        c.send(b"RCPT TO:<alice@local.test>\r\n"),
        "503 5.5.1 Need MAIL command first\r\n"
    );
    assert_eq!(c.send(b"DATA\r\n"), "503 5.5.1 Need MAIL command first\r\n");
    assert_eq!(
        c.send(b"MAIL FROM:<a@@b>\r\n"),
        "501 5.1.3 Bad address syntax\r\n"
    );
    assert_eq!(
        c.send(b"MAIL FROM:<a@b> FOO=1\r\n"),
        "555 5.5.4 Unsupported parameter\r\n"
    );
    assert_eq!(
        c.send(b"MAIL FROM:<a@b> SIZE=x\r\n"),
        "501 5.5.4 Invalid parameter value\r\n"
    );
    assert_eq!(
        c.send("MAIL FROM:<jö@b>\r\n".as_bytes()),
        "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter\r\n"
    );
    assert_eq!(c.send(b"MAIL FROM:<a@b>\r\n"), "250 2.1.0 Sender ok\r\n");
    assert_eq!(
        c.send(b"MAIL FROM:<a@b>\r\n"),
        "503 5.5.1 Sender already given\r\n"
    );
    // No RCPT at all is a bad sequence; RCPTs that were all refused are 554 (below).
    assert_eq!(c.send(b"DATA\r\n"), "503 5.5.1 Need RCPT command first\r\n");
    assert_eq!(
        c.send(b"RCPT TO:<alice@local.test> NOTIFY=NEVER\r\n"),
        "555 5.5.4 Unsupported parameter\r\n"
    );
    let long_local = format!("RCPT TO:<{}@local.test>\r\n", "l".repeat(65));
    assert_eq!(
        c.send(long_local.as_bytes()),
        "501 5.1.3 Address too long\r\n"
    );
    c.send(b"RCPT TO:<alice@local.test>\r\nRCPT TO:<bob@local.test>\r\n");
    assert_eq!(
        c.send(b"RCPT TO:<carol@local.test>\r\n"),
        "452 4.5.3 Too many recipients\r\n"
    );
    let long = format!("NOOP {}\r\n", "n".repeat(600));
    assert_eq!(c.send(long.as_bytes()), "500 5.5.6 Line too long\r\n");
    let huge = format!("NOOP {}\r\nNOOP\r\n", "n".repeat(20_000));
    assert_eq!(
        c.send(huge.as_bytes()),
        "500 5.5.6 Line too long\r\n250 2.0.0 Ok\r\n"
    );
    assert_eq!(c.send(b"XYZZY\r\n"), "500 5.5.2 Command not recognized\r\n");
    assert_eq!(
        c.send(b"VRFY alice\r\nEXPN staff\r\nHELP\r\nSTARTTLS\r\n"),
        "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n\
         502 5.5.1 EXPN is not supported\r\n\
         214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS\r\n\
         502 5.5.1 STARTTLS is not available\r\n"
    );
    assert_eq!(
        c.send(b"AUTH PLAIN AGFsaWNlQGxvY2FsLnRlc3QAc2VjcmV0\r\n"),
        "502 5.5.1 Authentication is not available here\r\n"
    );
}

#[test]
fn too_many_bad_commands_end_the_session() {
    let mut cfg = config(SmtpRole::Inbound);
    cfg.limits.max_bad_commands = 3;
    let mut c = Client::new(cfg, conn(false, false));
    c.drain();
    assert_eq!(
        c.send(b"A\r\nB\r\nC\r\nNOOP\r\n"),
        "500 5.5.2 Command not recognized\r\n500 5.5.2 Command not recognized\r\n\
         500 5.5.2 Command not recognized\r\n421 4.7.0 mx.test Too many errors, closing connection\r\n"
    );
    assert!(c.closed);
    assert!(!c.session.wants_read(Peer::Client));
    assert_eq!(c.send(b"NOOP\r\n"), "", "nothing after the close");
}

// ---- LMTP ---------------------------------------------------------------------------------

#[test]
fn lmtp_answers_once_per_recipient_after_the_data() {
    let mut c = Client::new(config(SmtpRole::Lmtp), conn(false, false));
    assert_eq!(c.drain(), "220 mx.test LMTP tidegate\r\n");
    assert_eq!(
        c.send(b"EHLO client.test\r\n"),
        "500 5.5.1 This is LMTP; use LHLO\r\n"
    );
    assert_eq!(
        c.send(b"MAIL FROM:<s@r.test>\r\n"),
        "503 5.5.1 Send LHLO first\r\n"
    );
    let lhlo = c.send(b"LHLO client.test\r\n");
    assert_eq!(lhlo, EHLO_INBOUND);
    let out = c.send(
        b"MAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\nRCPT TO:<full@local.test>\r\n\
          RCPT TO:<x@remote.test>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\nhello\r\n.\r\n",
    );
    assert_eq!(
        out,
        "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n250 2.1.5 Recipient ok\r\n\
         550 5.7.1 <x@remote.test>: Relaying denied\r\n250 2.1.5 Recipient ok\r\n\
         354 Start mail input; end with <CRLF>.<CRLF>\r\n\
         250 2.0.0 <alice@local.test> delivered\r\n\
         552 5.2.2 <full@local.test> Mailbox full\r\n\
         250 2.0.0 <bob@local.test> delivered\r\n"
    );
    assert_eq!(
        c.store.log.last().unwrap(),
        "commit 1 [\"alice@local.test\", \"full@local.test\", \"bob@local.test\"] false"
    );
    let names: Vec<&str> = c.store.delivered.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(names, ["alice@local.test", "bob@local.test"]);
    assert!(String::from_utf8_lossy(&c.store.delivered[0].1).contains(" with LMTP"));
    // A refused message is refused once per recipient too.
    c.send(b"MAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\nRCPT TO:<bob@local.test>\r\n");
    assert_eq!(
        c.send(b"BDAT 3 LAST\r\na\nb"),
        "550 5.6.0 <alice@local.test> Message contains a bare CR or LF; lines must end with CRLF\r\n\
         550 5.6.0 <bob@local.test> Message contains a bare CR or LF; lines must end with CRLF\r\n"
    );
}

#[test]
fn smtp_commit_failures() {
    let mut c = Client::inbound();
    c.drain();
    c.send(b"EHLO client.test\r\nMAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\nRCPT TO:<full@local.test>\r\n");
    assert_eq!(
        c.send(b"DATA\r\nx\r\n.\r\n"),
        "354 Start mail input; end with <CRLF>.<CRLF>\r\n552 5.2.2 Mailbox full\r\n"
    );
    assert!(c.store.delivered.is_empty(), "all or nothing");
}

#[test]
fn inbound_queues_backend_recipients_and_delivers_local_ones() {
    let mut c = Client::inbound();
    c.drain();
    let out = c.send(
        b"EHLO client.test\r\nMAIL FROM:<s@r.test>\r\nRCPT TO:<Ann@back.test>\r\n\
          RCPT TO:<alice@local.test>\r\nRCPT TO:<ann@back.test>\r\nRCPT TO:<x@remote.test>\r\n\
          DATA\r\nhello\r\n.\r\n",
    );
    let (before, last) = out.trim_end().rsplit_once("\r\n").unwrap();
    assert!(
        before.ends_with(
            "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n250 2.1.5 Recipient ok\r\n\
             250 2.1.5 Recipient ok\r\n550 5.7.1 <x@remote.test>: Relaying denied\r\n\
             354 Start mail input; end with <CRLF>.<CRLF>"
        ),
        "{out}"
    );
    assert!(last.starts_with("250 2.0.0 "), "{out}");
    let commit = c
        .store
        .log
        .iter()
        .find(|l| l.starts_with("commit"))
        .unwrap();
    // One queue copy; the account named twice is one back-end recipient.
    assert_eq!(
        commit,
        "commit+queue 1 [\"alice@local.test\"] RelayEnvelope { sender: \"s@r.test\", \
         recipients: [], eight_bit: false, smtputf8: false, backends: [BackendRecipient { \
         account: Account(\"ann@back.test\"), host: \"b1\" }], client: Some(Xclient { addr: Some(192.0.2.9), port: Some(40000), \
         helo: Some(\"client.test\"), name: None, proto: Some(\"ESMTP\"), ttl: None }) }"
    );
    let who: Vec<&str> = c.store.delivered.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(who, vec!["alice@local.test", "queue"]);
}

#[test]
fn lmtp_delivers_backend_recipients_here_and_never_forwards() {
    let mut c = Client::new(config(SmtpRole::Lmtp), conn(false, false));
    c.drain();
    c.send(b"LHLO client.test\r\nMAIL FROM:<s@r.test>\r\n");
    assert_eq!(
        c.send(b"RCPT TO:<ann@back.test>\r\n"),
        "250 2.1.5 Recipient ok\r\n"
    );
    assert_eq!(
        c.send(b"DATA\r\nhi\r\n.\r\n"),
        "354 Start mail input; end with <CRLF>.<CRLF>\r\n250 2.0.0 <ann@back.test> delivered\r\n"
    );
    assert_eq!(
        c.store.log.last().unwrap(),
        "commit 1 [\"ann@back.test\"] false"
    );
}

// ---- Submission and AUTH --------------------------------------------------------------------

const PLAIN_OK: &str = "AGFsaWNlQGxvY2FsLnRlc3QAc2VjcmV0";
const PLAIN_BAD: &str = "AGFsaWNlQGxvY2FsLnRlc3QAd3Jvbmc=";

fn submission(plaintext_auth: bool) -> Client<SmtpSession> {
    let mut c = Client::new(config(SmtpRole::Submission), conn(plaintext_auth, false));
    c.drain();
    c
}

#[test]
fn submission_requires_auth_plain() {
    let mut c = submission(true);
    let ehlo = c.send(b"EHLO client.test\r\n");
    assert!(
        ehlo.ends_with("250-SMTPUTF8\r\n250-AUTH PLAIN LOGIN\r\n250 HELP\r\n"),
        "{ehlo}"
    );
    assert_eq!(
        c.send(b"MAIL FROM:<alice@local.test>\r\n"),
        "530 5.7.0 Authentication required\r\n"
    );
    assert_eq!(
        c.send(b"AUTH CRAM-MD5\r\n"),
        "504 5.5.4 Unrecognized authentication mechanism\r\n"
    );
    assert_eq!(c.send(b"AUTH PLAIN\r\n"), "334 \r\n");
    assert_eq!(c.send(b"*\r\n"), "501 5.0.0 Authentication cancelled\r\n");
    assert_eq!(
        c.send(b"AUTH PLAIN !!!\r\n"),
        "501 5.5.2 Invalid base64 data\r\n"
    );
    assert_eq!(
        c.send(format!("AUTH PLAIN {PLAIN_OK}\r\n").as_bytes()),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(
        c.send(b"AUTH LOGIN\r\n"),
        "503 5.5.1 Already authenticated\r\n"
    );
    assert_eq!(
        c.send(b"MAIL FROM:<alice@local.test>\r\n"),
        "250 2.1.0 Sender ok\r\n"
    );
    assert_eq!(
        c.send(b"RCPT TO:<friend@remote.test>\r\n"),
        "554 5.7.1 <friend@remote.test>: outbound delivery is not configured\r\n"
    );
    assert_eq!(
        c.send(b"RCPT TO:<bob@local.test>\r\n"),
        "250 2.1.5 Recipient ok\r\n"
    );
    c.send(b"DATA\r\nx\r\n.\r\n");
    assert!(String::from_utf8_lossy(&c.store.delivered[0].1).contains("with ESMTPA"));
    assert_eq!(c.store.log[0], "auth alice@local.test");
}

fn relaying_submission() -> Client<SmtpSession> {
    let cfg = SmtpConfig {
        relay: true,
        ..config(SmtpRole::Submission)
    };
    let mut c = Client::new(cfg, conn(true, false));
    c.drain();
    c.send(b"EHLO client.test\r\n");
    c
}

#[test]
fn relaying_submission_queues_remote_recipients_with_the_local_ones() {
    let mut c = relaying_submission();
    assert_eq!(
        c.send(b"MAIL FROM:<alice@local.test>\r\n"),
        "530 5.7.0 Authentication required\r\n"
    );
    c.send(format!("AUTH PLAIN {PLAIN_OK}\r\n").as_bytes());
    assert_eq!(
        c.send(b"MAIL FROM:<>\r\n"),
        "553 5.7.1 The null sender is not allowed on submission\r\n"
    );
    assert_eq!(
        c.send(b"MAIL FROM:<bob@local.test>\r\n"),
        "553 5.7.1 Sender address not owned by the authenticated user\r\n"
    );
    assert_eq!(
        c.send(b"MAIL FROM:<Alice@LOCAL.test> BODY=8BITMIME\r\n"),
        "250 2.1.0 Sender ok\r\n"
    );
    assert_eq!(
        c.send(b"RCPT TO:<friend@remote.test>\r\nRCPT TO:<bob@local.test>\r\nRCPT TO:<x@other.test>\r\nRCPT TO:<nobody@local.test>\r\n"),
        "250 2.1.5 Recipient ok\r\n250 2.1.5 Recipient ok\r\n250 2.1.5 Recipient ok\r\n\
         550 5.1.1 <nobody@local.test>: Recipient address rejected: User unknown\r\n"
    );
    let done = c.send(b"DATA\r\nSubject: hi\r\n\r\nx\r\n.\r\n");
    assert!(
        done.starts_with(
            "354 Start mail input; end with <CRLF>.<CRLF>\r\n250 2.0.0 Ok: queued as "
        ),
        "{done}"
    );
    let commit = c
        .store
        .log
        .iter()
        .find(|l| l.starts_with("commit"))
        .unwrap();
    assert_eq!(
        commit,
        "commit+queue 1 [\"bob@local.test\"] RelayEnvelope { sender: \"Alice@LOCAL.test\", \
         recipients: [\"friend@remote.test\", \"x@other.test\"], eight_bit: true, smtputf8: false, \
         backends: [], client: Some(Xclient { addr: Some(192.0.2.9), port: Some(40000), \
         helo: Some(\"client.test\"), name: None, proto: Some(\"ESMTP\"), ttl: None }) }"
    );
    let who: Vec<&str> = c.store.delivered.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(who, vec!["bob@local.test", "queue"]);

    // Only remote recipients: still one queue copy; a failed queue copy is a 451.
    c.store.fail = Some("queue");
    c.send(b"MAIL FROM:<alice@local.test>\r\nRCPT TO:<friend@remote.test>\r\n");
    assert_eq!(
        c.send(b"DATA\r\nx\r\n.\r\n"),
        "354 Start mail input; end with <CRLF>.<CRLF>\r\n451 4.3.0 Temporary failure, try again later\r\n"
    );
    assert_eq!(c.store.delivered.len(), 2);
}

#[test]
fn inbound_and_lmtp_never_relay_even_with_relaying_on() {
    for (role, hello) in [(SmtpRole::Inbound, "EHLO"), (SmtpRole::Lmtp, "LHLO")] {
        let cfg = SmtpConfig {
            relay: true,
            ..config(role)
        };
        let mut c = Client::new(cfg, conn(true, true));
        c.drain();
        c.send(format!("{hello} client.test\r\n").as_bytes());
        c.send(b"MAIL FROM:<someone@else.test>\r\n");
        assert_eq!(
            c.send(b"RCPT TO:<friend@remote.test>\r\n"),
            "550 5.7.1 <friend@remote.test>: Relaying denied\r\n"
        );
    }
}

#[test]
fn submission_auth_login_and_the_growing_failure_delay() {
    let mut c = submission(true);
    c.send(b"EHLO client.test\r\n");
    assert_eq!(c.send(b"AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        c.send(b"YWxpY2VAbG9jYWwudGVzdA==\r\n"),
        "334 UGFzc3dvcmQ6\r\n"
    );
    // A wrong password: the answer waits for the delay (1 s, then 2 s, then 4 s).
    assert_eq!(c.send(b"d3Jvbmc=\r\nNOOP\r\n"), "");
    assert_eq!(
        c.session.poll_timeout(),
        Some(c.now + Duration::from_secs(1))
    );
    assert_eq!(
        c.advance(Duration::from_secs(1)),
        "535 5.7.8 Authentication credentials invalid\r\n250 2.0.0 Ok\r\n"
    );
    assert_eq!(c.send(format!("AUTH PLAIN {PLAIN_BAD}\r\n").as_bytes()), "");
    assert_eq!(c.advance(Duration::from_millis(1999)), "");
    assert_eq!(
        c.advance(Duration::from_millis(1)),
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    assert_eq!(c.send(format!("AUTH PLAIN {PLAIN_BAD}\r\n").as_bytes()), "");
    assert_eq!(
        c.advance(Duration::from_secs(4)),
        "535 5.7.8 Authentication credentials invalid\r\n\
         421 4.7.0 mx.test Too many failed authentications, closing connection\r\n"
    );
    assert!(c.closed);

    let mut c = submission(true);
    c.send(b"EHLO client.test\r\n");
    assert_eq!(
        c.send(b"AUTH LOGIN YWxpY2VAbG9jYWwudGVzdA==\r\n"),
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert_eq!(
        c.send(b"c2VjcmV0\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
    // The user database being down is a temporary failure.
    let mut c = submission(true);
    c.send(b"EHLO client.test\r\n");
    assert_eq!(
        c.send(b"AUTH LOGIN ZG93bg==\r\nc2VjcmV0\r\n"),
        "334 UGFzc3dvcmQ6\r\n454 4.7.0 Temporary authentication failure, try again later\r\n"
    );
}

#[test]
fn submission_without_tls_refuses_passwords() {
    let mut c = submission(false);
    let ehlo = c.send(b"EHLO client.test\r\n");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert_eq!(
        c.send(format!("AUTH PLAIN {PLAIN_OK}\r\n").as_bytes()),
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    assert!(
        c.store.log.is_empty(),
        "the password never reached the store"
    );
}

// ---- STARTTLS ------------------------------------------------------------------------------

/// The fixed test PKI the fuzz harnesses use: a certificate for "localhost" and a
/// client that trusts it.
fn tls_configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let tls = tidegate_core::fuzzing::FuzzTls::new();
    (tls.server, tls.client)
}

/// Moves records between the rustls client and the server until both are quiet;
/// returns the plaintext the client received.
fn pump(tls: &mut ClientConnection, c: &mut Client<Secured<SmtpSession>>) -> String {
    let mut plain = Vec::new();
    for _ in 0..20 {
        let mut to_server = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut to_server).unwrap();
        }
        let to_client = if to_server.is_empty() {
            c.drain()
        } else {
            // Ciphertext is not UTF-8: collect writes as bytes via the raw session.
            c.session.handle_input(c.now, Peer::Client, &to_server);
            String::new()
        };
        assert!(to_client.is_empty());
        let mut bytes = Vec::new();
        let mut replies = VecDeque::new();
        loop {
            while let Some(action) = c.session.poll_action() {
                match action {
                    Action::Write { bytes: b, .. } => bytes.extend_from_slice(&b),
                    Action::Request { id, request } => {
                        replies.push_back((id, c.store.answer(request)))
                    }
                    Action::Close { .. } => c.closed = true,
                    Action::StartTls { .. } => panic!("consumed by Secured"),
                    other => panic!("an SMTP session never asks for {other:?}"),
                }
            }
            match replies.pop_front() {
                Some((id, reply)) => c.session.handle_reply(c.now, id, reply),
                None => break,
            }
        }
        if to_server.is_empty() && bytes.is_empty() {
            break;
        }
        if !bytes.is_empty() {
            tls.read_tls(&mut &bytes[..]).unwrap();
            tls.process_new_packets().unwrap();
        }
        let mut buf = [0u8; 4096];
        while let Ok(n) = tls.reader().read(&mut buf) {
            if n == 0 {
                break;
            }
            plain.extend_from_slice(&buf[..n]);
        }
    }
    String::from_utf8(plain).unwrap()
}

#[test]
fn starttls_discards_pipelined_plaintext_and_resets_the_session() {
    let (server_config, client_config) = tls_configs();
    let now = Instant::now();
    let session = SmtpSession::new(
        Arc::new(config(SmtpRole::Submission)),
        conn(false, true),
        now,
    );
    let mut c = Client::wrap(Secured::plain(session, Some(server_config)), now);
    assert_eq!(c.drain(), "220 mx.test ESMTP tidegate\r\n");
    let ehlo = c.send(b"EHLO client.test\r\n");
    assert!(
        ehlo.contains("250-STARTTLS\r\n") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(
        c.send(b"MAIL FROM:<a@b>\r\n"),
        "530 5.7.0 Authentication required\r\n"
    );
    // The injected commands after STARTTLS must never be answered (CVE-2011-0411).
    assert_eq!(
        c.send(b"STARTTLS\r\nEHLO injected\r\nAUTH PLAIN AGFsaWNlQGxvY2FsLnRlc3QAc2VjcmV0\r\n"),
        "220 2.0.0 Ready to start TLS\r\n"
    );
    assert!(c.session.is_tls() && !c.closed);
    assert!(
        c.store.log.is_empty(),
        "the injected AUTH never reached the store"
    );

    let mut tls =
        ClientConnection::new(client_config, ServerName::try_from("localhost").unwrap()).unwrap();
    assert_eq!(pump(&mut tls, &mut c), "", "nothing but the handshake");
    // The pre-TLS EHLO is forgotten (RFC 3207 §4.2).
    tls.writer().write_all(b"MAIL FROM:<a@b>\r\n").unwrap();
    assert_eq!(
        pump(&mut tls, &mut c),
        "503 5.5.1 Send EHLO or HELO first\r\n"
    );
    tls.writer().write_all(b"EHLO client.test\r\n").unwrap();
    let ehlo = pump(&mut tls, &mut c);
    assert!(
        !ehlo.contains("STARTTLS") && ehlo.contains("250-AUTH PLAIN LOGIN\r\n"),
        "{ehlo}"
    );
    tls.writer()
        .write_all(
            format!(
                "AUTH PLAIN {PLAIN_OK}\r\nSTARTTLS\r\nMAIL FROM:<alice@local.test>\r\n\
                            RCPT TO:<bob@local.test>\r\nDATA\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(
        pump(&mut tls, &mut c),
        "235 2.7.0 Authentication successful\r\n503 5.5.1 TLS is already active\r\n\
         250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n\
         354 Start mail input; end with <CRLF>.<CRLF>\r\n"
    );
    tls.writer().write_all(b"secure\r\n.\r\n").unwrap();
    assert!(pump(&mut tls, &mut c).starts_with("250 2.0.0 Ok: queued as "));
    assert!(String::from_utf8_lossy(&c.store.delivered[0].1).contains("with ESMTPSA"));
}

// ---- EOF, timeouts, backpressure -------------------------------------------------------------

#[test]
fn eof_mid_data_aborts_the_delivery() {
    let mut c = Client::inbound();
    c.drain();
    c.send(b"EHLO client.test\r\nMAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\npart of a mess");
    assert_eq!(c.eof(), "");
    assert!(c.closed);
    assert_eq!(c.store.log[1..], ["begin 1", "abort 1"]);
    assert!(c.store.open.is_empty() && c.store.delivered.is_empty());
}

#[test]
fn pipelined_commands_before_eof_are_answered() {
    let mut c = Client::inbound();
    c.drain();
    c.session
        .handle_input(c.now, Peer::Client, b"EHLO client.test\r\nQUIT\r\n");
    c.session.handle_eof(c.now, Peer::Client);
    assert_eq!(
        c.drain(),
        format!("{EHLO_INBOUND}221 2.0.0 mx.test closing connection\r\n")
    );
    assert!(c.closed);
}

#[test]
fn quit_between_bdat_chunks_aborts_the_delivery() {
    let mut c = Client::inbound();
    c.drain();
    c.send(b"EHLO client.test\r\nMAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\n");
    assert_eq!(c.send(b"BDAT 3\r\nabc"), "250 2.0.0 3 octets received\r\n");
    assert_eq!(c.send(b"RSET\r\n"), "250 2.0.0 Ok\r\n");
    assert_eq!(c.store.log[1..], ["begin 1", "abort 1"]);
    c.send(b"MAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\nBDAT 3\r\nabc");
    assert_eq!(
        c.send(b"QUIT\r\n"),
        "221 2.0.0 mx.test closing connection\r\n"
    );
    assert_eq!(c.store.aborted, [1, 2]);
}

#[test]
fn the_idle_timeout_closes_with_421() {
    // A login timeout longer than the idle timeout, so only the idle timeout acts.
    let long_login = || SmtpConfig {
        login_timeout: Duration::from_secs(3600),
        ..config(SmtpRole::Inbound)
    };
    let mut c = Client::new(long_login(), conn(false, false));
    c.drain();
    assert_eq!(
        c.session.poll_timeout(),
        Some(c.now + Duration::from_secs(300))
    );
    assert_eq!(c.advance(Duration::from_secs(299)), "");
    c.send(b"NOOP\r\n");
    assert_eq!(c.advance(Duration::from_secs(299)), "");
    assert_eq!(
        c.advance(Duration::from_secs(1)),
        "421 4.4.2 mx.test Error: timeout exceeded\r\n"
    );
    assert!(c.closed);
    assert_eq!(c.session.poll_timeout(), None);

    // Mid-DATA, the open message is aborted too.
    let mut c = Client::new(long_login(), conn(false, false));
    c.drain();
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\nabc",
    );
    assert_eq!(
        c.advance(Duration::from_secs(300)),
        "421 4.4.2 mx.test Error: timeout exceeded\r\n"
    );
    assert_eq!(c.store.aborted, [1]);
}

#[test]
fn submission_without_auth_is_closed_at_the_login_timeout_whatever_it_sends() {
    let mut c = submission(true);
    assert_eq!(
        c.session.poll_timeout(),
        Some(c.now + Duration::from_secs(60)),
        "the login deadline comes before the 300 s idle timeout"
    );
    c.send(b"EHLO client.test\r\n");
    for _ in 0..5 {
        assert_eq!(c.advance(Duration::from_secs(10)), "");
        assert_eq!(c.send(b"NOOP\r\n"), "250 2.0.0 Ok\r\n");
    }
    // A line that never ends keeps nothing open either.
    c.send(b"AUTH PLA");
    assert_eq!(c.advance(Duration::from_secs(9)), "");
    assert!(!c.closed);
    assert_eq!(
        c.advance(Duration::from_secs(1)),
        "421 4.4.2 mx.test Error: timeout exceeded before authentication\r\n"
    );
    assert!(c.closed);
    assert_eq!(c.session.poll_timeout(), None);
    assert!(c.store.log.is_empty(), "no request: {:?}", c.store.log);
}

#[test]
fn after_auth_only_the_idle_timeout_applies() {
    let mut c = submission(true);
    c.send(b"EHLO client.test\r\n");
    assert_eq!(c.advance(Duration::from_secs(50)), "");
    assert_eq!(
        c.send(format!("AUTH PLAIN {PLAIN_OK}\r\n").as_bytes()),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(
        c.session.poll_timeout(),
        Some(c.now + Duration::from_secs(300))
    );
    assert_eq!(c.advance(Duration::from_secs(299)), "");
    assert!(!c.closed, "closed before the idle timeout");
    assert_eq!(
        c.advance(Duration::from_secs(1)),
        "421 4.4.2 mx.test Error: timeout exceeded\r\n"
    );
    assert!(c.closed);
}

#[test]
fn a_login_answered_after_the_deadline_is_too_late() {
    // The password check is still running when the login deadline passes: the session
    // closes, and the late answer changes nothing.
    let mut c = submission(true);
    c.send(b"EHLO client.test\r\n");
    c.advance(Duration::from_secs(55));
    c.hold = true;
    assert_eq!(c.send(format!("AUTH PLAIN {PLAIN_OK}\r\n").as_bytes()), "");
    assert_eq!(
        c.advance(Duration::from_secs(5)),
        "421 4.4.2 mx.test Error: timeout exceeded before authentication\r\n"
    );
    assert!(c.closed);
    assert_eq!(c.release(), "");
}

#[test]
fn inbound_and_lmtp_must_start_a_transaction_within_the_login_timeout() {
    for role in [SmtpRole::Inbound, SmtpRole::Lmtp] {
        let hello: &[u8] = if role == SmtpRole::Lmtp {
            b"LHLO client.test\r\n"
        } else {
            b"EHLO client.test\r\n"
        };
        // No MAIL: closed 60 s after the connect, however busy the client is.
        let mut c = Client::new(config(role), conn(false, false));
        c.drain();
        for _ in 0..6 {
            c.send(hello);
            c.send(b"RSET\r\n");
            if !c.advance(Duration::from_secs(10)).is_empty() {
                break;
            }
        }
        assert!(c.closed, "{role:?}: still open after 60 s without MAIL");
        assert!(c.session.poll_timeout().is_none());

        let mut c = Client::new(config(role), conn(false, false));
        c.drain();
        assert_eq!(c.advance(Duration::from_secs(59)), "");
        c.send(hello);
        assert!(!c.closed);
        assert_eq!(
            c.advance(Duration::from_secs(1)),
            "421 4.4.2 mx.test Error: timeout exceeded before a mail transaction\r\n",
            "{role:?}"
        );

        // MAIL in time: the idle timeout takes over, also after the transaction ends.
        let mut c = Client::new(config(role), conn(false, false));
        c.drain();
        c.send(hello);
        c.advance(Duration::from_secs(30));
        assert_eq!(
            c.send(b"MAIL FROM:<s@r.test>\r\n"),
            "250 2.1.0 Sender ok\r\n"
        );
        c.send(b"RSET\r\n");
        assert_eq!(
            c.session.poll_timeout(),
            Some(c.now + Duration::from_secs(300))
        );
        assert_eq!(c.advance(Duration::from_secs(299)), "");
        assert!(
            !c.closed,
            "{role:?}: closed by the login timeout after MAIL"
        );
        assert_eq!(
            c.advance(Duration::from_secs(1)),
            "421 4.4.2 mx.test Error: timeout exceeded\r\n"
        );
    }
}

#[test]
fn a_slow_store_gets_451_and_late_replies_are_ignored() {
    let mut c = Client::inbound();
    c.drain();
    c.send(b"EHLO client.test\r\nMAIL FROM:<s@r.test>\r\n");
    c.hold = true;
    assert_eq!(c.send(b"RCPT TO:<alice@local.test>\r\nNOOP\r\n"), "");
    assert_eq!(
        c.advance(Duration::from_secs(30)),
        "451 4.3.0 <alice@local.test>: Temporary failure, try again later\r\n250 2.0.0 Ok\r\n"
    );
    assert_eq!(c.release(), "", "the late answer is ignored");
    assert_eq!(c.send(b"DATA\r\n"), "554 5.5.1 No valid recipients\r\n");
    // A BeginDelivery that answers after the deadline is aborted when it does.
    c.hold = false;
    c.send(b"RCPT TO:<alice@local.test>\r\n");
    c.hold = true;
    assert_eq!(c.send(b"DATA\r\n"), "");
    assert_eq!(
        c.advance(Duration::from_secs(30)),
        "451 4.3.0 Temporary failure, try again later\r\n"
    );
    c.hold = false;
    assert_eq!(c.release(), "");
    assert_eq!(c.store.log[2..], ["begin 1", "abort 1"]);
    assert!(c.store.open.is_empty());
}

#[test]
fn input_waits_while_an_append_is_outstanding() {
    let mut cfg = config(SmtpRole::Inbound);
    cfg.limits.append_chunk = 1024;
    cfg.limits.max_buffered_input = 4096;
    let mut c = Client::new(cfg, conn(false, false));
    c.drain();
    c.send(b"EHLO client.test\r\nMAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n");
    c.hold = true;
    let line = [[b'l'; 62].as_slice(), b"\r\n"].concat();
    let mut sent = 0;
    while c.session.wants_read(Peer::Client) {
        assert_eq!(c.send(&line), "");
        sent += line.len();
        assert!(sent < 10_000, "backpressure never came");
    }
    assert_eq!(c.held.len(), 1, "one append at a time");
    assert!(sent >= 4096 + 1024);
    c.hold = false;
    c.release();
    assert!(c.session.wants_read(Peer::Client));
    assert!(c.send(b".\r\n").starts_with("250 2.0.0 Ok: queued as"));
    let file = &c.store.delivered[0].1;
    assert!(file.ends_with(&line));
}

#[test]
fn smtputf8_addresses_are_accepted_with_the_parameter() {
    let mut c = Client::inbound();
    c.drain();
    c.send(b"EHLO client.test\r\n");
    assert_eq!(
        c.send("MAIL FROM:<jö@bücher.test> SMTPUTF8 BODY=8BITMIME\r\n".as_bytes()),
        "250 2.1.0 Sender ok\r\n"
    );
    assert_eq!(
        c.send("RCPT TO:<ünknown@local.test>\r\n".as_bytes()),
        "250 2.1.5 Recipient ok\r\n"
    );
    assert_eq!(c.store.log, ["rcpt ünknown@local.test None"]);
}

#[test]
fn the_greeting_time_follows_the_monotonic_clock() {
    let mut c = Client::inbound();
    c.drain();
    c.now += Duration::from_secs(5);
    c.send(b"EHLO client.test\r\nMAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n");
    assert_eq!(
        c.send(b"x\r\n.\r\n"),
        "250 2.0.0 Ok: queued as 462D53CD523C09C401\r\n"
    );
    let file = String::from_utf8_lossy(&c.store.delivered[0].1).into_owned();
    assert!(
        file.contains("Fri, 13 Feb 2009 23:31:35 +0000\r\n"),
        "{file}"
    );
}

#[test]
fn a_store_failure_is_a_temporary_failure_with_nothing_delivered() {
    let mut c = Client::inbound();
    c.drain();
    c.store.fail = Some("begin");
    c.send(b"EHLO client.test\r\nMAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\n");
    assert_eq!(
        c.send(b"DATA\r\n"),
        "451 4.3.0 Temporary failure, try again later\r\n"
    );
    assert_eq!(
        c.send(b"RCPT TO:<alice@local.test>\r\n"),
        "503 5.5.1 Need MAIL command first\r\n"
    );
    // BDAT: the chunk is still read, then refused.
    c.send(b"MAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\n");
    assert_eq!(
        c.send(b"BDAT 6 LAST\r\nNOOP\r\n"),
        "451 4.3.0 Temporary failure, try again later\r\n"
    );
    // An append fails (disk full): the rest is swallowed, the file aborted.
    c.store.fail = Some("append");
    c.send(b"MAIL FROM:<s@r.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n");
    assert_eq!(
        c.send(b"line\r\n.\r\n"),
        "451 4.3.0 Temporary failure, try again later\r\n"
    );
    assert_eq!(
        c.store.log[1..],
        [
            "begin failed",
            "rcpt alice@local.test None",
            "begin failed",
            "rcpt alice@local.test None",
            "begin 1",
            "append 1 failed",
            "abort 1"
        ]
    );
    assert!(c.store.delivered.is_empty() && c.store.open.is_empty());
}

#[test]
fn a_shell_that_ignores_wants_read_gets_a_421() {
    let mut cfg = config(SmtpRole::Inbound);
    cfg.limits.max_buffered_input = 1024;
    let mut c = Client::new(cfg, conn(false, false));
    c.drain();
    c.send(b"EHLO client.test\r\nMAIL FROM:<s@r.test>\r\n");
    c.hold = true;
    c.send(b"RCPT TO:<alice@local.test>\r\n");
    let junk = vec![b'j'; 16 * 1024];
    assert_eq!(c.send(&junk), "");
    assert!(!c.session.wants_read(Peer::Client));
    assert_eq!(
        c.send(&junk),
        "421 4.7.0 mx.test Input buffer overflow, closing connection\r\n"
    );
    assert!(c.closed);
}
