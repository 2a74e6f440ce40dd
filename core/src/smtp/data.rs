//! Receiving the message: DATA (RFC 5321 §4.1.1.4), BDAT (RFC 3030 §2), streaming to
//! the store in bounded appends, and the final reply (RFC 2033 §4.2: one per recipient
//! for LMTP).

use std::time::Instant;

use super::body::{Message, Problem, TextCheck};
use super::envelope::{Body, Envelope};
use super::reply;
use super::session::{Phase, SmtpSession, Waiting};
use super::trace::{self, Trace};
use crate::io::RequestId;
use crate::request::{Account, BackendRecipient, Failure, RelayEnvelope, Reply, Request};
use crate::wire::DotUnstuffer;

/// A BDAT chunk being read.
#[derive(Debug)]
pub(super) struct Chunk {
    /// Octets of the chunk not read yet.
    remaining: u64,
    /// Octets announced, for the reply.
    size: u64,
    /// `BDAT n LAST`.
    last: bool,
    /// The command was refused: its octets are swallowed, then this is the reply.
    refused: Option<&'static str>,
}

/// What the final reply needs once CommitDelivery is answered.
#[derive(Debug)]
pub(super) struct CommitPlan {
    /// Our id of the message.
    id: String,
    /// Each accepted recipient in RCPT order, with the index of its account in the
    /// request (an account named twice gets one copy).
    recipients: Vec<(String, usize)>,
}

impl SmtpSession {
    /// DATA: checks the transaction, then opens the message file (`354` once it is open).
    pub(super) fn data(&mut self, now: Instant) {
        let Some(tx) = &self.tx else {
            return self.bad_command(reply::NEED_MAIL);
        };
        if tx.message.is_some() {
            return self.bad_command(reply::DATA_AFTER_BDAT);
        }
        if !tx.rcpt_tried {
            return self.bad_command(reply::NEED_RCPT);
        }
        if tx.recipients.is_empty() {
            // Normal with pipelining when every RCPT was refused (RFC 2920 §3.1).
            return self.reply(reply::NO_VALID_RECIPIENTS);
        }
        if tx.body == Body::BinaryMime {
            return self.bad_command(reply::BINARY_NEEDS_BDAT);
        }
        if let Some(header) = self.open_message(now) {
            self.request_begin(now, header, true);
        }
    }

    /// `BDAT size [LAST]`: the chunk's octets are always read, even when the command is
    /// refused, so they can never be taken for commands.
    pub(super) fn bdat(&mut self, now: Instant, size: u64, last: bool) {
        let refused = match &self.tx {
            None => Some(reply::NEED_MAIL),
            Some(tx) if tx.recipients.is_empty() => Some(reply::NEED_RCPT),
            Some(_) => None,
        };
        self.phase = Phase::Chunk(Chunk {
            remaining: size,
            size,
            last,
            refused,
        });
        if refused.is_some() {
            return;
        }
        let max = self.cfg.max_message_size;
        let first = self.tx.as_ref().is_some_and(|tx| tx.message.is_none());
        let header = if first { self.open_message(now) } else { None };
        let Some(message) = self.message_mut() else {
            return;
        };
        message.announce(size, max);
        // A first chunk that is already too large never gets a file.
        if let (Some(header), None) = (header, message.problem()) {
            self.request_begin(now, header, false);
        }
    }

    fn request_begin(&mut self, now: Instant, header: String, for_data: bool) {
        let request = Request::BeginDelivery {
            header: header.into_bytes().into(),
        };
        let id = self.request(now, request);
        self.waiting = Some(Waiting::Begin { id, for_data });
    }

    /// Creates the transaction's message; returns the trace fields that start its file.
    fn open_message(&mut self, now: Instant) -> Option<String> {
        self.messages += 1;
        let unix = self.unix_time(now);
        let id = format!(
            "{:X}{:04X}{:X}",
            unix.as_micros(),
            self.conn.client.port(),
            self.messages
        );
        let tx = self.tx.as_ref()?;
        // The real client's HELO name from a trusted XCLIENT wins over the proxy's EHLO.
        let helo = match (&self.forwarded.helo, &self.greeted) {
            (Some(name), _) => name.as_str(),
            (None, Some(g)) => g.name.as_str(),
            (None, None) => "unknown",
        };
        let extended = self.greeted.as_ref().is_some_and(|g| g.extended);
        let single = match tx.recipients.as_slice() {
            [only] => Some(only.address.as_str()),
            _ => None,
        };
        let header = trace::header(&Trace {
            sender: &tx.sender,
            helo,
            client: self.conn.client.ip(),
            host: &self.cfg.hostname,
            protocol: trace::protocol(
                self.lmtp(),
                extended,
                self.secure,
                self.account.is_some(),
                tx.smtputf8,
            ),
            id: &id,
            recipient: single,
            unix_time: unix.as_secs(),
        });
        let text =
            (tx.body != Body::BinaryMime).then(|| TextCheck::new(self.cfg.limits.max_text_line));
        self.tx.as_mut()?.message = Some(Message::new(id, text));
        Some(header)
    }

    pub(super) fn message_mut(&mut self) -> Option<&mut Message> {
        self.tx.as_mut().and_then(|tx| tx.message.as_mut())
    }

    pub(super) fn on_delivery_started(&mut self, for_data: bool, answer: Reply) {
        let Reply::DeliveryStarted(delivery) = answer else {
            let failure = match answer {
                Reply::Failed(failure) => failure,
                _ => Failure::Temporary("unexpected reply to BeginDelivery".into()),
            };
            return self.begin_failed(for_data, failure);
        };
        if let Some(message) = self.message_mut() {
            message.delivery = Some(delivery);
        }
        if for_data {
            self.reply(reply::DATA_GO);
            self.phase = Phase::Data(DotUnstuffer::new());
        }
    }

    /// The message file could not be opened: DATA is refused at once; a BDAT chunk is
    /// still read, then refused.
    pub(super) fn begin_failed(&mut self, for_data: bool, failure: Failure) {
        let problem = Problem::Store(failure);
        if for_data {
            self.tx = None;
            self.reply(problem.reply());
        } else if let Some(message) = self.message_mut() {
            message.fail(problem);
        }
    }

    /// Moves raw input into the message. Returns false when more input is needed.
    pub(super) fn pump(&mut self, now: Instant) -> bool {
        let chunk = self.cfg.limits.append_chunk.max(1);
        let max = self.cfg.max_message_size;
        if let Some(bytes) = self.message_mut().and_then(|m| m.full_chunk(chunk)) {
            self.append(now, bytes);
            return true;
        }
        let raw = self.input.raw();
        let message = self.tx.as_mut().and_then(|tx| tx.message.as_mut());
        match &mut self.phase {
            Phase::Data(unstuffer) => {
                if raw.is_empty() {
                    return false;
                }
                let Some(message) = message else {
                    // Unreachable: DATA mode starts only with a message.
                    self.phase = Phase::Command;
                    return true;
                };
                let n = raw.len().min(message.room(chunk));
                let progress = message.unstuff(unstuffer, raw.get(..n).unwrap_or_default(), max);
                self.input.consume(progress.consumed);
                self.touch(now);
                if progress.done {
                    self.phase = Phase::Command;
                    self.end_message(now, true);
                }
                true
            }
            Phase::Chunk(state) => {
                if state.remaining > 0 {
                    if raw.is_empty() {
                        return false;
                    }
                    let wanted = usize::try_from(state.remaining).unwrap_or(usize::MAX);
                    let n = match (&message, state.refused) {
                        (Some(m), None) => wanted.min(m.room(chunk)),
                        _ => wanted,
                    }
                    .min(raw.len());
                    let bytes = raw.get(..n).unwrap_or_default();
                    if let (Some(m), None) = (message, state.refused) {
                        m.take(bytes);
                    }
                    state.remaining -= n as u64;
                    self.input.consume(n);
                    self.touch(now);
                    return true;
                }
                let Phase::Chunk(chunk) = std::mem::replace(&mut self.phase, Phase::Command) else {
                    return true;
                };
                self.end_chunk(now, chunk);
                true
            }
            _ => false,
        }
    }

    fn end_chunk(&mut self, now: Instant, chunk: Chunk) {
        if let Some(line) = chunk.refused {
            return self.bad_command(line);
        }
        let failed = self.message_mut().is_none_or(|m| m.problem().is_some());
        if chunk.last {
            if let Some(message) = self.message_mut() {
                message.end_of_text();
            }
            self.end_message(now, true);
        } else if failed {
            // RFC 3030 §2: a refused chunk fails the transaction.
            self.end_message(now, false);
        } else {
            self.reply(&reply::chunk_received(chunk.size));
        }
    }

    fn append(&mut self, now: Instant, bytes: bytes::Bytes) {
        let Some(message) = self.message_mut() else {
            return;
        };
        let Some(delivery) = message.delivery else {
            // Unreachable (bytes are collected only once the file is open), but never
            // drop message bytes silently.
            return message.fail(Problem::Store(Failure::Temporary("no open file".into())));
        };
        let id = self.request(now, Request::AppendDelivery { delivery, bytes });
        self.waiting = Some(Waiting::Append { id });
    }

    pub(super) fn on_appended(&mut self, now: Instant, answer: Reply) {
        match answer {
            Reply::Done => {
                if self.message_mut().is_some_and(|m| m.complete) {
                    self.end_message(now, true);
                }
            }
            Reply::Failed(failure) => self.append_failed(now, failure),
            _ => self.append_failed(now, Failure::Temporary("unexpected reply".into())),
        }
    }

    pub(super) fn append_failed(&mut self, now: Instant, failure: Failure) {
        let Some(message) = self.message_mut() else {
            return;
        };
        message.fail(Problem::Store(failure));
        if message.complete {
            self.end_message(now, true);
        }
    }

    /// The data ended (`final_`: `.` line or BDAT LAST) or a chunk failed: flush and
    /// commit, or abort and refuse.
    fn end_message(&mut self, now: Instant, final_: bool) {
        let chunk = self.cfg.limits.append_chunk.max(1);
        let Some(message) = self.message_mut() else {
            // Unreachable: a chunk is accepted only into a transaction with a message.
            self.tx = None;
            return self.reply(reply::TEMPORARY);
        };
        message.complete = final_;
        if let Some(bytes) = message.rest(chunk) {
            return self.append(now, bytes);
        }
        let Some(mut tx) = self.tx.take() else { return };
        let Some(message) = tx.message.take() else {
            return;
        };
        match (message.problem(), message.delivery) {
            (None, Some(delivery)) => self.commit(now, tx, message.id, delivery),
            (problem, delivery) => {
                let line = problem.map_or(reply::TEMPORARY, Problem::reply);
                let lines = self.final_lines(&tx, line, final_);
                match delivery {
                    Some(delivery) => {
                        let id = self.request(now, Request::AbortDelivery { delivery });
                        self.waiting = Some(Waiting::Abort { id, reply: lines });
                    }
                    None => self.reply_raw(&lines),
                }
            }
        }
    }

    /// The same reply for the whole message, or (LMTP, at the end of the data) once per
    /// recipient.
    fn final_lines(&self, tx: &Envelope, line: &str, final_: bool) -> String {
        if self.lmtp() && final_ {
            tx.recipients
                .iter()
                .map(|r| reply::for_recipient(line, &r.address) + "\r\n")
                .collect()
        } else {
            format!("{line}\r\n")
        }
    }

    /// The client as the `Received:` field names it (address, port, HELO name and
    /// `SMTP`/`ESMTP`), for a queue copy's LMTP leg to pass on with XCLIENT.
    fn relayed_client(&self) -> crate::proxy::xclient::Xclient {
        let helo = match (&self.forwarded.helo, &self.greeted) {
            (Some(name), _) => Some(name.clone()),
            (None, Some(g)) => Some(g.name.clone()),
            (None, None) => None,
        };
        let extended = self.greeted.as_ref().is_some_and(|g| g.extended);
        crate::proxy::xclient::Xclient {
            addr: Some(self.conn.client.ip()),
            port: Some(self.conn.client.port()).filter(|&p| p != 0),
            helo,
            name: None,
            proto: Some(if extended { "ESMTP" } else { "SMTP" }.to_owned()),
            ttl: None,
        }
    }

    fn commit(&mut self, now: Instant, tx: Envelope, id: String, delivery: crate::DeliveryId) {
        let client = self.relayed_client();
        let mut accounts: Vec<Account> = Vec::new();
        let mut remote: Vec<String> = Vec::new();
        let mut backends: Vec<BackendRecipient> = Vec::new();
        let mut recipients = Vec::with_capacity(tx.recipients.len());
        // Remote and back-end recipients share one result, the queue copy's, after the
        // accounts'.
        let mut queued_indexes = Vec::new();
        for (n, r) in tx.recipients.into_iter().enumerate() {
            if let Some(backend) = r.backend {
                queued_indexes.push(n);
                if !backends.iter().any(|b| b.account == backend.account) {
                    backends.push(backend);
                }
                recipients.push((r.address, usize::MAX));
                continue;
            }
            let Some(account) = r.account else {
                queued_indexes.push(n);
                remote.push(r.address.clone());
                recipients.push((r.address, usize::MAX));
                continue;
            };
            let index = match accounts.iter().position(|a| *a == account) {
                Some(i) => i,
                None => {
                    accounts.push(account);
                    accounts.len() - 1
                }
            };
            recipients.push((r.address, index));
        }
        let request = if remote.is_empty() && backends.is_empty() {
            Request::CommitDelivery {
                delivery,
                recipients: accounts,
                all_or_nothing: !self.lmtp(),
            }
        } else {
            for n in queued_indexes {
                if let Some(entry) = recipients.get_mut(n) {
                    entry.1 = accounts.len();
                }
            }
            Request::CommitSubmission {
                delivery,
                local: accounts,
                relay: RelayEnvelope {
                    sender: tx.sender,
                    recipients: remote,
                    eight_bit: tx.body != Body::SevenBit,
                    smtputf8: tx.smtputf8,
                    backends,
                    client: Some(client),
                },
            }
        };
        let request_id: RequestId = self.request(now, request);
        self.waiting = Some(Waiting::Commit {
            id: request_id,
            plan: CommitPlan { id, recipients },
        });
    }

    /// The final reply: SMTP one line for all, LMTP one per recipient (RFC 2033 §4.2).
    pub(super) fn on_committed(&mut self, plan: CommitPlan, answer: Reply) {
        let results: Vec<Result<(), Failure>> = match answer {
            Reply::Delivered(results) => results,
            Reply::Failed(failure) => vec![Err(failure); plan.recipients.len()],
            _ => Vec::new(),
        };
        let missing = Err(Failure::Temporary("no result".into()));
        let result = |index: usize| results.get(index).unwrap_or(&missing);
        if self.lmtp() {
            for (address, index) in &plan.recipients {
                let line = match result(*index) {
                    Ok(()) => reply::delivered(address),
                    Err(failure) => {
                        reply::for_recipient(Problem::Store(failure.clone()).reply(), address)
                    }
                };
                self.reply(&line);
            }
            return;
        }
        let mut over_quota = false;
        let mut failed = false;
        for (_, index) in &plan.recipients {
            match result(*index) {
                Ok(()) => {}
                Err(Failure::OverQuota) => over_quota = true,
                Err(_) => failed = true,
            }
        }
        let line = match (over_quota, failed) {
            (false, false) => reply::queued(&plan.id),
            (true, _) => reply::MAILBOX_FULL.to_owned(),
            (false, true) => reply::TEMPORARY.to_owned(),
        };
        self.reply(&line);
    }
}
