//! LOGIN (RFC 3501 §6.2.3) and AUTHENTICATE PLAIN (§6.2.2, RFC 4616, RFC 4959 SASL-IR).

use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::response::{self, Code, Condition};
use super::session::{ImapSession, Op, State, Waiting};
use crate::request::{Failure, Reply, Request};
use crate::secret::Secret;
use crate::timer::Timer;

/// The longest user name accepted (RFC 5321 §4.5.3.1 address length).
const MAX_USER_LEN: usize = 320;

impl ImapSession {
    pub(super) fn login(&mut self, now: Instant, tag: String, user: String, password: Secret) {
        if !self.login_allowed() {
            return self.tagged(
                &tag,
                Condition::No,
                Some(&Code::PrivacyRequired),
                "LOGIN is disabled before STARTTLS",
            );
        }
        self.check_password(now, tag, user, password);
    }

    pub(super) fn authenticate(
        &mut self,
        now: Instant,
        tag: String,
        mechanism: &str,
        initial: Option<Secret>,
    ) {
        if mechanism != "PLAIN" {
            return self.tagged(&tag, Condition::No, None, "Unsupported mechanism");
        }
        if !self.login_allowed() {
            return self.tagged(
                &tag,
                Condition::No,
                Some(&Code::PrivacyRequired),
                "Authentication is disabled before STARTTLS",
            );
        }
        match initial {
            Some(response) => self.sasl_response(now, tag, response.expose()),
            None => {
                response::continuation(&mut self.io.out, "");
                self.sasl_tag = Some(tag);
            }
        }
    }

    /// The client's SASL PLAIN response, base64 (RFC 4616 §2); `*` cancels
    /// (RFC 3501 §6.2.2), `=` is an empty initial response (RFC 4959 §3).
    pub(super) fn sasl_response(&mut self, now: Instant, tag: String, line: &[u8]) {
        if line == b"*" {
            return self.bad(Some(&tag), "Authentication cancelled");
        }
        let decoded = if line == b"=" {
            Ok(Vec::new())
        } else {
            BASE64.decode(line)
        };
        let Ok(decoded) = decoded.map(Secret::new) else {
            return self.bad(Some(&tag), "Invalid base64 data");
        };
        match parse_plain(decoded.expose()) {
            Some((user, password)) => self.check_password(now, tag, user, Secret::new(password)),
            None => self.tagged(
                &tag,
                Condition::No,
                Some(&Code::AuthenticationFailed),
                "Malformed PLAIN response",
            ),
        }
    }

    fn check_password(&mut self, now: Instant, tag: String, user: String, password: Secret) {
        let client = self.conn.client.ip();
        let id = self.send(
            now,
            Request::Authenticate {
                user,
                password,
                client,
            },
        );
        self.waiting = Some(Waiting::Request {
            id,
            tag,
            op: Op::Authenticate,
        });
    }

    pub(super) fn on_authenticated(&mut self, now: Instant, tag: String, reply: Reply) {
        match reply {
            Reply::Authenticated(account) => {
                self.state = State::Authenticated(account);
                self.arm_idle(now);
                let caps = Code::Capability(self.capabilities());
                self.tagged(&tag, Condition::Ok, Some(&caps), "Logged in");
            }
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
                self.waiting = Some(Waiting::AuthDelay { tag, close_after });
            }
            Reply::Failed(Failure::Disabled) => self.tagged(
                &tag,
                Condition::No,
                Some(&Code::AuthorizationFailed),
                "Login is disabled for this account",
            ),
            Reply::Failed(Failure::Temporary(_)) => self.tagged(
                &tag,
                Condition::No,
                Some(&Code::Unavailable),
                "Temporary failure, try again later",
            ),
            _ => self.tagged(&tag, Condition::No, Some(&Code::ServerBug), "Login failed"),
        }
    }

    pub(super) fn auth_delay_over(&mut self, now: Instant) {
        if let Some(Waiting::AuthDelay { tag, close_after }) = self.waiting.take() {
            self.tagged(
                &tag,
                Condition::No,
                Some(&Code::AuthenticationFailed),
                "Authentication failed",
            );
            if close_after {
                self.untagged(Condition::Bye, None, "Too many failed logins");
                self.close();
            } else {
                self.resume(now);
            }
        }
    }
}

/// Splits `authzid NUL authcid NUL passwd`; only an empty authzid or one equal to the
/// authcid is accepted (no proxy authorization).
fn parse_plain(message: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut parts = message.splitn(3, |&b| b == 0);
    let (authzid, authcid, password) = (parts.next()?, parts.next()?, parts.next()?);
    if authcid.is_empty() || authcid.len() > MAX_USER_LEN || password.contains(&0) {
        return None;
    }
    if !authzid.is_empty() && authzid != authcid {
        return None;
    }
    let user = std::str::from_utf8(authcid).ok()?;
    Some((user.to_owned(), password.to_vec()))
}
