//! The authd client as a sans-IO codec: the caller feeds it bytes read from the
//! connection and writes out what it produces; it numbers requests, matches answers to
//! them by tag, and turns every failure of the connection into `TempFail` answers for
//! the requests still in flight, so a caller never gets a wrong answer.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use bytes::{Bytes, BytesMut};

use super::wire::{self, Answer, ClientLine, ServerLine, Tag, VERSIONS};
use crate::secret::Secret;
use crate::user::{AuthOutcome, Lookup};
use crate::wire::{LineBuffer, LineEvent};

/// Limits of one client connection.
#[derive(Debug, Clone)]
pub struct AuthdClientLimits {
    /// Longest answer line. A FOUND line carries the user's fields; 64 KiB is far more
    /// than any users file line.
    pub max_line: usize,
    /// Most requests sent and not yet answered. The server reads about a thousand
    /// pipelined requests before it stops reading; 256 stays well under that.
    pub max_in_flight: usize,
}

impl Default for AuthdClientLimits {
    fn default() -> Self {
        AuthdClientLimits {
            max_line: 64 * 1024,
            max_in_flight: 256,
        }
    }
}

/// What a request was, so its answer can be checked and converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Lookup,
    Verify,
}

/// Something the caller learns from the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The server accepted HELLO.
    Ready,
    /// The answer to [`AuthdClient::lookup`] number `id`.
    Lookup {
        /// The number `lookup` returned.
        id: u64,
        /// The answer.
        lookup: Lookup,
    },
    /// The answer to [`AuthdClient::verify`] number `id`.
    Verify {
        /// The number `verify` returned.
        id: u64,
        /// The answer.
        outcome: AuthOutcome,
    },
    /// The connection is unusable (EOF, `* BYE`, refused HELLO, a protocol error):
    /// every request still in flight got a `TempFail` event just before this one.
    Closed {
        /// Why, for the log.
        reason: String,
    },
}

/// Why a request could not be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The connection is closed; open a new one.
    Closed,
    /// [`AuthdClientLimits::max_in_flight`] requests are waiting; read answers first.
    Full,
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SubmitError::Closed => "the connection is closed",
            SubmitError::Full => "too many requests in flight",
        })
    }
}

impl std::error::Error for SubmitError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the server's greeting; requests are held back.
    Greeting,
    /// HELLO sent.
    Open,
    /// Finished; `Closed` was reported.
    Closed,
}

/// One client connection to an authd server, without the socket.
///
/// Drive it like this: after connecting, feed every read to [`AuthdClient::handle_input`]
/// (and EOF to [`AuthdClient::handle_eof`]), write out [`AuthdClient::take_output`]
/// whenever it is not empty, and take [`AuthdClient::poll_event`] until `None`.
#[derive(Debug)]
pub struct AuthdClient {
    secret: Secret,
    limits: AuthdClientLimits,
    phase: Phase,
    input: LineBuffer,
    /// Bytes to write to the server.
    out: BytesMut,
    /// Requests made before the greeting arrived: they follow HELLO.
    held: BytesMut,
    in_flight: HashMap<u64, Kind>,
    next_id: u64,
    events: VecDeque<ClientEvent>,
}

impl AuthdClient {
    /// A client that will authenticate with `secret`.
    pub fn new(secret: Secret, limits: AuthdClientLimits) -> Self {
        AuthdClient {
            secret,
            input: LineBuffer::new(limits.max_line),
            limits,
            phase: Phase::Greeting,
            out: BytesMut::new(),
            held: BytesMut::new(),
            in_flight: HashMap::new(),
            next_id: 0,
            events: VecDeque::new(),
        }
    }

    /// Queues `<id> LOOKUP <address>`; the answer comes as [`ClientEvent::Lookup`].
    pub fn lookup(&mut self, address: &str) -> Result<u64, SubmitError> {
        let id = self.reserve(Kind::Lookup)?;
        let line = ClientLine::Lookup {
            tag: tag_of(id),
            address: address.to_owned(),
        };
        self.queue(&line);
        Ok(id)
    }

    /// Queues `<id> VERIFY ...`; the answer comes as [`ClientEvent::Verify`].
    pub fn verify(
        &mut self,
        user: &str,
        password: &[u8],
        client: IpAddr,
    ) -> Result<u64, SubmitError> {
        let id = self.reserve(Kind::Verify)?;
        let line = ClientLine::Verify {
            tag: tag_of(id),
            user: user.to_owned(),
            password: Secret::new(password),
            client,
        };
        self.queue(&line);
        Ok(id)
    }

    fn reserve(&mut self, kind: Kind) -> Result<u64, SubmitError> {
        if self.phase == Phase::Closed {
            return Err(SubmitError::Closed);
        }
        if self.in_flight.len() >= self.limits.max_in_flight {
            return Err(SubmitError::Full);
        }
        self.next_id += 1;
        self.in_flight.insert(self.next_id, kind);
        Ok(self.next_id)
    }

    fn queue(&mut self, line: &ClientLine) {
        match self.phase {
            Phase::Greeting => wire::encode_client(line, &mut self.held),
            _ => wire::encode_client(line, &mut self.out),
        }
    }

    /// Requests sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// True once the connection is unusable.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Bytes to write to the server now (empty when there are none).
    pub fn take_output(&mut self) -> Bytes {
        self.out.split().freeze()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Bytes read from the server.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Closed {
            return;
        }
        self.input.push(bytes);
        while self.phase != Phase::Closed {
            match self.input.next_line() {
                None => break,
                Some(LineEvent::TooLong) => self.fail("answer line too long"),
                Some(LineEvent::Line(line)) => self.on_line(&line),
            }
        }
    }

    /// The server closed the connection, or reading failed (a timeout, a reset).
    pub fn handle_eof(&mut self) {
        self.fail("connection closed by the server");
    }

    /// Gives up on the connection (the caller's read timeout passed): every request in
    /// flight is answered `TempFail` with `reason`.
    pub fn abort(&mut self, reason: &str) {
        self.fail(reason);
    }

    fn on_line(&mut self, line: &[u8]) {
        let parsed = match wire::parse_server(line) {
            Ok(parsed) => parsed,
            Err(why) => return self.fail(&format!("protocol error: {why}")),
        };
        match (self.phase, parsed) {
            (Phase::Greeting, ServerLine::Greeting(versions)) => {
                let Some(&version) = VERSIONS.iter().rev().find(|v| versions.contains(v)) else {
                    return self.fail("the server speaks no version we know");
                };
                let hello = ClientLine::Hello {
                    version,
                    secret: self.secret.clone(),
                };
                wire::encode_client(&hello, &mut self.out);
                let held = self.held.split();
                self.out.unsplit(held);
                self.phase = Phase::Open;
            }
            (Phase::Greeting, _) => self.fail("protocol error: no greeting"),
            (_, ServerLine::Welcome(_)) => self.events.push_back(ClientEvent::Ready),
            (_, ServerLine::Bye(reason)) => self.fail(&format!("server closed: {reason}")),
            (_, ServerLine::Bad(reason)) => self.fail(&format!("server refused: {reason}")),
            (_, ServerLine::Greeting(_)) => self.fail("protocol error: second greeting"),
            (_, ServerLine::Answer(tag, answer)) => self.on_answer(&tag, answer),
        }
    }

    fn on_answer(&mut self, tag: &Tag, answer: Answer) {
        let Some((id, kind)) = tag
            .as_str()
            .parse::<u64>()
            .ok()
            .and_then(|id| Some((id, self.in_flight.remove(&id)?)))
        else {
            return self.fail("protocol error: answer to an unknown request");
        };
        let event = match (kind, answer) {
            (Kind::Lookup, Answer::Found(record)) => Lookup::Found(record).into_event(id),
            (Kind::Lookup, Answer::NotFound) => Lookup::NotFound.into_event(id),
            (Kind::Lookup, Answer::NoDomain) => Lookup::UnknownDomain.into_event(id),
            (Kind::Verify, Answer::Accepted(record)) => {
                AuthOutcome::Accepted(record).into_event(id)
            }
            (Kind::Verify, Answer::Denied) => AuthOutcome::Denied.into_event(id),
            (Kind::Verify, Answer::Disabled) => AuthOutcome::Disabled.into_event(id),
            (kind, Answer::TempFail(reason)) => temp_fail(kind, id, reason),
            (kind, Answer::Bad(reason)) => {
                // The server did not understand a line we made: a bug on one side.
                temp_fail(kind, id, format!("authd rejected the request: {reason}"))
            }
            (kind, _) => {
                self.in_flight.insert(id, kind);
                return self.fail("protocol error: answer does not fit the request");
            }
        };
        self.events.push_back(event);
    }

    fn fail(&mut self, reason: &str) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        let mut ids: Vec<(u64, Kind)> = self.in_flight.drain().collect();
        ids.sort_unstable_by_key(|(id, _)| *id);
        for (id, kind) in ids {
            let event = temp_fail(kind, id, format!("authd: {reason}"));
            self.events.push_back(event);
        }
        self.out.clear();
        self.held.clear();
        self.input.clear();
        self.events.push_back(ClientEvent::Closed {
            reason: reason.to_owned(),
        });
    }
}

fn tag_of(id: u64) -> Tag {
    Tag::number(id)
}

fn temp_fail(kind: Kind, id: u64, reason: String) -> ClientEvent {
    match kind {
        Kind::Lookup => Lookup::TempFail(reason).into_event(id),
        Kind::Verify => AuthOutcome::TempFail(reason).into_event(id),
    }
}

trait IntoEvent {
    fn into_event(self, id: u64) -> ClientEvent;
}

impl IntoEvent for Lookup {
    fn into_event(self, id: u64) -> ClientEvent {
        ClientEvent::Lookup { id, lookup: self }
    }
}

impl IntoEvent for AuthOutcome {
    fn into_event(self, id: u64) -> ClientEvent {
        ClientEvent::Verify { id, outcome: self }
    }
}
