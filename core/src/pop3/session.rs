//! The POP3 session state machine: buffering, dispatch, timers and the request cycle.

use crate::outbox::Outbox;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::command::{self, Command, ParseError};
use super::config::{ConnInfo, Pop3Config};
use super::transaction::{Mailbox, Streaming};
use crate::io::{Action, MAX_READ, Peer, RequestId, Session};
use crate::request::{Account, Reply, Request};
use crate::timer::{Timer, TimerTable};
use crate::wire::{LineBuffer, LineEvent};

/// RFC 1939 §3 states, plus the SASL exchange inside AUTHORIZATION.
#[derive(Debug)]
pub(super) enum State {
    /// Before login; `user` holds the name from USER.
    Authorization { user: Option<String> },
    /// `AUTH PLAIN` sent `+ `; the next line is the client's response (RFC 5034 §4).
    SaslResponse,
    /// Logged in with the mailbox listed.
    Transaction(Mailbox),
    /// QUIT, EOF, a timeout or a fatal error: nothing more is processed.
    Closed,
}

/// What the session is waiting for before it reads the next command.
#[derive(Debug)]
pub(super) enum Waiting {
    /// The password check.
    Authenticate { id: RequestId },
    /// The mailbox listing after a successful login.
    Listing { id: RequestId, account: Account },
    /// A failed login, answered when [`Timer::AuthDelay`] fires.
    AuthDelay { close_after: bool },
    /// A RETR or TOP in progress.
    Read(Streaming),
    /// QUIT's UPDATE state.
    Commit { id: RequestId, deleted: usize },
}

/// A POP3 server session for one client connection.
///
/// See the crate documentation for the driving contract.
#[derive(Debug)]
pub struct Pop3Session {
    pub(super) cfg: Arc<Pop3Config>,
    pub(super) conn: ConnInfo,
    /// TLS is active (implicit, or after STLS).
    pub(super) secure: bool,
    pub(super) state: State,
    pub(super) waiting: Option<Waiting>,
    input: LineBuffer,
    /// Replies, actions and request ids, in order.
    pub(super) io: Outbox,
    pub(super) timers: TimerTable,
    bad_commands: u32,
    pub(super) auth_failures: u32,
    /// The client will send nothing more; close once buffered commands are answered.
    peer_eof: bool,
    /// The account whose mailbox the store locked for this session (with
    /// `mailbox_lock`), released when the session closes.
    pub(super) locked: Option<Account>,
    /// `TTL=` from a trusted XCLIENT: the proxy hops still allowed after this server.
    pub(super) proxy_ttl: Option<u8>,
    /// Past this instant an unauthenticated session is closed (`login_timeout`).
    login_deadline: Instant,
}

impl Pop3Session {
    /// A session for a connection accepted at `now`; the greeting is queued at once.
    pub fn new(cfg: Arc<Pop3Config>, conn: ConnInfo, now: Instant) -> Self {
        let secure = conn.implicit_tls;
        let cfg_login_timeout = cfg.login_timeout;
        let mut session = Pop3Session {
            input: LineBuffer::new(cfg.limits.max_line),
            cfg,
            conn,
            secure,
            state: State::Authorization { user: None },
            waiting: None,
            io: Outbox::new(),
            timers: TimerTable::default(),
            bad_commands: 0,
            proxy_ttl: None,
            auth_failures: 0,
            peer_eof: false,
            locked: None,
            login_deadline: now + cfg_login_timeout,
        };
        let _ = write!(
            session.io.out,
            "+OK {} POP3 ready\r\n",
            session.cfg.hostname
        );
        session.arm_idle(now);
        session
    }

    /// Arms the autologout: `idle_timeout` from `now`, but before login no later than
    /// the login deadline.
    pub(super) fn arm_idle(&mut self, now: Instant) {
        let idle = now + self.cfg.idle_timeout;
        let at = match self.state {
            State::Transaction(_) => idle,
            _ => idle.min(self.login_deadline),
        };
        self.timers.set(Timer::Idle, at);
    }

    /// True once the session has queued its `Close`.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The client address the session uses (logging, [`Request::Authenticate`], login
    /// penalties): the accepted peer, or what a trusted proxy named with `XCLIENT`.
    pub fn client(&self) -> std::net::SocketAddr {
        self.conn.client
    }

    /// The proxy hops still allowed (`XCLIENT TTL=`), when a trusted proxy said so.
    pub fn proxy_ttl(&self) -> Option<u8> {
        self.proxy_ttl
    }

    /// Appends one reply line (text without CRLF).
    pub(super) fn reply(&mut self, line: &str) {
        self.io.line(line);
    }

    /// Queues a request and arms its reply deadline.
    pub(super) fn request(&mut self, now: Instant, request: Request) -> RequestId {
        let id = self.io.request(request);
        self.timers
            .set(Timer::StoreReply, now + self.cfg.store_timeout);
        id
    }

    /// Queues the final flush and close; the state becomes [`State::Closed`] for good.
    pub(super) fn close(&mut self) {
        if !self.is_closed() {
            self.state = State::Closed;
            self.waiting = None;
            self.timers = TimerTable::default();
            self.input.clear();
            if let Some(account) = self.locked.take() {
                // Fire and forget: the reply arrives after the close and is ignored.
                let _ = self.io.request(Request::ReleaseMailbox { account });
            }
            self.io.push(Action::Close { to: Peer::Client });
        }
    }

    /// True while handed-out output the client has not read exceeds the high-water mark.
    pub(super) fn output_blocked(&self) -> bool {
        self.io.backlog() >= self.cfg.limits.output_high_water
    }

    /// Processes buffered command lines until one needs a request, output backs up, or
    /// input runs out.
    pub(super) fn resume(&mut self, now: Instant) {
        while self.waiting.is_none() && !self.is_closed() && !self.output_blocked() {
            match self.input.next_line() {
                None => {
                    if self.peer_eof {
                        // Every complete command sent before the EOF has been answered.
                        self.close();
                    }
                    break;
                }
                Some(LineEvent::TooLong) => {
                    if matches!(self.state, State::SaslResponse) {
                        // The overlong line was the SASL response: the exchange is over.
                        self.state = State::Authorization { user: None };
                    }
                    self.bad_command("-ERR Command line too long");
                }
                Some(LineEvent::Line(line)) => {
                    self.arm_idle(now);
                    self.on_line(now, line);
                }
            }
        }
        self.io.flush();
    }

    fn on_line(&mut self, now: Instant, line: Bytes) {
        if matches!(self.state, State::SaslResponse) {
            self.state = State::Authorization { user: None };
            return self.sasl_response(now, &line);
        }
        match command::parse(&line) {
            Ok(command) => self.dispatch(now, command),
            Err(ParseError::Unknown) => self.bad_command("-ERR Unknown command"),
            Err(ParseError::Syntax(why)) => self.bad_command(&format!("-ERR Syntax error: {why}")),
        }
    }

    pub(super) fn bad_command(&mut self, reply: &str) {
        self.reply(reply);
        self.bad_commands += 1;
        if self.bad_commands >= self.cfg.limits.max_bad_commands {
            self.reply("-ERR Too many bad commands, closing connection");
            self.close();
        }
    }

    fn dispatch(&mut self, now: Instant, command: Command) {
        let in_transaction = matches!(self.state, State::Transaction(_));
        match command {
            Command::Capa => self.capa(),
            Command::Noop if in_transaction => self.reply("+OK"),
            Command::Quit => self.quit(now),
            Command::Stls if !in_transaction => self.stls(),
            Command::User(name) if !in_transaction => self.user(name),
            Command::Pass(secret) if !in_transaction => self.pass(now, secret),
            Command::Auth {
                mechanism,
                initial_response,
            } if !in_transaction => self.auth(now, mechanism, initial_response),
            Command::Stat if in_transaction => self.stat(),
            Command::List(n) if in_transaction => self.list(n),
            Command::Uidl(n) if in_transaction => self.uidl(n),
            Command::Retr(n) if in_transaction => self.retrieve(now, n, None),
            Command::Top(n, lines) if in_transaction => self.retrieve(now, n, Some(lines)),
            Command::Dele(n) if in_transaction => self.dele(n),
            Command::Rset if in_transaction => self.rset(),
            Command::Xclient(parsed) if self.conn.may_override_client => self.xclient(parsed),
            // From an untrusted peer XCLIENT is a command like any unknown one.
            Command::Xclient(_) => self.bad_command("-ERR Unknown command"),
            _ => self.bad_command("-ERR Command not valid in this state"),
        }
    }

    fn capa(&mut self) {
        self.io.out.extend_from_slice(
            b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n",
        );
        // RFC 2449 §5: capabilities of the AUTHORIZATION state are announced in both states.
        if self.login_allowed() {
            self.io.out.extend_from_slice(b"USER\r\nSASL PLAIN\r\n");
        }
        if self.stls_available() {
            self.io.out.extend_from_slice(b"STLS\r\n");
        }
        if self.conn.may_override_client {
            self.io.out.extend_from_slice(b"XCLIENT\r\n");
        }
        self.io
            .out
            .extend_from_slice(b"IMPLEMENTATION tidegate\r\n.\r\n");
    }

    pub(super) fn stls_available(&self) -> bool {
        self.conn.starttls_available && !self.secure
    }

    /// Whether a password may be sent now (RFC 2595 §2.1 and `[tls] plaintext_auth`).
    pub(super) fn login_allowed(&self) -> bool {
        self.secure || self.conn.plaintext_auth
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
        // RFC 2595 §4: forget everything before TLS; pipelined plaintext after STLS is
        // discarded so it cannot be injected into the TLS session (CVE-2011-0411).
        self.input.clear();
        self.secure = true;
        self.state = State::Authorization { user: None };
    }

    fn quit(&mut self, now: Instant) {
        match std::mem::replace(&mut self.state, State::Authorization { user: None }) {
            State::Transaction(mailbox) => self.commit(now, mailbox),
            _ => {
                let line = format!("+OK {} POP3 closing", self.cfg.hostname);
                self.reply(&line);
                self.close();
            }
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Idle => {
                // RFC 1939 §3 autologout: close without entering UPDATE. In the middle of
                // a message transfer an error line would read as message text, so the
                // close alone says it.
                let mid_transfer = matches!(&self.waiting, Some(Waiting::Read(s)) if s.started);
                if !mid_transfer {
                    self.reply(match self.state {
                        State::Transaction(_) => "-ERR Autologout: idle for too long",
                        _ => "-ERR Autologout: no login in time",
                    });
                }
                self.close();
            }
            Timer::StoreReply => self.store_timed_out(now),
            Timer::AuthDelay => self.auth_delay_over(now),
        }
    }

    fn store_timed_out(&mut self, now: Instant) {
        match self.waiting.take() {
            Some(Waiting::Read(streaming)) if streaming.started => self.close(),
            Some(Waiting::Commit { .. }) => {
                self.reply("-ERR [SYS/TEMP] Storage did not answer; deletions may not be applied");
                self.close();
            }
            Some(_) => {
                self.reply("-ERR [SYS/TEMP] Storage did not answer, try again later");
                self.resume(now);
            }
            None => {}
        }
    }
}

impl Session for Pop3Session {
    fn handle_input(&mut self, now: Instant, _from: Peer, bytes: &[u8]) {
        if self.is_closed() {
            return;
        }
        let limit = self.cfg.limits.max_buffered_input + MAX_READ;
        if self.input.buffered() + bytes.len() > limit {
            // Only a shell that ignores wants_read gets here.
            self.reply("-ERR [SYS/PERM] Input buffer overflow");
            self.close();
            return;
        }
        self.input.push(bytes);
        self.resume(now);
    }

    fn handle_eof(&mut self, now: Instant, _from: Peer) {
        // A client may send its last commands (QUIT included) and then shut its sending
        // side: answer what is buffered first. RFC 1939 §6: a connection that ends
        // without QUIT does not enter UPDATE, which close() guarantees.
        self.peer_eof = true;
        self.resume(now);
    }

    fn handle_reply(&mut self, now: Instant, id: RequestId, reply: Reply) {
        if self.is_closed() {
            return;
        }
        if self.waiting.as_ref().and_then(Waiting::request_id) != Some(id) {
            // A late reply to a request the session gave up on.
            return;
        }
        self.timers.stop(Timer::StoreReply);
        match self.waiting.take() {
            Some(Waiting::Authenticate { .. }) => self.on_authenticated(now, reply),
            Some(Waiting::Listing { account, .. }) => self.on_listing(now, account, reply),
            Some(Waiting::Read(streaming)) => self.on_chunk(now, streaming, reply),
            Some(Waiting::Commit { deleted, .. }) => self.on_committed(deleted, reply),
            Some(Waiting::AuthDelay { .. }) | None => {}
        }
        self.resume(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.take_expired(now) {
            self.on_timer(now, timer);
        }
        self.io.flush();
    }

    fn handle_drained(&mut self, now: Instant, _to: Peer) {
        self.io.drained();
        if self.is_closed() {
            return;
        }
        self.continue_streaming(now);
        self.resume(now);
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.io.poll()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    fn wants_read(&self, _from: Peer) -> bool {
        !self.is_closed()
            && !self.peer_eof
            && self.input.buffered() < self.cfg.limits.max_buffered_input
            && !self.output_blocked()
    }

    fn handle_abort(&mut self, _now: Instant) {
        self.close();
    }

    fn account(&self) -> Option<&str> {
        match &self.state {
            State::Transaction(mailbox) => Some(mailbox.account().0.as_str()),
            _ => None,
        }
    }
}

impl Waiting {
    /// The request this wait is for, if it is waiting for one.
    fn request_id(&self) -> Option<RequestId> {
        match self {
            Waiting::Authenticate { id }
            | Waiting::Listing { id, .. }
            | Waiting::Commit { id, .. } => Some(*id),
            Waiting::Read(streaming) => streaming.request,
            Waiting::AuthDelay { .. } => None,
        }
    }
}
