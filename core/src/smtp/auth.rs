//! Securing the session: STARTTLS (RFC 3207), and AUTH on the submission port
//! (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms and a growing delay after
//! each failure.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::config::SmtpRole;
use super::reply;
use super::session::{Phase, SmtpSession, Waiting};
use crate::io::{Action, Peer};
use crate::request::{Failure, Reply, Request};
use crate::secret::Secret;
use crate::timer::Timer;

/// The longest user name accepted; longer names cannot be addresses (RFC 5321 §4.5.3.1).
const MAX_USER_LEN: usize = 320;

/// Which SASL response the next line is.
#[derive(Debug)]
pub(super) enum Sasl {
    /// The PLAIN message (RFC 4616 §2).
    Plain,
    /// LOGIN: the user name.
    LoginUser,
    /// LOGIN: the password for this user.
    LoginPassword {
        /// The name from the previous step.
        user: String,
    },
}

impl SmtpSession {
    /// Whether a password may be sent now (RFC 4954 §4, `[tls] plaintext_auth`).
    pub(super) fn login_allowed(&self) -> bool {
        self.secure || self.conn.plaintext_auth
    }

    /// STARTTLS (RFC 3207 §4).
    pub(super) fn starttls(&mut self) {
        if !self.conn.starttls_available {
            return self.reply(reply::STARTTLS_NOT_AVAILABLE);
        }
        if self.secure {
            return self.bad_command(reply::TLS_ACTIVE);
        }
        if self.tx.is_some() {
            return self.bad_command(reply::STARTTLS_IN_TRANSACTION);
        }
        self.reply(reply::STARTTLS_GO);
        self.io.push(Action::StartTls { with: Peer::Client });
        // RFC 3207 §4.2: forget what the client said before TLS. Pipelined plaintext
        // after STARTTLS is discarded so it cannot be injected into the TLS session
        // (CVE-2011-0411).
        self.input.clear();
        self.secure = true;
        self.greeted = None;
        self.account = None;
    }

    /// `AUTH mechanism [initial-response]`.
    pub(super) fn auth(&mut self, now: Instant, mechanism: &str, initial: Option<Secret>) {
        if self.cfg.role != SmtpRole::Submission {
            return self.reply(reply::AUTH_NOT_AVAILABLE);
        }
        if !self.greeted.as_ref().is_some_and(|g| g.extended) {
            return self.bad_command(reply::SEND_EHLO);
        }
        if self.account.is_some() {
            return self.bad_command(reply::ALREADY_AUTHENTICATED);
        }
        if self.tx.is_some() {
            return self.bad_command(reply::AUTH_IN_TRANSACTION);
        }
        if !self.login_allowed() {
            return self.reply(reply::AUTH_NEEDS_TLS);
        }
        let step = match mechanism {
            "PLAIN" => Sasl::Plain,
            "LOGIN" => Sasl::LoginUser,
            _ => return self.reply(reply::AUTH_MECHANISM),
        };
        match initial {
            Some(response) => self.sasl_response(now, step, response.expose()),
            None => self.challenge(step),
        }
    }

    fn challenge(&mut self, step: Sasl) {
        self.reply(match step {
            Sasl::Plain => reply::AUTH_CONTINUE,
            Sasl::LoginUser => reply::AUTH_USERNAME,
            Sasl::LoginPassword { .. } => reply::AUTH_PASSWORD,
        });
        self.phase = Phase::Sasl(step);
    }

    /// One base64 response line (RFC 4954 §4): `*` cancels, `=` is empty.
    pub(super) fn sasl_response(&mut self, now: Instant, step: Sasl, line: &[u8]) {
        if line == b"*" {
            return self.reply(reply::AUTH_CANCELLED);
        }
        let decoded = if line == b"=" {
            Ok(Vec::new())
        } else {
            BASE64.decode(line)
        };
        let Ok(decoded) = decoded.map(Secret::new) else {
            return self.bad_command(reply::AUTH_BAD_BASE64);
        };
        match step {
            Sasl::Plain => match parse_plain(decoded.expose()) {
                Some((user, password)) => self.authenticate(now, user, Secret::new(password)),
                None => self.bad_command(reply::AUTH_MALFORMED),
            },
            Sasl::LoginUser => match user_name(decoded.expose()) {
                Some(user) => self.challenge(Sasl::LoginPassword { user }),
                None => self.bad_command(reply::AUTH_MALFORMED),
            },
            Sasl::LoginPassword { user } => self.authenticate(now, user, decoded),
        }
    }

    fn authenticate(&mut self, now: Instant, user: String, password: Secret) {
        let client = self.conn.client.ip();
        let id = self.request(
            now,
            Request::Authenticate {
                user,
                password,
                client,
            },
        );
        self.waiting = Some(Waiting::Authenticate { id });
    }

    pub(super) fn on_authenticated(&mut self, now: Instant, answer: Reply) {
        match answer {
            Reply::Authenticated(account) => {
                self.account = Some(account);
                self.login_done(now);
                self.reply(reply::AUTH_OK);
            }
            // A disabled account is answered like a wrong password: nothing is disclosed.
            Reply::Failed(
                failure @ (Failure::Denied | Failure::Disabled | Failure::Throttled(_)),
            ) => {
                self.auth_failures += 1;
                let close_after = self.auth_failures >= self.cfg.limits.max_auth_failures;
                self.waiting = Some(Waiting::AuthDelay { close_after });
                let mut delay = failure_delay(self.cfg.auth_failure_delay, self.auth_failures);
                if let Failure::Throttled(penalty) = failure {
                    delay = delay.max(penalty);
                }
                let at = now.checked_add(delay);
                self.timers.set(
                    Timer::AuthDelay,
                    at.unwrap_or(now + self.cfg.auth_failure_delay),
                );
            }
            _ => self.reply(reply::AUTH_TEMPORARY),
        }
    }

    pub(super) fn auth_delay_over(&mut self, now: Instant) {
        if let Some(Waiting::AuthDelay { close_after }) = self.waiting.take() {
            self.reply(reply::AUTH_FAILED);
            if close_after {
                let line = reply::too_many_auth_failures(&self.cfg.hostname);
                self.reply(&line);
                self.close();
            } else {
                self.resume(now);
            }
        }
    }
}

/// `base` doubled for each failure after the first, capped so it cannot overflow.
fn failure_delay(base: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    base.saturating_mul(1 << doublings)
}

/// Splits `authzid NUL authcid NUL passwd`; only an empty authzid or one equal to the
/// authcid is accepted (no proxy authorization).
fn parse_plain(message: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut parts = message.splitn(3, |&b| b == 0);
    let (authzid, authcid, password) = (parts.next()?, parts.next()?, parts.next()?);
    if password.contains(&0) || (!authzid.is_empty() && authzid != authcid) {
        return None;
    }
    Some((user_name(authcid)?, password.to_vec()))
}

fn user_name(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() || bytes.len() > MAX_USER_LEN {
        return None;
    }
    let name = std::str::from_utf8(bytes).ok()?;
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    Some(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_message_forms() {
        assert_eq!(
            parse_plain(b"\0alice\0pw"),
            Some(("alice".into(), b"pw".to_vec()))
        );
        assert_eq!(
            parse_plain(b"alice\0alice\0pw"),
            Some(("alice".into(), b"pw".to_vec()))
        );
        assert_eq!(parse_plain(b"admin\0alice\0pw"), None);
        assert_eq!(parse_plain(b"\0\0pw"), None);
        assert_eq!(parse_plain(b"alice\0pw"), None);
        assert_eq!(parse_plain(b"\0a b\0pw"), None);
        assert_eq!(parse_plain(b""), None);
    }

    #[test]
    fn delay_doubles_and_saturates() {
        let base = Duration::from_millis(100);
        assert_eq!(failure_delay(base, 1), base);
        assert_eq!(failure_delay(base, 2), base * 2);
        assert_eq!(failure_delay(base, 3), base * 4);
        assert_eq!(failure_delay(Duration::MAX, 40), Duration::MAX);
    }
}
