//! The client end of an in-process core session: it plays the shell (carrying out
//! actions, answering requests from the [`MemStore`], keeping virtual time) and the client
//! (optionally through an in-memory rustls client).

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidegate_core::{Action, MAX_READ, Peer, RequestId, Session};
use tidegate_store::Executor;

use crate::core_driver::Chunking;
use crate::memstore::MemStore;
use crate::pki::TestPki;
use crate::seeds::SeedLog;

mod client;

/// Timers at most this far ahead fire by themselves while the client waits for output
/// (the failed-login delay); longer ones (autologout) need an explicit `@tick`.
pub const AUTO_ADVANCE: Duration = Duration::from_secs(60);

/// A connection to an in-process session. See the module documentation.
pub struct CoreConn {
    session: Box<dyn Session + Send>,
    store: Arc<MemStore>,
    clock: Rc<Cell<Instant>>,
    chunking: Chunking,
    /// Position in the `Sizes` cycle.
    cursor: usize,
    pki: Arc<TestPki>,
    tls: Option<rustls::ClientConnection>,
    /// Plaintext received; bytes before `read_pos` were read already.
    inbox: Vec<u8>,
    read_pos: usize,
    /// The session emitted `Close`.
    closed: bool,
    last_request: Option<RequestId>,
    /// The client reads what arrives; when false the session is never told its output
    /// drained (a client that stopped reading).
    reading: bool,
    /// A broken driving-contract rule, reported at the next read.
    violation: Option<String>,
    /// Records events as a fuzz seed, when asked to.
    seed: Option<SeedLog>,
}

impl CoreConn {
    /// Wraps a freshly opened session and collects its greeting.
    pub fn new(
        session: Box<dyn Session + Send>,
        store: Arc<MemStore>,
        clock: Rc<Cell<Instant>>,
        chunking: Chunking,
        pki: Arc<TestPki>,
    ) -> Self {
        let mut conn = CoreConn {
            session,
            store,
            clock,
            chunking,
            cursor: 0,
            pki,
            tls: None,
            inbox: Vec::new(),
            read_pos: 0,
            closed: false,
            last_request: None,
            reading: true,
            violation: None,
            seed: None,
        };
        conn.pump();
        conn
    }

    /// Records this connection's events into `log` (see [`crate::seeds`]).
    pub fn record_seed(&mut self, log: SeedLog) {
        self.seed = Some(log);
    }

    fn log(&self, event: impl FnOnce(&SeedLog)) {
        if let Some(seed) = &self.seed {
            event(seed);
        }
    }

    fn now(&self) -> Instant {
        self.clock.get()
    }

    /// Carries out actions until the session is idle: writes reach the client at once
    /// (so output is reported drained), requests are answered by the store.
    fn pump(&mut self) {
        // Written since the session was last told its output drained.
        let mut undrained = false;
        for _ in 0..1_000_000 {
            let mut requests = VecDeque::new();
            while let Some(action) = self.session.poll_action() {
                if self.closed {
                    self.violation
                        .get_or_insert(format!("action after Close: {action:?}"));
                    continue;
                }
                match action {
                    Action::Write {
                        to: Peer::Client,
                        bytes,
                    } => {
                        undrained = true;
                        self.receive(&bytes);
                    }
                    Action::Request { id, request } => {
                        if self.last_request.is_some_and(|last| id <= last) {
                            self.violation
                                .get_or_insert(format!("request id {id:?} does not grow"));
                        }
                        self.last_request = Some(id);
                        requests.push_back((id, request));
                    }
                    Action::Close { to: Peer::Client } => self.closed = true,
                    other => {
                        self.violation
                            .get_or_insert(format!("unexpected action {other:?}"));
                    }
                }
            }
            let now = self.now();
            if let Some((id, request)) = requests.pop_front() {
                if !requests.is_empty() {
                    self.violation
                        .get_or_insert("two requests outstanding at once".into());
                }
                let reply = self.store.execute(request);
                self.log(|seed| seed.reply(&reply));
                self.session.handle_reply(now, id, reply);
            } else if undrained && self.reading && !self.closed {
                undrained = false;
                self.log(|seed| seed.drained());
                self.session.handle_drained(now, Peer::Client);
            } else {
                return;
            }
        }
        self.violation
            .get_or_insert("the session never became idle".into());
    }

    /// Server bytes: through the client's TLS if it is on, else straight to the inbox.
    fn receive(&mut self, mut bytes: &[u8]) {
        let Some(tls) = self.tls.as_mut() else {
            self.inbox.extend_from_slice(bytes);
            return;
        };
        while !bytes.is_empty() {
            let step = tls
                .read_tls(&mut bytes)
                .map_err(|e| e.to_string())
                .and_then(|_| tls.process_new_packets().map_err(|e| e.to_string()));
            if let Err(e) = step {
                self.violation
                    .get_or_insert(format!("client TLS error: {e}"));
                return;
            }
            let mut buf = [0u8; 4096];
            loop {
                match tls.reader().read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => self.inbox.extend_from_slice(&buf[..n]),
                }
            }
        }
    }

    /// Feeds client bytes (ciphertext once TLS is on) in the configured chunks.
    fn deliver(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            if self.closed {
                return Ok(()); // the socket is gone; a real client's bytes would be lost too
            }
            let want = match &self.chunking {
                Chunking::Whole => MAX_READ,
                Chunking::Bytes => 1,
                Chunking::Sizes(sizes) => {
                    self.cursor += 1;
                    sizes[(self.cursor - 1) % sizes.len()].max(1)
                }
            };
            let n = want.min(MAX_READ).min(bytes.len());
            self.wait_until_readable()?;
            self.session
                .handle_input(self.now(), Peer::Client, &bytes[..n]);
            self.pump();
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// The session reads only while `wants_read`; a due short timer (the login delay)
    /// is the only thing that may unblock it here.
    fn wait_until_readable(&mut self) -> Result<(), String> {
        for _ in 0..100 {
            if self.closed || self.session.wants_read(Peer::Client) {
                return Ok(());
            }
            if !self.fire_short_timer() {
                break;
            }
        }
        Err("the session stopped reading input and nothing is pending (deadlock)".into())
    }

    /// Advances virtual time to the next deadline if it is within [`AUTO_ADVANCE`].
    fn fire_short_timer(&mut self) -> bool {
        if self.closed {
            return false;
        }
        match self.session.poll_timeout() {
            Some(at) if at <= self.now() + AUTO_ADVANCE => {
                self.log(|seed| seed.time(at.saturating_duration_since(self.now())));
                self.clock.set(self.now().max(at));
                self.session.handle_timeout(self.now());
                self.pump();
                true
            }
            _ => false,
        }
    }

    fn encrypt(&mut self, plain: &[u8]) -> Result<Vec<u8>, String> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(plain.to_vec());
        };
        tls.writer().write_all(plain).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut out).map_err(|e| e.to_string())?;
        }
        Ok(out)
    }

    /// Stops telling the session that output drained, like a client that never reads.
    pub fn pause_reading(&mut self) {
        self.reading = false;
    }

    /// Reads again: reports everything drained and lets the session continue.
    pub fn resume_reading(&mut self) {
        self.reading = true;
        if !self.closed {
            self.session.handle_drained(self.now(), Peer::Client);
            self.pump();
        }
    }

    /// Server plaintext received and not yet read by the script.
    pub fn pending(&self) -> usize {
        self.inbox.len() - self.read_pos
    }

    fn take_unread(&mut self) -> Vec<u8> {
        let rest = self.inbox.split_off(self.read_pos);
        self.inbox.clear();
        self.read_pos = 0;
        rest
    }

    /// True once the session emitted `Close`.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// A broken driving-contract rule seen so far.
    pub fn check_violation(&self) -> Result<(), String> {
        match &self.violation {
            Some(v) => Err(format!("driving contract broken: {v}")),
            None => Ok(()),
        }
    }
}

impl Drop for CoreConn {
    fn drop(&mut self) {
        // The client went away: the session sees EOF, as behind a real socket, and the
        // requests it makes on its way out (the abort of an open delivery) are carried
        // out, as a shell must.
        if !self.closed {
            self.reading = false;
            self.session.handle_eof(self.now(), Peer::Client);
            self.pump();
        }
    }
}
