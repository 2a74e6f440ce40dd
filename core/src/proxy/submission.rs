//! The submission front-end (RFC 6409 with AUTH from RFC 4954): EHLO/HELO, STARTTLS
//! (RFC 3207) and AUTH PLAIN/LOGIN answered here, then the user's login replayed on the
//! back-end the route names, then the hand-over.
//!
//! Back-end dialogue, in order: [PROXY v2 header] [TLS] greeting `220`, `EHLO` → `250`,
//! [`STARTTLS` → `220` → TLS → `EHLO` → `250`], [`XCLIENT … ADDR=… PORT=… TTL=…` when
//! the back-end offers XCLIENT → `220` → `EHLO` → `250`], `AUTH PLAIN <base64>` → `235`
//! (relayed verbatim to the client) or a refusal mapped to our own reply.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::front::{self, BackendLogin, Front};
use super::relay::Relay;
use super::route::{BackendTlsMode, ClientAddressMode, FrontConn, ProxyConfig};
use super::sasl::{self, SaslError};
use super::xclient::{self, Xclient};
use crate::io::{Action, Peer, RequestId, Session};
use crate::request::{Failure, Reply, Route, Service};
use crate::secret::Secret;
use crate::timer::Timer;
use crate::wire::LineEvent;

const BACKEND_DOWN: &str = "451 4.4.1 Mail server unavailable, try again later";
const TEMP_AUTH: &str = "454 4.7.0 Temporary authentication failure";
const BAD_CREDENTIALS: &str = "535 5.7.8 Authentication credentials invalid";
/// The longest back-end reply line relayed to the client (RFC 5321 §4.5.3.1.5: 512).
const MAX_RELAYED_REPLY: usize = 512;
/// The most lines of one multi-line back-end reply (an EHLO lists a dozen extensions).
const MAX_REPLY_LINES: usize = 64;

/// Where the session is.
#[derive(Debug)]
enum Phase {
    /// Reading commands before login.
    Login,
    /// `AUTH PLAIN` sent `334 `; the next line is the response.
    PlainResponse,
    /// `AUTH LOGIN` asked for the user name.
    LoginUser,
    /// `AUTH LOGIN` asked for the password.
    LoginPassword { user: String },
    /// The route lookup (which also checks the password) is outstanding.
    Routing {
        id: RequestId,
        password: Secret,
        hops: u8,
    },
    /// A refused login, answered when [`Timer::AuthDelay`] fires.
    AuthDelay { close_after: bool },
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
    step: Step,
    /// Lines of the back-end reply being read (multi-line replies, RFC 5321 §4.2.1).
    reply: Vec<Bytes>,
    /// The back-end's EHLO offered XCLIENT.
    offers_xclient: bool,
    /// The back-end's EHLO offered STARTTLS.
    offers_starttls: bool,
    /// XCLIENT was sent already (it resets the session, so EHLO comes again).
    xclient_sent: bool,
    tls_done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connecting,
    Greeting,
    Ehlo,
    StartTls,
    Xclient,
    Auth,
}

/// A submission front-end session for one client connection.
#[derive(Debug)]
pub struct SubmissionFrontSession {
    front: Front,
    phase: Phase,
    /// The name the client gave in EHLO/HELO; `None` before it did (or after STARTTLS).
    helo: Option<String>,
}

impl SubmissionFrontSession {
    /// A session for a client accepted at `now`; the greeting is queued at once.
    pub fn new(cfg: Arc<ProxyConfig>, conn: FrontConn, now: Instant) -> Self {
        let mut front = Front::new(cfg, conn, now);
        let _ = write!(
            front.io.out,
            "220 {} ESMTP submission ready\r\n",
            front.cfg.hostname
        );
        SubmissionFrontSession {
            front,
            phase: Phase::Login,
            helo: None,
        }
    }

    /// True once the session spliced or closed: the shell drops it.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    fn reply(&mut self, line: &str) {
        self.front.reply(line);
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
        matches!(
            self.phase,
            Phase::Login | Phase::PlainResponse | Phase::LoginUser | Phase::LoginPassword { .. }
        )
    }

    fn resume(&mut self, now: Instant) {
        // Stop answering while the client does not read its replies (CAPA in a loop).
        while self.reading_commands() && self.front.can_answer() {
            match self.front.input.next_line() {
                None => break,
                Some(LineEvent::TooLong) => {
                    self.phase = Phase::Login;
                    self.bad_command("500 5.5.6 Line too long");
                }
                Some(LineEvent::Line(line)) => {
                    self.front.touch(now);
                    self.on_line(now, &line);
                }
            }
        }
        self.front.io.flush();
    }

    fn bad_command(&mut self, reply: &str) {
        self.reply(reply);
        if self.front.count_bad_command() {
            self.reply("421 4.7.0 Too many errors, closing connection");
            self.close();
        }
    }

    fn on_line(&mut self, now: Instant, line: &[u8]) {
        match std::mem::replace(&mut self.phase, Phase::Login) {
            Phase::PlainResponse => return self.plain_response(now, line),
            Phase::LoginUser => {
                return match sasl::decode_response(line)
                    .and_then(|name| sasl::user_name(name.expose()))
                {
                    Ok(user) => {
                        self.phase = Phase::LoginPassword { user };
                        // base64("Password:")
                        self.reply("334 UGFzc3dvcmQ6");
                    }
                    Err(e) => self.sasl_error(e),
                };
            }
            Phase::LoginPassword { user } => {
                return match sasl::decode_response(line) {
                    Ok(password) => self.login(now, user, password),
                    Err(e) => self.sasl_error(e),
                };
            }
            _ => {}
        }
        let (verb, rest) = match line.iter().position(|&b| b == b' ') {
            Some(sp) => (&line[..sp], &line[sp + 1..]),
            None => (line, &b""[..]),
        };
        let verb = verb.to_ascii_uppercase();
        match verb.as_slice() {
            b"EHLO" | b"HELO" => self.hello(&verb, rest),
            b"STARTTLS" if rest.is_empty() => self.starttls(),
            b"AUTH" => self.auth(now, rest),
            b"NOOP" | b"RSET" => self.reply("250 2.0.0 OK"),
            b"QUIT" => {
                let line = format!("221 2.0.0 {} closing connection", self.front.cfg.hostname);
                self.reply(&line);
                self.close();
            }
            b"MAIL" | b"RCPT" | b"DATA" | b"BDAT" | b"VRFY" | b"EXPN" => {
                self.bad_command("530 5.7.0 Authentication required")
            }
            b"STARTTLS" => self.bad_command("501 5.5.4 Syntax error: no parameters allowed"),
            _ => self.bad_command("500 5.5.2 Command not recognized"),
        }
    }

    fn hello(&mut self, verb: &[u8], rest: &[u8]) {
        let name = std::str::from_utf8(rest)
            .ok()
            .map(str::trim)
            .filter(|n| !n.is_empty() && n.len() <= 255 && !n.contains(' '));
        let Some(name) = name else {
            return self.bad_command("501 5.5.4 Syntax error: a domain name is required");
        };
        self.helo = Some(name.to_owned());
        if verb == b"HELO" {
            let line = format!("250 {}", self.front.cfg.hostname);
            return self.reply(&line);
        }
        let mut lines = vec![
            self.front.cfg.hostname.clone(),
            "PIPELINING".into(),
            "SIZE".into(),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.front.login_allowed() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        if self.front.starttls_available() {
            lines.push("STARTTLS".into());
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let _ = write!(self.front.io.out, "250{sep}{line}\r\n");
        }
    }

    fn starttls(&mut self) {
        if !self.front.starttls_available() {
            return self.bad_command("502 5.5.1 STARTTLS not available");
        }
        self.reply("220 2.0.0 Ready to start TLS");
        self.front.io.push(Action::StartTls { with: Peer::Client });
        // RFC 3207 §4.2: forget everything, pipelined plaintext included.
        self.front.input.clear();
        self.front.secure = true;
        self.helo = None;
    }

    fn auth(&mut self, now: Instant, args: &[u8]) {
        if self.helo.is_none() {
            return self.bad_command("503 5.5.1 EHLO first");
        }
        if !self.front.login_allowed() {
            return self
                .reply("538 5.7.11 Encryption required for requested authentication mechanism");
        }
        let mut words = args.split(|&b| b == b' ');
        let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
        let initial = words.next();
        if words.next().is_some() {
            return self.bad_command("501 5.5.4 Syntax error in AUTH parameters");
        }
        match (mechanism.as_slice(), initial) {
            (b"PLAIN", Some(response)) => self.plain_response(now, response),
            (b"PLAIN", None) => {
                self.phase = Phase::PlainResponse;
                self.reply("334 ");
            }
            (b"LOGIN", Some(response)) => {
                self.phase = Phase::LoginUser;
                self.on_line(now, response);
            }
            (b"LOGIN", None) => {
                self.phase = Phase::LoginUser;
                // base64("Username:")
                self.reply("334 VXNlcm5hbWU6");
            }
            _ => self.reply("504 5.5.4 Unrecognized authentication type"),
        }
    }

    fn plain_response(&mut self, now: Instant, line: &[u8]) {
        match sasl::decode_response(line).and_then(|m| sasl::parse_plain(m.expose())) {
            Ok((user, password)) => self.login(now, user, password),
            Err(e) => self.sasl_error(e),
        }
    }

    fn sasl_error(&mut self, e: SaslError) {
        self.phase = Phase::Login;
        match e {
            SaslError::Cancelled => self.reply("501 5.0.0 Authentication cancelled"),
            SaslError::BadBase64 => self.reply("501 5.5.2 Invalid base64 data"),
            SaslError::Malformed => self.reply("501 5.5.2 Malformed authentication response"),
        }
    }

    fn login(&mut self, now: Instant, user: String, password: Secret) {
        match self
            .front
            .request_route(now, user, &password, Service::Submission)
        {
            Some((id, hops)) => self.phase = Phase::Routing { id, password, hops },
            None => self.reply("554 5.4.6 Proxy loop: too many proxy hops"),
        }
    }

    fn on_routed(&mut self, now: Instant, reply: Reply, password: Secret, hops: u8) {
        self.phase = Phase::Login;
        match reply {
            Reply::Routed(Route { account, backend }) => {
                match self.front.connect(now, account, backend, password, hops) {
                    Some(login) => {
                        self.phase = Phase::Backend(Box::new(Dialogue {
                            login,
                            step: Step::Connecting,
                            reply: Vec::new(),
                            offers_xclient: false,
                            offers_starttls: false,
                            xclient_sent: false,
                            tls_done: false,
                        }))
                    }
                    None => self.reply(BACKEND_DOWN),
                }
            }
            Reply::Failed(failure @ (Failure::Denied | Failure::Throttled(_))) => {
                let refused = self.front.auth_refused(now, &failure);
                self.phase = Phase::AuthDelay {
                    close_after: refused.close_after,
                };
            }
            Reply::Failed(Failure::Disabled) => self.reply(BAD_CREDENTIALS),
            _ => self.reply(TEMP_AUTH),
        }
    }

    fn backend_failed(&mut self, now: Instant, reply: &str, report: Option<String>) {
        let Phase::Backend(mut dialogue) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        self.front
            .abandon_backend(now, &mut dialogue.login.leg, report);
        self.phase = Phase::Login;
        self.reply(reply);
        self.resume(now);
    }

    fn on_connected(&mut self, now: Instant, result: Result<(), String>) {
        let Phase::Backend(dialogue) = &mut self.phase else {
            return;
        };
        if dialogue.step != Step::Connecting {
            return;
        }
        if result.is_ok() {
            dialogue.step = Step::Greeting;
            dialogue.tls_done = self.front.cfg.backend_tls == BackendTlsMode::Tls;
        }
        if let Err(report) = self.front.connected(&mut dialogue.login, result) {
            self.backend_failed(now, BACKEND_DOWN, report);
        }
    }

    fn on_backend_input(&mut self, now: Instant, bytes: &[u8]) {
        let Phase::Backend(dialogue) = &mut self.phase else {
            return;
        };
        if let Err(why) = dialogue.login.leg.receive(&mut self.front.io, bytes) {
            return self.backend_failed(now, BACKEND_DOWN, Some(why));
        }
        loop {
            let Phase::Backend(dialogue) = &mut self.phase else {
                return;
            };
            let line = match dialogue.login.leg.next_line() {
                None => return,
                Some(Err(why)) => return self.backend_failed(now, BACKEND_DOWN, Some(why)),
                Some(Ok(line)) => line,
            };
            // RFC 5321 §4.2: "NNN-" continues, "NNN " or "NNN" ends a reply.
            let code = reply_code(&line);
            let more = line.get(3) == Some(&b'-');
            if code.is_none() || dialogue.reply.len() >= MAX_REPLY_LINES {
                return self.backend_failed(
                    now,
                    BACKEND_DOWN,
                    Some("malformed SMTP reply from the back-end".into()),
                );
            }
            dialogue.reply.push(line);
            if !more {
                let lines = std::mem::take(&mut dialogue.reply);
                self.on_backend_reply(now, code.unwrap_or(0), lines);
            }
        }
    }

    fn on_backend_reply(&mut self, now: Instant, code: u16, lines: Vec<Bytes>) {
        let Phase::Backend(dialogue) = &mut self.phase else {
            return;
        };
        let ehlo = format!("EHLO {}\r\n", self.front.cfg.hostname);
        let step = dialogue.step;
        let sent = match (step, code) {
            (Step::Greeting | Step::Xclient, 220) => {
                dialogue.step = Step::Ehlo;
                dialogue.login.leg.send(&mut self.front.io, ehlo.as_bytes())
            }
            (Step::StartTls, 220) => {
                dialogue.tls_done = true;
                let cfg = self.front.cfg.backend_tls_config.as_ref();
                match dialogue.login.leg.start_tls(&mut self.front.io, cfg) {
                    // RFC 3207 §4.2: the client starts over with EHLO.
                    Ok(()) => {
                        dialogue.step = Step::Ehlo;
                        dialogue.login.leg.send(&mut self.front.io, ehlo.as_bytes())
                    }
                    Err(why) => Err(why),
                }
            }
            (Step::Ehlo, 250) => {
                dialogue.offers_xclient = lines.iter().any(|l| keyword(l, b"XCLIENT"));
                dialogue.offers_starttls = lines.iter().any(|l| keyword(l, b"STARTTLS"));
                self.after_ehlo()
            }
            (Step::Auth, 235) => {
                let mut ok = Vec::new();
                for line in &lines {
                    ok.extend_from_slice(line);
                    ok.extend_from_slice(b"\r\n");
                }
                return self.hand_over(now, &ok);
            }
            (Step::Auth, 400..=499) => return self.backend_failed(now, TEMP_AUTH, None),
            // The front-end checked the password already, so a refusal other than 535
            // (a proxy loop's 554 5.4.6, a disabled account) is the back-end's to explain:
            // its final line goes to the client as it is.
            (Step::Auth, 500..=599) if code != 535 => {
                let last = lines.last().map_or(&b""[..], |l| &l[..]);
                let text: String =
                    String::from_utf8_lossy(&last[..last.len().min(MAX_RELAYED_REPLY)])
                        .chars()
                        .filter(|c| !c.is_control())
                        .collect();
                let reply = if text.len() > 4 && text.is_char_boundary(4) {
                    format!("{code} {}", &text[4..])
                } else {
                    format!("{code} 5.7.0 The mailbox server refused the login")
                };
                return self.backend_failed(now, &reply, None);
            }
            (Step::Auth, _) => return self.backend_failed(now, BAD_CREDENTIALS, None),
            _ => Err(format!(
                "back-end answered {code} at {step:?}: {}",
                String::from_utf8_lossy(&lines[0][..lines[0].len().min(80)])
            )),
        };
        if let Err(why) = sent {
            self.backend_failed(now, BACKEND_DOWN, Some(why));
        }
    }

    /// After an EHLO: STARTTLS, XCLIENT or the login, whichever is due.
    fn after_ehlo(&mut self) -> Result<(), String> {
        let Phase::Backend(dialogue) = &mut self.phase else {
            return Ok(());
        };
        if self.front.cfg.backend_tls == BackendTlsMode::StartTls && !dialogue.tls_done {
            if !dialogue.offers_starttls {
                return Err("the back-end does not offer STARTTLS".into());
            }
            dialogue.step = Step::StartTls;
            return dialogue.login.leg.send(&mut self.front.io, b"STARTTLS\r\n");
        }
        if self.front.cfg.client_address == ClientAddressMode::Xclient
            && dialogue.offers_xclient
            && !dialogue.xclient_sent
        {
            dialogue.xclient_sent = true;
            dialogue.step = Step::Xclient;
            let x = Xclient {
                addr: Some(self.front.conn.client.ip()),
                port: Some(self.front.conn.client.port()),
                helo: self.helo.clone(),
                proto: Some("ESMTP".into()),
                ttl: Some(dialogue.login.hops),
                ..Xclient::default()
            };
            let line = format!("{}\r\n", xclient::encode(&x));
            return dialogue.login.leg.send(&mut self.front.io, line.as_bytes());
        }
        dialogue.step = Step::Auth;
        front::send_auth_plain(&mut self.front.io, &mut dialogue.login, b"AUTH PLAIN ")
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
                // RFC 5321 §4.5.3.2: a server may close an idle session with 421.
                let line = format!(
                    "421 4.4.2 {} Idle for too long, closing",
                    self.front.cfg.hostname
                );
                self.reply(&line);
                self.close();
            }
            (Timer::StoreReply, Phase::Routing { .. }) => {
                self.phase = Phase::Login;
                self.reply(TEMP_AUTH);
                self.resume(now);
            }
            (Timer::StoreReply, Phase::Backend(_)) => self.backend_failed(
                now,
                BACKEND_DOWN,
                Some("back-end did not answer in time".into()),
            ),
            (Timer::AuthDelay, Phase::AuthDelay { close_after }) => {
                let close_after = *close_after;
                self.phase = Phase::Login;
                self.reply(BAD_CREDENTIALS);
                if close_after {
                    self.reply("421 4.7.0 Too many failed logins, closing connection");
                    self.close();
                } else {
                    self.resume(now);
                }
            }
            _ => {}
        }
    }
}

/// The three-digit code at the start of an SMTP reply line.
fn reply_code(line: &[u8]) -> Option<u16> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || !matches!(line.get(3), None | Some(b' ' | b'-')) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether an EHLO reply line announces `word` (RFC 5321 §4.1.1.1: `250-KEYWORD params`).
fn keyword(line: &[u8], word: &[u8]) -> bool {
    line.get(4..)
        .and_then(|rest| rest.split(|&b| b == b' ').next())
        .is_some_and(|k| k.eq_ignore_ascii_case(word))
}

impl Session for SubmissionFrontSession {
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
                    self.reply("421 4.7.0 Input buffer overflow");
                    return self.close();
                }
                self.resume(now);
            }
        }
    }

    fn handle_eof(&mut self, now: Instant, from: Peer) {
        match (&self.phase, from) {
            (Phase::Done, _) => {}
            (Phase::Backend(_), Peer::Backend) => self.backend_failed(
                now,
                BACKEND_DOWN,
                Some("back-end closed the connection during login".into()),
            ),
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
        if let Phase::Routing { password, hops, .. } =
            std::mem::replace(&mut self.phase, Phase::Login)
        {
            self.on_routed(now, reply, password, hops);
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
