//! APPEND (RFC 3501 §6.3.11, RFC 4315 APPENDUID, RFC 7889 TOOBIG): the message literal
//! is streamed to the store in bounded chunks, never held whole.
//!
//! The command line up to the literal announcement is parsed first
//! ([`super::command::parse_append_prefix`]). The store opens the message
//! ([`ImapRequest::AppendBegin`]) before the session invites a synchronising literal
//! with `+`, so a missing mailbox is answered `NO [TRYCREATE]` without the client
//! sending a byte of it. Each chunk is one [`ImapRequest::AppendData`]; while it is
//! outstanding no more input is read. The empty line after the literal ends the command
//! and commits it ([`ImapRequest::AppendCommit`]).

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::command::AppendPrefix;
use super::fragment::Literal;
use super::request::{AppendId, ImapReply, ImapRequest};
use super::response::{self, Code, Condition};
use super::session::{ImapSession, Op, Waiting};
use crate::request::{Reply, Request};

/// An APPEND whose literal is being received.
#[derive(Debug)]
pub(super) struct Appending {
    pub(super) tag: String,
    pub(super) id: AppendId,
    /// Bytes not yet sent to the store: at most one chunk plus one read.
    chunk: BytesMut,
    /// The store failed a chunk: the rest of the literal is dropped, then `NO`.
    failed: bool,
}

impl Appending {
    /// The store failed or timed out: drop the rest of the literal, then answer `NO`.
    pub(super) fn fail(&mut self) {
        self.failed = true;
        self.chunk.clear();
    }
}

impl ImapSession {
    pub(super) fn start_append(&mut self, now: Instant, prefix: AppendPrefix, literal: Literal) {
        let AppendPrefix {
            tag,
            mailbox,
            flags,
            date,
        } = prefix;
        let Some(size) = literal.length.filter(|&n| n <= self.cfg.limits.max_append) else {
            self.input.reject_literal();
            return self.tagged(
                &tag,
                Condition::No,
                Some(&Code::TooBig),
                "Message too large",
            );
        };
        if flags.iter().any(|f| f.eq_ignore_ascii_case("\\Recent")) {
            self.input.reject_literal();
            return self.bad(Some(&tag), "\\Recent cannot be stored");
        }
        let Some(mailbox) = self.mailbox_ref(mailbox) else {
            self.input.reject_literal();
            return self.bad(Some(&tag), "Log in first");
        };
        self.request(
            now,
            &tag,
            Op::AppendBegin { literal },
            ImapRequest::AppendBegin {
                mailbox,
                flags,
                date,
                size,
            },
        );
    }

    pub(super) fn on_append_begin(
        &mut self,
        _now: Instant,
        tag: &str,
        literal: Literal,
        reply: Reply,
    ) {
        let Reply::Imap(ImapReply::AppendStarted(id)) = reply else {
            self.input.reject_literal();
            return self.reply_failure(tag, reply, true);
        };
        self.append = Some(Appending {
            tag: tag.to_owned(),
            id,
            chunk: BytesMut::new(),
            failed: false,
        });
        if literal.sync {
            response::continuation(&mut self.io.out, "Ready for literal data");
        }
        self.input.accept_literal();
    }

    pub(super) fn append_data(&mut self, now: Instant, data: Bytes) {
        let limit = self.cfg.limits.chunk;
        let Some(appending) = self.append.as_mut() else {
            return;
        };
        if appending.failed {
            return;
        }
        appending.chunk.extend_from_slice(&data);
        if appending.chunk.len() >= limit {
            self.send_chunk(now);
        }
    }

    pub(super) fn append_literal_end(&mut self, now: Instant) {
        if self
            .append
            .as_ref()
            .is_some_and(|a| !a.failed && !a.chunk.is_empty())
        {
            self.send_chunk(now);
        }
    }

    fn send_chunk(&mut self, now: Instant) {
        let Some(appending) = self.append.as_mut() else {
            return;
        };
        let bytes = appending.chunk.split().freeze();
        let (append, tag) = (appending.id, appending.tag.clone());
        self.request(
            now,
            &tag,
            Op::AppendData,
            ImapRequest::AppendData { append, bytes },
        );
    }

    pub(super) fn on_append_data(&mut self, _now: Instant, _tag: &str, reply: Reply) {
        if !matches!(reply, Reply::Done)
            && let Some(appending) = self.append.as_mut()
        {
            appending.fail();
        }
    }

    /// The line after the message literal: empty ends the command.
    pub(super) fn append_tail(&mut self, now: Instant, line: &[u8], literal: Option<Literal>) {
        let Some(appending) = self.append.take() else {
            return;
        };
        if literal.is_some() {
            self.input.reject_literal();
        }
        if appending.failed {
            self.abort_quietly(now, &appending);
            return self.tagged(
                &appending.tag,
                Condition::No,
                Some(&Code::Unavailable),
                "The message could not be stored",
            );
        }
        if !line.is_empty() || literal.is_some() {
            return self.abort_append(now, appending, "Unexpected data after the message");
        }
        let (append, tag) = (appending.id, appending.tag);
        self.request(
            now,
            &tag,
            Op::AppendCommit,
            ImapRequest::AppendCommit { append },
        );
    }

    pub(super) fn on_append_commit(&mut self, tag: &str, reply: Reply) {
        match reply {
            Reply::Imap(ImapReply::Appended { uid_validity, uid }) => self.tagged(
                tag,
                Condition::Ok,
                Some(&Code::AppendUid(uid_validity, uid)),
                "APPEND completed",
            ),
            other => self.reply_failure(tag, other, true),
        }
    }

    /// Ends an APPEND with BAD and tells the store to drop the message.
    pub(super) fn abort_append(&mut self, now: Instant, appending: Appending, text: &str) {
        self.bad(Some(&appending.tag), text);
        self.abort_quietly(now, &appending);
    }

    pub(super) fn abort_quietly(&mut self, now: Instant, appending: &Appending) {
        if self.is_closed() {
            return;
        }
        let id = self.send(
            now,
            Request::Imap(ImapRequest::AppendAbort {
                append: appending.id,
            }),
        );
        self.waiting = Some(Waiting::Request {
            id,
            tag: appending.tag.clone(),
            op: Op::AppendAbort,
        });
    }
}
