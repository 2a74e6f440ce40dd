//! The mail transaction inside a session: MAIL, the RCPTs and DATA as one pipelined group
//! (RFC 2920) or one by one, the body as DATA or BDAT chunks (RFC 3030), and the
//! per-recipient results.

use bytes::Bytes;

use super::{After, BDAT_WINDOW, Body, ClientEvent, ClientSession, Command, Expect};
use crate::proxy::xclient::{self, Xclient};
use crate::smtp_client::data::BodyEncoder;
use crate::smtp_client::reply::SmtpReply;
use crate::smtp_client::report::{Failure, RecipientResult, Report};

impl ClientSession {
    /// Checks what the message needs against what the server offers, then sends MAIL,
    /// the RCPTs and (for DATA) DATA: as one group with PIPELINING, else one by one.
    pub(super) fn start_transaction(&mut self) {
        if self.send_xclient() {
            return;
        }
        let needs_utf8 = self.envelope.needs_smtputf8();
        if needs_utf8 && !self.caps.smtputf8 {
            // RFC 6531 §3.2: without SMTPUTF8 the message cannot be sent to this server.
            return self.refuse_locally(
                "the message needs SMTPUTF8, which the server does not offer (RFC 6531)",
            );
        }
        if self.envelope.eight_bit && !self.caps.eight_bit_mime {
            // RFC 6152 §3: no 8-bit data to a server that does not offer 8BITMIME; the
            // client does not convert the message.
            return self.refuse_locally(
                "the message has 8-bit content and the server does not offer 8BITMIME (RFC 6152)",
            );
        }
        if let Some(limit) = self.caps.size
            && limit > 0
            && self.envelope.size > limit
        {
            let detail = format!(
                "the message ({} octets) is larger than the server's limit of {limit} (RFC 1870)",
                self.envelope.size
            );
            return self.refuse_locally(&detail);
        }
        self.pipelined = self.caps.pipelining;
        // RFC 2033 defines the per-recipient replies after DATA only: LMTP sends DATA.
        self.chunking = self.caps.chunking && !self.config.lmtp;
        self.to_send.push_back(Command::Mail);
        self.to_send
            .extend((0..self.envelope.recipients.len()).map(Command::Rcpt));
        if !self.chunking {
            self.to_send.push_back(Command::Data);
        }
        self.send_envelope();
    }

    /// Sends XCLIENT (Postfix `XCLIENT_README`) when the envelope names a client the
    /// server has not been told about on this connection, the server offers it and has
    /// not refused it: only the attributes it lists, values in xtext. Returns whether
    /// it was sent (MAIL then waits for the `220` and the new EHLO/LHLO).
    fn send_xclient(&mut self) -> bool {
        let Some(wanted) = self.envelope.xclient.as_ref() else {
            return false;
        };
        if self.xclient_refusal.is_some()
            || self.caps.xclient.is_none()
            || self.xclient_sent.as_ref() == Some(&**wanted)
        {
            return false;
        }
        let offered = |name: &str| self.caps.offers_xclient(name);
        let named = Xclient {
            addr: wanted.addr.filter(|_| offered("ADDR")),
            port: wanted.port.filter(|_| offered("PORT")),
            helo: wanted.helo.clone().filter(|_| offered("HELO")),
            name: wanted.name.clone().filter(|_| offered("NAME")),
            proto: wanted.proto.clone().filter(|_| offered("PROTO")),
            ttl: wanted.ttl.filter(|_| offered("TTL")),
        };
        if named == Xclient::default() {
            return false;
        }
        let line = xclient::encode(&named);
        if line.len() > xclient::MAX_LINE {
            return false;
        }
        self.xclient_pending = Some((**wanted).clone());
        self.command(&line, Expect::Xclient);
        true
    }

    /// The message cannot go to this server (an extension it lacks, its size limit):
    /// a permanent failure before any byte of the transaction, so the connection stays
    /// usable for another message.
    fn refuse_locally(&mut self, detail: &str) {
        self.conclude(
            Err(Failure {
                permanent: true,
                reply: None,
                detail: detail.to_owned(),
            }),
            After::Clean,
        );
    }

    /// Sends what of the envelope group may go now.
    fn send_envelope(&mut self) {
        let mut out = String::new();
        while let Some(&next) = self.to_send.front() {
            if !self.pipelined && !self.expect.is_empty() {
                break;
            }
            self.to_send.pop_front();
            match next {
                Command::Mail => {
                    out.push_str(&self.mail_command());
                    self.expect.push_back(Expect::Mail);
                }
                Command::Rcpt(i) => {
                    let Some(rcpt) = self.envelope.recipients.get(i) else {
                        continue;
                    };
                    out.push_str(&format!("RCPT TO:<{rcpt}>\r\n"));
                    self.expect.push_back(Expect::Rcpt(i));
                }
                Command::Data => {
                    // One by one, DATA only goes when a recipient was accepted.
                    if !self.pipelined && self.accepted() == 0 {
                        continue;
                    }
                    out.push_str("DATA\r\n");
                    self.expect.push_back(Expect::Data);
                }
            }
        }
        if !out.is_empty() {
            self.events.push_back(ClientEvent::Send(Bytes::from(out)));
        }
    }

    fn mail_command(&self) -> String {
        let mut line = format!("MAIL FROM:<{}>", self.envelope.mail_from);
        if self.caps.size.is_some() {
            line.push_str(&format!(" SIZE={}", self.envelope.size));
        }
        if self.envelope.eight_bit {
            line.push_str(" BODY=8BITMIME");
        }
        if self.envelope.needs_smtputf8() {
            line.push_str(" SMTPUTF8");
        }
        line.push_str("\r\n");
        line
    }

    fn accepted(&self) -> usize {
        self.accepted_indexes().count()
    }

    /// The indexes of the recipients whose RCPT was accepted, in order.
    pub(super) fn accepted_indexes(&self) -> impl Iterator<Item = usize> + '_ {
        self.rcpt_replies
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_ref().is_some_and(SmtpReply::is_completion))
            .map(|(i, _)| i)
    }

    /// An envelope reply came in: send more, or decide once all are in.
    pub(super) fn envelope_progress(&mut self) {
        self.send_envelope();
        if !self.expect.is_empty() || !self.to_send.is_empty() {
            return;
        }
        // A pipelined DATA got its go-ahead although nothing may follow: end the empty
        // data so the server is back in command state (RFC 2920 §3.1).
        let data_go = self.data_reply.as_ref().is_some_and(|r| r.code == 354);
        let proceed = self.mail_refused.is_none() && self.accepted() > 0;
        if data_go && !proceed {
            self.events
                .push_back(ClientEvent::Send(Bytes::from_static(b".\r\n")));
            self.expect.push_back(Expect::EmptyData);
        }
        if let Some(reply) = self.mail_refused.take() {
            let permanent = reply.is_permanent();
            let failure = Failure {
                permanent,
                detail: format!("the server refused the sender: {}", reply.text()),
                reply: Some(reply),
            };
            return self.finish_then_reset(Err(failure));
        }
        if !proceed {
            let results = self.final_results(&SmtpReply::synthetic(554, (5, 5, 1), "unused"));
            return self.finish_then_reset(Ok(results));
        }
        if self.chunking {
            self.body = Body::Sending {
                encoder: BodyEncoder::bdat(),
                wanted: false,
            };
            return self.want_body();
        }
        match self.data_reply.take() {
            Some(reply) if reply.code == 354 => {
                self.body = Body::Sending {
                    encoder: BodyEncoder::data(),
                    wanted: false,
                };
                self.want_body();
            }
            // A 2xx to DATA would claim a message that was never sent: not delivered.
            Some(reply) if reply.is_completion() => {
                let odd = SmtpReply::synthetic(
                    451,
                    (4, 5, 0),
                    &format!("unexpected reply to DATA: {}", reply.text()),
                );
                let results = self.final_results(&odd);
                self.finish_and_quit(Ok(results));
            }
            Some(reply) => {
                let results = self.final_results(&reply);
                self.conclude(Ok(results), After::Reset);
            }
            None => self.broken("DATA was not answered".into()),
        }
    }

    /// Finishes; RSET (or QUIT) waits until a lone `.` got its reply, if one is in
    /// flight.
    fn finish_then_reset(&mut self, report: Report) {
        self.finish(report);
        if self.expect.is_empty() {
            self.reset_or_quit();
        }
    }

    /// Asks for the next body chunk if the BDAT window allows.
    pub(super) fn want_body(&mut self) {
        let in_flight = self.expect.len();
        let window = if self.pipelined { BDAT_WINDOW } else { 1 };
        if let Body::Sending { wanted, .. } = &mut self.body
            && !*wanted
            && (!self.chunking || in_flight < window)
            && self.bdat_refused.is_none()
        {
            *wanted = true;
            self.events.push_back(ClientEvent::ReadBody {
                max: self.config.body_chunk.max(1),
            });
        }
    }

    pub(super) fn bdat_reply(&mut self, reply: SmtpReply, last: bool) {
        if !reply.is_completion() && self.bdat_refused.is_none() {
            // RFC 3030 §2: a refused chunk ends the message; the chunks already in
            // flight are still answered, then the first refusal stands for all.
            self.bdat_refused = Some(reply.clone());
            self.body = Body::Ended;
        }
        if let Some(refusal) = self.bdat_refused.clone() {
            if self.expect.is_empty() {
                let results = self.final_results(&refusal);
                self.conclude(Ok(results), After::Reset);
            }
            return;
        }
        if last {
            let results = self.final_results(&reply);
            return self.conclude(Ok(results), After::Clean);
        }
        self.want_body();
    }

    /// Per-recipient results once `final_reply` answered the message: refused RCPTs keep
    /// their own reply, accepted ones take their own LMTP reply when they have one
    /// (RFC 2033 §4.2), else the final reply.
    pub(super) fn final_results(&self, final_reply: &SmtpReply) -> Vec<RecipientResult> {
        self.rcpt_replies
            .iter()
            .zip(&self.lmtp_replies)
            .map(|(rcpt, lmtp)| match (rcpt, lmtp) {
                (Some(reply), _) if !reply.is_completion() => {
                    RecipientResult::from_reply(reply.clone())
                }
                (_, Some(reply)) => RecipientResult::from_reply(reply.clone()),
                _ => RecipientResult::from_reply(final_reply.clone()),
            })
            .collect()
    }
}
