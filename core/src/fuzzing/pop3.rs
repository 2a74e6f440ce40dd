//! POP3 harnesses: the command parser, and the session driven by a script of shell
//! events, plain and inside [`Secured`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Client, FuzzTls, Script, WIND_DOWN_STEPS, contains};
use crate::io::{Action, MAX_READ, Peer, RequestId, Session};
use crate::pop3::command::{self, Command};
use crate::pop3::{ConnInfo, Pop3Config, Pop3Limits, Pop3Session};
use crate::request::{Account, Failure, MessageInfo, MessageRef, Reply, Request};
use crate::tls::Secured;

// ---------------------------------------------------------------------------------------
// POP3 command parser
// ---------------------------------------------------------------------------------------

/// Fuzzes [`command::parse`] with `line` (one command line, CRLF already removed).
///
/// Invariants: parsing never panics; upper-, lower- and alternating-case copies of the
/// keyword (the bytes before the first space) parse to the same result; a successfully
/// parsed command, written back in canonical form, parses to the same command again.
pub fn pop3_command(line: &[u8]) {
    let parsed = command::parse(line);
    let keyword_len = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let recased: [fn(usize, &mut u8); 3] = [
        |_, b| b.make_ascii_uppercase(),
        |_, b| b.make_ascii_lowercase(),
        |i, b| {
            if i % 2 == 0 {
                b.make_ascii_lowercase()
            } else {
                b.make_ascii_uppercase()
            }
        },
    ];
    for recase in recased {
        let mut copy = line.to_vec();
        for (i, b) in copy[..keyword_len].iter_mut().enumerate() {
            recase(i, b);
        }
        assert_eq!(
            command::parse(&copy),
            parsed,
            "keyword case changed the parse of {line:?} (copy {copy:?})"
        );
    }
    if let Ok(command) = &parsed {
        let canonical = encode_command(command);
        assert_eq!(
            command::parse(&canonical).as_ref(),
            Ok(command),
            "{line:?} parsed to {command:?}, whose canonical form {canonical:?} parses differently"
        );
    }
}

/// The canonical command line for `command` (upper-case keyword, single spaces).
fn encode_command(command: &Command) -> Vec<u8> {
    fn with_number(keyword: &str, n: Option<u64>) -> Vec<u8> {
        match n {
            Some(n) => format!("{keyword} {n}").into_bytes(),
            None => keyword.as_bytes().to_vec(),
        }
    }
    match command {
        Command::User(name) => format!("USER {name}").into_bytes(),
        Command::Pass(secret) => [b"PASS ".as_slice(), secret.expose()].concat(),
        Command::Auth {
            mechanism,
            initial_response,
        } => {
            let mut line = b"AUTH".to_vec();
            if let Some(mechanism) = mechanism {
                line.push(b' ');
                line.extend_from_slice(mechanism.as_bytes());
            }
            if let Some(response) = initial_response {
                line.push(b' ');
                line.extend_from_slice(response.expose());
            }
            line
        }
        Command::Capa => b"CAPA".to_vec(),
        Command::Stls => b"STLS".to_vec(),
        Command::Stat => b"STAT".to_vec(),
        Command::List(n) => with_number("LIST", *n),
        Command::Uidl(n) => with_number("UIDL", *n),
        Command::Retr(n) => with_number("RETR", Some(*n)),
        Command::Top(n, lines) => format!("TOP {n} {lines}").into_bytes(),
        Command::Dele(n) => with_number("DELE", Some(*n)),
        Command::Rset => b"RSET".to_vec(),
        Command::Noop => b"NOOP".to_vec(),
        Command::Quit => b"QUIT".to_vec(),
        Command::Xclient(parsed) => crate::fuzzing::smtp::encode_xclient(parsed),
    }
}

// ---------------------------------------------------------------------------------------
// POP3 session
// ---------------------------------------------------------------------------------------

/// Slack in the output bound of [`pop3_session`], above `output_high_water` and the two
/// stuffed chunks. Below the high-water mark the session may start one more step; the
/// largest step that is not a message chunk writes about 130 bytes (CAPA; LIST/UIDL of
/// the at most three messages of a fuzzed listing is less; the longest single line, the
/// plaintext refusal, about 95). After that, timers still add a line each without
/// looking at the mark: a store timeout (about 70 bytes) or a failed-login reply (about
/// 85), then the autologout line (37) before the close. 256 covers the worst sum.
pub const SESSION_OUTPUT_SLACK: usize = 256;

/// Fuzzes [`Pop3Session`] (RFC 1939 server) driven by a script of shell events.
///
/// `epoch` is the time the connection was accepted (the caller's clock: the core reads
/// none); the script only advances virtual time from it.
///
/// # Input
///
/// `data[0]` chooses the connection: bit 0 small limits (64-byte lines, 256 bytes of
/// buffered input, 512 bytes of output high water, 32-byte reads) instead of the
/// defaults, bit 1 STLS available, bit 2 plaintext login refused (it is allowed
/// otherwise), bit 4 the store locks listed mailboxes (`ReleaseMailbox` at the close); [`pop3_tls_session`] adds bit 3. The rest is a script; each operation is
/// one tag byte, and bytes that are no tag are skipped, so a script can be written by
/// hand with spaces and newlines:
///
/// | op | meaning |
/// | --- | --- |
/// | `>` *line* | the client sends *line* (up to and including the next LF); the shell reads once |
/// | `+` *line* | the client sends *line*; the shell does not read yet (pipelining) |
/// | `-` *line* | the client sends *line* without its LF (a partial line) |
/// | `X` *n* | the client sends (*n* + 1) × 128 bytes of pipelined `CAPA` CRLF |
/// | `Y` *n* | the client sends (*n* + 1) × 128 bytes of `x` (an overlong line) |
/// | `R` *n* | the shell reads once, at most *n* + 1 bytes |
/// | `P` | the shell reads until the socket is empty or `wants_read` is false |
/// | `F` | the shell feeds all sent bytes at once, ignoring `wants_read` and [`MAX_READ`] |
/// | `E` | the client shut its sending side (`handle_eof`); it may still read |
/// | `T` *b* | time passes (digits `0`-`9`: 10^d ms; any other byte: *b* seconds), then `handle_timeout` if a deadline passed |
/// | `t` | a spurious `handle_timeout` |
/// | `D` | `handle_drained`: the client read everything |
/// | `A` *k* | the store answers the outstanding request (a late reply to an old id if none) |
/// | `L` *k* | a late reply to the newest id that is not outstanding |
///
/// Reply kinds *k*: `a` Authenticated, `d` Denied, `x` Disabled, `i` InUse, `g` Gone,
/// `t` Temporary, `p` Permanent, `o` Done, `0`-`3` a listing of that many messages,
/// `c` *line* / `e` *line* a chunk of message bytes (up to and including the next LF)
/// that does not end / ends the message, `w` *n* / `W` *n* a chunk of *n* + 1 bytes of
/// `.` LF repeated (the most expensive bytes to stuff) not ending / ending it, `z`/`Z` an
/// empty chunk (not) ending it, `m` a whole small message in one ending chunk; chunks
/// are cut to the request's `max_len`. Any other byte picks one of these by its value.
///
/// # Invariants
///
/// * No panic, whatever the script.
/// * After [`Action::Close`] the session emits no action at all, `wants_read` is false
///   and no deadline is armed; while it is open a deadline (autologout) always is.
/// * Request ids are strictly increasing; a new request is only issued when no earlier
///   one is outstanding, or the earlier one's store deadline (`store_timeout`) has passed
///   and `handle_timeout` told the session so.
/// * While a request is outstanding, input produces no action (pipelined commands wait).
/// * A `ReadMessage` asks for `read_chunk` bytes, at offset 0 or where the previous chunk
///   ended.
/// * A shell that honours `wants_read` and [`MAX_READ`] never gets the input-overflow
///   reply.
/// * Bytes written since the last `handle_drained` never exceed
///   `output_high_water + 2 * read_chunk + SESSION_OUTPUT_SLACK`: the session only starts
///   a command or asks for the next chunk below the high-water mark, and one chunk at
///   most doubles when stuffed (every `.` at a line start and every bare LF become two
///   bytes).
/// * `StartTls` only when STLS is available; every `Write` and `Close` is for the client.
/// * A late reply (to an id answered or given up on) produces nothing.
/// * After EOF the session answers what it has buffered and closes, given store replies
///   and drains (and timers only for a login delay or the autologout).
pub fn pop3_session(epoch: Instant, data: &[u8]) {
    run_session(epoch, None, data, None);
}

/// Runs [`pop3_session`] (or, given `tls`, [`pop3_tls_session`]) and reports every event
/// to `out` as it happens (`C:` bytes the session read, `c:` plaintext the client sent
/// through TLS, `S:` plaintext the session wrote, `>` other actions, `*` other shell
/// events), for looking at a seed or a crashing input with `--nocapture`.
pub fn pop3_session_trace(
    epoch: Instant,
    tls: Option<&FuzzTls>,
    data: &[u8],
    out: &mut dyn FnMut(&str),
) {
    run_session(epoch, tls, data, Some(out));
}

/// Fuzzes [`Secured`]`<`[`Pop3Session`]`>` with a real rustls client (all in memory):
/// garbage instead of a handshake, STLS, implicit TLS, and the [`pop3_session`] script
/// carried inside TLS records.
///
/// Input as in [`pop3_session`], with `data[0]` bit 3 for an implicit-TLS connection
/// (the client starts with a ClientHello; otherwise STLS is always available) and two
/// more operations:
///
/// | op | meaning |
/// | --- | --- |
/// | `H` | the client starts TLS now (after STLS, or at any other time) |
/// | `G` *line* | raw bytes on the wire, behind the client's back (up to and including the next LF) |
///
/// Invariants as in [`pop3_session`], checked on the plaintext the client decrypts; in
/// addition `StartTls` never reaches the shell ([`Secured`] consumes it). After a TLS
/// failure the wrapped session may keep a deadline, so a closed connection is only
/// required to emit nothing more and to refuse input. Every plaintext chunk the layer
/// hands to the session counts as input, so a shell that honours `wants_read` must
/// never see the input-overflow reply here either.
pub fn pop3_tls_session(epoch: Instant, tls: &FuzzTls, data: &[u8]) {
    run_session(epoch, Some(tls), data, None);
}

fn run_session(
    epoch: Instant,
    tls: Option<&FuzzTls>,
    data: &[u8],
    log: Option<&mut dyn FnMut(&str)>,
) {
    let Some((&conn_byte, script)) = data.split_first() else {
        return;
    };
    let mut script = Script { rest: script };
    match tls {
        None => {
            let mut harness = SessionHarness::plain(epoch, conn_byte, log);
            while let Some(tag) = script.byte() {
                harness.step(tag, &mut script);
            }
            harness.finish();
        }
        Some(tls) => {
            let mut harness = SessionHarness::secured(epoch, conn_byte, tls, log);
            while let Some(tag) = script.byte() {
                harness.step(tag, &mut script);
            }
            harness.finish();
        }
    }
}

/// What the harness needs to know about the session under test beyond [`Session`].
trait Driven: Session {
    /// The session's own view that it has closed.
    fn is_closed(&self) -> bool;
    /// Whether a closed session must have disarmed every deadline.
    const DISARMS_ON_CLOSE: bool;
    /// Whether [`Action::StartTls`] may reach the shell.
    const SHOWS_START_TLS: bool;
}

impl Driven for Pop3Session {
    fn is_closed(&self) -> bool {
        Pop3Session::is_closed(self)
    }
    const DISARMS_ON_CLOSE: bool = true;
    const SHOWS_START_TLS: bool = true;
}

impl Driven for Secured<Pop3Session> {
    fn is_closed(&self) -> bool {
        // A TLS failure closes the connection while the POP3 session stays open inside.
        !self.wants_read(Peer::Client)
    }
    const DISARMS_ON_CLOSE: bool = false;
    const SHOWS_START_TLS: bool = false;
}

/// A request the harness (the store) has not answered yet.
#[derive(Debug)]
struct Outstanding {
    id: RequestId,
    /// When the session will give up on it.
    deadline: Instant,
    /// `handle_timeout` ran at or after the deadline: the session no longer waits.
    abandoned: bool,
    /// For a `ReadMessage`: its offset and `max_len`.
    read: Option<(u64, usize)>,
}

/// A shell, a store and a client around one session, checking the driving contract at
/// every step.
struct SessionHarness<'log, S> {
    log: Option<&'log mut dyn FnMut(&str)>,
    session: S,
    cfg: Arc<Pop3Config>,
    client: Client,
    starttls_available: bool,
    epoch: Instant,
    now: Instant,
    /// Bytes on the wire towards the session that the shell has not read.
    socket: Vec<u8>,
    closed: bool,
    last_id: Option<RequestId>,
    outstanding: Option<Outstanding>,
    /// Ids answered or given up on, newest last (for late replies).
    old_ids: Vec<RequestId>,
    /// Where the next chunk of the message being read starts.
    next_offset: Option<u64>,
    /// Plaintext the client received since the last `handle_drained`.
    unflushed: usize,
    output_bound: usize,
    /// The session released its mailbox lock.
    released: bool,
}

/// The session settings and connection facts chosen by `conn_byte` (see [`pop3_session`]).
fn session_setup(conn_byte: u8) -> (Arc<Pop3Config>, ConnInfo) {
    let mut cfg = Pop3Config {
        mailbox_lock: conn_byte & 16 != 0,
        ..Pop3Config::default()
    };
    if conn_byte & 1 != 0 {
        cfg.limits = Pop3Limits {
            max_line: 64,
            max_buffered_input: 256,
            output_high_water: 512,
            read_chunk: 32,
            ..Pop3Limits::default()
        };
    }
    let conn = ConnInfo {
        client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 50_000),
        implicit_tls: false,
        starttls_available: conn_byte & 2 != 0,
        plaintext_auth: conn_byte & 4 == 0,
        may_override_client: conn_byte & 32 != 0,
    };
    (Arc::new(cfg), conn)
}

impl<'log> SessionHarness<'log, Pop3Session> {
    fn plain(epoch: Instant, conn_byte: u8, log: Option<&'log mut dyn FnMut(&str)>) -> Self {
        let (cfg, conn) = session_setup(conn_byte);
        let session = Pop3Session::new(cfg.clone(), conn.clone(), epoch);
        let client = Client {
            config: None,
            tls: None,
            broken: false,
        };
        SessionHarness::new(epoch, session, cfg, &conn, client, log)
    }
}

impl<'log> SessionHarness<'log, Secured<Pop3Session>> {
    fn secured(
        epoch: Instant,
        conn_byte: u8,
        tls: &FuzzTls,
        log: Option<&'log mut dyn FnMut(&str)>,
    ) -> Self {
        let (cfg, mut conn) = session_setup(conn_byte);
        conn.implicit_tls = conn_byte & 8 != 0;
        conn.starttls_available = !conn.implicit_tls;
        let session = Pop3Session::new(cfg.clone(), conn.clone(), epoch);
        let session = if conn.implicit_tls {
            Secured::implicit(session, tls.server.clone()).expect("server config")
        } else {
            Secured::plain(session, Some(tls.server.clone()))
        };
        let client = Client {
            config: Some(tls.client.clone()),
            tls: None,
            broken: false,
        };
        let mut harness = SessionHarness::new(epoch, session, cfg, &conn, client, log);
        if conn.implicit_tls {
            harness.client.start_tls(&mut harness.socket);
        }
        harness
    }
}

impl<'log, S: Driven> SessionHarness<'log, S> {
    fn new(
        epoch: Instant,
        session: S,
        cfg: Arc<Pop3Config>,
        conn: &ConnInfo,
        client: Client,
        log: Option<&'log mut dyn FnMut(&str)>,
    ) -> Self {
        let output_bound =
            cfg.limits.output_high_water + 2 * cfg.limits.read_chunk + SESSION_OUTPUT_SLACK;
        let mut harness = SessionHarness {
            log,
            session,
            cfg,
            client,
            starttls_available: conn.starttls_available,
            epoch,
            now: epoch,
            socket: Vec::new(),
            closed: false,
            last_id: None,
            outstanding: None,
            old_ids: Vec::new(),
            next_offset: None,
            unflushed: 0,
            output_bound,
            released: false,
        };
        let greeting = harness.drain();
        assert!(
            conn.implicit_tls || greeting.starts_with(b"+OK"),
            "greeting {greeting:?}"
        );
        harness
    }

    fn trace(&mut self, event: impl FnOnce() -> String) {
        if let Some(log) = self.log.as_mut() {
            log(&event());
        }
    }

    /// True while the session waits for the store (it must not parse pipelined input).
    fn waiting_for_store(&self) -> bool {
        self.outstanding.as_ref().is_some_and(|o| !o.abandoned)
    }

    /// The client sends `bytes` (plaintext; encrypted if its TLS is on).
    fn send(&mut self, bytes: &[u8]) {
        if self.client.tls.is_some() {
            self.trace(|| format!("c: {}", bytes.escape_ascii()));
        }
        self.client.send(bytes, &mut self.socket);
    }

    fn step(&mut self, tag: u8, script: &mut Script<'_>) {
        match tag {
            b'>' => {
                let line = script.line();
                self.send(line);
                self.read(MAX_READ);
            }
            b'+' => {
                let line = script.line();
                self.send(line);
            }
            b'-' => {
                let line = script.line();
                self.send(line.strip_suffix(b"\n").unwrap_or(line));
            }
            b'X' | b'Y' => {
                let pattern: &[u8] = if tag == b'X' { b"CAPA\r\n" } else { b"x" };
                let n = (usize::from(script.byte().unwrap_or(0)) + 1) * 128;
                let bytes: Vec<u8> = pattern.iter().copied().cycle().take(n).collect();
                self.send(&bytes);
            }
            b'G' if self.client.config.is_some() => {
                let line = script.line();
                self.trace(|| format!("* raw bytes {}", line.escape_ascii()));
                self.socket.extend_from_slice(line);
            }
            b'H' if self.client.start_tls(&mut self.socket) => {
                self.trace(|| "* client starts TLS".into());
            }
            b'R' => {
                let n = script.byte().unwrap_or(0);
                self.read(usize::from(n) + 1);
            }
            b'P' => while !self.socket.is_empty() && self.read(MAX_READ) {},
            b'F' => {
                self.trace(|| "* feed ignoring wants_read".into());
                let bytes = std::mem::take(&mut self.socket);
                self.session.handle_input(self.now, Peer::Client, &bytes);
                self.drain();
            }
            b'E' => {
                self.trace(|| "* EOF".into());
                self.session.handle_eof(self.now, Peer::Client);
                self.drain();
            }
            b'T' => {
                let ms = match script.byte().unwrap_or(0) {
                    d @ b'0'..=b'9' => 10u64.pow(u32::from(d - b'0')),
                    s => u64::from(s) * 1000,
                };
                self.now += Duration::from_millis(ms);
                let elapsed = self.now - self.epoch;
                self.trace(|| format!("* time {elapsed:?}"));
                if self.session.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.timeout();
                }
            }
            b't' => self.timeout(),
            b'D' => {
                self.trace(|| "* drained".into());
                self.unflushed = 0;
                self.session.handle_drained(self.now, Peer::Client);
                self.drain();
            }
            b'A' => {
                let kind = script.byte().unwrap_or(b'o');
                match self.outstanding.take() {
                    Some(outstanding) => self.answer(outstanding, kind, script),
                    None => self.late_reply(kind, script),
                }
            }
            b'L' => {
                let kind = script.byte().unwrap_or(b'o');
                self.late_reply(kind, script);
            }
            _ => {}
        }
    }

    /// One read of at most `max` bytes, if the session wants input. Returns whether it read.
    fn read(&mut self, max: usize) -> bool {
        if self.socket.is_empty() || !self.session.wants_read(Peer::Client) {
            return false;
        }
        let n = max.min(MAX_READ).min(self.socket.len());
        let bytes: Vec<u8> = self.socket.drain(..n).collect();
        let encrypted = self.client.tls.is_some();
        self.trace(|| match encrypted {
            false => format!("C: {}", bytes.escape_ascii()),
            true => format!("C: [{n} bytes]"),
        });
        let waiting = self.waiting_for_store();
        self.session.handle_input(self.now, Peer::Client, &bytes);
        let (actions, plain) = self.drain_actions();
        assert!(
            !plain
                .as_ref()
                .is_some_and(|p| contains(p, b"Input buffer overflow")),
            "a shell that honours wants_read and MAX_READ got the overflow reply"
        );
        if waiting {
            // A TLS error may still end the connection (alert + close) at any time, but
            // the protocol session must not act on the input: no new request, no reply.
            assert!(
                !actions.iter().any(|a| matches!(a, Action::Request { .. })),
                "input was processed while a request was outstanding: {actions:?}"
            );
            assert!(
                plain.as_ref().is_none_or(|p| p.is_empty()),
                "input was answered while a request was outstanding: {plain:?}"
            );
        }
        true
    }

    fn timeout(&mut self) {
        self.trace(|| "* handle_timeout".into());
        if let Some(outstanding) = self.outstanding.as_mut()
            && self.now >= outstanding.deadline
        {
            outstanding.abandoned = true;
        }
        self.session.handle_timeout(self.now);
        self.drain();
    }

    fn answer(&mut self, outstanding: Outstanding, kind: u8, script: &mut Script<'_>) {
        let max_len = outstanding.read.map_or(self.cfg.limits.read_chunk, |r| r.1);
        let reply = make_reply(kind, script, max_len);
        self.answer_with(outstanding, reply);
    }

    fn answer_with(&mut self, outstanding: Outstanding, reply: Reply) {
        self.old_ids.push(outstanding.id);
        if outstanding.abandoned {
            // The session gave up on it: this is a late reply.
            return self.late_reply_to(outstanding.id, reply);
        }
        self.next_offset = match (&reply, outstanding.read) {
            (Reply::Chunk { bytes, end: false }, Some((offset, _))) => {
                Some(offset + bytes.len() as u64)
            }
            _ => None,
        };
        self.trace(|| format!("* reply {:?} {reply:?}", outstanding.id));
        self.session.handle_reply(self.now, outstanding.id, reply);
        self.drain();
    }

    fn late_reply(&mut self, kind: u8, script: &mut Script<'_>) {
        let id = self.old_ids.last().copied().unwrap_or(RequestId(0));
        let reply = make_reply(kind, script, self.cfg.limits.read_chunk);
        self.late_reply_to(id, reply);
    }

    fn late_reply_to(&mut self, id: RequestId, reply: Reply) {
        self.trace(|| format!("* late reply {id:?} {reply:?}"));
        self.session.handle_reply(self.now, id, reply);
        let (actions, _) = self.drain_actions();
        assert!(
            actions.is_empty(),
            "a late reply to {id:?} was not ignored: {actions:?}"
        );
    }

    /// Drains the session's actions, checking each; returns the plaintext the client got.
    fn drain(&mut self) -> Vec<u8> {
        self.drain_actions().1.unwrap_or_default()
    }

    /// Drains the session's actions, checking each; returns them and the plaintext the
    /// client got from them (`None` if its TLS failed).
    fn drain_actions(&mut self) -> (Vec<Action>, Option<Vec<u8>>) {
        let mut actions = Vec::new();
        let mut plain = Some(Vec::new());
        while let Some(action) = self.session.poll_action() {
            self.check(&action);
            if let Action::Write { bytes, .. } = &action {
                let received = self.client.receive(bytes, &mut self.socket);
                self.trace(|| match &received {
                    Some(p) if p.is_empty() => format!("S: [{} TLS bytes]", bytes.len()),
                    Some(p) => format!("S: {}", p.escape_ascii()),
                    None => format!("S: [{} bytes the client cannot read]", bytes.len()),
                });
                match (&mut plain, received) {
                    (Some(all), Some(p)) => {
                        self.unflushed += p.len();
                        assert!(
                            self.unflushed <= self.output_bound,
                            "{} bytes written without a drain (bound {})",
                            self.unflushed,
                            self.output_bound
                        );
                        all.extend_from_slice(&p);
                    }
                    _ => plain = None,
                }
            } else {
                self.trace(|| format!("> {action:?}"));
            }
            actions.push(action);
        }
        if self.closed {
            assert!(self.session.is_closed());
            assert!(
                !self.session.wants_read(Peer::Client),
                "closed but wants input"
            );
            assert!(
                !S::DISARMS_ON_CLOSE || self.session.poll_timeout().is_none(),
                "closed but a timer is armed"
            );
        } else {
            assert!(
                self.session.poll_timeout().is_some(),
                "an open session has no deadline (autologout)"
            );
        }
        (actions, plain)
    }

    fn check(&mut self, action: &Action) {
        assert!(!self.closed, "{action:?} after Close");
        match action {
            Action::Write { to, .. } => assert_eq!(*to, Peer::Client),
            Action::Request { id, request } => {
                assert!(
                    self.last_id.is_none_or(|last| *id > last),
                    "request id {id:?} after {:?}",
                    self.last_id
                );
                self.last_id = Some(*id);
                if let Request::ReleaseMailbox { .. } = request {
                    // Fire and forget, right before the close: never awaited.
                    assert!(self.cfg.mailbox_lock, "ReleaseMailbox without the lock");
                    assert!(!self.released, "a second ReleaseMailbox");
                    self.released = true;
                    return;
                }
                if let Some(previous) = self.outstanding.take() {
                    assert!(
                        previous.abandoned,
                        "{id:?} issued while {:?} is outstanding",
                        previous.id
                    );
                    self.old_ids.push(previous.id);
                }
                let read = match request {
                    Request::ReadMessage {
                        offset, max_len, ..
                    } => {
                        assert_eq!(*max_len, self.cfg.limits.read_chunk);
                        assert!(
                            *offset == 0 || Some(*offset) == self.next_offset,
                            "read at offset {offset}, the previous chunk ended at {:?}",
                            self.next_offset
                        );
                        Some((*offset, *max_len))
                    }
                    _ => None,
                };
                self.outstanding = Some(Outstanding {
                    id: *id,
                    deadline: self.now + self.cfg.store_timeout,
                    abandoned: false,
                    read,
                });
            }
            Action::StartTls { with } => {
                assert_eq!(*with, Peer::Client);
                assert!(S::SHOWS_START_TLS, "StartTls reached the shell");
                assert!(self.starttls_available, "StartTls without STLS available");
            }
            Action::Close { to } => {
                assert_eq!(*to, Peer::Client);
                self.closed = true;
            }
            Action::Connect { .. } | Action::Splice { .. } => {
                panic!("a POP3 server session never connects anywhere: {action:?}")
            }
        }
    }

    /// Ends the connection. The client sends nothing more (EOF); from then on the store
    /// answers every request (with a temporary failure) and the client reads everything,
    /// and the session must close: it answers the commands it has buffered first, and
    /// only a timer (a failed login's delay, the autologout) may be needed on the way.
    fn finish(mut self) {
        if !self.closed {
            self.trace(|| "* EOF".into());
            self.session.handle_eof(self.now, Peer::Client);
            self.drain();
        }
        for _ in 0..WIND_DOWN_STEPS {
            if self.closed {
                break;
            }
            if let Some(outstanding) = self.outstanding.take() {
                let reply = Reply::Failed(Failure::Temporary("shutting down".into()));
                self.answer_with(outstanding, reply);
            } else if self.unflushed > 0 {
                self.trace(|| "* drained".into());
                self.unflushed = 0;
                self.session.handle_drained(self.now, Peer::Client);
                self.drain();
            } else if let Some(deadline) = self.session.poll_timeout() {
                self.now = self.now.max(deadline);
                let elapsed = self.now - self.epoch;
                self.trace(|| format!("* time {elapsed:?}"));
                self.timeout();
            } else {
                break;
            }
        }
        assert!(self.closed, "the session did not close after EOF");
        // Whatever comes now must be ignored.
        self.session
            .handle_input(self.now, Peer::Client, b"NOOP\r\n");
        self.session
            .handle_timeout(self.now + Duration::from_secs(3600));
        self.session.handle_drained(self.now, Peer::Client);
        if let Some(id) = self.last_id {
            self.session.handle_reply(self.now, id, Reply::Done);
        }
        self.drain();
    }
}

/// The store's answer of kind `kind` (see [`pop3_session`]); chunk bytes are cut to
/// `max_len`.
fn make_reply(kind: u8, script: &mut Script<'_>, max_len: usize) -> Reply {
    const KINDS: &[u8] = b"adxigtpo0123cezZmwW";
    let kind = if KINDS.contains(&kind) {
        kind
    } else {
        KINDS[usize::from(kind) % KINDS.len()]
    };
    let chunk = |bytes: &[u8], end: bool| {
        let cut = bytes.len() > max_len;
        Reply::Chunk {
            bytes: Bytes::copy_from_slice(&bytes[..bytes.len().min(max_len)]),
            end: end && !cut,
        }
    };
    match kind {
        b'a' => Reply::Authenticated(Account("alice@example.org".into())),
        b'd' => Reply::Failed(Failure::Denied),
        b'x' => Reply::Failed(Failure::Disabled),
        b'i' => Reply::Failed(Failure::InUse),
        b'g' => Reply::Failed(Failure::Gone),
        b't' => Reply::Failed(Failure::Temporary("store unreachable".into())),
        b'p' => Reply::Failed(Failure::Permanent("mailbox broken".into())),
        b'0'..=b'3' => Reply::Listing(listing(usize::from(kind - b'0'))),
        b'c' => chunk(script.line(), false),
        b'e' => chunk(script.line(), true),
        b'w' | b'W' => {
            let n = usize::from(script.byte().unwrap_or(0)) + 1;
            let bytes: Vec<u8> = b".\n".iter().copied().cycle().take(n).collect();
            chunk(&bytes, kind == b'W')
        }
        b'z' => chunk(b"", false),
        b'Z' => chunk(b"", true),
        b'm' => chunk(
            b"From: bob@example.org\r\nSubject: hi\r\n\r\nline one\r\n.hidden dot\r\nbare lf\n.\r\n",
            true,
        ),
        _ => Reply::Done,
    }
}

/// A listing of `n` messages, alternately in new/ and cur/.
fn listing(n: usize) -> Vec<MessageInfo> {
    const SIZES: [u64; 3] = [120, 0, 4096];
    (0..n)
        .map(|i| {
            let unique = format!("17000000{i}.M{i}P4242.mail");
            let dir = if i % 2 == 0 { "new" } else { "cur" };
            MessageInfo {
                file: MessageRef(format!("{dir}/{unique}")),
                uid: unique,
                size: SIZES[i % SIZES.len()],
            }
        })
        .collect()
}
