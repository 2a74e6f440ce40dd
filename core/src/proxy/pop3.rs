//! The POP3 front-end: the AUTHORIZATION state (RFC 1939 §4, CAPA and response codes
//! from RFC 2449, STLS from RFC 2595, SASL PLAIN from RFC 5034) answered here, then the
//! user's login replayed on the back-end the route names, then the hand-over.
//!
//! Back-end dialogue, in order: [PROXY v2 header] [TLS] greeting `+OK`, [`STLS` →
//! `+OK` → TLS], [`XCLIENT ADDR=… PORT=… TTL=…` → `+OK`], `AUTH PLAIN <base64>` →
//! `+OK` (relayed verbatim to the client) or `-ERR [CODE] …` (the code relayed, the
//! text not). With no STLS or XCLIENT step the `AUTH PLAIN` goes out with the PROXY
//! header, before the greeting ([`ProxyConfig::pipelined_login`]). The password is replayed as SASL PLAIN so no byte of it can end a
//! command line early.

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
use crate::pop3::command::{self, Command, ParseError};
use crate::request::{Failure, Reply, Route, Service};
use crate::secret::Secret;
use crate::timer::Timer;
use crate::wire::LineEvent;

const PLAINTEXT_REFUSED: &str =
    "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS first";
const BACKEND_DOWN: &str = "-ERR [SYS/TEMP] Mail server unavailable, try again later";

/// Where the session is.
#[derive(Debug)]
enum Phase {
    /// AUTHORIZATION: reading commands; `user` holds the name from USER.
    Login { user: Option<String> },
    /// `AUTH PLAIN` sent `+ `; the next line is the client's response.
    SaslResponse,
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
    /// Relaying bytes after the login (a leg uses TLS).
    Relay(Relay),
    /// Spliced or closed: nothing more happens.
    Done,
}

/// The back-end login in progress.
#[derive(Debug)]
struct Dialogue {
    login: BackendLogin,
    step: Step,
}

/// The back-end reply the dialogue waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connecting,
    Greeting,
    /// The greeting, with `AUTH PLAIN` already sent ([`ProxyConfig::pipelined_login`]).
    GreetingThenAuth,
    Stls,
    Xclient,
    Auth,
}

/// A POP3 front-end session for one client connection.
///
/// See the crate documentation for the driving contract; `docs/proxy.md` for what it
/// sends to the back-end.
#[derive(Debug)]
pub struct Pop3FrontSession {
    front: Front,
    phase: Phase,
    /// The client sent EOF before login: close once buffered commands are answered.
    peer_eof: bool,
}

impl Pop3FrontSession {
    /// A session for a client accepted at `now`; the greeting is queued at once.
    pub fn new(cfg: Arc<ProxyConfig>, conn: FrontConn, now: Instant) -> Self {
        let mut front = Front::new(cfg, conn, now);
        let _ = write!(front.io.out, "+OK {} POP3 ready\r\n", front.cfg.hostname);
        Pop3FrontSession {
            front,
            phase: Phase::Login { user: None },
            peer_eof: false,
        }
    }

    /// True once the session spliced or closed: the shell drops it.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    fn reply(&mut self, line: &str) {
        self.front.reply(line);
    }

    /// Closes every connection; nothing follows.
    fn close(&mut self) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Backend(mut dialogue) => dialogue.login.leg.close(&mut self.front.io),
            Phase::Relay(mut relay) => return self.front.close_relay(&mut relay),
            Phase::Done => return,
            _ => {}
        }
        self.front.close_client();
    }

    /// Answers buffered client commands while the session is in AUTHORIZATION.
    fn resume(&mut self, now: Instant) {
        // Stop answering while the client does not read its replies (CAPA in a loop).
        while matches!(self.phase, Phase::Login { .. } | Phase::SaslResponse)
            && self.front.can_answer()
        {
            match self.front.input.next_line() {
                None => {
                    if self.peer_eof {
                        self.close();
                    }
                    break;
                }
                Some(LineEvent::TooLong) => {
                    if matches!(self.phase, Phase::SaslResponse) {
                        self.phase = Phase::Login { user: None };
                    }
                    self.bad_command("-ERR Command line too long");
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
            self.reply("-ERR Too many bad commands, closing connection");
            self.close();
        }
    }

    fn on_line(&mut self, now: Instant, line: &[u8]) {
        if matches!(self.phase, Phase::SaslResponse) {
            self.phase = Phase::Login { user: None };
            return self.sasl_response(now, line);
        }
        match command::parse(line) {
            Ok(Command::Capa) => self.capa(),
            Ok(Command::Quit) => {
                let line = format!("+OK {} POP3 closing", self.front.cfg.hostname);
                self.reply(&line);
                self.close();
            }
            Ok(Command::Stls) => self.stls(),
            Ok(Command::User(name)) => {
                if !self.front.login_allowed() {
                    return self.reply(PLAINTEXT_REFUSED);
                }
                self.phase = Phase::Login { user: Some(name) };
                self.reply("+OK");
            }
            Ok(Command::Pass(password)) => {
                if !self.front.login_allowed() {
                    return self.reply(PLAINTEXT_REFUSED);
                }
                match std::mem::replace(&mut self.phase, Phase::Login { user: None }) {
                    Phase::Login { user: Some(user) } => self.login(now, user, password),
                    _ => self.reply("-ERR USER first"),
                }
            }
            Ok(Command::Auth {
                mechanism,
                initial_response,
            }) => self.auth(now, mechanism.as_deref(), initial_response),
            Ok(_) => self.bad_command("-ERR Command not valid in this state"),
            Err(ParseError::Unknown) => self.bad_command("-ERR Unknown command"),
            Err(ParseError::Syntax(why)) => self.bad_command(&format!("-ERR Syntax error: {why}")),
        }
    }

    /// RFC 2449 §5: only what the front-end itself does before login. The back-end's
    /// own capabilities (TOP, UIDL, PIPELINING…) apply after the hand-over.
    fn capa(&mut self) {
        let (login, stls) = (self.front.login_allowed(), self.front.starttls_available());
        let out = &mut self.front.io.out;
        out.extend_from_slice(b"+OK Capability list follows\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n");
        if login {
            out.extend_from_slice(b"USER\r\nSASL PLAIN\r\n");
        }
        if stls {
            out.extend_from_slice(b"STLS\r\n");
        }
        out.extend_from_slice(b"IMPLEMENTATION tidegate\r\n.\r\n");
    }

    fn stls(&mut self) {
        if !self.front.starttls_available() {
            let why = if self.front.secure {
                "TLS is already active"
            } else {
                "STLS is not available"
            };
            return self.reply(&format!("-ERR {why}"));
        }
        self.reply("+OK Begin TLS negotiation");
        self.front.io.push(Action::StartTls { with: Peer::Client });
        // RFC 2595 §4: plaintext pipelined after STLS is discarded (CVE-2011-0411).
        self.front.input.clear();
        self.front.secure = true;
        self.phase = Phase::Login { user: None };
    }

    fn auth(&mut self, now: Instant, mechanism: Option<&str>, initial: Option<Secret>) {
        if !self.front.login_allowed() {
            return self.reply(PLAINTEXT_REFUSED);
        }
        match mechanism {
            None => self
                .front
                .io
                .out
                .extend_from_slice(b"+OK\r\nPLAIN\r\n.\r\n"),
            Some("PLAIN") => match initial {
                Some(response) => self.sasl_response(now, response.expose()),
                None => {
                    self.phase = Phase::SaslResponse;
                    self.reply("+ ");
                }
            },
            Some(_) => self.reply("-ERR Unrecognized authentication type"),
        }
    }

    fn sasl_response(&mut self, now: Instant, line: &[u8]) {
        let parsed = sasl::decode_response(line).and_then(|m| sasl::parse_plain(m.expose()));
        match parsed {
            Ok((user, password)) => self.login(now, user, password),
            Err(SaslError::Cancelled) => self.reply("-ERR Authentication cancelled"),
            Err(SaslError::BadBase64) => self.reply("-ERR [AUTH] Invalid base64 data"),
            Err(SaslError::Malformed) => self.reply("-ERR [AUTH] Malformed PLAIN response"),
        }
    }

    /// Credentials captured: ask where the user lives (which also checks the password).
    fn login(&mut self, now: Instant, user: String, password: Secret) {
        match self
            .front
            .request_route(now, user, &password, Service::Pop3)
        {
            Some((id, hops)) => self.phase = Phase::Routing { id, password, hops },
            None => self.reply("-ERR [SYS/PERM] Proxy loop: too many proxy hops"),
        }
    }

    fn on_routed(&mut self, now: Instant, reply: Reply, password: Secret, hops: u8) {
        self.phase = Phase::Login { user: None };
        match reply {
            Reply::Routed(Route { account, backend }) => {
                match self.front.connect(now, account, backend, password, hops) {
                    Some(login) => {
                        self.phase = Phase::Backend(Box::new(Dialogue {
                            login,
                            step: Step::Connecting,
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
            Reply::Failed(Failure::Disabled) => {
                self.reply("-ERR [AUTH] Login is disabled for this account")
            }
            _ => self.reply("-ERR [SYS/TEMP] User database unavailable, try again later"),
        }
    }

    /// The back-end dialogue failed: close that leg, answer the client, and go back to
    /// AUTHORIZATION (the client may try again).
    fn backend_failed(&mut self, now: Instant, reply: &str, report: Option<String>) {
        let Phase::Backend(mut dialogue) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        self.front
            .abandon_backend(now, &mut dialogue.login.leg, report);
        self.phase = Phase::Login { user: None };
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
        let up = result.is_ok();
        if up {
            dialogue.step = Step::Greeting;
        }
        if let Err(report) = self.front.connected(&mut dialogue.login, result) {
            return self.backend_failed(now, BACKEND_DOWN, report);
        }
        if up && self.front.cfg.login_before_greeting() {
            // Queued behind the PROXY header: the shell writes both at once.
            let sent = send_auth(&mut self.front, dialogue);
            dialogue.step = Step::GreetingThenAuth;
            if let Err(why) = sent {
                self.backend_failed(now, BACKEND_DOWN, Some(why));
            }
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
            match dialogue.login.leg.next_line() {
                None => return,
                Some(Err(why)) => return self.backend_failed(now, BACKEND_DOWN, Some(why)),
                Some(Ok(line)) => self.on_backend_line(now, line),
            }
        }
    }

    fn on_backend_line(&mut self, now: Instant, line: Bytes) {
        let Phase::Backend(dialogue) = &mut self.phase else {
            return;
        };
        let ok = line.starts_with(b"+OK");
        let step = dialogue.step;
        let front = &mut self.front;
        let sent = match (step, ok) {
            (Step::Greeting, true) if front.cfg.backend_tls == BackendTlsMode::StartTls => {
                dialogue.step = Step::Stls;
                dialogue.login.leg.send(&mut front.io, b"STLS\r\n")
            }
            (Step::Stls, true) => {
                let cfg = front.cfg.backend_tls_config.as_ref();
                match dialogue.login.leg.start_tls(&mut front.io, cfg) {
                    Ok(()) => after_tls(front, dialogue),
                    Err(why) => Err(why),
                }
            }
            (Step::Greeting, true) => after_tls(front, dialogue),
            (Step::GreetingThenAuth, true) => {
                dialogue.step = Step::Auth;
                Ok(())
            }
            (Step::Xclient, true) => send_auth(front, dialogue),
            (Step::Auth, true) => return self.hand_over(now, line),
            (Step::Auth, false) => {
                let reply = refusal(&line);
                return self.backend_failed(now, reply, None);
            }
            (Step::Connecting, _) => Err("back-end spoke before the connection was up".into()),
            (_, false) => Err(format!(
                "back-end refused at {step:?}: {}",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            )),
        };
        if let Err(why) = sent {
            self.backend_failed(now, BACKEND_DOWN, Some(why));
        }
    }

    /// The back-end accepted the login: relay its `+OK`, then splice or relay.
    fn hand_over(&mut self, now: Instant, ok_line: Bytes) {
        let Phase::Backend(mut dialogue) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        let mut ok = ok_line.to_vec();
        ok.extend_from_slice(b"\r\n");
        if let Some(relay) = self.front.hand_over(now, &mut dialogue.login, &ok) {
            self.phase = Phase::Relay(relay);
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match (timer, &self.phase) {
            (Timer::Idle, Phase::Relay(_)) => self.close(),
            (Timer::Idle, _) => {
                self.reply("-ERR Autologout: idle for too long");
                self.close();
            }
            (Timer::StoreReply, Phase::Routing { .. }) => {
                self.phase = Phase::Login { user: None };
                self.reply("-ERR [SYS/TEMP] User database did not answer, try again later");
                self.resume(now);
            }
            (Timer::StoreReply, Phase::Backend(_)) => self.backend_failed(
                now,
                BACKEND_DOWN,
                Some("back-end did not answer in time".into()),
            ),
            (Timer::AuthDelay, Phase::AuthDelay { close_after }) => {
                let close_after = *close_after;
                self.phase = Phase::Login { user: None };
                self.reply("-ERR [AUTH] Authentication failed");
                if close_after {
                    self.reply("-ERR Too many failed logins, closing connection");
                    self.close();
                } else {
                    self.resume(now);
                }
            }
            _ => {}
        }
    }
}

/// After the greeting (and STLS): XCLIENT if configured, then the login.
fn after_tls(front: &mut Front, dialogue: &mut Dialogue) -> Result<(), String> {
    if front.cfg.client_address != ClientAddressMode::Xclient {
        return send_auth(front, dialogue);
    }
    let x = Xclient {
        addr: Some(front.conn.client.ip()),
        port: Some(front.conn.client.port()),
        ttl: Some(dialogue.login.hops),
        ..Xclient::default()
    };
    dialogue.step = Step::Xclient;
    let line = format!("{}\r\n", xclient::encode(&x));
    dialogue.login.leg.send(&mut front.io, line.as_bytes())
}

/// The login itself: `AUTH PLAIN <base64>` (RFC 5034 §4).
fn send_auth(front: &mut Front, dialogue: &mut Dialogue) -> Result<(), String> {
    dialogue.step = Step::Auth;
    front::send_auth_plain(&mut front.io, &mut dialogue.login, b"AUTH PLAIN ")
}

/// The reply for a back-end's refused login: its RFC 2449/3206 response code, with our
/// own text (the back-end's text may describe its internals).
fn refusal(line: &[u8]) -> &'static str {
    let code = line
        .strip_prefix(b"-ERR [")
        .and_then(|rest| rest.split(|&b| b == b']').next())
        .unwrap_or(b"");
    match code {
        b"IN-USE" => "-ERR [IN-USE] Mailbox is in use by another session",
        b"SYS/TEMP" => "-ERR [SYS/TEMP] Temporary failure, try again later",
        b"SYS/PERM" => "-ERR [SYS/PERM] Mailbox unavailable",
        b"LOGIN-DELAY" => "-ERR [LOGIN-DELAY] Login too soon, try again later",
        _ => "-ERR [AUTH] Authentication failed",
    }
}

impl Session for Pop3FrontSession {
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
                    // Only a shell that ignores wants_read gets here.
                    self.reply("-ERR [SYS/PERM] Input buffer overflow");
                    return self.close();
                }
                self.resume(now);
            }
        }
    }

    fn handle_eof(&mut self, now: Instant, from: Peer) {
        match (&self.phase, from) {
            (Phase::Done, _) => {}
            (Phase::Login { .. } | Phase::SaslResponse, Peer::Client) => {
                // Answer what the client sent before its EOF (QUIT included), then close.
                self.peer_eof = true;
                self.resume(now);
            }
            (Phase::Backend(_), Peer::Backend) => self.backend_failed(
                now,
                BACKEND_DOWN,
                Some("back-end closed the connection during login".into()),
            ),
            // Any other EOF ends the session: the client left mid-login, or one side
            // of the relay closed.
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
            std::mem::replace(&mut self.phase, Phase::Login { user: None })
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
            (_, Peer::Client) => !self.peer_eof && self.front.client_wants_read(),
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
