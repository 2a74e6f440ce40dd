//! authd harnesses: the line grammar, the client codec fed arbitrary server bytes, and
//! the server session driven by a script of shell events.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::{Chunker, Script, WIND_DOWN_STEPS, contains};
use crate::authd::wire::{self, ServerLine};
use crate::authd::{
    AuthdClient, AuthdClientLimits, AuthdConfig, AuthdLimits, AuthdServerSession, ClientEvent,
};
use crate::io::{Action, MAX_READ, Peer, RequestId, Session};
use crate::request::{Failure, Reply, Request};
use crate::secret::Secret;
use crate::user::{AuthOutcome, Lookup, UserRecord};

// ---------------------------------------------------------------------------------------
// Line grammar
// ---------------------------------------------------------------------------------------

/// Fuzzes the authd line grammar ([`wire`]).
///
/// `data[0]` bit 0 picks the parser: client lines ([`wire::parse_client`]) or server
/// lines ([`wire::parse_server`]); the rest is one line without CRLF.
///
/// Invariants: no panic; a parsed line, encoded canonically, is one CRLF-terminated line
/// without other control bytes that parses to the same value; percent-decoding the
/// encoding of the raw bytes gives them back.
pub fn authd_wire(data: &[u8]) {
    let Some((&mode, line)) = data.split_first() else {
        return;
    };
    let mut encoded = BytesMut::new();
    if mode & 1 == 0 {
        if let Ok(parsed) = wire::parse_client(line) {
            wire::encode_client(&parsed, &mut encoded);
            let body = canonical_body(&encoded);
            assert_eq!(wire::parse_client(body).as_ref(), Ok(&parsed), "{line:?}");
        }
    } else if let Ok(parsed) = wire::parse_server(line) {
        wire::encode_server(&parsed, &mut encoded);
        let body = canonical_body(&encoded);
        assert_eq!(wire::parse_server(body).as_ref(), Ok(&parsed), "{line:?}");
    }
    let mut text = String::new();
    wire::push_encoded(&mut text, line);
    assert!(!text.bytes().any(|b| b == b' ' || b.is_ascii_control()));
    assert_eq!(wire::decode(text.as_bytes()).as_deref(), Some(line));
}

/// The encoded line without its CRLF, checking it is exactly one line.
fn canonical_body(encoded: &[u8]) -> &[u8] {
    let body = encoded
        .strip_suffix(b"\r\n")
        .unwrap_or_else(|| panic!("{encoded:?} does not end in CRLF"));
    assert!(
        !body.iter().any(|&b| b.is_ascii_control()),
        "control byte in {encoded:?}"
    );
    body
}

// ---------------------------------------------------------------------------------------
// Client codec
// ---------------------------------------------------------------------------------------

/// Fuzzes [`AuthdClient`] with arbitrary server bytes between requests.
///
/// `data[0]` and `data[1]` seed the chunking; the rest is a script: `L` submits a
/// lookup, `V` a verify, `E` reports EOF, `A` aborts, `#` *n* feeds the next *n* bytes
/// as server input (chunked); other bytes are fed one by one.
///
/// Invariants: no panic; every id returned by a submit gets exactly one answer event, of
/// its kind; after EOF every request has been answered; `Closed` comes once and nothing
/// follows it; output only grows by what requests need (bounded by
/// `max_in_flight` lines); buffered server input never exceeds `max_line` + one read.
pub fn authd_client(data: &[u8]) {
    let Some((seed, script)) = data.split_first_chunk::<2>() else {
        return;
    };
    let mut chunker = Chunker::new(u16::from_le_bytes(*seed), 64);
    let limits = AuthdClientLimits {
        max_line: 256,
        max_in_flight: 8,
    };
    let mut client = AuthdClient::new(Secret::new(b"s e%cret".to_vec()), limits);
    let mut submitted: HashMap<u64, bool> = HashMap::new();
    let mut answered = HashSet::new();
    let mut closed = false;
    let mut output = 0usize;
    let mut script = Script { rest: script };
    while let Some(op) = script.byte() {
        match op {
            b'L' | b'V' => {
                let result = if op == b'L' {
                    client.lookup("a b@example.com")
                } else {
                    client.verify(
                        "u",
                        b"p\xff",
                        "192.0.2.1"
                            .parse()
                            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
                    )
                };
                if let Ok(id) = result {
                    assert!(submitted.insert(id, op == b'L').is_none(), "id {id} reused");
                }
            }
            b'E' => client.handle_eof(),
            b'A' => client.abort("fuzz"),
            b'#' => {
                let n = usize::from(script.byte().unwrap_or(0));
                let take = n.min(script.rest.len());
                let (bytes, rest) = script.rest.split_at(take);
                script.rest = rest;
                for chunk in chunker.split(bytes) {
                    client.handle_input(chunk);
                }
            }
            other => client.handle_input(&[other]),
        }
        output += client.take_output().len();
        assert!(
            output <= 1024 * (submitted.len() + 1),
            "output grows without requests"
        );
        check_client_events(&mut client, &submitted, &mut answered, &mut closed);
    }
    client.handle_eof();
    check_client_events(&mut client, &submitted, &mut answered, &mut closed);
    assert!(closed);
    assert_eq!(
        answered.len(),
        submitted.len(),
        "every request is answered exactly once"
    );
    assert_eq!(client.in_flight(), 0);
}

/// Takes the client's events, checking each answers a submitted request once.
fn check_client_events(
    client: &mut AuthdClient,
    submitted: &HashMap<u64, bool>,
    answered: &mut HashSet<u64>,
    closed: &mut bool,
) {
    while let Some(event) = client.poll_event() {
        assert!(!*closed, "event {event:?} after Closed");
        match event {
            ClientEvent::Ready => {}
            ClientEvent::Closed { .. } => *closed = true,
            ClientEvent::Lookup { id, .. } | ClientEvent::Verify { id, .. } => {
                let is_lookup = matches!(event, ClientEvent::Lookup { .. });
                assert_eq!(
                    submitted.get(&id),
                    Some(&is_lookup),
                    "answer {event:?} of the wrong kind or id"
                );
                assert!(answered.insert(id), "{id} answered twice");
            }
        }
    }
    assert_eq!(client.is_closed(), *closed);
}

// ---------------------------------------------------------------------------------------
// Server session
// ---------------------------------------------------------------------------------------

/// Fuzzes [`AuthdServerSession`] driven by a script of shell events.
///
/// `data[0]` bit 0 selects small limits (64-byte lines, 256 bytes of buffered input,
/// 256 bytes of output high water, 3 bad lines). The rest is a script; bytes that are no
/// operation are skipped:
///
/// | op | meaning |
/// | --- | --- |
/// | `>` *line* | the client sends *line* (up to and including the next LF) and the shell reads |
/// | `+` *line* | the client sends *line*; the shell does not read yet |
/// | `H` | the client sends a correct `HELLO` line and the shell reads |
/// | `P` | the shell reads until the socket is empty or `wants_read` is false |
/// | `E` | the client shut its sending side |
/// | `T` *b* | *b* × 100 ms pass, then `handle_timeout` |
/// | `D` | `handle_drained` |
/// | `A` *k* | the store answers the outstanding request with reply kind *k* |
/// | `L` | a late reply to the newest id that is not outstanding |
///
/// Reply kinds *k* (by value modulo 9): found, not found, unknown domain, lookup
/// tempfail, accepted, denied, disabled, `Failed(Temporary)`, `Done` (a wrong kind).
/// For a batch (`LookupUsers`): 0-4 one lookup per address, 5 one too many, 6 one too
/// few, 7 as above, 8 `Failed(Permanent)` (an executor without batches: the session
/// then asks one by one).
///
/// # Invariants
///
/// * No panic; nothing after [`Action::Close`]; no deadline and no reading after it.
/// * At most one request outstanding; while it is, input produces no tagged line.
/// * Each request gets exactly one tagged answer line per LOOKUP or VERIFY it carries
///   (a `LookupUsers` batch has at least two): when its reply comes or when its
///   deadline passes (`TEMPFAIL`), never both.
/// * Every line written parses as a server line; a password never appears in output.
/// * A shell honouring `wants_read` never gets the overflow reply.
/// * After EOF, answering requests and draining leads to the close.
pub fn authd_session(epoch: Instant, data: &[u8]) {
    let Some((&mode, script)) = data.split_first() else {
        return;
    };
    let mut config = AuthdConfig::new(Secret::new(b"fuzz secret".to_vec()));
    config.store_timeout = Duration::from_secs(2);
    config.idle_timeout = Duration::from_secs(20);
    if mode & 1 == 1 {
        config.limits = AuthdLimits {
            max_line: 64,
            max_buffered_input: 256,
            output_high_water: 256,
            max_bad_lines: 3,
            max_batch: 3,
        };
    }
    let config = Arc::new(config);
    let mut h = Harness {
        session: AuthdServerSession::new(config.clone(), epoch),
        now: epoch,
        socket: Vec::new(),
        outstanding: None,
        batch: None,
        newest: None,
        closed: false,
        written: Vec::new(),
        answers_due: 0,
        tagged: 0,
        store_timeout: config.store_timeout,
    };
    h.drain();
    let mut script = Script { rest: script };
    while let Some(op) = script.byte() {
        if h.closed {
            break;
        }
        match op {
            b'>' | b'+' => {
                let line = script.line();
                h.socket.extend_from_slice(line);
                if op == b'>' {
                    h.read();
                }
            }
            b'H' => {
                h.socket.extend_from_slice(b"HELLO 1 fuzz%20secret\r\n");
                h.read();
            }
            b'P' => h.read(),
            b'E' => {
                h.session.handle_eof(h.now, Peer::Client);
                h.drain();
            }
            b'T' => {
                let step = Duration::from_millis(100 * u64::from(script.byte().unwrap_or(1)));
                h.now += step;
                h.session.handle_timeout(h.now);
                h.drain();
            }
            b'D' => {
                h.session.handle_drained(h.now, Peer::Client);
                h.drain();
            }
            b'A' => {
                let kind = script.byte().unwrap_or(0);
                h.reply(kind);
            }
            b'L' => {
                if let Some(id) = h
                    .newest
                    .filter(|id| Some(*id) != h.outstanding.map(|(id, _, _)| id))
                {
                    h.session
                        .handle_reply(h.now, id, Reply::User(Lookup::NotFound));
                    let before = h.written.len();
                    h.drain();
                    assert_eq!(h.written.len(), before, "a late reply produced output");
                }
            }
            _ => {}
        }
    }
    // Wind down: EOF, then answer, drain and read until the close.
    h.session.handle_eof(h.now, Peer::Client);
    h.drain();
    for step in 0..WIND_DOWN_STEPS {
        if h.closed {
            break;
        }
        match step % 3 {
            0 => h.reply(step as u8),
            1 => {
                h.session.handle_drained(h.now, Peer::Client);
                h.drain();
            }
            _ => {
                if let Some(deadline) = h.session.poll_timeout() {
                    h.now = h.now.max(deadline);
                    h.session.handle_timeout(h.now);
                    h.drain();
                }
            }
        }
    }
    assert!(h.closed, "the session did not close after EOF");
    assert_eq!(h.answers_due, 0, "a request was never answered");
    // Tags are echoed, so only the stored form (with its `{SCHEME}`) must not show.
    assert!(
        !contains(&h.written, b"{PLAIN}"),
        "a password left the server"
    );
}

struct Harness {
    session: AuthdServerSession,
    now: Instant,
    /// Bytes sent by the client and not yet read by the shell.
    socket: Vec<u8>,
    /// The outstanding request: its id, when it was issued, and how many tagged answers
    /// it is owed (more than one for a batch of LOOKUPs).
    outstanding: Option<(RequestId, Instant, usize)>,
    /// The outstanding request is a `LookupUsers` of this many addresses.
    batch: Option<usize>,
    newest: Option<RequestId>,
    closed: bool,
    written: Vec<u8>,
    /// Requests issued minus tagged answers seen.
    answers_due: i64,
    /// Tagged lines written so far.
    tagged: usize,
    store_timeout: Duration,
}

impl Harness {
    /// Reads like a shell: while the session wants input, at most MAX_READ at a time.
    fn read(&mut self) {
        let waiting = self.outstanding.is_some();
        let tagged = self.tagged;
        while !self.socket.is_empty() && self.session.wants_read(Peer::Client) {
            let n = self.socket.len().min(MAX_READ);
            let bytes: Vec<u8> = self.socket.drain(..n).collect();
            self.session.handle_input(self.now, Peer::Client, &bytes);
            self.drain();
        }
        if waiting {
            assert_eq!(
                self.tagged, tagged,
                "input answered while a request was outstanding"
            );
        }
    }

    fn reply(&mut self, kind: u8) {
        let Some((id, _, due)) = self.outstanding else {
            return;
        };
        let mut record = UserRecord::new("alice@example.com");
        record.password = "{PLAIN}hunter2".into();
        record.fields.insert("tohost".into(), "b 1".into());
        let lookups = |n: usize| -> Vec<Lookup> {
            (0..n)
                .map(|i| match (i + usize::from(kind)) % 3 {
                    0 => Lookup::NotFound,
                    1 => Lookup::UnknownDomain,
                    _ => Lookup::TempFail("busy".into()),
                })
                .collect()
        };
        let reply = match (self.batch, kind % 9) {
            (Some(n), 0..=4) => Reply::Users(lookups(n)),
            (Some(n), 5) => Reply::Users(lookups(n + 1)),
            (Some(n), 6) => Reply::Users(lookups(n.saturating_sub(1))),
            (Some(_), 8) => Reply::Failed(Failure::Permanent("unsupported request".into())),
            (_, kind) => match kind {
                0 => Reply::User(Lookup::Found(record)),
                1 => Reply::User(Lookup::NotFound),
                2 => Reply::User(Lookup::UnknownDomain),
                3 => Reply::User(Lookup::TempFail("db down".into())),
                4 => Reply::Verified(AuthOutcome::Accepted(record)),
                5 => Reply::Verified(AuthOutcome::Denied),
                6 => Reply::Verified(AuthOutcome::Disabled),
                7 => Reply::Failed(Failure::Temporary("disk".into())),
                _ => Reply::Done,
            },
        };
        let tagged = self.tagged;
        let turned_down = matches!(reply, Reply::Failed(Failure::Permanent(_)));
        if turned_down {
            // The session asks the batch's LOOKUPs one by one: the new requests owe
            // those answers now.
            self.outstanding = None;
            self.answers_due -= due as i64;
        }
        self.session.handle_reply(self.now, id, reply);
        self.drain();
        if !self.closed && !turned_down {
            assert!(
                self.tagged >= tagged + due,
                "a reply without all its answer lines"
            );
        }
    }

    /// Takes every action, checking the invariants.
    fn drain(&mut self) {
        while let Some(action) = self.session.poll_action() {
            assert!(!self.closed, "{action:?} after Close");
            match action {
                Action::Write {
                    to: Peer::Client,
                    bytes,
                } => {
                    self.written.extend_from_slice(&bytes);
                    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        let parsed = wire::parse_server(line)
                            .unwrap_or_else(|e| panic!("unparsable output {line:?}: {e}"));
                        match parsed {
                            ServerLine::Answer(..) => {
                                self.tagged += 1;
                                if let Some((id, since, due)) = self.outstanding.take() {
                                    self.answers_due -= 1;
                                    if due > 1 {
                                        self.outstanding = Some((id, since, due - 1));
                                    }
                                }
                            }
                            ServerLine::Bye(reason) => {
                                assert_ne!(
                                    reason, "input buffer overflow",
                                    "the shell honoured wants_read"
                                );
                            }
                            _ => {}
                        }
                        assert!(self.answers_due >= 0, "more answers than requests");
                    }
                }
                Action::Request { id, request } => {
                    assert!(self.outstanding.is_none(), "two requests outstanding");
                    assert!(self.newest.is_none_or(|n| n < id), "ids must increase");
                    let due = match &request {
                        Request::LookupUser { .. } | Request::VerifyUser { .. } => 1,
                        Request::LookupUsers { addresses } => {
                            assert!(addresses.len() > 1, "a batch of one");
                            addresses.len()
                        }
                        other => panic!("unexpected request {other:?}"),
                    };
                    self.batch = matches!(request, Request::LookupUsers { .. }).then_some(due);
                    self.outstanding = Some((id, self.now, due));
                    self.newest = Some(id);
                    self.answers_due += due as i64;
                }
                Action::Close { to: Peer::Client } => {
                    self.closed = true;
                    // A request cut by the close is not owed an answer.
                    if let Some((_, _, due)) = self.outstanding.take() {
                        self.answers_due -= due as i64;
                    }
                }
                other => panic!("unexpected action {other:?}"),
            }
        }
        if let Some((_, since, _)) = self.outstanding {
            assert!(
                self.now < since + self.store_timeout || self.session.poll_timeout().is_some(),
                "an outstanding request without a deadline"
            );
        }
        if self.closed {
            assert!(!self.session.wants_read(Peer::Client));
            assert_eq!(self.session.poll_timeout(), None);
        } else {
            assert!(
                self.session.poll_timeout().is_some(),
                "an open session always has a deadline"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harnesses_run_simple_scripts() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        authd_wire(b"\x001 LOOKUP a@b");
        authd_wire(b"\x011 FOUND a@b k=v x");
        authd_client(
            b"\x01\x02LL#\x2e* TIDEGATE-AUTHD 1\r\n* OK 1\r\n1 NOTFOUND\r\n2 FOUND a@b\r\nV",
        );
        authd_session(
            t0,
            b"\x00H>1 LOOKUP a@b\nA0>2 VERIFY a@b cA== 1.2.3.4\nT\x30A4",
        );
        authd_session(t0, b"\x01H+1 LOOKUP a@b\n+2 LOOKUP c@d\nPA1EA2");
    }
}
