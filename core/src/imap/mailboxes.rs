//! Authenticated-state mailbox commands: LIST/LSUB (RFC 3501 §6.3.8-9 with RFC 6154
//! SPECIAL-USE and RFC 3348 CHILDREN attributes from the store), STATUS, CREATE, DELETE,
//! RENAME, SUBSCRIBE and UNSUBSCRIBE.

use std::fmt::Write as _;
use std::time::Instant;

use bytes::BytesMut;

use super::command::StatusItem;
use super::mailbox::{self, DELIMITER};
use super::request::{ImapReply, ImapRequest};
use super::response::{self, Code, Condition};
use super::session::{ImapSession, Op};
use crate::request::Reply;

impl ImapSession {
    pub(super) fn list(
        &mut self,
        now: Instant,
        tag: &str,
        reference: String,
        pattern: String,
        subscribed: bool,
    ) {
        if pattern.is_empty() && !subscribed {
            // RFC 3501 §6.3.8: an empty pattern asks for the delimiter and root.
            let line = format!("* LIST (\\Noselect) \"{DELIMITER}\" \"\"\r\n");
            self.raw(line.as_bytes());
            return self.tagged(tag, Condition::Ok, None, "LIST completed");
        }
        if reference.chars().count() + pattern.chars().count() > mailbox::MAX_PATTERN {
            return self.bad(Some(tag), "Pattern too long");
        }
        let Some(account) = self.account().cloned() else {
            return self.bad(Some(tag), "Log in first");
        };
        self.request(
            now,
            tag,
            Op::List {
                reference,
                pattern,
                subscribed,
            },
            ImapRequest::ListMailboxes { account },
        );
    }

    pub(super) fn on_list(
        &mut self,
        tag: &str,
        reference: &str,
        pattern: &str,
        subscribed: bool,
        reply: Reply,
    ) {
        let Reply::Imap(ImapReply::Mailboxes(mailboxes)) = reply else {
            return self.reply_failure(tag, reply, false);
        };
        let verb = if subscribed { "LSUB" } else { "LIST" };
        let full = mailbox::canonical(format!("{reference}{pattern}"));
        let mut out = BytesMut::new();
        for info in mailboxes {
            if subscribed && !info.subscribed {
                continue;
            }
            if !mailbox::matches(&full, &info.name) {
                continue;
            }
            let _ = write!(out, "* {verb} (");
            // `\Subscribed` belongs to LIST-EXTENDED (RFC 5258), which is not offered:
            // a plain LIST carries the RFC 3501, RFC 3348 and RFC 6154 attributes only.
            out.extend_from_slice(info.attributes.join(" ").as_bytes());
            let _ = write!(out, ") \"{DELIMITER}\" ");
            response::astring(&mut out, mailbox::encode(&info.name).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.raw(&out);
        self.tagged(tag, Condition::Ok, None, &format!("{verb} completed"));
    }

    pub(super) fn status(&mut self, now: Instant, tag: &str, name: String, items: Vec<StatusItem>) {
        let Some(mailbox) = self.mailbox_ref(name.clone()) else {
            return self.bad(Some(tag), "Log in first");
        };
        self.request(
            now,
            tag,
            Op::Status { name, items },
            ImapRequest::Status { mailbox },
        );
    }

    pub(super) fn on_status(&mut self, tag: &str, name: &str, items: &[StatusItem], reply: Reply) {
        let Reply::Imap(ImapReply::Status(status)) = reply else {
            return self.reply_failure(tag, reply, false);
        };
        let mut out = BytesMut::new();
        out.extend_from_slice(b"* STATUS ");
        response::astring(&mut out, mailbox::encode(name).as_bytes());
        out.extend_from_slice(b" (");
        for (i, item) in items.iter().enumerate() {
            let value = match item {
                StatusItem::Messages => status.messages,
                StatusItem::Recent => status.recent,
                StatusItem::UidNext => status.uid_next,
                StatusItem::UidValidity => status.uid_validity,
                StatusItem::Unseen => status.unseen,
            };
            let sep = if i == 0 { "" } else { " " };
            let _ = write!(out, "{sep}{} {value}", item.name());
        }
        out.extend_from_slice(b")\r\n");
        self.raw(&out);
        self.tagged(tag, Condition::Ok, None, "STATUS completed");
    }

    pub(super) fn create(&mut self, now: Instant, tag: &str, name: String) {
        let name = name.trim_end_matches(DELIMITER).to_owned();
        if name.is_empty() || name == "INBOX" {
            return self.tagged(
                tag,
                Condition::No,
                Some(&Code::AlreadyExists),
                "Mailbox already exists",
            );
        }
        if !valid_name(&name) {
            return self.tagged(
                tag,
                Condition::No,
                Some(&Code::Cannot),
                "Invalid mailbox name",
            );
        }
        let Some(mailbox) = self.mailbox_ref(name) else {
            return self.bad(Some(tag), "Log in first");
        };
        self.request(
            now,
            tag,
            Op::Plain("CREATE"),
            ImapRequest::Create { mailbox },
        );
    }

    pub(super) fn delete(&mut self, now: Instant, tag: &str, name: String) {
        if name == "INBOX" {
            return self.tagged(
                tag,
                Condition::No,
                Some(&Code::Cannot),
                "INBOX cannot be deleted",
            );
        }
        let Some(mailbox) = self.mailbox_ref(name) else {
            return self.bad(Some(tag), "Log in first");
        };
        self.request(
            now,
            tag,
            Op::Plain("DELETE"),
            ImapRequest::Delete { mailbox },
        );
    }

    pub(super) fn rename(&mut self, now: Instant, tag: &str, from: String, to: String) {
        let to = to.trim_end_matches(DELIMITER).to_owned();
        if to == "INBOX" || to.is_empty() {
            return self.tagged(
                tag,
                Condition::No,
                Some(&Code::AlreadyExists),
                "Mailbox already exists",
            );
        }
        if !valid_name(&to) {
            return self.tagged(
                tag,
                Condition::No,
                Some(&Code::Cannot),
                "Invalid mailbox name",
            );
        }
        let Some(mailbox) = self.mailbox_ref(from) else {
            return self.bad(Some(tag), "Log in first");
        };
        self.request(
            now,
            tag,
            Op::Plain("RENAME"),
            ImapRequest::Rename { mailbox, to },
        );
    }

    pub(super) fn subscribe(&mut self, now: Instant, tag: &str, name: String, subscribe: bool) {
        let Some(mailbox) = self.mailbox_ref(name) else {
            return self.bad(Some(tag), "Log in first");
        };
        let what = if subscribe {
            "SUBSCRIBE"
        } else {
            "UNSUBSCRIBE"
        };
        self.request(
            now,
            tag,
            Op::Plain(what),
            ImapRequest::Subscribe { mailbox, subscribe },
        );
    }

    pub(super) fn on_plain(&mut self, tag: &str, what: &str, reply: Reply) {
        match reply {
            Reply::Done => self.tagged(tag, Condition::Ok, None, &format!("{what} completed")),
            other => self.reply_failure(tag, other, false),
        }
    }
}

/// A name the store can map to a Maildir++ folder: no empty levels, no `.` (the
/// on-disk separator), no `..`-style levels, no control characters.
fn valid_name(name: &str) -> bool {
    name.split(DELIMITER).all(|level| {
        !level.is_empty() && !level.contains('.') && !level.chars().any(char::is_control)
    })
}
