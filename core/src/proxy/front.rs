//! What the three front-end sessions ([`super::Pop3FrontSession`],
//! [`super::SubmissionFrontSession`], [`super::ImapFrontSession`]) share: the client
//! leg's buffers and limits, the route lookup and its failures, connecting the
//! back-end leg, the hand-over, and the relay's byte moving (design.md §1).
//!
//! Each protocol keeps its own phases, command syntax and reply texts; it calls these
//! steps with the texts that differ.

use std::sync::Arc;
use std::time::Instant;

use super::backend::BackendLeg;
use super::relay::{self, Relay};
use super::route::{FrontConn, ProxyConfig, next_hops};
use super::sasl;
use crate::io::{Action, MAX_READ, Peer, RequestId};
use crate::outbox::Outbox;
use crate::request::{Account, Failure, Request, Service};
use crate::secret::Secret;
use crate::timer::{Timer, TimerTable};
use crate::wire::LineBuffer;

/// The client leg of one front-end session and the counters its limits apply to.
///
/// `input` holds at most `limits.max_buffered_input` bytes plus one read
/// ([`Front::accept_client_bytes`]); replies stop being produced while the outbox
/// holds `limits.output_high_water` bytes ([`Front::can_answer`]).
#[derive(Debug)]
pub(super) struct Front {
    pub(super) cfg: Arc<ProxyConfig>,
    pub(super) conn: FrontConn,
    /// TLS is active on the client leg (implicit, or after STARTTLS/STLS).
    pub(super) secure: bool,
    pub(super) input: LineBuffer,
    pub(super) io: Outbox,
    pub(super) timers: TimerTable,
    bad_commands: u32,
    auth_failures: u32,
    /// Until the hand-over the idle timer never runs past this (`login_timeout`).
    login_deadline: Instant,
    /// The account being proxied, from the hand-over on (the session's `account()`).
    pub(super) proxied: Option<Account>,
}

/// The login a front-end replays on the back-end: the leg and who logs in there.
#[derive(Debug)]
pub(super) struct BackendLogin {
    pub(super) leg: BackendLeg,
    pub(super) account: Account,
    pub(super) password: Secret,
    /// The hop count sent on (PROXY v2 TLV, XCLIENT TTL, ID x-proxy-ttl).
    pub(super) hops: u8,
}

/// What the route lookup's refusal leads to, once [`Timer::AuthDelay`] fires.
#[derive(Debug, Clone, Copy)]
pub(super) struct Refused {
    /// The client used up `limits.max_auth_failures`: close after the reply.
    pub(super) close_after: bool,
}

impl Front {
    /// The client leg of a connection accepted at `now`, with its idle timer running.
    pub(super) fn new(cfg: Arc<ProxyConfig>, conn: FrontConn, now: Instant) -> Self {
        let login_deadline = now + cfg.login_timeout;
        let mut timers = TimerTable::default();
        timers.set(Timer::Idle, (now + cfg.idle_timeout).min(login_deadline));
        Front {
            login_deadline,
            input: LineBuffer::new(cfg.limits.max_line),
            secure: conn.implicit_tls,
            conn,
            io: Outbox::new(),
            timers,
            bad_commands: 0,
            auth_failures: 0,
            proxied: None,
            cfg,
        }
    }

    /// Queues one reply line (CRLF added).
    pub(super) fn reply(&mut self, line: &str) {
        self.io.line(line);
    }

    /// A login may be attempted: the client leg is TLS, or plaintext logins are allowed.
    pub(super) fn login_allowed(&self) -> bool {
        self.secure || self.conn.plaintext_auth
    }

    /// STARTTLS/STLS can be offered: configured, and not on TLS already.
    pub(super) fn starttls_available(&self) -> bool {
        self.conn.starttls_available && !self.secure
    }

    /// Replies may be produced: the client reads what it was sent.
    pub(super) fn can_answer(&self) -> bool {
        self.io.backlog() < self.cfg.limits.output_high_water
    }

    /// A client command arrived at `now`: the idle timer starts again, but never runs
    /// past the login deadline.
    pub(super) fn touch(&mut self, now: Instant) {
        let at = (now + self.cfg.idle_timeout).min(self.login_deadline);
        self.timers.set(Timer::Idle, at);
    }

    /// Counts one bad command; true when `limits.max_bad_commands` is reached.
    pub(super) fn count_bad_command(&mut self) -> bool {
        self.bad_commands += 1;
        self.bad_commands >= self.cfg.limits.max_bad_commands
    }

    /// Asks where `user` lives (which also checks the password): the request id and
    /// the hop count to send on, or `None` when the hop limit is reached (a loop).
    pub(super) fn request_route(
        &mut self,
        now: Instant,
        user: String,
        password: &Secret,
        service: Service,
    ) -> Option<(RequestId, u8)> {
        let hops = next_hops(self.conn.hops, self.cfg.max_hops).ok()?;
        let id = self.io.request(Request::Route {
            user,
            password: password.clone(),
            client: self.conn.client.ip(),
            service,
        });
        self.timers
            .set(Timer::StoreReply, now + self.cfg.route_timeout);
        Some((id, hops))
    }

    /// The route lookup refused the credentials (`Denied` or `Throttled`): counts the
    /// failure and starts [`Timer::AuthDelay`], the longer of the configured delay and
    /// the throttle penalty.
    pub(super) fn auth_refused(&mut self, now: Instant, failure: &Failure) -> Refused {
        self.auth_failures += 1;
        let close_after = self.auth_failures >= self.cfg.limits.max_auth_failures;
        let delay = match failure {
            Failure::Throttled(penalty) => (*penalty).max(self.cfg.auth_failure_delay),
            _ => self.cfg.auth_failure_delay,
        };
        let at = now
            .checked_add(delay)
            .unwrap_or(now + self.cfg.auth_failure_delay);
        self.timers.set(Timer::AuthDelay, at);
        Refused { close_after }
    }

    /// Starts connecting to the route's back-end; `None` when it has no address.
    pub(super) fn connect(
        &mut self,
        now: Instant,
        account: Account,
        backend: crate::request::Backend,
        password: Secret,
        hops: u8,
    ) -> Option<BackendLogin> {
        let mut leg = BackendLeg::new(backend);
        if !leg.connect_next(&mut self.io, self.cfg.source_for(self.conn.client)) {
            return None;
        }
        self.timers
            .set(Timer::StoreReply, now + self.cfg.backend_timeout);
        Some(BackendLogin {
            leg,
            account,
            password,
            hops,
        })
    }

    /// The shell's answer to the back-end connect. `Ok` when the leg is up (PROXY
    /// header and TLS started as configured) or the next address is being tried;
    /// `Err` with what to report when the login cannot go on.
    pub(super) fn connected(
        &mut self,
        login: &mut BackendLogin,
        result: Result<(), String>,
    ) -> Result<(), Option<String>> {
        match result {
            Ok(()) => login
                .leg
                .established(&mut self.io, &self.cfg, &self.conn, self.secure, login.hops)
                .map_err(Some),
            Err(reason) => {
                let source = self.cfg.source_for(self.conn.client);
                if login.leg.connect_failed(&mut self.io, source, reason) {
                    Ok(())
                } else {
                    Err(None)
                }
            }
        }
    }

    /// The back-end login failed: reports `report` for the address, closes the leg and
    /// puts the client leg back to reading commands (the caller queues its reply).
    pub(super) fn abandon_backend(
        &mut self,
        now: Instant,
        leg: &mut BackendLeg,
        report: Option<String>,
    ) {
        if let Some(reason) = report {
            leg.report(&mut self.io, reason);
        }
        leg.close(&mut self.io);
        self.timers.stop(Timer::StoreReply);
        self.touch(now);
    }

    /// The back-end accepted the login: sends `ok` (CRLF included) to the client, then
    /// splices, or returns the [`Relay`] that carries on when a leg uses TLS.
    pub(super) fn hand_over(
        &mut self,
        now: Instant,
        login: &mut BackendLogin,
        ok: &[u8],
    ) -> Option<Relay> {
        self.timers = TimerTable::default();
        self.proxied = Some(login.account.clone());
        let handed = relay::hand_over(
            &mut self.io,
            &mut login.leg,
            &mut self.input,
            self.secure,
            ok,
            &self.cfg,
        );
        match handed {
            Ok(None) => None,
            Ok(Some(relay)) => {
                self.timers
                    .set(Timer::Idle, now + self.cfg.relay_idle_timeout);
                Some(relay)
            }
            Err(_) => {
                self.io.push(Action::Close { to: Peer::Backend });
                self.io.push(Action::Close { to: Peer::Client });
                None
            }
        }
    }

    /// Moves bytes read from `from` through the relay; `Err` means close.
    pub(super) fn relay_input(
        &mut self,
        now: Instant,
        relay: &mut Relay,
        from: Peer,
        bytes: &[u8],
    ) -> Result<(), String> {
        self.timers
            .set(Timer::Idle, now + self.cfg.relay_idle_timeout);
        match from {
            Peer::Client => relay.client_bytes(&mut self.io, bytes),
            Peer::Backend => relay.backend_bytes(&mut self.io, bytes),
        }
    }

    /// Buffers client bytes before login; false when they would pass the input limit
    /// (only a shell that ignores `wants_read` gets there), the caller then closes.
    pub(super) fn accept_client_bytes(&mut self, bytes: &[u8]) -> bool {
        let limit = self.cfg.limits.max_buffered_input + MAX_READ;
        if self.input.buffered() + bytes.len() > limit {
            return false;
        }
        self.input.push(bytes);
        true
    }

    /// Backpressure before login: read from the client while its input and our
    /// replies stay under their limits.
    pub(super) fn client_wants_read(&self) -> bool {
        self.input.buffered() < self.cfg.limits.max_buffered_input && self.can_answer()
    }

    /// The shell drained what was written to `to`.
    pub(super) fn drained(&mut self, relay: Option<&mut Relay>, to: Peer) {
        match relay {
            Some(relay) => relay.drained(&mut self.io, to),
            None if to == Peer::Client => self.io.drained(),
            None => {}
        }
    }

    /// Closes the relay's legs; nothing follows.
    pub(super) fn close_relay(&mut self, relay: &mut Relay) {
        relay.close(&mut self.io);
        self.timers = TimerTable::default();
        self.input.clear();
    }

    /// Closes the client leg (the caller closed any back-end leg); nothing follows.
    pub(super) fn close_client(&mut self) {
        self.io.push(Action::Close { to: Peer::Client });
        self.timers = TimerTable::default();
        self.input.clear();
    }
}

/// Sends `AUTH PLAIN <base64>` (RFC 4616 in the RFC 4954/5034 command, or IMAP's
/// AUTHENTICATE after `prefix`) for the login's account and password. The line is
/// wiped after sending.
pub(super) fn send_auth_plain(
    io: &mut Outbox,
    login: &mut BackendLogin,
    prefix: &[u8],
) -> Result<(), String> {
    let response = sasl::encode_plain(&login.account.0, &login.password);
    let mut line = Vec::with_capacity(prefix.len() + response.expose().len() + 2);
    line.extend_from_slice(prefix);
    line.extend_from_slice(response.expose());
    line.extend_from_slice(b"\r\n");
    let line = Secret::new(line);
    login.leg.send(io, line.expose())
}
