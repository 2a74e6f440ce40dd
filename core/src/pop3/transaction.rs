//! TRANSACTION and UPDATE states (RFC 1939 §5, §6): the listed mailbox, message
//! retrieval streamed in chunks, deletion marks applied only at QUIT.

use std::fmt::Write as _;
use std::time::Instant;

use bytes::BytesMut;

use super::command::MessageNumber;
use super::session::{Pop3Session, State, Waiting};
use crate::request::{Account, Failure, MessageInfo, Reply, Request};
use crate::wire::DotStuffer;

/// The mailbox as listed at login, with this session's marks. Other sessions' changes
/// are not seen until the next login (RFC 1939 §8: the maildrop is fixed for a session).
#[derive(Debug)]
pub(crate) struct Mailbox {
    account: Account,
    messages: Vec<MessageInfo>,
    deleted: Vec<bool>,
    retrieved: Vec<bool>,
}

impl Mailbox {
    pub(crate) fn new(account: Account, messages: Vec<MessageInfo>) -> Self {
        let n = messages.len();
        Mailbox {
            account,
            messages,
            deleted: vec![false; n],
            retrieved: vec![false; n],
        }
    }

    /// The account this mailbox belongs to.
    pub(crate) fn account(&self) -> &Account {
        &self.account
    }

    fn live(&self) -> impl Iterator<Item = (usize, &MessageInfo)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
    }

    pub(crate) fn count(&self) -> usize {
        self.live().count()
    }

    pub(crate) fn total_size(&self) -> u64 {
        self.live().map(|(_, m)| m.size).sum()
    }

    /// The index of message `number` (1-based), or the RFC 1939 error text.
    fn index(&self, number: MessageNumber) -> Result<usize, &'static str> {
        let index = usize::try_from(number)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|&i| i < self.messages.len())
            .ok_or("-ERR No such message")?;
        if self.deleted[index] {
            return Err("-ERR Message already deleted");
        }
        Ok(index)
    }
}

/// A RETR or TOP being sent, chunk by chunk.
#[derive(Debug)]
pub(crate) struct Streaming {
    /// The outstanding read, or `None` while paused for the client to drain.
    pub(crate) request: Option<crate::io::RequestId>,
    index: usize,
    offset: u64,
    stuffer: DotStuffer,
    /// The `+OK` line is sent with the first chunk, so a message that vanished can
    /// still be refused cleanly.
    pub(crate) started: bool,
    is_top: bool,
}

impl Pop3Session {
    fn mailbox(&self) -> Option<&Mailbox> {
        match &self.state {
            State::Transaction(mailbox) => Some(mailbox),
            _ => None,
        }
    }

    fn mailbox_mut(&mut self) -> Option<&mut Mailbox> {
        match &mut self.state {
            State::Transaction(mailbox) => Some(mailbox),
            _ => None,
        }
    }

    pub(super) fn stat(&mut self) {
        let Some(mailbox) = self.mailbox() else {
            return;
        };
        let line = format!("+OK {} {}", mailbox.count(), mailbox.total_size());
        self.reply(&line);
    }

    pub(super) fn list(&mut self, number: Option<MessageNumber>) {
        self.scan_listing(number, |m| m.size.to_string());
    }

    pub(super) fn uidl(&mut self, number: Option<MessageNumber>) {
        self.scan_listing(number, |m| m.uid.clone());
    }

    /// LIST and UIDL share one shape: `+OK n value` for one message, or a multi-line
    /// listing of every message not marked deleted.
    fn scan_listing(
        &mut self,
        number: Option<MessageNumber>,
        value: impl Fn(&MessageInfo) -> String,
    ) {
        let Some(mailbox) = self.mailbox() else {
            return;
        };
        let mut out = BytesMut::new();
        match number {
            Some(n) => match mailbox.index(n) {
                Ok(i) => {
                    let _ = write!(out, "+OK {} {}\r\n", i + 1, value(&mailbox.messages[i]));
                }
                Err(e) => {
                    let _ = write!(out, "{e}\r\n");
                }
            },
            None => {
                out.extend_from_slice(b"+OK\r\n");
                for (i, m) in mailbox.live() {
                    let _ = write!(out, "{} {}\r\n", i + 1, value(m));
                }
                out.extend_from_slice(b".\r\n");
            }
        }
        self.io.out.extend_from_slice(&out);
    }

    pub(super) fn dele(&mut self, number: MessageNumber) {
        let Some(mailbox) = self.mailbox_mut() else {
            return;
        };
        match mailbox.index(number) {
            Ok(i) => {
                mailbox.deleted[i] = true;
                self.reply(&format!("+OK Message {} deleted", i + 1));
            }
            Err(e) => self.reply(e),
        }
    }

    pub(super) fn rset(&mut self) {
        let Some(mailbox) = self.mailbox_mut() else {
            return;
        };
        mailbox.deleted.fill(false);
        let line = format!("+OK {} messages", mailbox.count());
        self.reply(&line);
    }

    /// RETR (`top_lines` = `None`) or TOP.
    pub(super) fn retrieve(&mut self, now: Instant, number: MessageNumber, top_lines: Option<u64>) {
        let Some(mailbox) = self.mailbox() else {
            return;
        };
        let index = match mailbox.index(number) {
            Ok(i) => i,
            Err(e) => return self.reply(e),
        };
        let stuffer = match top_lines {
            Some(n) => DotStuffer::top(n),
            None => DotStuffer::new(),
        };
        let streaming = Streaming {
            request: None,
            index,
            offset: 0,
            stuffer,
            started: false,
            is_top: top_lines.is_some(),
        };
        self.request_chunk(now, streaming);
    }

    fn request_chunk(&mut self, now: Instant, mut streaming: Streaming) {
        let Some(mailbox) = self.mailbox() else {
            return;
        };
        let request = Request::ReadMessage {
            account: mailbox.account.clone(),
            file: mailbox.messages[streaming.index].file.clone(),
            offset: streaming.offset,
            max_len: self.cfg.limits.read_chunk,
        };
        streaming.request = Some(self.request(now, request));
        self.waiting = Some(Waiting::Read(streaming));
    }

    pub(super) fn on_chunk(&mut self, now: Instant, mut streaming: Streaming, reply: Reply) {
        let number = streaming.index + 1;
        let (bytes, end) = match reply {
            Reply::Chunk { bytes, end } => (bytes, end),
            _ if streaming.started => {
                // The +OK and part of the message went out; an error line now would be
                // taken as message text, so the only honest signal is to close.
                return self.close();
            }
            Reply::Failed(Failure::Gone) => {
                return self.reply(&format!(
                    "-ERR Message {number} was removed by another session"
                ));
            }
            other => return self.reply_failure(&other),
        };
        if !streaming.started {
            streaming.started = true;
            let size = self
                .mailbox()
                .map_or(0, |m| m.messages[streaming.index].size);
            let line = if streaming.is_top {
                "+OK".to_owned()
            } else {
                format!("+OK {size} octets")
            };
            self.reply(&line);
        }
        streaming.stuffer.stuff(&bytes, &mut self.io.out);
        streaming.offset += bytes.len() as u64;
        if end || streaming.stuffer.is_done() {
            streaming.stuffer.finish(&mut self.io.out);
            if let Some(mailbox) = self.mailbox_mut().filter(|_| !streaming.is_top) {
                mailbox.retrieved[streaming.index] = true;
            }
        } else if bytes.is_empty() {
            // A store that returns nothing without ending would loop forever.
            self.close();
        } else {
            streaming.request = None;
            self.waiting = Some(Waiting::Read(streaming));
            self.continue_streaming(now);
        }
    }

    /// Asks for the next chunk of a paused RETR/TOP once the client has read enough.
    pub(super) fn continue_streaming(&mut self, now: Instant) {
        if self.output_blocked() {
            return;
        }
        match self.waiting.take() {
            Some(Waiting::Read(streaming)) if streaming.request.is_none() => {
                self.request_chunk(now, streaming)
            }
            other => self.waiting = other,
        }
    }

    /// QUIT in TRANSACTION: enter UPDATE (RFC 1939 §6).
    pub(super) fn commit(&mut self, now: Instant, mailbox: Mailbox) {
        let mut delete = Vec::new();
        let mut seen = Vec::new();
        for (i, message) in mailbox.messages.into_iter().enumerate() {
            if mailbox.deleted[i] {
                delete.push(message.file);
            } else if mailbox.retrieved[i] && message.file.0.starts_with("new/") {
                seen.push(message.file);
            }
        }
        if delete.is_empty() && seen.is_empty() {
            return self.on_committed(0, Reply::Done);
        }
        let deleted = delete.len();
        let id = self.request(
            now,
            Request::CommitPop3 {
                account: mailbox.account,
                delete,
                seen,
            },
        );
        self.waiting = Some(Waiting::Commit { id, deleted });
    }

    pub(super) fn on_committed(&mut self, deleted: usize, reply: Reply) {
        match reply {
            Reply::Done => {
                let line = format!(
                    "+OK {} POP3 closing ({deleted} messages deleted)",
                    self.cfg.hostname
                );
                self.reply(&line);
            }
            _ => self.reply("-ERR [SYS/TEMP] Some deleted messages were not removed"),
        }
        self.close();
    }
}
