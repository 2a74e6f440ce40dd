//! The client state machine: the greeting, one mail transaction (or several, with
//! [`ClientConfig::reuse`]), QUIT.
//!
//! Every command sent pushes what its reply means onto a queue (`Expect`); every reply
//! read pops the front, so pipelined groups (RFC 2920) and one-at-a-time dialogues run
//! the same code, and each reply is matched to its command in order. The mail
//! transaction itself is in `transaction.rs`.

mod transaction;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};

use super::capabilities::Capabilities;
use super::config::{ClientConfig, Envelope, StartTls};
use super::data::BodyEncoder;
use super::reply::{ReplyReader, SmtpReply};
use super::report::{Failure, RecipientStatus, Report};
use crate::proxy::xclient::Xclient;

/// BDAT commands in flight at once when the server offers PIPELINING (RFC 3030 §4.2
/// lets them be pipelined); without it each chunk waits for its reply.
const BDAT_WINDOW: usize = 4;

/// Something the driver must do for the session.
#[must_use = "every ClientEvent must be carried out by the driver"]
#[derive(Debug)]
pub enum ClientEvent {
    /// Send these bytes to the server, after all earlier ones.
    Send(Bytes),
    /// Start a TLS handshake on the connection now (RFC 3207 §4 after `220`), then call
    /// [`ClientSession::handle_tls_ready`] or [`ClientSession::handle_tls_failed`].
    /// Every later byte in both directions goes through TLS.
    StartTls,
    /// Read up to `max` more bytes of the message and pass them to
    /// [`ClientSession::handle_body`] (with `last` at the end of the message).
    ReadBody {
        /// The most bytes wanted.
        max: usize,
    },
    /// The outcome of the current transaction, exactly once per transaction. Commands
    /// may still follow (QUIT, or RSET before the session becomes idle).
    Finished(Report),
    /// Close the connection; nothing follows.
    Close,
}

/// What the reply at the front of the queue answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    /// `AUTH LOGIN`, waiting for the user name challenge.
    AuthLoginUser,
    /// The user name sent, waiting for the password challenge.
    AuthLoginPassword,
    /// `AUTH PLAIN …` or the LOGIN password, waiting for `235`.
    AuthDone,
    /// `XCLIENT …` before MAIL, waiting for the server's new `220` greeting.
    Xclient,
    Mail,
    Rcpt(usize),
    Data,
    /// One BDAT chunk; `last` carries the final reply.
    Bdat {
        last: bool,
    },
    /// The `.` line ending DATA.
    DataEnd,
    /// LMTP: the reply for the accepted recipient with this index after the `.`
    /// (RFC 2033 §4.2: one per accepted recipient, in RCPT order).
    LmtpDataEnd(usize),
    /// A lone `.` after `354` when no recipient was accepted (RFC 2920 §3.1); its reply
    /// is ignored.
    EmptyData,
    /// `RSET` after a transaction that did not complete, before the connection is
    /// reused (RFC 5321 §4.1.1.5).
    Rset,
    Quit,
}

/// How a transaction left the server, for what the session does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Completed (the reply to the end of the data, or nothing was sent): the next MAIL
    /// may follow at once (RFC 5321 §3.3).
    Clean,
    /// Broken off inside the transaction (MAIL or every RCPT refused, DATA or a BDAT
    /// chunk refused): RSET first.
    Reset,
}

impl Expect {
    fn name(self) -> &'static str {
        match self {
            Expect::Greeting => "the greeting",
            Expect::Ehlo => "EHLO",
            Expect::Helo => "HELO",
            Expect::StartTls => "STARTTLS",
            Expect::AuthLoginUser | Expect::AuthLoginPassword | Expect::AuthDone => "AUTH",
            Expect::Xclient => "XCLIENT",
            Expect::Mail => "MAIL FROM",
            Expect::Rcpt(_) => "RCPT TO",
            Expect::Data => "DATA",
            Expect::Bdat { .. } => "BDAT",
            Expect::DataEnd | Expect::LmtpDataEnd(_) | Expect::EmptyData => "the end of data",
            Expect::Rset => "RSET",
            Expect::Quit => "QUIT",
        }
    }
}

/// Transaction commands not sent yet (one at a time without PIPELINING).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Mail,
    Rcpt(usize),
    Data,
}

/// Where the message body stands.
#[derive(Debug)]
enum Body {
    /// Not started.
    Idle,
    /// Being sent; `wanted` while a [`ClientEvent::ReadBody`] is unanswered.
    Sending { encoder: BodyEncoder, wanted: bool },
    /// The last byte was sent (or sending stopped).
    Ended,
}

/// An SMTP client session (RFC 5321) delivering one message to one server, or one
/// after the other over the same connection with [`ClientConfig::reuse`].
///
/// Inputs: [`ClientSession::handle_input`] (bytes from the server, plaintext once TLS is
/// up), [`ClientSession::handle_eof`], [`ClientSession::handle_timeout`] (at or after
/// [`ClientSession::poll_timeout`]), [`ClientSession::handle_tls_ready`] /
/// [`ClientSession::handle_tls_failed`] and [`ClientSession::handle_body`]. After each
/// the driver drains [`ClientSession::poll_event`] until `None`. The session never reads
/// a clock and never blocks; exactly one [`ClientEvent::Finished`] per transaction
/// comes before the final [`ClientEvent::Close`].
///
/// With [`ClientConfig::reuse`] a transaction that ends cleanly leaves the session idle
/// ([`ClientSession::is_idle`]) rather than saying QUIT: the driver then either gives it
/// the next envelope ([`ClientSession::start_next`]) or ends the connection
/// ([`ClientSession::end`]). While idle the session waits for the driver, not the
/// server, so it has no deadline; anything the server says meanwhile (a `421` before it
/// hangs up, RFC 5321 §3.8) or its EOF closes the session without a report.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    envelope: Envelope,
    reader: ReplyReader,
    events: VecDeque<ClientEvent>,
    expect: VecDeque<Expect>,
    to_send: VecDeque<Command>,
    deadline: Option<Instant>,
    caps: Capabilities,
    /// TLS is up.
    secure: bool,
    /// STARTTLS was refused with a reply and the policy allowed going on in plaintext.
    tls_declined: bool,
    /// The driver is doing the handshake; input is not read meanwhile.
    tls_pending: bool,
    /// Send DATA/BDAT only after every envelope reply (no PIPELINING, or BDAT mode).
    pipelined: bool,
    chunking: bool,
    mail_refused: Option<SmtpReply>,
    rcpt_replies: Vec<Option<SmtpReply>>,
    /// LMTP: each accepted recipient's own reply after the data.
    lmtp_replies: Vec<Option<SmtpReply>>,
    data_reply: Option<SmtpReply>,
    /// The first refused BDAT chunk: it stands for the message once the others are in.
    bdat_refused: Option<SmtpReply>,
    body: Body,
    /// The current transaction's report was given.
    finished: bool,
    /// Between transactions of a reused connection: waiting for the driver.
    idle: bool,
    closed: bool,
    /// The client the server was last told about with an accepted XCLIENT on this
    /// connection (it speaks for that client until told otherwise).
    xclient_sent: Option<Xclient>,
    /// The XCLIENT sent, waiting for its reply.
    xclient_pending: Option<Xclient>,
    /// The server refused XCLIENT on this connection: it does not trust us, so the
    /// messages go without it.
    xclient_refusal: Option<SmtpReply>,
}

impl ClientSession {
    /// A session on a connection that was just established at `now`: it waits for the
    /// greeting. An envelope that cannot be sent ([`Envelope::validate`]) or has no
    /// recipient finishes at once, before any byte is sent.
    pub fn new(config: ClientConfig, envelope: Envelope, now: Instant) -> Self {
        let recipients = envelope.recipients.len();
        let mut session = ClientSession {
            config,
            envelope,
            reader: ReplyReader::new(),
            events: VecDeque::new(),
            expect: VecDeque::from([Expect::Greeting]),
            to_send: VecDeque::new(),
            deadline: None,
            caps: Capabilities::default(),
            secure: false,
            tls_declined: false,
            tls_pending: false,
            pipelined: false,
            chunking: false,
            mail_refused: None,
            rcpt_replies: vec![None; recipients],
            lmtp_replies: vec![None; recipients],
            data_reply: None,
            bdat_refused: None,
            body: Body::Idle,
            finished: false,
            idle: false,
            closed: false,
            xclient_sent: None,
            xclient_pending: None,
            xclient_refusal: None,
        };
        if let Err(detail) = session.envelope.validate() {
            session.finish(Err(Failure {
                permanent: true,
                reply: None,
                detail,
            }));
            session.close();
        } else if recipients == 0 {
            session.finish(Ok(Vec::new()));
            session.close();
        } else {
            session.arm(now);
        }
        session
    }

    // ---- inputs -----------------------------------------------------------------------

    /// Bytes read from the server (plaintext: after STARTTLS, what TLS decrypted).
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if self.closed || self.tls_pending {
            return;
        }
        self.reader.push(bytes);
        while !self.closed && !self.tls_pending {
            match self.reader.next_reply() {
                None => break,
                Some(Err(e)) => self.broken(format!("bad reply from server: {e}")),
                Some(Ok(reply)) => match self.expect.pop_front() {
                    None => self.broken(format!("unexpected reply {}", reply.text())),
                    Some(expect) => {
                        self.on_reply(expect, reply);
                        self.arm(now);
                    }
                },
            }
        }
    }

    /// The server closed the connection, or reading from it failed.
    pub fn handle_eof(&mut self, _now: Instant) {
        if self.closed {
            return;
        }
        match self.expect.front() {
            Some(Expect::Quit) | None if self.finished => self.close(),
            Some(&expect) => self.broken(format!(
                "connection closed while waiting for the reply to {}",
                expect.name()
            )),
            None => self.broken("connection closed by the server".into()),
        }
    }

    /// Writing to or reading from the connection failed (`reason` for the report).
    pub fn handle_io_error(&mut self, _now: Instant, reason: &str) {
        if !self.closed {
            self.broken(format!("connection error: {reason}"));
        }
    }

    /// The deadline from [`ClientSession::poll_timeout`] may have passed; an early or
    /// spurious call does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed || self.deadline.is_none_or(|d| now < d) {
            return;
        }
        match self.expect.front() {
            Some(Expect::Quit) => self.close(),
            Some(&expect) => self.broken(format!(
                "timed out waiting for the reply to {}",
                expect.name()
            )),
            None => self.deadline = None,
        }
    }

    /// The TLS handshake after [`ClientEvent::StartTls`] succeeded: EHLO again
    /// (RFC 3207 §4.2, everything learnt before is forgotten).
    pub fn handle_tls_ready(&mut self, now: Instant) {
        if self.closed || !self.tls_pending {
            return;
        }
        self.tls_pending = false;
        self.secure = true;
        self.caps = Capabilities::default();
        self.hello();
        self.arm(now);
    }

    /// The TLS handshake failed (a bad certificate under [`StartTls::Required`], or a
    /// broken handshake): the connection is unusable, the attempt fails temporarily.
    pub fn handle_tls_failed(&mut self, _now: Instant, reason: &str) {
        if self.closed || !self.tls_pending {
            return;
        }
        self.tls_pending = false;
        self.broken(format!("TLS handshake failed: {reason}"));
    }

    /// Message bytes after a [`ClientEvent::ReadBody`]; `last` marks the end of the
    /// message (`chunk` may then be empty). Calls nobody asked for are ignored.
    pub fn handle_body(&mut self, now: Instant, chunk: &[u8], last: bool) {
        let Body::Sending { encoder, wanted } = &mut self.body else {
            return;
        };
        if !*wanted || self.closed {
            return;
        }
        *wanted = false;
        let mut out = BytesMut::new();
        let needs_reply = encoder.encode(chunk, last, &mut out);
        if !out.is_empty() {
            self.events.push_back(ClientEvent::Send(out.freeze()));
        }
        if needs_reply {
            if self.chunking {
                self.expect.push_back(Expect::Bdat { last });
            } else if self.config.lmtp {
                let accepted: Vec<usize> = self.accepted_indexes().collect();
                self.expect
                    .extend(accepted.into_iter().map(Expect::LmtpDataEnd));
            } else {
                self.expect.push_back(Expect::DataEnd);
            }
        }
        if last {
            self.body = Body::Ended;
        } else {
            self.want_body();
        }
        self.arm(now);
    }

    /// Reading the message failed locally: the data cannot be ended cleanly (a `.` would
    /// deliver a truncated message), so the connection is dropped without QUIT.
    pub fn handle_body_error(&mut self, _now: Instant, reason: &str) {
        if !self.closed && matches!(self.body, Body::Sending { .. }) {
            self.body = Body::Ended;
            self.broken_with(Failure {
                permanent: false,
                reply: Some(SmtpReply::synthetic(
                    451,
                    (4, 3, 0),
                    &format!("local error reading the message: {reason}"),
                )),
                detail: format!("local error reading the message: {reason}"),
            });
        }
    }

    /// Starts the next transaction on an idle session ([`ClientConfig::reuse`]): MAIL,
    /// the RCPTs and DATA for `envelope`, on the connection, TLS and AUTH already set
    /// up. An envelope that cannot be sent finishes at once without a byte and leaves
    /// the session idle. Gives the envelope back when the session is not idle, and
    /// when the connection has named a client with XCLIENT and `envelope` names none:
    /// the server would take the message as that client's, so it needs a fresh
    /// connection.
    pub fn start_next(&mut self, now: Instant, envelope: Envelope) -> Result<(), Envelope> {
        if !self.is_idle() || (self.xclient_sent.is_some() && envelope.xclient.is_none()) {
            return Err(envelope);
        }
        let recipients = envelope.recipients.len();
        self.idle = false;
        self.finished = false;
        self.envelope = envelope;
        self.rcpt_replies = vec![None; recipients];
        self.lmtp_replies = vec![None; recipients];
        if let Err(detail) = self.envelope.validate() {
            self.conclude(
                Err(Failure {
                    permanent: true,
                    reply: None,
                    detail,
                }),
                After::Clean,
            );
        } else if recipients == 0 {
            self.conclude(Ok(Vec::new()), After::Clean);
        } else {
            self.start_transaction();
        }
        self.arm(now);
        Ok(())
    }

    /// Ends an idle connection politely: QUIT, then close on its reply (or its
    /// deadline). Does nothing unless the session is idle.
    pub fn end(&mut self, now: Instant) {
        if self.is_idle() {
            self.idle = false;
            self.quit();
            self.arm(now);
        }
    }

    // ---- outputs ----------------------------------------------------------------------

    /// The next thing to do, or `None` until the next input.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`ClientSession::handle_timeout`] must be called: the reply being waited
    /// for is overdue then (RFC 5321 §4.5.3.2).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed { None } else { self.deadline }
    }

    /// True once [`ClientEvent::Close`] was queued.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// True between transactions of a reused connection: the last transaction was
    /// reported and the server waits for the next `MAIL`.
    pub fn is_idle(&self) -> bool {
        self.idle && !self.closed
    }

    /// Whether the session reads input now (not while the driver does the TLS handshake
    /// or after the end).
    pub fn wants_read(&self) -> bool {
        !self.closed && !self.tls_pending
    }

    /// The reply with which the server refused XCLIENT on this connection, if it did
    /// (the messages then went without it; the driver logs this as a warning).
    pub fn xclient_refusal(&self) -> Option<&SmtpReply> {
        self.xclient_refusal.as_ref()
    }

    /// Whether the server offered XCLIENT in its last EHLO/LHLO reply.
    pub fn server_offers_xclient(&self) -> bool {
        self.caps.xclient.is_some()
    }

    /// Bytes of server input held (an unfinished reply line), for the fuzzers' bound.
    pub fn buffered(&self) -> usize {
        self.reader.buffered()
    }

    // ---- the dialogue -----------------------------------------------------------------

    fn on_reply(&mut self, expect: Expect, reply: SmtpReply) {
        match expect {
            Expect::Greeting if reply.code == 220 => self.hello(),
            Expect::Greeting => self.refused(reply, "the server refused the connection"),
            Expect::Ehlo if reply.code == 250 => {
                self.caps = Capabilities::from_ehlo(&reply);
                self.after_hello();
            }
            // RFC 5321 §4.1.4 / §3.2: a server without EHLO answers "not implemented".
            // LMTP has no HELO (RFC 2033 §4.1): a refused LHLO ends the attempt.
            Expect::Ehlo if !self.config.lmtp && matches!(reply.code, 500 | 502 | 504 | 550) => {
                self.command(&format!("HELO {}", self.config.helo_name), Expect::Helo);
            }
            Expect::Ehlo | Expect::Helo if reply.code != 250 => {
                self.refused(reply, "the server refused the client's greeting")
            }
            Expect::Ehlo | Expect::Helo => {
                self.caps = Capabilities::default();
                self.after_hello();
            }
            Expect::StartTls if reply.code == 220 => {
                // RFC 3207 §4.2: nothing the server sent before the handshake counts.
                self.reader.clear();
                self.tls_pending = true;
                self.events.push_back(ClientEvent::StartTls);
            }
            Expect::StartTls if self.config.starttls == StartTls::Required => {
                self.refused_temporarily(reply, "STARTTLS is required but the server refused it")
            }
            Expect::StartTls => {
                self.tls_declined = true;
                self.after_hello();
            }
            Expect::AuthLoginUser | Expect::AuthLoginPassword if reply.code == 334 => {
                self.auth_login_step(expect)
            }
            Expect::AuthDone if reply.code == 235 => self.start_transaction(),
            Expect::Xclient if reply.code == 220 => {
                // Postfix XCLIENT_README: the server starts over as for a new connection
                // from the named client; greet it again before MAIL.
                self.xclient_sent = self.xclient_pending.take();
                self.caps = Capabilities::default();
                self.hello();
            }
            Expect::Xclient => {
                // The server does not trust us to name the client. The message is still
                // delivered, naming us instead: holding mail back over trace
                // information would be worse. The driver logs the refusal.
                self.xclient_pending = None;
                self.xclient_refusal = Some(reply);
                self.start_transaction();
            }
            Expect::AuthLoginUser | Expect::AuthLoginPassword | Expect::AuthDone => {
                // A smarthost refusing our credentials is a configuration problem to
                // fix, not a reason to bounce the message.
                self.refused_temporarily(reply, "the server refused authentication")
            }
            Expect::Mail => {
                if !reply.is_completion() {
                    self.mail_refused = Some(reply);
                    self.to_send.clear();
                }
                self.envelope_progress();
            }
            Expect::Rcpt(i) => {
                if let Some(slot) = self.rcpt_replies.get_mut(i) {
                    *slot = Some(reply);
                }
                self.envelope_progress();
            }
            Expect::Data => {
                self.data_reply = Some(reply);
                self.envelope_progress();
            }
            Expect::Bdat { last } => self.bdat_reply(reply, last),
            Expect::DataEnd => {
                let results = self.final_results(&reply);
                self.conclude(Ok(results), After::Clean);
            }
            Expect::LmtpDataEnd(i) => {
                if let Some(slot) = self.lmtp_replies.get_mut(i) {
                    *slot = Some(reply.clone());
                }
                if !matches!(self.expect.front(), Some(Expect::LmtpDataEnd(_))) {
                    let results = self.final_results(&reply);
                    self.conclude(Ok(results), After::Clean);
                }
            }
            Expect::EmptyData => {
                if self.expect.is_empty() {
                    self.reset_or_quit();
                }
            }
            Expect::Rset if reply.is_completion() => self.go_idle(),
            Expect::Rset => self.quit(),
            Expect::Quit => self.close(),
        }
    }

    /// The greeting command: `EHLO`, or `LHLO` in LMTP mode (RFC 2033 §4.1).
    fn hello(&mut self) {
        let verb = if self.config.lmtp { "LHLO" } else { "EHLO" };
        self.command(&format!("{verb} {}", self.config.helo_name), Expect::Ehlo);
    }

    /// After EHLO/HELO: STARTTLS per policy, then AUTH when configured, then the
    /// transaction.
    fn after_hello(&mut self) {
        if !self.secure && !self.tls_declined {
            match self.config.starttls {
                StartTls::Required if !self.caps.starttls => {
                    return self.fail_and_quit(false, None, "STARTTLS is required but not offered");
                }
                StartTls::Required | StartTls::Opportunistic if self.caps.starttls => {
                    return self.command("STARTTLS", Expect::StartTls);
                }
                _ => {}
            }
        }
        let Some((user, password)) = self.config.auth.clone() else {
            return self.start_transaction();
        };
        if !self.secure && !self.config.auth_plaintext {
            return self.fail_and_quit(
                false,
                None,
                "AUTH is configured but the connection is not encrypted",
            );
        }
        if self.caps.offers_auth("PLAIN") {
            // RFC 4616 §2: empty authorization identity, NUL, user, NUL, password.
            let mut response = Vec::with_capacity(user.len() + password.expose().len() + 2);
            response.push(0);
            response.extend_from_slice(user.as_bytes());
            response.push(0);
            response.extend_from_slice(password.expose());
            let line = format!("AUTH PLAIN {}", BASE64.encode(&response));
            response.fill(0);
            self.command(&line, Expect::AuthDone);
        } else if self.caps.offers_auth("LOGIN") {
            self.command("AUTH LOGIN", Expect::AuthLoginUser);
        } else {
            self.fail_and_quit(
                false,
                None,
                "AUTH is configured but PLAIN and LOGIN are not offered",
            );
        }
    }

    fn auth_login_step(&mut self, expect: Expect) {
        let Some((user, password)) = &self.config.auth else {
            return self.broken("AUTH challenge without credentials".into());
        };
        if expect == Expect::AuthLoginUser {
            let line = BASE64.encode(user.as_bytes());
            self.command(&line, Expect::AuthLoginPassword);
        } else {
            let line = BASE64.encode(password.expose());
            self.command(&line, Expect::AuthDone);
        }
    }

    // ---- endings ----------------------------------------------------------------------

    fn command(&mut self, line: &str, expect: Expect) {
        let mut bytes = BytesMut::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.events.push_back(ClientEvent::Send(bytes.freeze()));
        self.expect.push_back(expect);
    }

    /// (Re)arms the deadline for the reply at the front of the queue.
    fn arm(&mut self, now: Instant) {
        let timeout: Option<Duration> = match self.expect.front() {
            _ if self.closed || self.tls_pending => None,
            None => None,
            Some(Expect::DataEnd | Expect::LmtpDataEnd(_) | Expect::Bdat { last: true }) => {
                Some(self.config.data_timeout)
            }
            Some(Expect::Quit) => Some(self.config.quit_timeout),
            Some(_) => Some(self.config.command_timeout),
        };
        self.deadline = timeout.and_then(|t| now.checked_add(t));
    }

    fn finish(&mut self, report: Report) {
        if !self.finished {
            self.finished = true;
            self.events.push_back(ClientEvent::Finished(report));
        }
    }

    fn finish_and_quit(&mut self, report: Report) {
        self.finish(report);
        self.quit();
    }

    /// Reports the transaction, then (with [`ClientConfig::reuse`]) gets the server
    /// ready for the next one, else says QUIT.
    fn conclude(&mut self, report: Report, after: After) {
        self.finish(report);
        match after {
            _ if !self.config.reuse => self.quit(),
            After::Clean => self.go_idle(),
            After::Reset => self.reset_or_quit(),
        }
    }

    /// After a transaction that was broken off: RSET before reuse, else QUIT.
    fn reset_or_quit(&mut self) {
        if self.config.reuse {
            self.expect.clear();
            self.to_send.clear();
            self.command("RSET", Expect::Rset);
        } else {
            self.quit();
        }
    }

    /// Waits for the driver's next envelope, forgetting the last transaction.
    fn go_idle(&mut self) {
        self.idle = true;
        self.expect.clear();
        self.to_send.clear();
        self.mail_refused = None;
        self.rcpt_replies.clear();
        self.lmtp_replies.clear();
        self.data_reply = None;
        self.bdat_refused = None;
        self.body = Body::Idle;
        self.deadline = None;
    }

    fn quit(&mut self) {
        self.expect.clear();
        self.to_send.clear();
        self.command("QUIT", Expect::Quit);
    }

    /// A reply refused the attempt: fail (permanently for 5xx) and say QUIT.
    fn refused(&mut self, reply: SmtpReply, what: &str) {
        let permanent = reply.is_permanent();
        let detail = format!("{what}: {}", reply.text());
        self.finish_and_quit(Err(Failure {
            permanent,
            reply: Some(reply),
            detail,
        }));
    }

    /// Like [`Self::refused`], but always temporary.
    fn refused_temporarily(&mut self, reply: SmtpReply, what: &str) {
        let detail = format!("{what}: {}", reply.text());
        self.finish_and_quit(Err(Failure {
            permanent: false,
            reply: Some(reply),
            detail,
        }));
    }

    fn fail_and_quit(&mut self, permanent: bool, reply: Option<SmtpReply>, detail: &str) {
        self.finish_and_quit(Err(Failure {
            permanent,
            reply,
            detail: detail.to_owned(),
        }));
    }

    /// The connection is no longer usable (EOF, timeout, garbage, TLS failure): report a
    /// temporary failure and close without QUIT.
    fn broken(&mut self, detail: String) {
        self.broken_with(Failure {
            permanent: false,
            reply: None,
            detail,
        });
    }

    /// Reports `failure` and closes. Once some recipient has a result, the report is per
    /// recipient: refused ones keep their reply, the others are deferred (or failed, for
    /// a permanent `failure.reply`) on the failure.
    fn broken_with(&mut self, failure: Failure) {
        let any_rcpt = self.rcpt_replies.iter().any(Option::is_some);
        if let Some(reply) = self.mail_refused.take() {
            // A pipelined MAIL was refused and the server hung up before answering the
            // rest: the refusal is the reason, not the hang-up.
            self.finish(Err(Failure {
                permanent: reply.is_permanent(),
                detail: format!("the server refused the sender: {}", reply.text()),
                reply: Some(reply),
            }));
        } else if any_rcpt {
            let reply = failure
                .reply
                .clone()
                .unwrap_or_else(|| SmtpReply::synthetic(451, (4, 4, 2), &failure.detail));
            let mut results = self.final_results(&reply);
            for (result, lmtp) in results.iter_mut().zip(&self.lmtp_replies) {
                // A made-up or positive reply never delivers: the message stays queued.
                // An LMTP recipient already answered keeps its own result (RFC 2033
                // §4.2), so a recipient delivered before the break is not sent twice.
                if result.status == RecipientStatus::Delivered && lmtp.is_none() {
                    result.status = RecipientStatus::Deferred;
                }
            }
            self.finish(Ok(results));
        } else {
            self.finish(Err(failure));
        }
        self.close();
    }

    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.idle = false;
            self.deadline = None;
            self.expect.clear();
            self.to_send.clear();
            self.reader.clear();
            self.body = Body::Ended;
            self.events.push_back(ClientEvent::Close);
        }
    }
}
