//! AUTHORIZATION state: USER/PASS (RFC 1939 §7), AUTH PLAIN (RFC 5034, RFC 4616).

use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::session::{Pop3Session, State, Waiting};
use super::transaction::Mailbox;
use crate::proxy::xclient::{Xclient, XclientError};
use crate::request::{Account, Failure, Reply, Request};
use crate::secret::Secret;
use crate::timer::Timer;

const PLAINTEXT_REFUSED: &str =
    "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS first";

impl Pop3Session {
    pub(super) fn user(&mut self, name: String) {
        if !self.login_allowed() {
            return self.reply(PLAINTEXT_REFUSED);
        }
        self.state = State::Authorization { user: Some(name) };
        self.reply("+OK");
    }

    /// `XCLIENT` from a trusted proxy (the caller checked `may_override_client`): only
    /// before USER or AUTH, it replaces the client address used from then on and records
    /// the TTL; the session stays in AUTHORIZATION (Dovecot's POP3 answer, `+OK`).
    pub(super) fn xclient(&mut self, parsed: Result<Xclient, XclientError>) {
        let fresh =
            matches!(self.state, State::Authorization { user: None }) && self.auth_failures == 0;
        if !fresh {
            return self.bad_command("-ERR Command not valid in this state");
        }
        let x = match parsed {
            Ok(x) => x,
            Err(XclientError::TooLong) => return self.bad_command("-ERR Command line too long"),
            Err(_) => return self.bad_command("-ERR Syntax error: invalid XCLIENT attributes"),
        };
        if let Some(ip) = x.addr {
            self.conn.client = std::net::SocketAddr::new(ip, x.port.unwrap_or(0));
        }
        if x.ttl.is_some() {
            self.proxy_ttl = x.ttl;
        }
        self.reply("+OK");
    }

    pub(super) fn pass(&mut self, now: Instant, password: Secret) {
        if !self.login_allowed() {
            return self.reply(PLAINTEXT_REFUSED);
        }
        let State::Authorization { user: Some(user) } =
            std::mem::replace(&mut self.state, State::Authorization { user: None })
        else {
            return self.reply("-ERR USER first");
        };
        self.authenticate(now, user, password);
    }

    pub(super) fn auth(
        &mut self,
        now: Instant,
        mechanism: Option<String>,
        initial: Option<Secret>,
    ) {
        if !self.login_allowed() {
            return self.reply(PLAINTEXT_REFUSED);
        }
        match mechanism.as_deref() {
            None => self.io.out.extend_from_slice(b"+OK\r\nPLAIN\r\n.\r\n"),
            Some("PLAIN") => match initial {
                // RFC 5034 §4: "=" is an empty initial response.
                Some(response) => self.sasl_response(now, response.expose()),
                None => {
                    self.state = State::SaslResponse;
                    self.reply("+ ");
                }
            },
            Some(_) => self.reply("-ERR Unrecognized authentication type"),
        }
    }

    /// The client's SASL PLAIN response, base64 (RFC 4616 §2).
    pub(super) fn sasl_response(&mut self, now: Instant, line: &[u8]) {
        if line == b"*" {
            return self.reply("-ERR Authentication cancelled");
        }
        let decoded = if line == b"=" {
            Ok(Vec::new())
        } else {
            BASE64.decode(line)
        };
        let Ok(decoded) = decoded.map(Secret::new) else {
            return self.reply("-ERR [AUTH] Invalid base64 data");
        };
        match parse_plain(decoded.expose()) {
            Some((user, password)) => self.authenticate(now, user, Secret::new(password)),
            None => self.reply("-ERR [AUTH] Malformed PLAIN response"),
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

    pub(super) fn on_authenticated(&mut self, now: Instant, reply: Reply) {
        match reply {
            Reply::Authenticated(account) => {
                let id = self.request(
                    now,
                    Request::ListMailbox {
                        account: account.clone(),
                    },
                );
                self.waiting = Some(Waiting::Listing { id, account });
            }
            Reply::Failed(failure @ (Failure::Denied | Failure::Throttled(_))) => {
                self.auth_failures += 1;
                let close_after = self.auth_failures >= self.cfg.limits.max_auth_failures;
                self.waiting = Some(Waiting::AuthDelay { close_after });
                let delay = match failure {
                    Failure::Throttled(penalty) => penalty.max(self.cfg.auth_failure_delay),
                    _ => self.cfg.auth_failure_delay,
                };
                let at = now.checked_add(delay);
                self.timers.set(
                    Timer::AuthDelay,
                    at.unwrap_or(now + self.cfg.auth_failure_delay),
                );
            }
            Reply::Failed(Failure::Disabled) => {
                self.reply("-ERR [AUTH] Login is disabled for this account")
            }
            other => self.reply_failure(&other),
        }
    }

    pub(super) fn auth_delay_over(&mut self, now: Instant) {
        if let Some(Waiting::AuthDelay { close_after }) = self.waiting.take() {
            self.reply("-ERR [AUTH] Authentication failed");
            if close_after {
                self.reply("-ERR Too many failed logins, closing connection");
                self.close();
            } else {
                self.resume(now);
            }
        }
    }

    pub(super) fn on_listing(&mut self, now: Instant, account: Account, reply: Reply) {
        match reply {
            Reply::Listing(messages) => {
                if self.cfg.mailbox_lock {
                    self.locked = Some(account.clone());
                }
                let mailbox = Mailbox::new(account, messages);
                let line = format!(
                    "+OK Logged in, {} messages ({} octets)",
                    mailbox.count(),
                    mailbox.total_size()
                );
                self.state = State::Transaction(mailbox);
                self.arm_idle(now);
                self.reply(&line);
            }
            Reply::Failed(Failure::InUse) => {
                self.reply("-ERR [IN-USE] Mailbox is in use by another POP3 session")
            }
            other => self.reply_failure(&other),
        }
    }

    /// The reply for a store failure with no more specific meaning (RFC 3206 §4).
    pub(super) fn reply_failure(&mut self, reply: &Reply) {
        match reply {
            Reply::Failed(Failure::Permanent(_)) => {
                self.reply("-ERR [SYS/PERM] Mailbox unavailable")
            }
            _ => self.reply("-ERR [SYS/TEMP] Temporary failure, try again later"),
        }
    }
}

/// Splits `authzid NUL authcid NUL passwd`; only an empty authzid or one equal to the
/// authcid is accepted (no proxy authorization).
fn parse_plain(message: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut parts = message.splitn(3, |&b| b == 0);
    let (authzid, authcid, password) = (parts.next()?, parts.next()?, parts.next()?);
    if authcid.is_empty() || authcid.len() > super::command::MAX_USER_LEN || password.contains(&0) {
        return None;
    }
    if !authzid.is_empty() && authzid != authcid {
        return None;
    }
    let user = std::str::from_utf8(authcid).ok()?;
    Some((user.to_owned(), password.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::parse_plain;

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
        assert_eq!(parse_plain(b""), None);
    }
}
