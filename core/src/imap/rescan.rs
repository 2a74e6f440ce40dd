//! Rescans of the selected mailbox behind NOOP, CHECK (RFC 3501 §6.1.2, §6.4.1) and
//! IDLE (RFC 2177), reporting other sessions' changes: EXPUNGE (§7.4.1), FETCH FLAGS,
//! EXISTS and RECENT (§7.3.1-2).
//!
//! EXPUNGE responses are only sent from these and from this session's own EXPUNGE and
//! MOVE, never during FETCH, STORE or SEARCH (§7.4.1): those commands work on the
//! session's snapshot, which only a rescan changes.

use std::fmt::Write as _;
use std::time::Instant;

use bytes::BytesMut;

use super::request::{ImapReply, ImapRequest, Snapshot};
use super::response::Condition;
use super::selected::{learn_keywords, write_flag_lines, write_flags};
use super::session::{ImapSession, Op};
use crate::request::{Failure, Reply};

impl ImapSession {
    /// NOOP and CHECK in the selected state: rescan, report, then answer.
    pub(super) fn poll(&mut self, now: Instant, tag: &str, text: &'static str) {
        let Some(selected) = self.selected() else {
            return self.tagged(tag, Condition::Ok, None, text);
        };
        let mailbox = selected.mailbox.clone();
        let claim_recent = !selected.read_only;
        self.request(
            now,
            tag,
            Op::Poll { text: Some(text) },
            ImapRequest::Snapshot {
                mailbox,
                claim_recent,
            },
        );
    }

    /// The IDLE rescan timer fired.
    pub(super) fn idle_poll(&mut self, now: Instant) {
        let Some(tag) = self.idle_tag.clone() else {
            return;
        };
        let Some(selected) = self.selected() else {
            return;
        };
        let mailbox = selected.mailbox.clone();
        let claim_recent = !selected.read_only;
        self.request(
            now,
            &tag,
            Op::Poll { text: None },
            ImapRequest::Snapshot {
                mailbox,
                claim_recent,
            },
        );
    }

    pub(super) fn on_poll(
        &mut self,
        now: Instant,
        tag: &str,
        text: Option<&'static str>,
        reply: Reply,
    ) {
        match reply {
            Reply::Imap(ImapReply::Snapshot(snapshot)) => self.apply_snapshot(snapshot),
            Reply::Failed(Failure::Gone) => {
                // Another session deleted the selected mailbox: nothing the client
                // holds is valid any more.
                self.untagged(Condition::Bye, None, "Selected mailbox was deleted");
                return self.close();
            }
            other if text.is_some() => return self.reply_failure(tag, other, false),
            _ => {}
        }
        if self.is_closed() {
            // The rescan found the mailbox replaced and said BYE.
            return;
        }
        match text {
            Some(text) => self.tagged(tag, Condition::Ok, None, text),
            None if self.idle_tag.is_some() => {
                self.poll_at = Some(now + self.cfg.idle_poll_interval);
            }
            None => {}
        }
    }

    /// Reports the differences between the session's view and a fresh snapshot:
    /// EXPUNGEs, changed FLAGS, then EXISTS and RECENT for new messages.
    fn apply_snapshot(&mut self, snapshot: Snapshot) {
        let Some(selected) = self.selected() else {
            return;
        };
        if selected.uid_validity != snapshot.uid_validity {
            // The mailbox was replaced: every UID the client holds is void, and RFC 3501
            // §2.3.1.1 offers no way to say so in the selected state but to end it.
            self.untagged(Condition::Bye, None, "Mailbox UIDVALIDITY changed");
            return self.close();
        }
        let mut fresh = snapshot.messages;
        fresh.sort_by_key(|m| m.uid);
        fresh.dedup_by_key(|m| m.uid);
        let gone: Vec<u32> = selected
            .messages
            .iter()
            .map(|m| m.uid)
            .filter(|u| fresh.binary_search_by_key(u, |m| m.uid).is_err())
            .collect();
        self.report_expunged(&gone);
        let Some(selected) = self.selected_mut() else {
            return;
        };
        let known_max = selected.messages.last().map_or(0, |m| m.uid);
        let mut out = BytesMut::new();
        let defined = learn_keywords(
            &mut selected.keywords,
            snapshot
                .keywords
                .iter()
                .chain(fresh.iter().flat_map(|m| &m.flags)),
        );
        if defined {
            write_flag_lines(&mut out, &selected.keywords, selected.read_only);
        }
        for (i, message) in selected.messages.iter_mut().enumerate() {
            if let Ok(j) = fresh.binary_search_by_key(&message.uid, |m| m.uid)
                && fresh[j].flags != message.flags
            {
                message.flags = fresh[j].flags.clone();
                let _ = write!(out, "* {} FETCH (FLAGS ", i + 1);
                write_flags(&mut out, &message.flags, message.recent);
                out.extend_from_slice(b")\r\n");
            }
        }
        let added: Vec<_> = fresh.into_iter().filter(|m| m.uid > known_max).collect();
        if !added.is_empty() {
            selected.messages.extend(added);
            let recent = selected.messages.iter().filter(|m| m.recent).count();
            let _ = write!(
                out,
                "* {} EXISTS\r\n* {recent} RECENT\r\n",
                selected.messages.len()
            );
        }
        selected.uid_next = selected.uid_next.max(snapshot.uid_next);
        self.raw(&out);
    }
}
