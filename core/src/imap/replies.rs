//! What happens when the store answers, does not answer in time, or answers after
//! the session gave up; and the session's timers (RFC 3501 §5.4 autologout, the
//! failed-login delay).

use std::time::Instant;

use super::request::ImapRequest;
use super::response::{Code, Condition};
use super::session::{ImapSession, Op, State, Waiting};
use crate::io::RequestId;
use crate::request::{Reply, Request};
use crate::timer::Timer;

/// Abandoned requests tolerated at once; more means the store is stuck, and the
/// session closes rather than track them without bound.
const MAX_ORPHANS: usize = 8;

impl ImapSession {
    pub(super) fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Idle => {
                if !self.streaming() {
                    let text = match self.state {
                        State::NotAuthenticated => "Autologout; no login in time",
                        _ => "Autologout; idle for too long",
                    };
                    self.untagged(Condition::Bye, None, text);
                }
                self.close();
            }
            Timer::StoreReply => self.store_timed_out(now),
            Timer::AuthDelay => self.auth_delay_over(now),
        }
    }

    /// True while a literal of a FETCH response is partly written: any other output
    /// would be read as literal data.
    fn streaming(&self) -> bool {
        matches!(&self.waiting, Some(Waiting::Fetch(job)) if job.mid_literal())
    }

    pub(super) fn store_timed_out(&mut self, now: Instant) {
        if self.streaming() {
            return self.close();
        }
        match self.waiting.take() {
            Some(Waiting::Request { id, tag, op }) => {
                match op {
                    Op::AppendBegin { .. } => {
                        // The client has not been invited to send the message (or sends
                        // it without waiting, and it is dropped); a late AppendStarted
                        // is aborted.
                        self.input.reject_literal();
                        self.orphan(id);
                    }
                    Op::AppendData => {
                        // The rest of the literal is dropped; its end aborts the append.
                        if let Some(appending) = self.append.as_mut() {
                            appending.fail();
                        }
                        self.resume(now);
                        return;
                    }
                    _ => {}
                }
                if !matches!(op, Op::AppendAbort) {
                    self.tagged(
                        &tag,
                        Condition::No,
                        Some(&Code::Unavailable),
                        "Storage did not answer, try again later",
                    );
                }
                self.resume(now);
            }
            Some(Waiting::Fetch(job)) => {
                self.tagged(
                    &job.tag,
                    Condition::No,
                    Some(&Code::Unavailable),
                    "Storage did not answer, try again later",
                );
                self.resume(now);
            }
            other => self.waiting = other,
        }
    }

    /// Remembers a request whose reply comes after the session stopped waiting.
    pub(super) fn orphan(&mut self, id: RequestId) {
        self.orphans.push(id);
        if self.orphans.len() > MAX_ORPHANS {
            self.untagged(
                Condition::Bye,
                Some(&Code::Unavailable),
                "Storage is not answering",
            );
            self.close();
        }
    }

    /// A late reply: an append opened after all is dropped again.
    pub(super) fn on_orphan_reply(&mut self, reply: Reply) {
        if let Reply::Imap(super::ImapReply::AppendStarted(append)) = reply {
            let id = self
                .io
                .request(Request::Imap(ImapRequest::AppendAbort { append }));
            self.orphan(id);
        }
    }

    pub(super) fn on_reply(&mut self, now: Instant, tag: String, op: Op, reply: Reply) {
        match op {
            Op::Authenticate => self.on_authenticated(now, tag, reply),
            Op::List {
                reference,
                pattern,
                subscribed,
            } => self.on_list(&tag, &reference, &pattern, subscribed, reply),
            Op::Status { name, items } => self.on_status(&tag, &name, &items, reply),
            Op::Plain(what) => self.on_plain(&tag, what, reply),
            Op::Select {
                account,
                mailbox,
                read_only,
            } => self.on_select(&tag, account, mailbox, read_only, reply),
            Op::Store { uid, silent } => self.on_store(&tag, uid, silent, reply),
            Op::Copy { uid, remove } => self.on_copy(&tag, uid, remove, reply),
            Op::Expunge { close } => self.on_expunge(&tag, close, reply),
            Op::Search { uid } => self.on_search(&tag, uid, reply),
            Op::Poll { text } => self.on_poll(now, &tag, text, reply),
            Op::FetchSeen(job) => self.on_fetch_seen(now, job, reply),
            Op::AppendBegin { literal } => self.on_append_begin(now, &tag, literal, reply),
            Op::AppendData => self.on_append_data(now, &tag, reply),
            Op::AppendCommit => self.on_append_commit(&tag, reply),
            Op::AppendAbort => {}
        }
    }
}
