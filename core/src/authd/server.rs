//! The authd server session: greeting, HELLO, then tagged LOOKUP/VERIFY requests turned
//! into [`Request::LookupUser`]/[`Request::VerifyUser`], one at a time, answered in the
//! order they arrived.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use subtle::ConstantTimeEq as _;

use super::config::AuthdConfig;
use super::wire::{self, Answer, ClientLine, ServerLine, Tag, VERSIONS};
use crate::io::{Action, MAX_READ, Peer, RequestId, Session};
use crate::outbox::Outbox;
use crate::request::{Failure, Reply, Request};
use crate::timer::{Timer, TimerTable};
use crate::user::{AuthOutcome, Lookup};
use crate::wire::{LineBuffer, LineEvent};

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Greeting sent; the next line must be HELLO.
    Hello,
    /// HELLO accepted: requests are served.
    Ready,
    /// Closed for good; its `Close` is queued.
    Closed,
}

/// Which request kind is outstanding, so the reply is checked against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One LOOKUP: [`Request::LookupUser`].
    Lookup,
    /// Several pipelined LOOKUPs: [`Request::LookupUsers`].
    Lookups,
    /// [`Request::VerifyUser`].
    Verify,
}

/// The request the session is waiting for.
#[derive(Debug)]
struct Pending {
    id: RequestId,
    /// The tags to answer, in request order (several for a batch of LOOKUPs).
    tags: Vec<Tag>,
    /// The addresses of a batch, kept to ask them one by one if the executor turns
    /// the batch down.
    addresses: Vec<String>,
    kind: Kind,
}

/// An authd server session for one client connection (a front-end's user-lookup pool).
///
/// Implements [`Session`]; wrap it in [`crate::tls::Secured`] for an implicit-TLS port.
/// Each tagged request gets exactly one answer line: the user database's, `TEMPFAIL`
/// when the database misses [`AuthdConfig::store_timeout`], or `BAD` for a malformed
/// request. Answers come in request order.
#[derive(Debug)]
pub struct AuthdServerSession {
    cfg: Arc<AuthdConfig>,
    phase: Phase,
    pending: Option<Pending>,
    input: LineBuffer,
    /// A line taken from `input` while gathering a batch of LOOKUPs that was not a
    /// LOOKUP: it is served next. At most one line, so input stays bounded.
    held: Option<LineEvent>,
    /// LOOKUPs of a batch the executor could not answer as one ([`Failure::Permanent`]),
    /// asked one by one before any further input. At most `max_batch`.
    singles: std::collections::VecDeque<(Tag, String)>,
    /// False once the executor turned a batch down: later LOOKUPs go one by one.
    batching: bool,
    io: Outbox,
    timers: TimerTable,
    bad_lines: u32,
    /// The client sent EOF: answer what is buffered, then close.
    peer_eof: bool,
}

impl AuthdServerSession {
    /// A session accepted at `now`; the greeting is queued at once.
    pub fn new(cfg: Arc<AuthdConfig>, now: Instant) -> Self {
        let mut session = AuthdServerSession {
            input: LineBuffer::new(cfg.limits.max_line),
            held: None,
            singles: std::collections::VecDeque::new(),
            batching: true,
            phase: Phase::Hello,
            pending: None,
            io: Outbox::new(),
            timers: TimerTable::default(),
            bad_lines: 0,
            peer_eof: false,
            cfg,
        };
        session.send(&ServerLine::Greeting(VERSIONS.to_vec()));
        session
            .timers
            .set(Timer::Idle, now + session.cfg.idle_timeout);
        session
    }

    /// True once the session has queued its `Close`.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    fn send(&mut self, line: &ServerLine) {
        wire::encode_server(line, &mut self.io.out);
    }

    fn answer(&mut self, tag: Tag, answer: Answer) {
        self.send(&ServerLine::Answer(tag, answer));
    }

    fn close(&mut self) {
        if !self.is_closed() {
            self.phase = Phase::Closed;
            self.pending = None;
            self.timers = TimerTable::default();
            self.input.clear();
            self.held = None;
            self.singles.clear();
            self.io.push(Action::Close { to: Peer::Client });
        }
    }

    fn output_blocked(&self) -> bool {
        self.io.backlog() >= self.cfg.limits.output_high_water
    }

    /// Serves buffered lines until one needs the user database, output backs up, or
    /// input runs out.
    fn resume(&mut self, now: Instant) {
        while self.pending.is_none() && !self.is_closed() && !self.output_blocked() {
            if let Some((tag, address)) = self.singles.pop_front() {
                let request = Request::LookupUser {
                    address: address.clone(),
                };
                self.request(now, vec![tag], vec![address], Kind::Lookup, request);
                continue;
            }
            match self.held.take().or_else(|| self.input.next_line()) {
                None => {
                    if self.peer_eof {
                        self.close();
                    }
                    break;
                }
                Some(LineEvent::TooLong) => self.bad_line(None, "line too long"),
                Some(LineEvent::Line(line)) => {
                    self.timers.set(Timer::Idle, now + self.cfg.idle_timeout);
                    self.on_line(now, &line);
                }
            }
        }
        self.io.flush();
    }

    fn on_line(&mut self, now: Instant, line: &Bytes) {
        let parsed = match wire::parse_client(line) {
            Ok(parsed) => parsed,
            Err(error) if self.phase == Phase::Hello => {
                let _ = error;
                return self.refuse("HELLO expected");
            }
            Err(error) => return self.bad_line(error.tag, error.reason),
        };
        match (self.phase, parsed) {
            (_, ClientLine::Quit) => {
                self.send(&ServerLine::Bye("closing".into()));
                self.close();
            }
            (Phase::Hello, ClientLine::Hello { version, secret }) => {
                if !VERSIONS.contains(&version) {
                    return self.refuse("unsupported version");
                }
                let expected = self.cfg.secret.expose();
                // ct_eq compares the contents in constant time; only the length can
                // show, and secrets are long random strings.
                let matches = !expected.is_empty() && bool::from(expected.ct_eq(secret.expose()));
                if !matches {
                    return self.refuse("authentication failed");
                }
                self.phase = Phase::Ready;
                self.send(&ServerLine::Welcome(version));
            }
            (Phase::Hello, _) => self.refuse("HELLO expected"),
            (_, ClientLine::Hello { .. }) => self.bad_line(None, "HELLO was already accepted"),
            (_, ClientLine::Lookup { tag, address }) => self.lookup(now, tag, address),
            (
                _,
                ClientLine::Verify {
                    tag,
                    user,
                    password,
                    client,
                },
            ) => {
                let request = Request::VerifyUser {
                    user,
                    password,
                    client,
                };
                self.request(now, vec![tag], Vec::new(), Kind::Verify, request);
            }
        }
    }

    /// A failed HELLO: say so and close.
    fn refuse(&mut self, reason: &str) {
        self.send(&ServerLine::Bad(reason.into()));
        self.close();
    }

    fn bad_line(&mut self, tag: Option<Tag>, reason: &str) {
        match tag {
            Some(tag) => self.answer(tag, Answer::Bad(reason.into())),
            None => self.send(&ServerLine::Bad(reason.into())),
        }
        self.bad_lines += 1;
        if self.bad_lines >= self.cfg.limits.max_bad_lines {
            self.send(&ServerLine::Bye("too many bad lines".into()));
            self.close();
        }
    }

    /// A LOOKUP, together with the LOOKUPs pipelined right behind it (up to
    /// `max_batch`), so one store round trip answers them all.
    fn lookup(&mut self, now: Instant, tag: Tag, address: String) {
        let mut tags = vec![tag];
        let mut addresses = vec![address];
        let max_batch = if self.batching {
            self.cfg.limits.max_batch
        } else {
            1
        };
        while tags.len() < max_batch {
            match self.input.next_line() {
                Some(LineEvent::Line(line)) => match wire::parse_client(&line) {
                    Ok(ClientLine::Lookup { tag, address }) => {
                        tags.push(tag);
                        addresses.push(address);
                    }
                    _ => {
                        self.held = Some(LineEvent::Line(line));
                        break;
                    }
                },
                Some(event) => {
                    self.held = Some(event);
                    break;
                }
                None => break,
            }
        }
        if tags.len() == 1 {
            let address = addresses.pop().unwrap_or_default();
            let request = Request::LookupUser { address };
            self.request(now, tags, Vec::new(), Kind::Lookup, request);
        } else {
            let request = Request::LookupUsers {
                addresses: addresses.clone(),
            };
            self.request(now, tags, addresses, Kind::Lookups, request);
        }
    }

    fn request(
        &mut self,
        now: Instant,
        tags: Vec<Tag>,
        addresses: Vec<String>,
        kind: Kind,
        request: Request,
    ) {
        let id = self.io.request(request);
        self.timers
            .set(Timer::StoreReply, now + self.cfg.store_timeout);
        self.pending = Some(Pending {
            id,
            tags,
            addresses,
            kind,
        });
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::StoreReply => {
                if let Some(pending) = self.pending.take() {
                    // The late reply is ignored by id.
                    for tag in pending.tags {
                        self.answer(tag, Answer::TempFail("user database timeout".into()));
                    }
                }
            }
            Timer::Idle => {
                self.send(&ServerLine::Bye("idle timeout".into()));
                self.close();
            }
            Timer::AuthDelay => {}
        }
    }
}

/// The answer lines, one per tag, for a reply of the user database.
fn answers_for(kind: Kind, count: usize, reply: Reply) -> Vec<Answer> {
    match (kind, reply) {
        (Kind::Lookups, Reply::Users(lookups)) if lookups.len() == count => {
            lookups.into_iter().map(lookup_answer).collect()
        }
        (_, Reply::Failed(Failure::Temporary(reason))) => vec![Answer::TempFail(reason); count],
        (Kind::Lookups, _) => {
            vec![Answer::TempFail("unexpected user database reply".into()); count]
        }
        (kind, reply) => vec![answer_for(kind, reply)],
    }
}

fn lookup_answer(lookup: Lookup) -> Answer {
    match lookup {
        Lookup::Found(record) => Answer::Found(without_password(record)),
        Lookup::NotFound => Answer::NotFound,
        Lookup::UnknownDomain => Answer::NoDomain,
        Lookup::TempFail(reason) => Answer::TempFail(reason),
    }
}

/// The answer line for a reply to a single request.
fn answer_for(kind: Kind, reply: Reply) -> Answer {
    match (kind, reply) {
        (Kind::Lookup, Reply::User(lookup)) => lookup_answer(lookup),
        (Kind::Verify, Reply::Verified(outcome)) => match outcome {
            AuthOutcome::Accepted(record) => Answer::Accepted(without_password(record)),
            AuthOutcome::Denied => Answer::Denied,
            AuthOutcome::Disabled => Answer::Disabled,
            AuthOutcome::TempFail(reason) => Answer::TempFail(reason),
        },
        (_, Reply::Failed(Failure::Temporary(reason))) => Answer::TempFail(reason),
        _ => Answer::TempFail("unexpected user database reply".into()),
    }
}

/// Password hashes never leave the server.
fn without_password(mut record: crate::user::UserRecord) -> crate::user::UserRecord {
    record.password.clear();
    record
}

impl Session for AuthdServerSession {
    fn handle_input(&mut self, now: Instant, _from: Peer, bytes: &[u8]) {
        if self.is_closed() {
            return;
        }
        if self.input.buffered() + bytes.len() > self.cfg.limits.max_buffered_input + MAX_READ {
            // Only a shell that ignores wants_read gets here.
            self.send(&ServerLine::Bye("input buffer overflow".into()));
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
        if self.pending.as_ref().map(|p| p.id) != Some(id) {
            // A late reply to a request already answered with TEMPFAIL.
            return;
        }
        self.timers.stop(Timer::StoreReply);
        if let Some(pending) = self.pending.take() {
            if pending.kind == Kind::Lookups
                && matches!(reply, Reply::Failed(Failure::Permanent(_)))
            {
                // An executor that does not know LookupUsers: ask one by one, now and
                // for the rest of the connection.
                self.batching = false;
                self.singles = pending.tags.into_iter().zip(pending.addresses).collect();
                return self.resume(now);
            }
            let answers = answers_for(pending.kind, pending.tags.len(), reply);
            for (tag, answer) in pending.tags.into_iter().zip(answers) {
                self.answer(tag, answer);
            }
        }
        self.resume(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.take_expired(now) {
            self.on_timer(timer);
        }
        self.resume(now);
    }

    fn handle_drained(&mut self, now: Instant, _to: Peer) {
        self.io.drained();
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
}
