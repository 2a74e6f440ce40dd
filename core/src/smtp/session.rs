//! The SMTP/LMTP session state machine: buffering, dispatch and the request cycle.

use crate::outbox::Outbox;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::auth::Sasl;
use super::command::{self, Command, ParseError};
use super::config::{SmtpConfig, SmtpConnInfo, SmtpRole};
use super::data::{Chunk, CommitPlan};
use super::envelope::Envelope;
use super::reply;
use crate::io::{Action, MAX_READ, Peer, RequestId, Session};
use crate::proxy::xclient::{Xclient, XclientError};
use crate::request::{Account, Reply, Request};
use crate::timer::{Timer, TimerTable};
use crate::wire::{DotUnstuffer, LineBuffer, LineEvent};

/// What the bytes from the client are, right now.
#[derive(Debug)]
pub(super) enum Phase {
    /// Command lines.
    Command,
    /// The next line answers an AUTH challenge (RFC 4954 §4).
    Sasl(Sasl),
    /// DATA: raw dot-stuffed bytes up to `CRLF.CRLF` (RFC 5321 §4.1.1.4).
    Data(DotUnstuffer),
    /// BDAT: the raw octets of one chunk (RFC 3030 §2).
    Chunk(Chunk),
    /// QUIT, EOF, a timeout or a fatal error: nothing more is processed.
    Closed,
}

/// What the session waits for before it reads further input.
#[derive(Debug)]
pub(super) enum Waiting {
    /// The password check.
    Authenticate { id: RequestId },
    /// A failed AUTH, answered when [`Timer::AuthDelay`] fires.
    AuthDelay { close_after: bool },
    /// The lookup of a RCPT address.
    Recipient { id: RequestId, address: String },
    /// BeginDelivery, for DATA (`354` follows) or for the first BDAT chunk.
    Begin { id: RequestId, for_data: bool },
    /// One AppendDelivery.
    Append { id: RequestId },
    /// The CommitDelivery at the end of the message.
    Commit { id: RequestId, plan: CommitPlan },
    /// An AbortDelivery; `reply` (complete lines) goes out once it is done.
    Abort { id: RequestId, reply: String },
}

impl Waiting {
    fn request_id(&self) -> Option<RequestId> {
        match self {
            Waiting::Authenticate { id }
            | Waiting::Recipient { id, .. }
            | Waiting::Begin { id, .. }
            | Waiting::Append { id }
            | Waiting::Commit { id, .. }
            | Waiting::Abort { id, .. } => Some(*id),
            Waiting::AuthDelay { .. } => None,
        }
    }
}

/// The client's HELO/EHLO/LHLO.
#[derive(Debug, Clone)]
pub(super) struct Greeted {
    /// The name it gave.
    pub(super) name: String,
    /// EHLO or LHLO (service extensions), not HELO.
    pub(super) extended: bool,
}

/// An SMTP (RFC 5321) or LMTP (RFC 2033) server session for one client connection.
///
/// The listener role ([`SmtpRole`]) decides what it accepts. See the module documentation
/// for the request sequences and the crate documentation for the driving contract.
#[derive(Debug)]
pub struct SmtpSession {
    pub(super) cfg: Arc<SmtpConfig>,
    pub(super) conn: SmtpConnInfo,
    /// `now` at creation, to turn later instants into wall-clock time.
    start: Instant,
    /// TLS is active (after STARTTLS).
    pub(super) secure: bool,
    pub(super) phase: Phase,
    pub(super) waiting: Option<Waiting>,
    pub(super) greeted: Option<Greeted>,
    pub(super) account: Option<Account>,
    /// The mail transaction, from MAIL until its end or RSET.
    pub(super) tx: Option<Envelope>,
    pub(super) input: LineBuffer,
    /// Replies, actions and request ids, in order.
    pub(super) io: Outbox,
    pub(super) timers: TimerTable,
    /// Messages begun, for their ids.
    pub(super) messages: u64,
    /// BeginDelivery requests given up on: a late success is aborted at once.
    pub(super) orphans: Vec<RequestId>,
    bad_commands: u32,
    pub(super) auth_failures: u32,
    /// The client will send nothing more; close once buffered input is handled.
    peer_eof: bool,
    /// Until the client has logged in (submission: AUTH accepted; inbound and LMTP: its
    /// first MAIL accepted) the idle timer never runs past this (`login_timeout`, counted
    /// from the connect). `None` once it has, or when the deadline is out of range.
    pub(super) login_deadline: Option<Instant>,
    /// What a trusted proxy's XCLIENT said beyond the address (which replaces
    /// `conn.client`): the client's own HELO name and the proxy hops still allowed.
    pub(super) forwarded: Forwarded,
}

/// The XCLIENT attributes kept after the address (Postfix `XCLIENT_README`).
#[derive(Debug, Clone, Default)]
pub(super) struct Forwarded {
    /// `HELO=`: the name the real client gave, used in `Received:` instead of the
    /// proxy's own EHLO name.
    pub(super) helo: Option<String>,
    /// `TTL=`: proxy hops still allowed.
    pub(super) ttl: Option<u8>,
}

/// XCLIENT from a peer outside `[trust] networks` (Postfix's answer).
const XCLIENT_UNAUTHORIZED: &str = "550 5.7.0 Not authorized";
/// XCLIENT before EHLO/LHLO, inside a transaction or after AUTH (RFC 5321 §4.2.4 code).
const XCLIENT_BAD_SEQUENCE: &str =
    "503 5.5.1 XCLIENT is allowed only after EHLO, before AUTH and MAIL";
/// A malformed XCLIENT line (RFC 3463 §3.6: `5.5.4` invalid command arguments).
const XCLIENT_SYNTAX: &str = "501 5.5.4 Invalid XCLIENT attributes";

impl SmtpSession {
    /// A session for a connection accepted at `now`; the greeting is queued at once.
    pub fn new(cfg: Arc<SmtpConfig>, conn: SmtpConnInfo, now: Instant) -> Self {
        let greeting = reply::greeting(&cfg.hostname, cfg.role == SmtpRole::Lmtp);
        let mut session = Self::blank(cfg, conn, now);
        session.reply(&greeting);
        session.touch(now);
        session
    }

    /// A session that answers `line` instead of a greeting and closes (RFC 5321 §3.1:
    /// a `554` greeting refuses the connection).
    pub(super) fn refused(
        cfg: Arc<SmtpConfig>,
        conn: SmtpConnInfo,
        now: Instant,
        line: &str,
    ) -> Self {
        let mut session = Self::blank(cfg, conn, now);
        session.reply(line);
        session.close();
        session
    }

    fn blank(cfg: Arc<SmtpConfig>, conn: SmtpConnInfo, now: Instant) -> Self {
        let limits = &cfg.limits;
        // One framer for command lines and SASL responses; the session applies the
        // (smaller) command limit itself, so the framer's limit is the larger one.
        let max_line = limits
            .max_command_line
            .max(limits.max_auth_line)
            .saturating_sub(2);
        let login_deadline = now.checked_add(cfg.login_timeout);
        SmtpSession {
            input: LineBuffer::new(max_line),
            cfg,
            conn,
            start: now,
            secure: false,
            phase: Phase::Command,
            waiting: None,
            greeted: None,
            account: None,
            tx: None,
            io: Outbox::new(),
            timers: TimerTable::default(),
            messages: 0,
            orphans: Vec::new(),
            bad_commands: 0,
            auth_failures: 0,
            peer_eof: false,
            login_deadline,
            forwarded: Forwarded::default(),
        }
    }

    /// True once the session has queued its `Close`.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The client address the session uses (`Received:`, [`Request::Authenticate`],
    /// login penalties): the accepted peer, or what a trusted proxy named with XCLIENT.
    pub fn client(&self) -> std::net::SocketAddr {
        self.conn.client
    }

    /// The proxy hops still allowed (`XCLIENT TTL=`), when a trusted proxy said so.
    pub fn proxy_ttl(&self) -> Option<u8> {
        self.forwarded.ttl
    }

    /// XCLIENT (Postfix `XCLIENT_README`): from a trusted peer after EHLO/LHLO, the
    /// session starts over as a new connection from the named client (a fresh `220`
    /// greeting; the client greets again). Refused after AUTH and inside a transaction.
    fn xclient(&mut self, parsed: Result<Xclient, XclientError>) {
        if !self.conn.may_override_client {
            return self.bad_command(XCLIENT_UNAUTHORIZED);
        }
        if self.greeted.is_none() || self.tx.is_some() || self.account.is_some() {
            return self.bad_command(XCLIENT_BAD_SEQUENCE);
        }
        let x = match parsed {
            Ok(x) => x,
            Err(XclientError::TooLong) => return self.bad_command(reply::LINE_TOO_LONG),
            Err(_) => return self.bad_command(XCLIENT_SYNTAX),
        };
        // xtext can carry CR and LF: a name that is not a HELO name would break the
        // `Received:` field, so the whole line is refused.
        if let Some(helo) = &x.helo
            && !super::address::is_helo_name(helo.as_bytes())
        {
            return self.bad_command(XCLIENT_SYNTAX);
        }
        if let Some(ip) = x.addr {
            self.conn.client = std::net::SocketAddr::new(ip, x.port.unwrap_or(0));
        }
        if x.helo.is_some() {
            self.forwarded.helo = x.helo;
        }
        if x.ttl.is_some() {
            self.forwarded.ttl = x.ttl;
        }
        self.greeted = None;
        let greeting = reply::greeting(&self.cfg.hostname, self.lmtp());
        self.reply(&greeting);
    }

    pub(super) fn lmtp(&self) -> bool {
        self.cfg.role == SmtpRole::Lmtp
    }

    /// Appends one reply line (text without CRLF).
    pub(super) fn reply(&mut self, line: &str) {
        self.io.line(line);
    }

    /// Appends complete reply lines (CRLFs included).
    pub(super) fn reply_raw(&mut self, lines: &str) {
        self.io.out.extend_from_slice(lines.as_bytes());
    }

    /// A reply to a bad command; too many of them end the session.
    pub(super) fn bad_command(&mut self, line: &str) {
        self.reply(line);
        self.bad_commands += 1;
        if self.bad_commands >= self.cfg.limits.max_bad_commands {
            let line = reply::too_many_errors(&self.cfg.hostname);
            self.reply(&line);
            self.close();
        }
    }

    /// Queues a request and arms its reply deadline.
    pub(super) fn request(&mut self, now: Instant, request: Request) -> RequestId {
        let id = self.fire(request);
        self.timers
            .set(Timer::StoreReply, now + self.cfg.store_timeout);
        id
    }

    /// Queues a request whose reply the session will not wait for (an abort on the way
    /// out); its reply is ignored by id.
    pub(super) fn fire(&mut self, request: Request) -> RequestId {
        self.io.request(request)
    }

    /// Queues the final flush and close; the phase becomes [`Phase::Closed`] for good.
    /// A message file the store holds open is aborted first, so nothing is left behind.
    pub(super) fn close(&mut self) {
        if self.is_closed() {
            return;
        }
        let open = self
            .tx
            .take()
            .and_then(|tx| tx.message)
            .and_then(|message| message.delivery);
        if let Some(delivery) = open {
            self.fire(Request::AbortDelivery { delivery });
        }
        self.phase = Phase::Closed;
        self.waiting = None;
        self.timers = TimerTable::default();
        self.input.clear();
        self.io.push(Action::Close { to: Peer::Client });
    }

    /// True while handed-out output the client has not read exceeds the high-water mark.
    fn output_blocked(&self) -> bool {
        self.io.backlog() >= self.cfg.limits.output_high_water
    }

    /// Wall-clock time at `now`: the accept time plus the monotonic time since.
    pub(super) fn unix_time(&self, now: Instant) -> Duration {
        let wall: SystemTime = self.conn.accepted_at + now.saturating_duration_since(self.start);
        wall.duration_since(UNIX_EPOCH).unwrap_or_default()
    }

    /// Input arrived or was used: the client is alive. Arms the idle timeout
    /// (RFC 5321 §4.5.3.2.7), but before the login no later than the login deadline.
    pub(super) fn touch(&mut self, now: Instant) {
        let idle = now.checked_add(self.cfg.idle_timeout);
        let at = match (idle, self.login_deadline) {
            (Some(idle), Some(login)) => Some(idle.min(login)),
            (idle, login) => idle.or(login),
        };
        match at {
            Some(at) => self.timers.set(Timer::Idle, at),
            // Both out of range: a deadline that far away never comes.
            None => self.timers.stop(Timer::Idle),
        }
    }

    /// The client logged in (submission: AUTH accepted) or started its first mail
    /// transaction (inbound, LMTP): from now on only the idle timeout applies.
    pub(super) fn login_done(&mut self, now: Instant) {
        if self.login_deadline.take().is_some() {
            self.touch(now);
        }
    }

    /// Processes buffered input until a request is outstanding, output backs up, or
    /// input runs out.
    pub(super) fn resume(&mut self, now: Instant) {
        while self.waiting.is_none() && !self.is_closed() && !self.output_blocked() {
            let progressed = match self.phase {
                Phase::Data(_) | Phase::Chunk(_) => self.pump(now),
                _ => self.next_line(now),
            };
            if !progressed {
                if self.peer_eof {
                    // Everything the client sent before its EOF has been handled; a
                    // message in progress is aborted by close().
                    self.close();
                }
                break;
            }
        }
        self.io.flush();
    }

    fn next_line(&mut self, now: Instant) -> bool {
        match self.input.next_line() {
            None => false,
            Some(LineEvent::TooLong) => {
                if matches!(self.phase, Phase::Sasl(_)) {
                    // The overlong line was the SASL response: the exchange is over.
                    self.phase = Phase::Command;
                    self.bad_command(reply::AUTH_LINE_TOO_LONG);
                } else {
                    self.bad_command(reply::LINE_TOO_LONG);
                }
                true
            }
            Some(LineEvent::Line(line)) => {
                self.touch(now);
                self.on_line(now, line);
                true
            }
        }
    }

    fn on_line(&mut self, now: Instant, line: Bytes) {
        if let Phase::Sasl(step) = std::mem::replace(&mut self.phase, Phase::Command) {
            if line.len() + 2 > self.cfg.limits.max_auth_line {
                return self.bad_command(reply::AUTH_LINE_TOO_LONG);
            }
            return self.sasl_response(now, step, &line);
        }
        if line.len() + 2 > self.cfg.limits.max_command_line {
            return self.bad_command(reply::LINE_TOO_LONG);
        }
        match command::parse(&line) {
            Ok(command) => self.dispatch(now, command),
            Err(ParseError::Unknown) => self.bad_command(reply::UNKNOWN_COMMAND),
            Err(ParseError::Syntax(why)) => self.bad_command(&reply::syntax(why)),
            Err(ParseError::Address(super::address::AddressError::TooLong)) => {
                self.bad_command(reply::ADDRESS_TOO_LONG)
            }
            Err(ParseError::Address(_)) => self.bad_command(reply::BAD_ADDRESS),
        }
    }

    fn dispatch(&mut self, now: Instant, command: Command) {
        match command {
            Command::Helo(name) => self.hello(now, name, false, false),
            Command::Ehlo(name) => self.hello(now, name, true, false),
            Command::Lhlo(name) => self.hello(now, name, true, true),
            Command::Mail { path, params } => self.mail(now, path, params),
            Command::Rcpt { path, params } => self.rcpt(now, path, params),
            Command::Data => self.data(now),
            Command::Bdat { size, last } => self.bdat(now, size, last),
            Command::Rset => self.reset_then(now, reply::OK),
            Command::Noop => self.reply(reply::OK),
            Command::Quit => {
                let line = reply::closing(&self.cfg.hostname);
                self.reply(&line);
                self.close();
            }
            Command::Vrfy => self.reply(reply::VRFY),
            Command::Expn => self.reply(reply::EXPN),
            Command::Help => self.reply(reply::help(self.cfg.role)),
            Command::StartTls => self.starttls(),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth(now, &mechanism, initial_response),
            Command::Xclient(parsed) => self.xclient(parsed),
        }
    }
}

impl Session for SmtpSession {
    fn handle_input(&mut self, now: Instant, _from: Peer, bytes: &[u8]) {
        if self.is_closed() {
            return;
        }
        let limit = self.cfg.limits.max_buffered_input + MAX_READ;
        if self.input.buffered() + bytes.len() > limit {
            // Only a shell that ignores wants_read gets here.
            let line = reply::input_overflow(&self.cfg.hostname);
            self.reply(&line);
            self.close();
            return;
        }
        self.input.push(bytes);
        self.resume(now);
    }

    fn handle_eof(&mut self, now: Instant, _from: Peer) {
        // A client may pipeline its last commands (QUIT included) and shut its sending
        // side: answer what is buffered first. A message cut short is aborted.
        self.peer_eof = true;
        self.resume(now);
    }

    fn handle_reply(&mut self, now: Instant, id: RequestId, reply: Reply) {
        if self.is_closed() {
            return;
        }
        if self.waiting.as_ref().and_then(Waiting::request_id) != Some(id) {
            self.stray_reply(id, reply);
            self.io.flush();
            return;
        }
        self.timers.stop(Timer::StoreReply);
        match self.waiting.take() {
            Some(Waiting::Authenticate { .. }) => self.on_authenticated(now, reply),
            Some(Waiting::Recipient { address, .. }) => self.on_recipient(address, reply),
            Some(Waiting::Begin { for_data, .. }) => self.on_delivery_started(for_data, reply),
            Some(Waiting::Append { .. }) => self.on_appended(now, reply),
            Some(Waiting::Commit { plan, .. }) => self.on_committed(plan, reply),
            Some(Waiting::Abort { reply, .. }) => self.reply_raw(&reply),
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
        if !self.is_closed() {
            self.resume(now);
        }
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
        self.account.as_ref().map(|a| a.0.as_str())
    }
}
