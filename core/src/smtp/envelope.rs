//! The greeting and the envelope: HELO/EHLO/LHLO, MAIL and RCPT (RFC 5321 §4.1.1.1-3,
//! RFC 2033 §4.1), with the rules of each listener role.

use std::time::Instant;

use super::address::{Param, Path};
use super::body::Message;
use super::config::SmtpRole;
use super::reply;
use super::session::{Greeted, SmtpSession, Waiting};
use crate::request::{Account, BackendRecipient, Failure, RecipientCheck, Reply, Request};

/// The body type declared on MAIL (RFC 6152, RFC 3030 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    /// `BODY=7BIT`, or nothing.
    SevenBit,
    /// `BODY=8BITMIME` (RFC 6152).
    EightBitMime,
    /// `BODY=BINARYMIME` (RFC 3030 §3): BDAT only, no line rules.
    BinaryMime,
}

/// One accepted recipient.
#[derive(Debug, Clone)]
pub(super) struct Recipient {
    /// The address as the client gave it.
    pub(super) address: String,
    /// The account the store resolved it to; `None` for a remote recipient accepted
    /// for the outbound queue (submission with relaying).
    pub(super) account: Option<Account>,
    /// Proxy mode: the recipient's back-end; the message is queued for it instead of
    /// being delivered here.
    pub(super) backend: Option<BackendRecipient>,
}

/// A mail transaction, from MAIL to the end of its message or RSET.
#[derive(Debug)]
pub(super) struct Envelope {
    /// The reverse-path; empty for `<>`.
    pub(super) sender: String,
    /// `SMTPUTF8` was given (RFC 6531 §3.4).
    pub(super) smtputf8: bool,
    pub(super) body: Body,
    /// `SIZE=` (RFC 1870 §6), for the store's early quota check.
    pub(super) size_hint: Option<u64>,
    /// Accepted recipients, in RCPT order.
    pub(super) recipients: Vec<Recipient>,
    /// Whether any RCPT reached the store, accepted or not: DATA with none at all is a
    /// bad sequence (`503`), with every one refused it is `554` (RFC 5321 §3.3).
    pub(super) rcpt_tried: bool,
    /// The message, from DATA or the first BDAT.
    pub(super) message: Option<Message>,
}

/// MAIL parameters after their meaning was checked.
#[derive(Debug, PartialEq, Eq)]
struct MailParams {
    size: Option<u64>,
    body: Body,
    smtputf8: bool,
}

/// Why MAIL parameters were refused.
#[derive(Debug, PartialEq, Eq)]
enum ParamError {
    /// `501 5.5.4` with this text.
    Syntax(&'static str),
    /// `555 5.5.4`: not a parameter we implement.
    Unknown,
    /// `552 5.3.4`: `SIZE=` over the limit (RFC 1870 §6).
    TooBig,
}

/// Reads the MAIL parameters (RFC 1870 SIZE, RFC 6152/3030 BODY, RFC 6531 SMTPUTF8,
/// RFC 4954 §5 AUTH).
fn mail_params(params: Vec<Param>, max_size: u64) -> Result<MailParams, ParamError> {
    let mut seen: Vec<String> = Vec::new();
    let mut out = MailParams {
        size: None,
        body: Body::SevenBit,
        smtputf8: false,
    };
    for Param { keyword, value } in params {
        if seen.contains(&keyword) {
            return Err(ParamError::Syntax("Duplicate parameter"));
        }
        let value = value.as_deref();
        match (keyword.as_str(), value) {
            ("SIZE", Some(v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                // Saturating: a size too large for u64 is over any limit.
                let size = v.bytes().fold(0u64, |acc, d| {
                    acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                if size > max_size {
                    return Err(ParamError::TooBig);
                }
                out.size = Some(size);
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => out.body = Body::SevenBit,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                out.body = Body::EightBitMime
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("BINARYMIME") => {
                out.body = Body::BinaryMime
            }
            ("SMTPUTF8", None) => out.smtputf8 = true,
            // RFC 4954 §5: the submitter's identity; accepted and not used.
            ("AUTH", Some(_)) => {}
            ("SIZE" | "BODY" | "SMTPUTF8" | "AUTH", _) => {
                return Err(ParamError::Syntax("Invalid parameter value"));
            }
            _ => return Err(ParamError::Unknown),
        }
        seen.push(keyword);
    }
    Ok(out)
}

impl SmtpSession {
    /// HELO, EHLO (`extended`) or LHLO (`lhlo`).
    pub(super) fn hello(&mut self, now: Instant, name: String, extended: bool, lhlo: bool) {
        if lhlo != self.lmtp() {
            let line = if lhlo {
                reply::LHLO_ON_SMTP
            } else {
                reply::HELO_ON_LMTP
            };
            return self.bad_command(line);
        }
        let line = if extended {
            self.extensions()
        } else {
            format!("250 {}", self.cfg.hostname)
        };
        self.greeted = Some(Greeted { name, extended });
        // A greeting command resets the transaction (RFC 5321 §4.1.4).
        self.reset_then(now, &line);
    }

    /// The EHLO/LHLO reply (RFC 5321 §4.1.1.1), without its final CRLF.
    fn extensions(&self) -> String {
        let mut lines = vec![
            self.cfg.hostname.clone(),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.cfg.max_message_size),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "CHUNKING".to_owned(),
            "SMTPUTF8".to_owned(),
        ];
        if self.conn.starttls_available && !self.secure {
            lines.push("STARTTLS".to_owned());
        }
        if self.cfg.role == SmtpRole::Submission && self.login_allowed() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        if self.conn.may_override_client {
            // Postfix XCLIENT_README: the attribute names the server accepts.
            lines.push("XCLIENT ADDR PORT HELO NAME PROTO TTL".to_owned());
        }
        lines.push("HELP".to_owned());
        let last = lines.len() - 1;
        let numbered: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, line)| format!("250{}{line}", if i == last { ' ' } else { '-' }))
            .collect();
        numbered.join("\r\n")
    }

    /// Ends the transaction (RSET, and implicitly EHLO: RFC 5321 §4.1.4), then sends
    /// `line`. A message the store holds open is aborted first.
    pub(super) fn reset_then(&mut self, now: Instant, line: &str) {
        let open = self
            .tx
            .take()
            .and_then(|tx| tx.message)
            .and_then(|message| message.delivery);
        match open {
            Some(delivery) => {
                let id = self.request(now, Request::AbortDelivery { delivery });
                let reply = format!("{line}\r\n");
                self.waiting = Some(Waiting::Abort { id, reply });
            }
            None => self.reply(line),
        }
    }

    /// MAIL FROM (RFC 5321 §4.1.1.2).
    pub(super) fn mail(&mut self, now: Instant, path: Path, params: Vec<Param>) {
        if self.greeted.is_none() {
            let line = if self.lmtp() {
                reply::SEND_LHLO
            } else {
                reply::SEND_HELLO
            };
            return self.bad_command(line);
        }
        if self.cfg.role == SmtpRole::Submission && self.account.is_none() {
            return self.reply(reply::AUTH_REQUIRED);
        }
        if self.tx.is_some() {
            return self.bad_command(reply::NESTED_MAIL);
        }
        let params = match mail_params(params, self.cfg.max_message_size) {
            Ok(params) => params,
            Err(ParamError::Syntax(why)) => return self.bad_command(&reply::syntax(why)),
            Err(ParamError::Unknown) => return self.bad_command(reply::UNKNOWN_PARAMETER),
            Err(ParamError::TooBig) => return self.reply(reply::MESSAGE_TOO_BIG),
        };
        if path.utf8 && !params.smtputf8 {
            return self.reply(reply::UTF8_NEEDS_SMTPUTF8);
        }
        if let Some(refusal) = self.sender_refusal(&path.address) {
            return self.reply(refusal);
        }
        self.tx = Some(Envelope {
            sender: path.address,
            smtputf8: params.smtputf8,
            body: params.body,
            size_hint: params.size,
            recipients: Vec::new(),
            rcpt_tried: false,
            message: None,
        });
        // Inbound and LMTP: the first transaction ends the login timeout (submission
        // ended it at AUTH, which MAIL needs).
        self.login_done(now);
        self.reply(reply::SENDER_OK);
    }

    /// Submission with relaying: the reverse-path must be the account's own address
    /// (compared without regard to case), and never null, so bounces of relayed mail
    /// reach the user who sent it (RFC 6409 §6.1 lets a submission server check this).
    fn sender_refusal(&self, sender: &str) -> Option<&'static str> {
        if self.cfg.role != SmtpRole::Submission || !self.cfg.relay {
            return None;
        }
        let account = self.account.as_ref()?;
        if sender.is_empty() {
            Some(reply::NULL_SENDER_ON_SUBMISSION)
        } else if !sender.eq_ignore_ascii_case(&account.0) {
            Some(reply::SENDER_NOT_OWNED)
        } else {
            None
        }
    }

    /// RCPT TO (RFC 5321 §4.1.1.3): checked with the store before it is accepted.
    pub(super) fn rcpt(&mut self, now: Instant, path: Path, params: Vec<Param>) {
        let max_recipients = self.cfg.limits.max_recipients;
        let Some(tx) = &self.tx else {
            return self.bad_command(reply::NEED_MAIL);
        };
        if tx.message.is_some() {
            return self.bad_command(reply::RCPT_AFTER_BDAT);
        }
        if !params.is_empty() {
            // No RCPT parameters are advertised (no DSN).
            return self.bad_command(reply::UNKNOWN_PARAMETER);
        }
        if path.utf8 && !tx.smtputf8 {
            return self.reply(reply::UTF8_NEEDS_SMTPUTF8);
        }
        if tx.recipients.len() >= max_recipients {
            return self.reply(reply::TOO_MANY_RECIPIENTS);
        }
        let request = Request::CheckRecipient {
            address: path.address.clone(),
            size_hint: tx.size_hint,
        };
        if let Some(tx) = self.tx.as_mut() {
            tx.rcpt_tried = true;
        }
        let id = self.request(now, request);
        self.waiting = Some(Waiting::Recipient {
            id,
            address: path.address,
        });
    }

    pub(super) fn on_recipient(&mut self, address: String, answer: Reply) {
        let line = match answer {
            Reply::Recipient(RecipientCheck::Local(account)) => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.recipients.push(Recipient {
                        address,
                        account: Some(account),
                        backend: None,
                    });
                }
                return self.reply(reply::RECIPIENT_OK);
            }
            // Inbound mail on a proxy front-end (and submission) queues it for the
            // back-end. An LMTP listener is a back-end's delivery entry point and never
            // forwards (no loop between nodes): it delivers here, as when a node that is
            // front-end and back-end at once relays to its own LMTP listener.
            Reply::Recipient(RecipientCheck::Backend(backend)) => {
                let recipient = if self.lmtp() {
                    Recipient {
                        address,
                        account: Some(backend.account),
                        backend: None,
                    }
                } else {
                    Recipient {
                        address,
                        account: None,
                        backend: Some(backend),
                    }
                };
                if let Some(tx) = self.tx.as_mut() {
                    tx.recipients.push(recipient);
                }
                return self.reply(reply::RECIPIENT_OK);
            }
            Reply::Recipient(RecipientCheck::NotLocal)
                if self.cfg.role == SmtpRole::Submission && self.cfg.relay =>
            {
                if let Some(tx) = self.tx.as_mut() {
                    tx.recipients.push(Recipient {
                        address,
                        account: None,
                        backend: None,
                    });
                }
                return self.reply(reply::RECIPIENT_OK);
            }
            Reply::Recipient(RecipientCheck::Unknown) => reply::unknown_user(&address),
            Reply::Recipient(RecipientCheck::OverQuota) | Reply::Failed(Failure::OverQuota) => {
                reply::recipient_over_quota(&address)
            }
            Reply::Recipient(RecipientCheck::NotLocal) => match self.cfg.role {
                SmtpRole::Submission => reply::no_outbound(&address),
                SmtpRole::Inbound | SmtpRole::Lmtp => reply::relay_denied(&address),
            },
            _ => reply::recipient_temporary(&address),
        };
        self.reply(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(keyword: &str, value: Option<&str>) -> Param {
        Param {
            keyword: keyword.into(),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn mail_parameter_table() {
        let ok = |params: Vec<Param>| mail_params(params, 1000);
        assert_eq!(
            ok(vec![
                param("SIZE", Some("1000")),
                param("BODY", Some("8bitmime")),
                param("SMTPUTF8", None),
                param("AUTH", Some("<>")),
            ]),
            Ok(MailParams {
                size: Some(1000),
                body: Body::EightBitMime,
                smtputf8: true
            })
        );
        assert_eq!(
            ok(vec![param("BODY", Some("BINARYMIME"))]).map(|p| p.body),
            Ok(Body::BinaryMime)
        );
        assert_eq!(
            ok(vec![param("SIZE", Some("1001"))]),
            Err(ParamError::TooBig)
        );
        assert_eq!(
            ok(vec![param("SIZE", Some("99999999999999999999999"))]),
            Err(ParamError::TooBig)
        );
        assert_eq!(
            ok(vec![param("SIZE", Some("x"))]),
            Err(ParamError::Syntax("Invalid parameter value"))
        );
        assert_eq!(
            ok(vec![param("BODY", Some("9BIT"))]),
            Err(ParamError::Syntax("Invalid parameter value"))
        );
        assert_eq!(
            ok(vec![param("SMTPUTF8", Some("yes"))]),
            Err(ParamError::Syntax("Invalid parameter value"))
        );
        assert_eq!(
            ok(vec![param("SIZE", Some("1")), param("SIZE", Some("2"))]),
            Err(ParamError::Syntax("Duplicate parameter"))
        );
        assert_eq!(
            ok(vec![param("RET", Some("FULL"))]),
            Err(ParamError::Unknown)
        );
    }
}
