//! The IMAP front-end: the not-authenticated state (RFC 3501 §6.1-§6.2: CAPABILITY,
//! NOOP, LOGOUT, STARTTLS, LOGIN, AUTHENTICATE; ID from RFC 2971; SASL-IR from
//! RFC 4959; LITERAL+ from RFC 7888) answered here, then the user's login replayed on
//! the back-end the route names, then the hand-over.
//!
//! Back-end dialogue, in order: [PROXY v2 header] [TLS] greeting `* OK`, [`S1 STARTTLS`
//! → `S1 OK` → TLS], [`S2 ID ("x-originating-ip" … "x-originating-port" …
//! "x-proxy-ttl" …)` → `S2 OK`/`NO`/`BAD`], `S3 LOGIN "account" "password"` (or
//! `S3 AUTHENTICATE PLAIN <base64>` when the password cannot be a quoted string) →
//! `S3 OK [CAPABILITY …] …`, relayed to the client under the client's tag. With no
//! STARTTLS or ID step the `S3` login goes out with the PROXY header, before the
//! greeting ([`ProxyConfig::pipelined_login`]).
//!
//! The pre-login grammar here is deliberately small and private: a command is a tag, a
//! name and at most a few strings (atoms, quoted strings, literals).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::front::{self, BackendLogin, Front};
use super::imap_id;
use super::relay::Relay;
use super::route::{BackendTlsMode, ClientAddressMode, FrontConn, ProxyConfig};
use super::sasl::{self, SaslError};
use crate::io::{Action, Peer, RequestId, Session};
use crate::request::{Failure, Reply, Route, Service};
use crate::secret::Secret;
use crate::timer::Timer;
use crate::wire::LineEvent;

/// The longest tag accepted; real clients use a handful of characters.
const MAX_TAG: usize = 64;
/// The largest literal accepted before login (a user name or password).
const MAX_LITERAL: usize = 1024;
/// The largest command before login, lines and literals together.
const MAX_COMMAND: usize = 4 * 1024;
const BACKEND_DOWN: &str = "NO [UNAVAILABLE] Mail server unavailable, try again later";

/// Where the session is.
#[derive(Debug)]
enum Phase {
    /// Reading commands before login.
    Login,
    /// `AUTHENTICATE PLAIN` sent `+ `; the next line is the response.
    SaslResponse { tag: String },
    /// The route lookup is outstanding.
    Routing {
        id: RequestId,
        tag: String,
        password: Secret,
        hops: u8,
    },
    /// A refused login, answered when [`Timer::AuthDelay`] fires.
    AuthDelay { tag: String, close_after: bool },
    /// Connecting to the back-end and logging in there.
    Backend(Box<Dialogue>),
    /// Relaying bytes after the login.
    Relay(Relay),
    /// Spliced or closed.
    Done,
}

#[derive(Debug)]
struct Dialogue {
    login: BackendLogin,
    /// The client's tag of its LOGIN/AUTHENTICATE.
    tag: String,
    step: Step,
    /// Untagged lines the back-end sent while answering the login, for the client.
    untagged: BytesMut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connecting,
    Greeting,
    /// The greeting, with the login already sent ([`ProxyConfig::pipelined_login`]).
    GreetingThenLogin,
    StartTls,
    Id,
    Login,
}

impl Step {
    /// The tag the front-end uses for its own command at this step.
    fn tag(self) -> &'static [u8] {
        match self {
            Step::StartTls => b"S1",
            Step::Id => b"S2",
            _ => b"S3",
        }
    }
}

/// One piece of a command: text from a line, or the bytes of a literal (RFC 3501 §4.3).
#[derive(Debug)]
enum Piece {
    Text(Bytes),
    Literal(Bytes),
}

/// A command being assembled across lines and literals.
#[derive(Debug, Default)]
struct Assembly {
    pieces: Vec<Piece>,
    size: usize,
    /// Bytes of the literal still to come.
    literal: Option<usize>,
}

/// An IMAP front-end session for one client connection.
#[derive(Debug)]
pub struct ImapFrontSession {
    front: Front,
    phase: Phase,
    command: Assembly,
}

impl ImapFrontSession {
    /// A session for a client accepted at `now`; the greeting is queued at once.
    pub fn new(cfg: Arc<ProxyConfig>, conn: FrontConn, now: Instant) -> Self {
        let mut session = ImapFrontSession {
            front: Front::new(cfg, conn, now),
            phase: Phase::Login,
            command: Assembly::default(),
        };
        let caps = session.capabilities();
        let _ = write!(
            session.front.io.out,
            "* OK [CAPABILITY {caps}] {} IMAP4rev1 proxy ready\r\n",
            session.front.cfg.hostname
        );
        session
    }

    /// True once the session spliced or closed: the shell drops it.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// The pre-login capabilities (RFC 3501 §7.2.1): only what the front-end does.
    fn capabilities(&self) -> String {
        let mut caps = String::from("IMAP4rev1 SASL-IR LITERAL+ ID");
        if self.front.starttls_available() {
            caps.push_str(" STARTTLS");
        }
        if self.front.login_allowed() {
            caps.push_str(" AUTH=PLAIN");
        } else {
            caps.push_str(" LOGINDISABLED");
        }
        caps
    }

    fn reply(&mut self, line: &str) {
        self.front.io.line(line);
    }

    fn tagged(&mut self, tag: &str, text: &str) {
        let _ = write!(self.front.io.out, "{tag} {text}\r\n");
    }

    fn close(&mut self) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Backend(mut dialogue) => dialogue.login.leg.close(&mut self.front.io),
            Phase::Relay(mut relay) => return self.front.close_relay(&mut relay),
            Phase::Done => return,
            _ => {}
        }
        self.front.close_client();
    }

    fn reading_commands(&self) -> bool {
        matches!(self.phase, Phase::Login | Phase::SaslResponse { .. })
    }

    fn resume(&mut self, now: Instant) {
        while self.reading_commands() && self.front.can_answer() {
            if let Some(need) = self.command.literal {
                let raw = self.front.input.raw();
                if raw.len() < need {
                    break;
                }
                let literal = Bytes::copy_from_slice(&raw[..need]);
                self.front.input.consume(need);
                self.command.size += need;
                self.command.pieces.push(Piece::Literal(literal));
                self.command.literal = None;
                continue;
            }
            match self.front.input.next_line() {
                None => break,
                Some(LineEvent::TooLong) => {
                    self.command = Assembly::default();
                    self.phase = Phase::Login;
                    self.bad_command("* BAD Command line too long");
                }
                Some(LineEvent::Line(line)) => {
                    self.front.touch(now);
                    self.on_line(now, line);
                }
            }
        }
        self.front.io.flush();
    }

    fn bad_command(&mut self, reply: &str) {
        self.reply(reply);
        if self.front.count_bad_command() {
            self.reply("* BYE Too many bad commands");
            self.close();
        }
    }

    fn on_line(&mut self, now: Instant, line: Bytes) {
        if let Phase::SaslResponse { tag } = std::mem::replace(&mut self.phase, Phase::Login) {
            return self.plain_response(now, &tag, &line);
        }
        self.command.size += line.len();
        if self.command.size > MAX_COMMAND {
            self.command = Assembly::default();
            return self.bad_command("* BAD Command too long");
        }
        match literal_marker(&line) {
            Some((at, n, sync)) => {
                if n > MAX_LITERAL {
                    self.command = Assembly::default();
                    if sync {
                        return self.bad_command("* BAD Literal too large");
                    }
                    // The literal's bytes are on their way and cannot be told apart
                    // from commands: RFC 7888 §4 lets the server end the connection.
                    self.reply("* BYE Literal too large");
                    return self.close();
                }
                self.command.pieces.push(Piece::Text(line.slice(..at)));
                self.command.literal = Some(n);
                if sync {
                    self.reply("+ Ready for literal data");
                }
            }
            None => {
                self.command.pieces.push(Piece::Text(line));
                let command = std::mem::take(&mut self.command);
                self.dispatch(now, command.pieces);
            }
        }
    }

    fn dispatch(&mut self, now: Instant, pieces: Vec<Piece>) {
        let Some(Piece::Text(first)) = pieces.first() else {
            return self.bad_command("* BAD Empty command");
        };
        let mut words = first.splitn(3, |&b| b == b' ');
        let tag = words.next().unwrap_or_default();
        if tag.is_empty() || tag.len() > MAX_TAG || !tag.iter().all(|&b| is_tag_char(b)) {
            return self.bad_command("* BAD Invalid tag");
        }
        let tag = String::from_utf8_lossy(tag).into_owned();
        let name = words.next().unwrap_or_default().to_ascii_uppercase();
        let rest = words.next().unwrap_or_default();
        let single = pieces.len() == 1;
        match name.as_slice() {
            b"CAPABILITY" if single && rest.is_empty() => {
                let line = format!("* CAPABILITY {}", self.capabilities());
                self.reply(&line);
                self.tagged(&tag, "OK CAPABILITY completed");
            }
            b"NOOP" if single && rest.is_empty() => self.tagged(&tag, "OK NOOP completed"),
            b"LOGOUT" if single && rest.is_empty() => {
                self.reply("* BYE Logging out");
                self.tagged(&tag, "OK LOGOUT completed");
                self.close();
            }
            b"STARTTLS" if single && rest.is_empty() => self.starttls(&tag),
            b"ID" if single => match imap_id::parse_params(rest) {
                Ok(_) => {
                    self.reply("* ID (\"name\" \"tidegate\")");
                    self.tagged(&tag, "OK ID completed");
                }
                Err(_) => self.bad_command(&format!("{tag} BAD Invalid ID parameters")),
            },
            b"LOGIN" => {
                let mut args = vec![Piece::Text(Bytes::copy_from_slice(rest))];
                args.extend(pieces.into_iter().skip(1));
                match strings(&args).as_deref() {
                    Some([user, password]) => {
                        let user = sasl::user_name(user);
                        let password = Secret::new(password.clone());
                        match user {
                            Ok(user) => self.login_command(now, tag, user, password),
                            Err(_) => {
                                self.tagged(&tag, "NO [AUTHENTICATIONFAILED] Invalid user name")
                            }
                        }
                    }
                    _ => self
                        .bad_command(&format!("{tag} BAD LOGIN needs a user name and a password")),
                }
            }
            b"AUTHENTICATE" if single => self.authenticate(now, tag, rest),
            _ => self.bad_command(&format!("{tag} BAD Command not valid before login")),
        }
    }

    fn starttls(&mut self, tag: &str) {
        if !self.front.starttls_available() {
            return self.tagged(tag, "BAD STARTTLS not available");
        }
        self.tagged(tag, "OK Begin TLS negotiation now");
        self.front.io.push(Action::StartTls { with: Peer::Client });
        // RFC 3501 §6.2.1 / CVE-2011-0411: nothing read before TLS is kept.
        self.front.input.clear();
        self.command = Assembly::default();
        self.front.secure = true;
    }

    fn login_command(&mut self, now: Instant, tag: String, user: String, password: Secret) {
        if !self.front.login_allowed() {
            return self.tagged(
                &tag,
                "NO [PRIVACYREQUIRED] Login disabled until TLS is active",
            );
        }
        self.login(now, tag, user, password);
    }

    fn authenticate(&mut self, now: Instant, tag: String, args: &[u8]) {
        if !self.front.login_allowed() {
            return self.tagged(
                &tag,
                "NO [PRIVACYREQUIRED] Login disabled until TLS is active",
            );
        }
        let mut words = args.split(|&b| b == b' ');
        let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
        let initial = words.next();
        if mechanism != b"PLAIN" || words.next().is_some() {
            return self.tagged(&tag, "NO Unsupported authentication mechanism");
        }
        match initial {
            Some(response) => self.plain_response(now, &tag, response),
            None => {
                self.reply("+ ");
                self.phase = Phase::SaslResponse { tag };
            }
        }
    }

    fn plain_response(&mut self, now: Instant, tag: &str, line: &[u8]) {
        match sasl::decode_response(line).and_then(|m| sasl::parse_plain(m.expose())) {
            Ok((user, password)) => self.login(now, tag.to_owned(), user, password),
            Err(SaslError::Cancelled) => self.tagged(tag, "BAD Authentication cancelled"),
            Err(SaslError::BadBase64) => self.tagged(tag, "BAD Invalid base64 data"),
            Err(SaslError::Malformed) => {
                self.tagged(tag, "NO [AUTHENTICATIONFAILED] Malformed PLAIN response")
            }
        }
    }

    fn login(&mut self, now: Instant, tag: String, user: String, password: Secret) {
        match self
            .front
            .request_route(now, user, &password, Service::Imap)
        {
            Some((id, hops)) => {
                self.phase = Phase::Routing {
                    id,
                    tag,
                    password,
                    hops,
                }
            }
            None => self.tagged(&tag, "NO [UNAVAILABLE] Proxy loop: too many proxy hops"),
        }
    }

    fn on_routed(&mut self, now: Instant, tag: String, reply: Reply, password: Secret, hops: u8) {
        self.phase = Phase::Login;
        match reply {
            Reply::Routed(Route { account, backend }) => {
                match self.front.connect(now, account, backend, password, hops) {
                    Some(login) => {
                        self.phase = Phase::Backend(Box::new(Dialogue {
                            login,
                            tag,
                            step: Step::Connecting,
                            untagged: BytesMut::new(),
                        }))
                    }
                    None => self.tagged(&tag, BACKEND_DOWN),
                }
            }
            Reply::Failed(failure @ (Failure::Denied | Failure::Throttled(_))) => {
                let refused = self.front.auth_refused(now, &failure);
                self.phase = Phase::AuthDelay {
                    tag,
                    close_after: refused.close_after,
                };
            }
            Reply::Failed(Failure::Disabled) => {
                self.tagged(&tag, "NO [CONTACTADMIN] Login is disabled for this account")
            }
            _ => self.tagged(
                &tag,
                "NO [UNAVAILABLE] User database unavailable, try again later",
            ),
        }
    }

    /// The back-end dialogue failed: close that leg and answer the client's login
    /// command with `text` (after its tag).
    fn backend_failed(&mut self, now: Instant, text: &str, report: Option<String>) {
        let Phase::Backend(mut dialogue) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        self.front
            .abandon_backend(now, &mut dialogue.login.leg, report);
        self.phase = Phase::Login;
        self.tagged(&dialogue.tag, text);
        self.resume(now);
    }

    fn backend_down(&mut self, now: Instant, why: String) {
        self.backend_failed(now, BACKEND_DOWN, Some(why));
    }

    fn on_connected(&mut self, now: Instant, result: Result<(), String>) {
        let Phase::Backend(dialogue) = &mut self.phase else {
            return;
        };
        if dialogue.step != Step::Connecting {
            return;
        }
        let up = result.is_ok();
        if up {
            dialogue.step = Step::Greeting;
        }
        if let Err(report) = self.front.connected(&mut dialogue.login, result) {
            return self.backend_failed(now, BACKEND_DOWN, report);
        }
        if up && self.front.cfg.login_before_greeting() {
            // Queued behind the PROXY header: the shell writes both at once.
            let sent = self.send_login();
            if let Phase::Backend(dialogue) = &mut self.phase {
                dialogue.step = Step::GreetingThenLogin;
            }
            if let Err(why) = sent {
                self.backend_down(now, why);
            }
        }
    }

    fn on_backend_input(&mut self, now: Instant, bytes: &[u8]) {
        let Phase::Backend(dialogue) = &mut self.phase else {
            return;
        };
        if let Err(why) = dialogue.login.leg.receive(&mut self.front.io, bytes) {
            return self.backend_down(now, why);
        }
        loop {
            let Phase::Backend(dialogue) = &mut self.phase else {
                return;
            };
            match dialogue.login.leg.next_line() {
                None => return,
                Some(Err(why)) => return self.backend_down(now, why),
                Some(Ok(line)) => self.on_backend_line(now, line),
            }
        }
    }

    fn on_backend_line(&mut self, now: Instant, line: Bytes) {
        let Phase::Backend(dialogue) = &mut self.phase else {
            return;
        };
        let step = dialogue.step;
        if step == Step::GreetingThenLogin {
            if starts_with_ci(&line, b"* OK") {
                dialogue.step = Step::Login;
            } else {
                self.backend_down(now, "the back-end greeting is not * OK".into());
            }
            return;
        }
        if step == Step::Greeting {
            let sent = if starts_with_ci(&line, b"* OK") {
                self.after_greeting()
            } else {
                Err("the back-end greeting is not * OK".into())
            };
            if let Err(why) = sent {
                self.backend_down(now, why);
            }
            return;
        }
        let tag = step.tag();
        let Some(rest) = line
            .strip_prefix(tag)
            .and_then(|rest| rest.strip_prefix(b" "))
        else {
            // Untagged data (`* CAPABILITY`, `* ID`): kept for the client during the
            // login, ignored before.
            if step == Step::Login && line.starts_with(b"* ") {
                if dialogue.untagged.len() + line.len() > super::backend::MAX_BACKEND_BUFFER {
                    return self.backend_down(now, "too many untagged lines".into());
                }
                dialogue.untagged.extend_from_slice(&line);
                dialogue.untagged.extend_from_slice(b"\r\n");
            }
            return;
        };
        let ok = starts_with_ci(rest, b"OK");
        let sent = match step {
            Step::StartTls if ok => {
                let cfg = self.front.cfg.backend_tls_config.as_ref();
                match dialogue.login.leg.start_tls(&mut self.front.io, cfg) {
                    Ok(()) => self.after_starttls(),
                    Err(why) => Err(why),
                }
            }
            // A back-end without ID support answers BAD; the login goes on without it.
            Step::Id => self.send_login(),
            Step::Login if ok => {
                let mut reply = std::mem::take(&mut dialogue.untagged);
                let _ = write!(reply, "{} ", dialogue.tag);
                reply.extend_from_slice(rest);
                reply.extend_from_slice(b"\r\n");
                return self.hand_over(now, &reply);
            }
            Step::Login => {
                let text = refusal(rest);
                return self.backend_failed(now, text, None);
            }
            _ => Err(format!(
                "back-end refused at {step:?}: {}",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            )),
        };
        if let Err(why) = sent {
            self.backend_down(now, why);
        }
    }

    fn after_greeting(&mut self) -> Result<(), String> {
        let Phase::Backend(dialogue) = &mut self.phase else {
            return Ok(());
        };
        if self.front.cfg.backend_tls == BackendTlsMode::StartTls {
            dialogue.step = Step::StartTls;
            return dialogue
                .login
                .leg
                .send(&mut self.front.io, b"S1 STARTTLS\r\n");
        }
        self.after_starttls()
    }

    fn after_starttls(&mut self) -> Result<(), String> {
        let Phase::Backend(dialogue) = &mut self.phase else {
            return Ok(());
        };
        if self.front.cfg.client_address == ClientAddressMode::ImapId {
            dialogue.step = Step::Id;
            let line = format!(
                "S2 {}\r\n",
                imap_id::encode_client(self.front.conn.client, dialogue.login.hops)
            );
            return dialogue.login.leg.send(&mut self.front.io, line.as_bytes());
        }
        self.send_login()
    }

    fn send_login(&mut self) -> Result<(), String> {
        let Phase::Backend(dialogue) = &mut self.phase else {
            return Ok(());
        };
        dialogue.step = Step::Login;
        let password = std::str::from_utf8(dialogue.login.password.expose())
            .ok()
            .filter(|p| quotable(p));
        let line = match password {
            Some(password) if quotable(&dialogue.login.account.0) => {
                let mut line = String::from("S3 LOGIN ");
                imap_id::quote(&mut line, &dialogue.login.account.0);
                line.push(' ');
                imap_id::quote(&mut line, password);
                line.push_str("\r\n");
                Secret::new(line.into_bytes())
            }
            _ => {
                return front::send_auth_plain(
                    &mut self.front.io,
                    &mut dialogue.login,
                    b"S3 AUTHENTICATE PLAIN ",
                );
            }
        };
        dialogue.login.leg.send(&mut self.front.io, line.expose())
    }

    fn hand_over(&mut self, now: Instant, ok: &[u8]) {
        let Phase::Backend(mut dialogue) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        if let Some(relay) = self.front.hand_over(now, &mut dialogue.login, ok) {
            self.phase = Phase::Relay(relay);
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match (timer, &self.phase) {
            (Timer::Idle, Phase::Relay(_)) => self.close(),
            (Timer::Idle, _) => {
                self.reply("* BYE Autologout: idle for too long");
                self.close();
            }
            (Timer::StoreReply, Phase::Routing { tag, .. }) => {
                let tag = tag.clone();
                self.phase = Phase::Login;
                self.tagged(
                    &tag,
                    "NO [UNAVAILABLE] User database did not answer, try again later",
                );
                self.resume(now);
            }
            (Timer::StoreReply, Phase::Backend(_)) => {
                self.backend_down(now, "back-end did not answer in time".into())
            }
            (Timer::AuthDelay, Phase::AuthDelay { tag, close_after }) => {
                let (tag, close_after) = (tag.clone(), *close_after);
                self.phase = Phase::Login;
                self.tagged(&tag, "NO [AUTHENTICATIONFAILED] Authentication failed");
                if close_after {
                    self.reply("* BYE Too many failed logins");
                    self.close();
                } else {
                    self.resume(now);
                }
            }
            _ => {}
        }
    }
}

/// RFC 3501 §9 `tag`: any ASTRING-CHAR except `+`.
fn is_tag_char(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
}

fn starts_with_ci(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Whether `text` can be an IMAP quoted string: 7-bit, no CR, LF or NUL.
fn quotable(text: &str) -> bool {
    text.bytes()
        .all(|b| (0x01..0x80).contains(&b) && b != b'\r' && b != b'\n')
}

/// A literal announcement at the end of a line: `{N}` (synchronising) or `{N+}`
/// (RFC 7888); returns where it starts, N, and whether it is synchronising.
fn literal_marker(line: &[u8]) -> Option<(usize, usize, bool)> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let (digits, sync) = match body[open + 1..].strip_suffix(b"+") {
        Some(digits) => (digits, false),
        None => (&body[open + 1..], true),
    };
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((open, n, sync))
}

/// The strings (atoms, quoted strings, literals) of a command's arguments.
fn strings(pieces: &[Piece]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Literal(bytes) => out.push(bytes.to_vec()),
            Piece::Text(text) => {
                let mut rest = &text[..];
                loop {
                    while let Some(r) = rest.strip_prefix(b" ") {
                        rest = r;
                    }
                    if rest.is_empty() {
                        break;
                    }
                    if let Some(body) = rest.strip_prefix(b"\"") {
                        let mut value = Vec::new();
                        let mut i = 0;
                        loop {
                            match *body.get(i)? {
                                b'"' => break,
                                b'\\' => {
                                    value.push(
                                        *body.get(i + 1).filter(|c| matches!(c, b'"' | b'\\'))?,
                                    );
                                    i += 2;
                                }
                                c => {
                                    value.push(c);
                                    i += 1;
                                }
                            }
                        }
                        out.push(value);
                        rest = &body[i + 1..];
                        if !rest.is_empty() && !rest.starts_with(b" ") {
                            return None;
                        }
                    } else {
                        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
                        let atom = &rest[..end];
                        if atom.iter().any(|&b| {
                            matches!(b, b'(' | b')' | b'{' | b'"' | b'\\') || !b.is_ascii_graphic()
                        }) {
                            return None;
                        }
                        out.push(atom.to_vec());
                        rest = &rest[end..];
                    }
                }
            }
        }
    }
    Some(out)
}

/// The reply for a refused back-end login: its RFC 5530 response code, our own text.
fn refusal(rest: &[u8]) -> &'static str {
    let code = rest
        .iter()
        .position(|&b| b == b'[')
        .and_then(|open| rest[open + 1..].split(|&b| b == b']').next())
        .map(|c| {
            c.split(|&b| b == b' ')
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase()
        })
        .unwrap_or_default();
    match code.as_slice() {
        b"UNAVAILABLE" => "NO [UNAVAILABLE] Mailbox temporarily unavailable, try again later",
        b"INUSE" => "NO [INUSE] Mailbox is in use by another session",
        b"EXPIRED" => "NO [EXPIRED] Credentials have expired",
        b"CONTACTADMIN" => "NO [CONTACTADMIN] Login is disabled for this account",
        b"LIMIT" => "NO [LIMIT] Too many sessions, try again later",
        b"AUTHORIZATIONFAILED" => "NO [AUTHORIZATIONFAILED] Authorization failed",
        _ => "NO [AUTHENTICATIONFAILED] Authentication failed",
    }
}

impl Session for ImapFrontSession {
    fn handle_input(&mut self, now: Instant, from: Peer, bytes: &[u8]) {
        match (&mut self.phase, from) {
            (Phase::Done, _) => {}
            (Phase::Relay(relay), _) => {
                if self.front.relay_input(now, relay, from, bytes).is_err() {
                    self.close();
                }
            }
            (_, Peer::Backend) => self.on_backend_input(now, bytes),
            (_, Peer::Client) => {
                if !self.front.accept_client_bytes(bytes) {
                    self.reply("* BYE Input buffer overflow");
                    return self.close();
                }
                self.resume(now);
            }
        }
    }

    fn handle_eof(&mut self, now: Instant, from: Peer) {
        match (&self.phase, from) {
            (Phase::Done, _) => {}
            (Phase::Backend(_), Peer::Backend) => {
                self.backend_down(now, "back-end closed the connection during login".into())
            }
            _ => self.close(),
        }
        self.front.io.flush();
    }

    fn handle_reply(&mut self, now: Instant, id: RequestId, reply: Reply) {
        let Phase::Routing { id: waiting, .. } = &self.phase else {
            return;
        };
        if *waiting != id {
            return;
        }
        self.front.timers.stop(Timer::StoreReply);
        if let Phase::Routing {
            tag,
            password,
            hops,
            ..
        } = std::mem::replace(&mut self.phase, Phase::Login)
        {
            self.on_routed(now, tag, reply, password, hops);
        }
        self.resume(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.front.timers.take_expired(now) {
            self.on_timer(now, timer);
        }
        self.front.io.flush();
    }

    fn handle_drained(&mut self, now: Instant, to: Peer) {
        let relay = match &mut self.phase {
            Phase::Relay(relay) => Some(relay),
            _ => None,
        };
        self.front.drained(relay, to);
        self.resume(now);
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.front.io.poll()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.front.timers.next_deadline()
    }

    fn wants_read(&self, from: Peer) -> bool {
        match (&self.phase, from) {
            (Phase::Done, _) => false,
            (Phase::Relay(relay), _) => relay.wants_read(&self.front.io, from),
            (Phase::Backend(dialogue), Peer::Backend) => dialogue.login.leg.wants_read(),
            (_, Peer::Backend) => false,
            (_, Peer::Client) => self.front.client_wants_read(),
        }
    }

    fn account(&self) -> Option<&str> {
        self.front.proxied.as_ref().map(|a| a.0.as_str())
    }

    fn handle_connected(&mut self, now: Instant, to: Peer, result: Result<(), String>) {
        if to == Peer::Backend {
            self.on_connected(now, result);
        }
        self.front.io.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_markers() {
        assert_eq!(literal_marker(b"a LOGIN {5}"), Some((8, 5, true)));
        assert_eq!(literal_marker(b"a LOGIN {5+}"), Some((8, 5, false)));
        assert_eq!(literal_marker(b"a LOGIN {}"), None);
        assert_eq!(literal_marker(b"a LOGIN {x}"), None);
        assert_eq!(literal_marker(b"a LOGIN {99999999999}"), None);
    }

    #[test]
    fn argument_strings() {
        let pieces = [Piece::Text(Bytes::from_static(b"alice \"p \\\"w\\\\\""))];
        assert_eq!(
            strings(&pieces),
            Some(vec![b"alice".to_vec(), b"p \"w\\".to_vec()])
        );
        let pieces = [
            Piece::Text(Bytes::from_static(b" ")),
            Piece::Literal(Bytes::from_static(b"a b")),
            Piece::Text(Bytes::from_static(b" pw")),
        ];
        assert_eq!(
            strings(&pieces),
            Some(vec![b"a b".to_vec(), b"pw".to_vec()])
        );
        assert_eq!(strings(&[Piece::Text(Bytes::from_static(b"\"open"))]), None);
        assert_eq!(strings(&[Piece::Text(Bytes::from_static(b"a(b"))]), None);
    }

    #[test]
    fn refusal_codes() {
        assert_eq!(
            refusal(b"NO [UNAVAILABLE] nfs down"),
            "NO [UNAVAILABLE] Mailbox temporarily unavailable, try again later"
        );
        assert_eq!(
            refusal(b"NO bad password"),
            "NO [AUTHENTICATIONFAILED] Authentication failed"
        );
    }
}
