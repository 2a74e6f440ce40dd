//! IMAP harnesses: the fragmentizer, the command grammar and the server session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Chunker, Client, FuzzTls, Script, WIND_DOWN_STEPS};
use crate::imap::command::{self, CommandBody};
use crate::imap::fragment::{Fragment, Fragmentizer};
use crate::imap::request::{
    AppendId, ImapReply, ImapRequest, MailboxInfo, MailboxStatus, MessageMeta, Snapshot,
};
use crate::imap::{ConnInfo, ImapConfig, ImapLimits, ImapSession};
use crate::io::{Action, Peer, RequestId, Session};
use crate::request::{Account, Failure, Reply, Request};
use crate::tls::Secured;

/// Fuzzes [`Fragmentizer`]: `data[0]` is the line limit, `data[1..3]` seed the chunking,
/// the rest is the client's byte stream. Literals of at most 40 bytes are accepted, the
/// rest rejected. Invariants: the same fragments (literal data joined) whole, chunked
/// and byte by byte; bytes held never exceed the line limit plus one read; rejected
/// literal bytes are never buffered.
pub fn imap_fragment(data: &[u8]) {
    let [max_line, a, b, rest @ ..] = data else {
        return;
    };
    let max_line = usize::from(*max_line).max(1);
    let whole = fragments(max_line, &[rest]);
    let mut chunker = Chunker::new(u16::from_le_bytes([*a, *b]), 17);
    let chunks = chunker.split(rest);
    assert_eq!(
        whole,
        fragments(max_line, &chunks),
        "chunking changed the fragments"
    );
    let bytes: Vec<&[u8]> = rest.chunks(1).collect();
    assert_eq!(
        whole,
        fragments(max_line, &bytes),
        "byte-wise input changed the fragments"
    );
}

fn fragments(max_line: usize, chunks: &[&[u8]]) -> Vec<Fragment> {
    let mut f = Fragmentizer::new(max_line);
    let mut out: Vec<Fragment> = Vec::new();
    for chunk in chunks {
        f.push(chunk);
        assert!(
            f.buffered() <= max_line + 2 + chunk.len(),
            "fragmentizer holds {} bytes",
            f.buffered()
        );
        while let Some(fragment) = f.next_fragment() {
            if let Fragment::Line {
                literal: Some(l), ..
            } = &fragment
            {
                if l.length.is_some_and(|n| n <= 40) {
                    f.accept_literal();
                } else {
                    f.reject_literal();
                }
            }
            match (out.last_mut(), fragment) {
                (Some(Fragment::LiteralData(prev)), Fragment::LiteralData(more)) => {
                    let mut joined = prev.to_vec();
                    joined.extend_from_slice(&more);
                    *prev = joined.into();
                }
                (_, fragment) => out.push(fragment),
            }
        }
    }
    out
}

/// Fuzzes the command grammar on one complete command. Invariants: no panic; the
/// command name's case does not matter; an accepted tag is at most
/// [`command::MAX_TAG_LEN`] bytes; an APPEND prefix is never taken for a complete
/// command.
pub fn imap_command(data: &[u8]) {
    let parsed = command::parse(data);
    let _ = command::parse_append_prefix(data);
    if let Ok(c) = &parsed {
        assert!(c.tag.len() <= command::MAX_TAG_LEN);
        assert!(!matches!(c.body, CommandBody::Append));
        // Swapping the case of the command name gives the same command.
        if let Some(sp) = data.iter().position(|&b| b == b' ') {
            let end = data[sp + 1..]
                .iter()
                .position(|&b| b == b' ')
                .map_or(data.len(), |e| sp + 1 + e);
            let mut swapped = data.to_vec();
            for b in &mut swapped[sp + 1..end] {
                if b.is_ascii_alphabetic() {
                    *b ^= 0x20;
                }
            }
            assert_eq!(
                command::parse(&swapped).ok(),
                parsed.ok(),
                "case changed the parse"
            );
        }
    }
}

/// Output a session may write beyond its high-water mark before it notices: one
/// response to one command (a FETCH message, a LIST, a snapshot diff).
pub const IMAP_OUTPUT_SLACK: usize = 32 * 1024;

/// Fuzzes [`ImapSession`] with a script. `data[0]` picks the connection (bit 0:
/// plaintext login allowed, bit 1: STARTTLS offered); then operations:
///
/// | op | meaning |
/// | --- | --- |
/// | `L` *line* | the client sends bytes up to and including the next LF |
/// | `B` *n* | the client sends the next *n* bytes raw |
/// | `E` | the client closes its side |
/// | `T` *n* | *n* × 7 seconds pass |
/// | `R` *k* | the oldest open request gets an answer: *k* even, a fitting one; odd, any |
/// | `D` | the client read everything written |
///
/// Invariants: no panic; nothing after `Close`; request ids never repeat; the input
/// overflow reply never appears (the harness honours `wants_read`); output handed out
/// without a drain stays below the high-water mark plus [`IMAP_OUTPUT_SLACK`]; after the
/// script, an EOF with every request answered and every timer fired closes the session.
pub fn imap_session(epoch: Instant, data: &[u8]) {
    run(epoch, None, data);
}

/// Fuzzes [`Secured`]`<`[`ImapSession`]`>` with a real rustls client (all in memory):
/// STARTTLS, implicit TLS (`data[0]` bit 3), garbage instead of a handshake, and the
/// [`imap_session`] script carried inside TLS records. Two more operations:
///
/// | op | meaning |
/// | --- | --- |
/// | `H` | the client starts TLS now (after STARTTLS, or at any other time) |
/// | `G` *line* | raw bytes on the wire, behind the client's back |
///
/// Invariants as in [`imap_session`], checked on the plaintext the client decrypts
/// (the output bound on the ciphertext, which carries the handshake too).
pub fn imap_tls_session(epoch: Instant, tls: &FuzzTls, data: &[u8]) {
    run(epoch, Some(tls), data);
}

fn run(epoch: Instant, tls: Option<&FuzzTls>, data: &[u8]) {
    let Some((&conn_byte, script)) = data.split_first() else {
        return;
    };
    let mut h = ImapHarness::new(epoch, conn_byte, tls);
    let mut script = Script { rest: script };
    while let Some(op) = script.byte() {
        h.step(op, &mut script);
    }
    h.finish();
}

struct ImapHarness {
    session: Box<dyn Session>,
    /// The client's TLS side; plain without a config.
    client: Client,
    /// Ciphertext the client has to send (handshake records, encrypted commands).
    socket: Vec<u8>,
    now: Instant,
    open: Vec<(RequestId, Request)>,
    seen: Vec<RequestId>,
    closed: bool,
    undrained: usize,
    high_water: usize,
    written: Vec<u8>,
    salt: u32,
}

impl ImapHarness {
    fn new(epoch: Instant, conn_byte: u8, tls: Option<&FuzzTls>) -> Self {
        let cfg = ImapConfig {
            limits: ImapLimits {
                max_line: 256,
                max_command: 1024,
                max_append: 4096,
                max_buffered_input: 2048,
                output_high_water: 4096,
                chunk: 512,
                max_bad_commands: 20,
                max_auth_failures: 3,
            },
            ..ImapConfig::default()
        };
        let high_water = cfg.limits.output_high_water;
        let implicit = tls.is_some() && conn_byte & 8 != 0;
        let conn = ConnInfo {
            client: ([192, 0, 2, 1], 5000).into(),
            implicit_tls: implicit,
            starttls_available: tls.is_some() && !implicit || conn_byte & 2 != 0,
            plaintext_auth: conn_byte & 1 != 0,
            may_override_client: conn_byte & 32 != 0,
        };
        let inner = ImapSession::new(Arc::new(cfg), conn, epoch);
        let session: Box<dyn Session> = match tls {
            None => Box::new(inner),
            Some(tls) if implicit => Box::new(
                Secured::implicit(inner, tls.server.clone()).expect("the fuzzing server config"),
            ),
            Some(tls) => Box::new(Secured::plain(inner, Some(tls.server.clone()))),
        };
        let mut h = ImapHarness {
            session,
            client: Client {
                config: tls.map(|t| t.client.clone()),
                tls: None,
                broken: false,
            },
            socket: Vec::new(),
            now: epoch,
            open: Vec::new(),
            seen: Vec::new(),
            closed: false,
            undrained: 0,
            high_water,
            written: Vec::new(),
            salt: u32::from(conn_byte),
        };
        if implicit {
            h.client.start_tls(&mut h.socket);
            h.flush_socket();
        }
        h.collect();
        h
    }

    /// Hands the client's pending wire bytes to the session.
    fn flush_socket(&mut self) {
        while !self.socket.is_empty() && !self.closed {
            let bytes = std::mem::take(&mut self.socket);
            self.feed_wire(&bytes);
        }
    }

    fn collect(&mut self) {
        while let Some(action) = self.session.poll_action() {
            assert!(!self.closed, "action after Close: {action:?}");
            match action {
                Action::Write { bytes, .. } => {
                    self.undrained += bytes.len();
                    assert!(
                        self.undrained <= self.high_water + IMAP_OUTPUT_SLACK,
                        "{} bytes written without a drain",
                        self.undrained
                    );
                    let plain = self.client.receive(&bytes, &mut self.socket);
                    self.written.extend_from_slice(&plain.unwrap_or_default());
                    if self.written.len() > 64 * 1024 {
                        self.written.drain(..32 * 1024);
                    }
                }
                Action::Request { id, request } => {
                    assert!(!self.seen.contains(&id), "request id {id:?} reused");
                    assert!(self.seen.last().is_none_or(|last| *last < id));
                    self.seen.push(id);
                    self.open.push((id, request));
                }
                Action::Close { .. } => self.closed = true,
                Action::StartTls { .. } => {}
                other => panic!("unexpected action {other:?}"),
            }
        }
        assert!(
            // The server's own BYE, not the words: a client may name a flag with them,
            // and the server then lists that flag back.
            !super::contains(&self.written, b"* BYE Input buffer overflow"),
            "the harness honours wants_read"
        );
    }

    /// The client sends `plain` (encrypted once its TLS is up).
    fn feed(&mut self, plain: &[u8]) {
        let mut wire = Vec::new();
        self.client.send(plain, &mut wire);
        self.feed_wire(&wire);
        self.flush_socket();
    }

    /// Bytes arrive on the session's socket, as far as it wants to read.
    fn feed_wire(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(crate::io::MAX_READ) {
            if !self.session.wants_read(Peer::Client) {
                return;
            }
            self.session.handle_input(self.now, Peer::Client, chunk);
            self.collect();
        }
    }

    fn step(&mut self, op: u8, script: &mut Script<'_>) {
        match op {
            b'L' => {
                let line = script.line();
                self.feed(line);
            }
            b'B' => {
                let n = usize::from(script.byte().unwrap_or(0));
                let n = n.min(script.rest.len());
                let (bytes, rest) = script.rest.split_at(n);
                script.rest = rest;
                self.feed(bytes);
            }
            b'E' => {
                self.session.handle_eof(self.now, Peer::Client);
                self.collect();
            }
            b'T' => {
                let n = u64::from(script.byte().unwrap_or(1));
                self.now += Duration::from_secs(n * 7);
                self.session.handle_timeout(self.now);
                self.collect();
            }
            b'R' => {
                let kind = script.byte().unwrap_or(0);
                self.answer(kind);
            }
            b'D' => {
                self.undrained = 0;
                self.session.handle_drained(self.now, Peer::Client);
                self.collect();
            }
            b'H' if self.client.start_tls(&mut self.socket) => self.flush_socket(),
            b'G' if self.client.config.is_some() => {
                let raw = script.line();
                self.feed_wire(raw);
                self.flush_socket();
            }
            _ => {}
        }
    }

    fn answer(&mut self, kind: u8) {
        if self.open.is_empty() {
            return;
        }
        let (id, request) = self.open.remove(0);
        self.salt = self.salt.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let reply = if kind.is_multiple_of(2) {
            fitting_reply(&request, kind, self.salt)
        } else {
            any_reply(kind / 2, self.salt)
        };
        self.session.handle_reply(self.now, id, reply);
        self.collect();
        self.flush_socket();
    }

    fn finish(mut self) {
        self.session.handle_eof(self.now, Peer::Client);
        self.collect();
        for _ in 0..WIND_DOWN_STEPS {
            if self.closed {
                break;
            }
            if !self.open.is_empty() {
                self.answer(0);
            } else {
                self.undrained = 0;
                self.session.handle_drained(self.now, Peer::Client);
                self.collect();
                if let Some(at) = self.session.poll_timeout() {
                    self.now = self.now.max(at);
                    self.session.handle_timeout(self.now);
                    self.collect();
                }
            }
        }
        assert!(self.closed, "the session did not close after EOF");
    }
}

fn messages(salt: u32) -> Vec<MessageMeta> {
    (0..salt % 6)
        .map(|i| MessageMeta {
            uid: i * 2 + 1 + (salt >> 8) % 3,
            flags: if (salt >> i) & 1 == 1 {
                vec!["\\Seen".into()]
            } else {
                vec!["\\Deleted".into(), "$Junk".into()]
            },
            size: u64::from((salt >> 4) % 700),
            internal_date: i64::from(salt),
            recent: (salt >> (i + 3)) & 1 == 1,
        })
        .collect()
}

/// A reply of the kind the request expects, with content derived from `salt`.
fn fitting_reply(request: &Request, kind: u8, salt: u32) -> Reply {
    if kind % 8 == 6 {
        return Reply::Failed(Failure::Temporary("fuzz".into()));
    }
    let imap = match request {
        Request::Authenticate { .. } => {
            return if salt.is_multiple_of(3) {
                Reply::Failed(Failure::Denied)
            } else {
                Reply::Authenticated(Account("fuzz@example.com".into()))
            };
        }
        Request::Imap(request) => request,
        _ => return Reply::Done,
    };
    let reply = match imap {
        ImapRequest::ListMailboxes { .. } => ImapReply::Mailboxes(vec![
            MailboxInfo {
                name: "INBOX".into(),
                attributes: vec!["\\HasNoChildren".into()],
                subscribed: true,
            },
            MailboxInfo {
                name: "Entwürfe/a\"b".into(),
                attributes: vec!["\\Drafts".into()],
                subscribed: salt.is_multiple_of(2),
            },
        ]),
        ImapRequest::Status { .. } => ImapReply::Status(MailboxStatus {
            messages: salt % 9,
            recent: 1,
            uid_next: 10,
            uid_validity: 5,
            unseen: 2,
        }),
        ImapRequest::Snapshot { .. } => ImapReply::Snapshot(Snapshot {
            uid_validity: if salt.is_multiple_of(17) { 6 } else { 5 },
            uid_next: 20,
            messages: messages(salt),
            keywords: vec!["$Junk".into()],
        }),
        ImapRequest::Read { max_len, .. } => {
            let len = (*max_len).min((salt % 600) as usize);
            return Reply::Chunk {
                bytes: Bytes::from(vec![b'x'; len]),
                end: salt.is_multiple_of(5),
            };
        }
        ImapRequest::FetchContent { items, .. } => ImapReply::Content(
            items
                .iter()
                .enumerate()
                .map(|(i, _)| (i as u32 != salt % 4).then(|| Bytes::from_static(b"(\"a\r\nb\")")))
                .collect(),
        ),
        ImapRequest::Store { uids, flags, .. } => {
            ImapReply::Flags(uids.iter().map(|&u| (u, flags.clone())).collect())
        }
        ImapRequest::Copy { uids, .. } => ImapReply::Copied {
            uid_validity: 9,
            pairs: uids.iter().map(|&u| (u, u + 100)).collect(),
        },
        ImapRequest::Expunge { uids, .. } => ImapReply::Expunged(uids.clone()),
        ImapRequest::Search { candidates, .. } => ImapReply::Matches(
            candidates
                .iter()
                .map(|c| c.meta.uid)
                .filter(|u| u % 2 == salt % 2)
                .collect(),
        ),
        ImapRequest::AppendBegin { .. } => ImapReply::AppendStarted(AppendId(u64::from(salt))),
        ImapRequest::AppendCommit { .. } => ImapReply::Appended {
            uid_validity: 5,
            uid: salt,
        },
        _ => return Reply::Done,
    };
    Reply::Imap(reply)
}

/// Any reply at all, whatever was asked.
fn any_reply(kind: u8, salt: u32) -> Reply {
    match kind % 12 {
        0 => Reply::Done,
        1 => Reply::Failed(Failure::Gone),
        2 => Reply::Failed(Failure::Throttled(Duration::from_secs(u64::from(
            salt % 100,
        )))),
        3 => Reply::Failed(Failure::Disabled),
        4 => Reply::Chunk {
            bytes: Bytes::from_static(b"abc"),
            end: true,
        },
        5 => Reply::Imap(ImapReply::AlreadyExists),
        6 => Reply::Imap(ImapReply::Matches(vec![1, 2, salt])),
        7 => Reply::Imap(ImapReply::Flags(vec![(salt % 7, vec!["\\Seen".into()])])),
        8 => Reply::Imap(ImapReply::Snapshot(Snapshot {
            uid_validity: 5,
            uid_next: 1,
            messages: messages(salt),
            keywords: vec!["$Junk".into()],
        })),
        9 => Reply::Imap(ImapReply::Expunged(vec![salt % 7, 1])),
        10 => Reply::Imap(ImapReply::Content(Vec::new())),
        _ => Reply::Failed(Failure::Permanent("fuzz".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a base instant for the session
    fn harnesses_accept_small_inputs_and_a_full_script() {
        for data in [&b""[..], b"\0", b"\x10ab{3}\r\nxyz\r\n", b"\xff\xff\xff"] {
            imap_fragment(data);
            imap_command(data);
            imap_session(Instant::now(), data);
        }
        let script = b"\x01La LOGIN a b\r\nR\x02Lb SELECT INBOX\r\nR\x02Lc FETCH 1:* (FLAGS BODY[] ENVELOPE)\r\nR\x02R\x02R\x02R\x02Ld APPEND INBOX {5}\r\nR\x02B\x05helloL\r\nR\x02R\x02Le IDLE\r\nT\x09R\x02LDONE\r\n";
        imap_session(Instant::now(), script);
        let tls = FuzzTls::new();
        imap_tls_session(
            Instant::now(),
            &tls,
            b"\x01La STARTTLS\r\nHLb LOGIN a b\r\nR\x02Lc NOOP\r\n",
        );
        imap_tls_session(
            Instant::now(),
            &tls,
            b"\x09La CAPABILITY\r\nGgarbage\r\nLb NOOP\r\n",
        );
        imap_tls_session(Instant::now(), &tls, script);
    }
}
