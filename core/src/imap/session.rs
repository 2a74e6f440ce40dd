//! The IMAP session state machine: its states, command assembly from fragments, and
//! the driving contract. Dispatch is in `dispatch`, store answers and timers in
//! `replies`, and the command groups in their own modules (`auth`, `mailboxes`,
//! `selected`, `rescan`, `fetching`, `append`).

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::command;
use super::config::{ConnInfo, ImapConfig};
use super::fetching::FetchJob;
use super::fragment::{Fragment, Fragmentizer, Literal};
use super::request::{ImapRequest, MailboxRef, MessageMeta};
use super::response::{self, Code, Condition};
use crate::io::{Action, MAX_READ, Peer, RequestId, Session};
use crate::outbox::Outbox;
use crate::request::{Account, Failure, Reply, Request};
use crate::timer::{Timer, TimerTable};

/// The selected mailbox: the session's view of it (RFC 3501 §3.3).
#[derive(Debug)]
pub(super) struct Selected {
    pub(super) mailbox: MailboxRef,
    pub(super) read_only: bool,
    pub(super) uid_validity: u32,
    pub(super) uid_next: u32,
    /// Messages in ascending UID order: the index plus one is the sequence number.
    pub(super) messages: Vec<MessageMeta>,
    /// The mailbox's keywords as last announced in FLAGS (RFC 3501 §7.2.6).
    pub(super) keywords: Vec<String>,
}

impl Selected {
    /// The index of a UID in `messages`.
    pub(super) fn index_of(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    /// The highest sequence number and UID (what `*` means).
    pub(super) fn last(&self) -> (u32, u32) {
        (
            u32::try_from(self.messages.len()).unwrap_or(u32::MAX),
            self.messages.last().map_or(0, |m| m.uid),
        )
    }
}

/// RFC 3501 §3 states.
#[derive(Debug)]
pub(super) enum State {
    /// Before LOGIN/AUTHENTICATE.
    NotAuthenticated,
    /// Logged in, no mailbox selected.
    Authenticated(Account),
    /// A mailbox is selected.
    Selected(Account, Selected),
    /// LOGOUT, EOF, a timeout or a fatal error: nothing more is processed.
    Logout,
}

/// What an outstanding store request is for.
#[derive(Debug)]
pub(super) enum Op {
    Authenticate,
    List {
        reference: String,
        pattern: String,
        subscribed: bool,
    },
    Status {
        name: String,
        items: Vec<command::StatusItem>,
    },
    /// CREATE, DELETE, RENAME, (UN)SUBSCRIBE: OK or NO.
    Plain(&'static str),
    Select {
        account: Account,
        mailbox: MailboxRef,
        read_only: bool,
    },
    Store {
        uid: bool,
        silent: bool,
    },
    Copy {
        uid: bool,
        remove: bool,
    },
    /// EXPUNGE, UID EXPUNGE, or the silent expunge of CLOSE.
    Expunge {
        close: bool,
    },
    Search {
        uid: bool,
    },
    /// NOOP, CHECK or an IDLE rescan; `text` is the tagged OK text (`None` in IDLE).
    Poll {
        text: Option<&'static str>,
    },
    /// FETCH marking messages `\Seen` before it answers.
    FetchSeen(FetchJob),
    AppendBegin {
        literal: Literal,
    },
    AppendData,
    AppendCommit,
    AppendAbort,
}

/// What the session waits for before it reads the next fragment.
#[derive(Debug)]
pub(super) enum Waiting {
    /// A store request.
    Request { id: RequestId, tag: String, op: Op },
    /// A failed login, answered when [`Timer::AuthDelay`] fires.
    AuthDelay { tag: String, close_after: bool },
    /// A FETCH in progress (its own request, or paused for output to drain).
    Fetch(FetchJob),
}

/// An IMAP4rev1 server session for one client connection (RFC 3501).
///
/// Implements [`Session`]; wrap it in [`crate::tls::Secured`] for STARTTLS or an
/// implicit-TLS port. See the crate documentation for the driving contract and
/// `docs/imap.md` for the commands, limits and requests.
#[derive(Debug)]
pub struct ImapSession {
    pub(super) cfg: Arc<ImapConfig>,
    pub(super) conn: ConnInfo,
    pub(super) secure: bool,
    pub(super) state: State,
    pub(super) waiting: Option<Waiting>,
    pub(super) input: Fragmentizer,
    /// The command being assembled: its lines joined by CRLF with literals in place.
    /// Replaced, not cleared, once used: an idle session keeps no command buffer.
    pub(super) command: BytesMut,
    /// AUTHENTICATE sent `+`: the next line is the SASL response (holds the tag).
    pub(super) sasl_tag: Option<String>,
    /// IDLE is active (holds the tag); the next line should be DONE (RFC 2177).
    pub(super) idle_tag: Option<String>,
    /// Rescan deadline while idling.
    pub(super) poll_at: Option<Instant>,
    /// An APPEND whose literal is being received.
    pub(super) append: Option<super::append::Appending>,
    pub(super) io: Outbox,
    pub(super) timers: TimerTable,
    bad_commands: u32,
    pub(super) auth_failures: u32,
    peer_eof: bool,
    /// Requests given up on whose late reply still needs handling: an AppendBegin
    /// that timed out (a late `AppendStarted` is aborted) and the aborts themselves.
    pub(super) orphans: Vec<RequestId>,
    /// `x-proxy-ttl` from a trusted ID: the proxy hops still allowed after this server.
    pub(super) proxy_ttl: Option<u8>,
    /// Past this instant a not-authenticated session is closed (`login_timeout`).
    login_deadline: Instant,
}

impl ImapSession {
    /// A session for a connection accepted at `now`; the greeting is queued at once.
    pub fn new(cfg: Arc<ImapConfig>, conn: ConnInfo, now: Instant) -> Self {
        let cfg_login_timeout = cfg.login_timeout;
        let mut session = ImapSession {
            input: Fragmentizer::new(cfg.limits.max_line),
            secure: conn.implicit_tls,
            cfg,
            conn,
            state: State::NotAuthenticated,
            waiting: None,
            command: BytesMut::new(),
            sasl_tag: None,
            idle_tag: None,
            poll_at: None,
            append: None,
            io: Outbox::new(),
            timers: TimerTable::default(),
            bad_commands: 0,
            auth_failures: 0,
            peer_eof: false,
            orphans: Vec::new(),
            proxy_ttl: None,
            login_deadline: now + cfg_login_timeout,
        };
        let greeting = format!("{} IMAP4rev1 ready", session.cfg.hostname);
        let caps = Code::Capability(session.capabilities());
        session.untagged(Condition::Ok, Some(&caps), &greeting);
        session.arm_idle(now);
        session
    }

    /// Arms the autologout: `idle_timeout` from `now`, but before login no later than
    /// the login deadline.
    pub(super) fn arm_idle(&mut self, now: Instant) {
        let idle = now + self.cfg.idle_timeout;
        let at = match self.state {
            State::NotAuthenticated => idle.min(self.login_deadline),
            _ => idle,
        };
        self.timers.set(Timer::Idle, at);
    }

    /// The client address the session uses (logging, [`crate::Request::Authenticate`]):
    /// the accepted peer, or what a trusted proxy named in ID before login.
    pub fn client(&self) -> std::net::SocketAddr {
        self.conn.client
    }

    /// The proxy hops still allowed (ID `x-proxy-ttl`), when a trusted proxy said so.
    pub fn proxy_ttl(&self) -> Option<u8> {
        self.proxy_ttl
    }

    /// The ID fields of a proxy (RFC 2971; Dovecot's `x-originating-ip`,
    /// `x-originating-port`, `x-proxy-ttl`): believed only from a peer with
    /// `may_override_client` and only before login; otherwise ignored, as ID is
    /// informational (RFC 2971 §3.1).
    pub(super) fn learn_client(&mut self, pairs: &[crate::proxy::imap_id::IdPair]) {
        if !self.conn.may_override_client || self.account().is_some() {
            return;
        }
        let named = crate::proxy::imap_id::client_of(pairs);
        if let Some(ip) = named.ip {
            self.conn.client = std::net::SocketAddr::new(ip, named.port.unwrap_or(0));
        }
        if named.ttl.is_some() {
            self.proxy_ttl = named.ttl;
        }
    }

    /// True once the session has queued its `Close`.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Logout)
    }

    /// The capability list for the current state (RFC 3501 §7.2.1).
    pub(super) fn capabilities(&self) -> String {
        let mut caps = String::from(
            "IMAP4rev1 LITERAL+ SASL-IR IDLE UIDPLUS MOVE NAMESPACE ID ENABLE UNSELECT SPECIAL-USE CHILDREN",
        );
        if matches!(self.state, State::NotAuthenticated) {
            if self.conn.starttls_available && !self.secure {
                caps.push_str(" STARTTLS");
            }
            if self.login_allowed() {
                caps.push_str(" AUTH=PLAIN");
            } else {
                caps.push_str(" LOGINDISABLED");
            }
        }
        caps
    }

    /// Whether a password may be sent now (RFC 3501 §6.2.3, `[tls] plaintext_auth`).
    pub(super) fn login_allowed(&self) -> bool {
        self.secure || self.conn.plaintext_auth
    }

    /// Appends a tagged status response; nothing once the session has closed.
    pub(super) fn tagged(&mut self, tag: &str, cond: Condition, code: Option<&Code>, text: &str) {
        if !self.is_closed() {
            response::status(&mut self.io.out, Some(tag), cond, code, text);
        }
    }

    /// Appends an untagged status response; nothing once the session has closed.
    pub(super) fn untagged(&mut self, cond: Condition, code: Option<&Code>, text: &str) {
        if !self.is_closed() {
            response::status(&mut self.io.out, None, cond, code, text);
        }
    }

    /// Appends raw response bytes; nothing once the session has closed.
    pub(super) fn raw(&mut self, bytes: &[u8]) {
        if !self.is_closed() {
            self.io.out.extend_from_slice(bytes);
        }
    }

    /// Queues a store request, arms its deadline and waits for it.
    pub(super) fn request(&mut self, now: Instant, tag: &str, op: Op, request: ImapRequest) {
        let id = self.send(now, Request::Imap(request));
        self.waiting = Some(Waiting::Request {
            id,
            tag: tag.to_owned(),
            op,
        });
    }

    /// Queues a request without choosing what to wait for.
    pub(super) fn send(&mut self, now: Instant, request: Request) -> RequestId {
        let id = self.io.request(request);
        self.timers
            .set(Timer::StoreReply, now + self.cfg.store_timeout);
        id
    }

    /// Queues the final flush and close; the state becomes [`State::Logout`] for good.
    pub(super) fn close(&mut self) {
        if !self.is_closed() {
            self.state = State::Logout;
            self.waiting = None;
            self.timers = TimerTable::default();
            self.poll_at = None;
            self.input.clear();
            self.io.push(Action::Close { to: Peer::Client });
        }
    }

    pub(super) fn output_blocked(&self) -> bool {
        self.io.backlog() >= self.cfg.limits.output_high_water
    }

    /// The account, when logged in.
    pub(super) fn account(&self) -> Option<&Account> {
        match &self.state {
            State::Authenticated(a) | State::Selected(a, _) => Some(a),
            _ => None,
        }
    }

    /// Processes buffered fragments until one needs a request, output backs up, or
    /// input runs out.
    pub(super) fn resume(&mut self, now: Instant) {
        while self.waiting.is_none() && !self.is_closed() && !self.output_blocked() {
            let Some(fragment) = self.input.next_fragment() else {
                if self.peer_eof {
                    match self.append.take() {
                        // The message will never be complete: drop it, then close.
                        Some(appending) => self.abort_quietly(now, &appending),
                        None => self.close(),
                    }
                }
                break;
            };
            self.arm_idle(now);
            match fragment {
                Fragment::Line { bytes, literal } => self.on_line(now, bytes, literal),
                Fragment::LiteralData(data) => self.on_literal_data(now, data),
                Fragment::LiteralEnd => self.on_literal_end(now),
                Fragment::LineTooLong => {
                    // The tag of the command the line belonged to, when it is known.
                    let tag = tag_of(&self.command)
                        .or_else(|| self.sasl_tag.take())
                        .or_else(|| self.idle_tag.take());
                    self.command = BytesMut::new();
                    self.sasl_tag = None;
                    if let Some(appending) = self.append.take() {
                        self.abort_append(now, appending, "Command line too long");
                    } else {
                        self.bad(tag.as_deref(), "Command line too long");
                    }
                }
            }
        }
        self.io.flush();
    }

    fn on_line(&mut self, now: Instant, line: Bytes, literal: Option<Literal>) {
        if self.append.is_some() {
            return self.append_tail(now, &line, literal);
        }
        if let Some(tag) = self.sasl_tag.take() {
            if literal.is_some() {
                self.input.reject_literal();
            }
            return self.sasl_response(now, tag, &line);
        }
        if let Some(tag) = self.idle_tag.take() {
            if literal.is_some() {
                self.input.reject_literal();
            }
            self.poll_at = None;
            return if line.eq_ignore_ascii_case(b"DONE") {
                self.tagged(&tag, Condition::Ok, None, "IDLE terminated");
            } else {
                self.bad(Some(&tag), "Expected DONE");
            };
        }
        self.command.extend_from_slice(&line);
        if self.command.len() > self.cfg.limits.max_command {
            let tag = tag_of(&self.command);
            self.command = BytesMut::new();
            if literal.is_some() {
                self.input.reject_literal();
            }
            return self.bad(tag.as_deref(), "Command too long");
        }
        match literal {
            Some(literal) => self.on_announced(now, literal),
            None => {
                let complete = std::mem::take(&mut self.command).freeze();
                self.execute(now, &complete);
            }
        }
    }

    /// The current line announced a literal: take it into the command, start an
    /// APPEND, or refuse it (never with `+`).
    fn on_announced(&mut self, now: Instant, literal: Literal) {
        if self.account().is_some()
            && let Some(prefix) = command::parse_append_prefix(&self.command)
        {
            self.command = BytesMut::new();
            return self.start_append(now, prefix, literal);
        }
        let authenticated = self.account().is_some();
        if !authenticated && !literal_allowed_before_login(&self.command) {
            // Only LOGIN and ID take strings before login: refuse anything else before
            // the client sends its literal, so unauthenticated input stays small.
            let tag = tag_of(&self.command);
            self.command = BytesMut::new();
            self.input.reject_literal();
            return self.bad(tag.as_deref(), "Log in first");
        }
        let limit = if authenticated {
            self.cfg.limits.max_command
        } else {
            MAX_COMMAND_BEFORE_LOGIN
        };
        let fits = literal
            .length
            .is_some_and(|n| self.command.len() + 2 + n as usize <= limit);
        if !fits {
            let tag = tag_of(&self.command);
            self.command = BytesMut::new();
            self.input.reject_literal();
            return match tag {
                Some(tag) => {
                    self.tagged(
                        &tag,
                        Condition::Bad,
                        Some(&Code::TooBig),
                        "Literal too large",
                    );
                    self.count_bad();
                }
                None => self.bad(None, "Literal too large"),
            };
        }
        if literal.sync {
            response::continuation(&mut self.io.out, "Ready for literal data");
        }
        self.command.extend_from_slice(b"\r\n");
        self.input.accept_literal();
    }

    fn on_literal_data(&mut self, now: Instant, data: Bytes) {
        if self.append.is_some() {
            self.append_data(now, data);
        } else {
            self.command.extend_from_slice(&data);
        }
    }

    fn on_literal_end(&mut self, now: Instant) {
        if self.append.is_some() {
            self.append_literal_end(now);
        }
    }

    /// A BAD response (tagged when the tag is known) counted against the limit.
    pub(super) fn bad(&mut self, tag: Option<&str>, text: &str) {
        match tag {
            Some(tag) => self.tagged(tag, Condition::Bad, None, text),
            None => self.untagged(Condition::Bad, None, text),
        }
        self.count_bad();
    }

    pub(super) fn count_bad(&mut self) {
        self.bad_commands += 1;
        if self.bad_commands >= self.cfg.limits.max_bad_commands {
            self.untagged(Condition::Bye, None, "Too many invalid commands");
            self.close();
        }
    }

    /// The mailbox reference for a name of the logged-in account.
    pub(super) fn mailbox_ref(&self, name: String) -> Option<MailboxRef> {
        self.account().map(|account| MailboxRef {
            account: account.clone(),
            name,
        })
    }

    /// The tagged NO for a failed store request (RFC 5530 codes).
    pub(super) fn reply_failure(&mut self, tag: &str, reply: Reply, target: bool) {
        let (code, text) = match reply {
            Reply::Failed(Failure::Gone) if target => (Code::TryCreate, "No such mailbox"),
            Reply::Failed(Failure::Gone) => (Code::Nonexistent, "No such mailbox or message"),
            Reply::Failed(Failure::Temporary(_)) => {
                (Code::Unavailable, "Temporary failure, try again later")
            }
            Reply::Failed(Failure::OverQuota) => (Code::Limit, "Quota exceeded"),
            Reply::Failed(Failure::InUse) => (Code::InUse, "Mailbox is in use"),
            Reply::Imap(super::ImapReply::AlreadyExists) => {
                (Code::AlreadyExists, "Mailbox already exists")
            }
            _ => (Code::ServerBug, "The store failed"),
        };
        self.tagged(tag, Condition::No, Some(&code), text);
    }
}

/// The longest command with literals accepted before login: a LOGIN with a long
/// password, or an ID with its fields, never needs more.
const MAX_COMMAND_BEFORE_LOGIN: usize = 8 * 1024;

/// True when the command so far is one that may carry a literal before login.
fn literal_allowed_before_login(command: &[u8]) -> bool {
    let mut words = command.splitn(3, |&b| b == b' ');
    let _tag = words.next();
    words
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case(b"LOGIN") || name.eq_ignore_ascii_case(b"ID"))
}

/// The tag at the start of a command, when it is a valid one.
fn tag_of(command: &[u8]) -> Option<String> {
    let end = command
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or(command.len());
    let tag = &command[..end];
    let valid = !tag.is_empty()
        && tag.len() <= command::MAX_TAG_LEN
        && tag
            .iter()
            .all(|&b| (response::is_atom_char(b) || b == b']') && b != b'+');
    valid.then(|| String::from_utf8_lossy(tag).into_owned())
}

impl Session for ImapSession {
    fn handle_input(&mut self, now: Instant, _from: Peer, bytes: &[u8]) {
        if self.is_closed() {
            return;
        }
        if self.input.buffered() + bytes.len() > self.cfg.limits.max_buffered_input + MAX_READ {
            // Only a shell that ignores wants_read gets here.
            self.untagged(Condition::Bye, None, "Input buffer overflow");
            self.close();
            return;
        }
        self.input.push(bytes);
        self.resume(now);
    }

    fn handle_eof(&mut self, now: Instant, _from: Peer) {
        self.peer_eof = true;
        self.resume(now);
    }

    fn handle_reply(&mut self, now: Instant, id: RequestId, reply: Reply) {
        if self.is_closed() {
            return;
        }
        if let Some(i) = self.orphans.iter().position(|o| *o == id) {
            self.orphans.swap_remove(i);
            return self.on_orphan_reply(reply);
        }
        let expected = match &self.waiting {
            Some(Waiting::Request { id, .. }) => Some(*id),
            Some(Waiting::Fetch(job)) => job.request,
            _ => None,
        };
        if expected != Some(id) {
            return;
        }
        self.timers.stop(Timer::StoreReply);
        match self.waiting.take() {
            Some(Waiting::Request { tag, op, .. }) => self.on_reply(now, tag, op, reply),
            Some(Waiting::Fetch(job)) => self.on_fetch_reply(now, job, reply),
            other => self.waiting = other,
        }
        self.resume(now);
        if self.peer_eof && self.waiting.is_none() {
            self.close();
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.take_expired(now) {
            self.on_timer(now, timer);
        }
        if self.poll_at.is_some_and(|at| at <= now) && !self.is_closed() {
            self.poll_at = None;
            if self.idle_tag.is_some() {
                if self.waiting.is_none() {
                    self.idle_poll(now);
                } else {
                    self.poll_at = Some(now + self.cfg.idle_poll_interval);
                }
            }
        }
        self.io.flush();
    }

    fn handle_drained(&mut self, now: Instant, _to: Peer) {
        self.io.drained();
        if self.is_closed() {
            return;
        }
        match self.waiting.take() {
            Some(Waiting::Fetch(job)) if job.request.is_none() => self.continue_fetch(now, job),
            other => self.waiting = other,
        }
        self.resume(now);
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.io.poll()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next_deadline(), self.poll_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
        ImapSession::account(self).map(|a| a.0.as_str())
    }
}
