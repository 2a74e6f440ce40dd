//! The POP3 front-end: the AUTHORIZATION state (RFC 1939 §4, CAPA and response codes
//! from RFC 2449, STLS from RFC 2595, SASL PLAIN from RFC 5034) answered here, then the
//! user's login replayed on the back-end the route names, then the hand-over.
//!
//! Back-end dialogue, in order: [PROXY v2 header] [TLS] greeting `+OK`, [`STLS` →
//! `+OK` → TLS], [`XCLIENT ADDR=… PORT=… TTL=…` → `+OK`], `AUTH PLAIN <base64>` →
//! `+OK` (relayed verbatim to the client) or `-ERR [CODE] …` (the code relayed, the
//! text not). The password is replayed as SASL PLAIN so no byte of it can end a
//! command line early.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::backend::BackendLeg;
use super::relay::{self, Relay};
use super::route::{BackendTlsMode, ClientAddressMode, FrontConn, ProxyConfig, next_hops};
use super::sasl::{self, SaslError};
use super::xclient::{self, Xclient};
use crate::io::{Action, MAX_READ, Peer, RequestId, Session};
use crate::outbox::Outbox;
use crate::pop3::command::{self, Command, ParseError};
use crate::request::{Account, Backend, Failure, Reply, Request, Route, Service};
use crate::secret::Secret;
use crate::timer::{Timer, TimerTable};
use crate::wire::{LineBuffer, LineEvent};

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
    leg: BackendLeg,
    account: Account,
    password: Secret,
    hops: u8,
    step: Step,
}

/// The back-end reply the dialogue waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connecting,
    Greeting,
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
    cfg: Arc<ProxyConfig>,
    conn: FrontConn,
    /// TLS is active on the client leg (implicit, or after STLS).
    secure: bool,
    phase: Phase,
    input: LineBuffer,
    io: Outbox,
    timers: TimerTable,
    bad_commands: u32,
    auth_failures: u32,
    /// The client sent EOF before login: close once buffered commands are answered.
    peer_eof: bool,
}

impl Pop3FrontSession {
    /// A session for a client accepted at `now`; the greeting is queued at once.
    pub fn new(cfg: Arc<ProxyConfig>, conn: FrontConn, now: Instant) -> Self {
        let mut session = Pop3FrontSession {
            input: LineBuffer::new(cfg.limits.max_line),
            secure: conn.implicit_tls,
            conn,
            phase: Phase::Login { user: None },
            io: Outbox::new(),
            timers: TimerTable::default(),
            bad_commands: 0,
            auth_failures: 0,
            peer_eof: false,
            cfg,
        };
        let _ = write!(
            session.io.out,
            "+OK {} POP3 ready\r\n",
            session.cfg.hostname
        );
        session
            .timers
            .set(Timer::Idle, now + session.cfg.idle_timeout);
        session
    }

    /// True once the session spliced or closed: the shell drops it.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    fn reply(&mut self, line: &str) {
        self.io.line(line);
    }

    fn login_allowed(&self) -> bool {
        self.secure || self.conn.plaintext_auth
    }

    fn stls_available(&self) -> bool {
        self.conn.starttls_available && !self.secure
    }

    /// Closes every connection; nothing follows.
    fn close(&mut self) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Backend(mut dialogue) => dialogue.leg.close(&mut self.io),
            Phase::Relay(mut relay) => {
                relay.close(&mut self.io);
                self.finish_close();
                return;
            }
            Phase::Done => return,
            _ => {}
        }
        self.io.push(Action::Close { to: Peer::Client });
        self.finish_close();
    }

    fn finish_close(&mut self) {
        self.timers = TimerTable::default();
        self.input.clear();
    }

    /// Answers buffered client commands while the session is in AUTHORIZATION.
    fn resume(&mut self, now: Instant) {
        // Stop answering while the client does not read its replies (CAPA in a loop).
        while matches!(self.phase, Phase::Login { .. } | Phase::SaslResponse)
            && self.io.backlog() < self.cfg.limits.output_high_water
        {
            match self.input.next_line() {
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
                    self.timers.set(Timer::Idle, now + self.cfg.idle_timeout);
                    self.on_line(now, &line);
                }
            }
        }
        self.io.flush();
    }

    fn bad_command(&mut self, reply: &str) {
        self.reply(reply);
        self.bad_commands += 1;
        if self.bad_commands >= self.cfg.limits.max_bad_commands {
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
                let line = format!("+OK {} POP3 closing", self.cfg.hostname);
                self.reply(&line);
                self.close();
            }
            Ok(Command::Stls) => self.stls(),
            Ok(Command::User(name)) => {
                if !self.login_allowed() {
                    return self.reply(PLAINTEXT_REFUSED);
                }
                self.phase = Phase::Login { user: Some(name) };
                self.reply("+OK");
            }
            Ok(Command::Pass(password)) => {
                if !self.login_allowed() {
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
        self.io
            .out
            .extend_from_slice(b"+OK Capability list follows\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n");
        if self.login_allowed() {
            self.io.out.extend_from_slice(b"USER\r\nSASL PLAIN\r\n");
        }
        if self.stls_available() {
            self.io.out.extend_from_slice(b"STLS\r\n");
        }
        self.io
            .out
            .extend_from_slice(b"IMPLEMENTATION tidegate\r\n.\r\n");
    }

    fn stls(&mut self) {
        if !self.stls_available() {
            let why = if self.secure {
                "TLS is already active"
            } else {
                "STLS is not available"
            };
            return self.reply(&format!("-ERR {why}"));
        }
        self.reply("+OK Begin TLS negotiation");
        self.io.push(Action::StartTls { with: Peer::Client });
        // RFC 2595 §4: plaintext pipelined after STLS is discarded (CVE-2011-0411).
        self.input.clear();
        self.secure = true;
        self.phase = Phase::Login { user: None };
    }

    fn auth(&mut self, now: Instant, mechanism: Option<&str>, initial: Option<Vec<u8>>) {
        if !self.login_allowed() {
            return self.reply(PLAINTEXT_REFUSED);
        }
        match mechanism {
            None => self.io.out.extend_from_slice(b"+OK\r\nPLAIN\r\n.\r\n"),
            Some("PLAIN") => match initial {
                Some(response) => self.sasl_response(now, &response),
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
        let Ok(hops) = next_hops(self.conn.hops, self.cfg.max_hops) else {
            return self.reply("-ERR [SYS/PERM] Proxy loop: too many proxy hops");
        };
        let id = self.io.request(Request::Route {
            user,
            password: password.clone(),
            client: self.conn.client.ip(),
            service: Service::Pop3,
        });
        self.timers
            .set(Timer::StoreReply, now + self.cfg.route_timeout);
        self.phase = Phase::Routing { id, password, hops };
    }

    fn on_routed(&mut self, now: Instant, reply: Reply, password: Secret, hops: u8) {
        self.phase = Phase::Login { user: None };
        match reply {
            Reply::Routed(Route::Remote { account, backend }) => {
                self.start_backend(now, account, backend, password, hops)
            }
            // The host gives a Remote route to this node's own back-end listener for
            // users served here; a front-end session cannot open a mailbox itself.
            Reply::Routed(Route::Local(_)) => self.reply(BACKEND_DOWN),
            Reply::Failed(failure @ (Failure::Denied | Failure::Throttled(_))) => {
                self.auth_failures += 1;
                let close_after = self.auth_failures >= self.cfg.limits.max_auth_failures;
                let delay = match failure {
                    Failure::Throttled(penalty) => penalty.max(self.cfg.auth_failure_delay),
                    _ => self.cfg.auth_failure_delay,
                };
                let at = now
                    .checked_add(delay)
                    .unwrap_or(now + self.cfg.auth_failure_delay);
                self.timers.set(Timer::AuthDelay, at);
                self.phase = Phase::AuthDelay { close_after };
            }
            Reply::Failed(Failure::Disabled) => {
                self.reply("-ERR [AUTH] Login is disabled for this account")
            }
            _ => self.reply("-ERR [SYS/TEMP] User database unavailable, try again later"),
        }
    }

    fn start_backend(
        &mut self,
        now: Instant,
        account: Account,
        backend: Backend,
        password: Secret,
        hops: u8,
    ) {
        let mut leg = BackendLeg::new(backend);
        if !leg.connect_next(&mut self.io, self.cfg.source_for(self.conn.client)) {
            return self.reply(BACKEND_DOWN);
        }
        self.timers
            .set(Timer::StoreReply, now + self.cfg.backend_timeout);
        self.phase = Phase::Backend(Box::new(Dialogue {
            leg,
            account,
            password,
            hops,
            step: Step::Connecting,
        }));
    }

    /// The back-end dialogue failed: close that leg, answer the client, and go back to
    /// AUTHORIZATION (the client may try again).
    fn backend_failed(&mut self, now: Instant, reply: &str, report: Option<String>) {
        let Phase::Backend(mut dialogue) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        if let Some(reason) = report {
            dialogue.leg.report(&mut self.io, reason);
        }
        dialogue.leg.close(&mut self.io);
        self.timers.stop(Timer::StoreReply);
        self.phase = Phase::Login { user: None };
        self.reply(reply);
        self.timers.set(Timer::Idle, now + self.cfg.idle_timeout);
        self.resume(now);
    }

    fn on_connected(&mut self, now: Instant, result: Result<(), String>) {
        let Phase::Backend(dialogue) = &mut self.phase else {
            return;
        };
        if dialogue.step != Step::Connecting {
            return;
        }
        match result {
            Ok(()) => {
                dialogue.step = Step::Greeting;
                let established = dialogue.leg.established(
                    &mut self.io,
                    &self.cfg,
                    &self.conn,
                    self.secure,
                    dialogue.hops,
                );
                if let Err(why) = established {
                    self.backend_failed(now, BACKEND_DOWN, Some(why));
                }
            }
            Err(reason) => {
                let source = self.cfg.source_for(self.conn.client);
                if !dialogue.leg.connect_failed(&mut self.io, source, reason) {
                    self.backend_failed(now, BACKEND_DOWN, None);
                }
            }
        }
    }

    fn on_backend_input(&mut self, now: Instant, bytes: &[u8]) {
        let Phase::Backend(dialogue) = &mut self.phase else {
            return;
        };
        if let Err(why) = dialogue.leg.receive(&mut self.io, bytes) {
            return self.backend_failed(now, BACKEND_DOWN, Some(why));
        }
        loop {
            let Phase::Backend(dialogue) = &mut self.phase else {
                return;
            };
            match dialogue.leg.next_line() {
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
        let sent = match (step, ok) {
            (Step::Greeting, true) if self.cfg.backend_tls == BackendTlsMode::StartTls => {
                dialogue.step = Step::Stls;
                dialogue.leg.send(&mut self.io, b"STLS\r\n")
            }
            (Step::Stls, true) => {
                let cfg = self.cfg.backend_tls_config.as_ref();
                match dialogue.leg.start_tls(&mut self.io, cfg) {
                    Ok(()) => self.after_tls(),
                    Err(why) => Err(why),
                }
            }
            (Step::Greeting, true) => self.after_tls(),
            (Step::Xclient, true) => self.send_auth(),
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

    /// After the greeting (and STLS): XCLIENT if configured, then the login.
    fn after_tls(&mut self) -> Result<(), String> {
        if self.cfg.client_address != ClientAddressMode::Xclient {
            return self.send_auth();
        }
        let Phase::Backend(dialogue) = &mut self.phase else {
            return Ok(());
        };
        let x = Xclient {
            addr: Some(self.conn.client.ip()),
            port: Some(self.conn.client.port()),
            ttl: Some(dialogue.hops),
            ..Xclient::default()
        };
        dialogue.step = Step::Xclient;
        let line = format!("{}\r\n", xclient::encode(&x));
        dialogue.leg.send(&mut self.io, line.as_bytes())
    }

    fn send_auth(&mut self) -> Result<(), String> {
        let Phase::Backend(dialogue) = &mut self.phase else {
            return Ok(());
        };
        dialogue.step = Step::Auth;
        let response = sasl::encode_plain(&dialogue.account.0, &dialogue.password);
        let mut line = Vec::with_capacity(response.expose().len() + 13);
        line.extend_from_slice(b"AUTH PLAIN ");
        line.extend_from_slice(response.expose());
        line.extend_from_slice(b"\r\n");
        let line = Secret::new(line);
        dialogue.leg.send(&mut self.io, line.expose())
    }

    /// The back-end accepted the login: relay its `+OK`, then splice or relay.
    fn hand_over(&mut self, now: Instant, ok_line: Bytes) {
        let Phase::Backend(mut dialogue) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        self.timers = TimerTable::default();
        let mut ok = ok_line.to_vec();
        ok.extend_from_slice(b"\r\n");
        let handed = relay::hand_over(
            &mut self.io,
            &mut dialogue.leg,
            &mut self.input,
            self.secure,
            &ok,
            &self.cfg,
        );
        match handed {
            Ok(None) => {}
            Ok(Some(relay)) => {
                self.phase = Phase::Relay(relay);
                self.timers
                    .set(Timer::Idle, now + self.cfg.relay_idle_timeout);
            }
            Err(_) => {
                self.io.push(Action::Close { to: Peer::Backend });
                self.io.push(Action::Close { to: Peer::Client });
            }
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
            (Phase::Relay(relay), Peer::Client) => {
                self.timers
                    .set(Timer::Idle, now + self.cfg.relay_idle_timeout);
                if relay.client_bytes(&mut self.io, bytes).is_err() {
                    self.close();
                }
            }
            (Phase::Relay(relay), Peer::Backend) => {
                self.timers
                    .set(Timer::Idle, now + self.cfg.relay_idle_timeout);
                if relay.backend_bytes(&mut self.io, bytes).is_err() {
                    self.close();
                }
            }
            (_, Peer::Backend) => self.on_backend_input(now, bytes),
            (_, Peer::Client) => {
                let limit = self.cfg.limits.max_buffered_input + MAX_READ;
                if self.input.buffered() + bytes.len() > limit {
                    // Only a shell that ignores wants_read gets here.
                    self.reply("-ERR [SYS/PERM] Input buffer overflow");
                    return self.close();
                }
                self.input.push(bytes);
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
        self.io.flush();
    }

    fn handle_reply(&mut self, now: Instant, id: RequestId, reply: Reply) {
        let Phase::Routing { id: waiting, .. } = &self.phase else {
            return;
        };
        if *waiting != id {
            return;
        }
        self.timers.stop(Timer::StoreReply);
        if let Phase::Routing { password, hops, .. } =
            std::mem::replace(&mut self.phase, Phase::Login { user: None })
        {
            self.on_routed(now, reply, password, hops);
        }
        self.resume(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.take_expired(now) {
            self.on_timer(now, timer);
        }
        self.io.flush();
    }

    fn handle_drained(&mut self, now: Instant, to: Peer) {
        match &mut self.phase {
            Phase::Relay(relay) => relay.drained(&mut self.io, to),
            _ if to == Peer::Client => self.io.drained(),
            _ => {}
        }
        self.resume(now);
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.io.poll()
    }

    fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.timers.next_deadline()
    }

    fn wants_read(&self, from: Peer) -> bool {
        match (&self.phase, from) {
            (Phase::Done, _) => false,
            (Phase::Relay(relay), _) => relay.wants_read(&self.io, from),
            (Phase::Backend(dialogue), Peer::Backend) => dialogue.leg.wants_read(),
            (_, Peer::Backend) => false,
            (_, Peer::Client) => {
                !self.peer_eof
                    && self.input.buffered() < self.cfg.limits.max_buffered_input
                    && self.io.backlog() < self.cfg.limits.output_high_water
            }
        }
    }

    fn handle_connected(&mut self, now: Instant, to: Peer, result: Result<(), String>) {
        if to == Peer::Backend {
            self.on_connected(now, result);
        }
        self.io.flush();
    }
}
