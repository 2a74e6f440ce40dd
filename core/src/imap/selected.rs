//! Selected-state commands (RFC 3501 §6.3.1-2, §6.4): SELECT/EXAMINE, CLOSE, UNSELECT,
//! EXPUNGE and UID EXPUNGE, SEARCH, STORE, COPY/MOVE, and the rescans behind NOOP, CHECK
//! and IDLE that report other sessions' changes (§7.3.1 EXISTS, §7.4.1 EXPUNGE).
//!
//! These commands work on the session's snapshot of the mailbox; only a rescan
//! (`rescan.rs`) changes it behind the client's back.

use std::fmt::Write as _;
use std::time::Instant;

use bytes::BytesMut;

use super::command::StoreMode;
use super::request::{ImapReply, ImapRequest, MailboxRef, SearchCandidate, Snapshot};
use super::response::{self, Code, Condition};
use super::search::{self, MessageFacts, SearchKey};
use super::sequence::{SequenceSet, compact};
use super::session::{ImapSession, Op, Selected, State};
use crate::request::{Account, Reply};

/// The flags tidegate stores (Maildir info letters), in FLAGS responses.
const SYSTEM_FLAGS: [&str; 5] = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"];

/// `* FLAGS` (RFC 3501 §7.2.6: the system flags and the mailbox's keywords) and
/// `* OK [PERMANENTFLAGS]` (§7.1: nothing when read-only; `\*` while the store can
/// still define keywords, fewer than [`crate::keywords::MAX_KEYWORDS`]).
pub(super) fn write_flag_lines(out: &mut BytesMut, keywords: &[String], read_only: bool) {
    let all: Vec<&str> = SYSTEM_FLAGS
        .iter()
        .copied()
        .chain(keywords.iter().map(String::as_str))
        .collect();
    out.extend_from_slice(b"* FLAGS ");
    response::flag_list(out, &all);
    out.extend_from_slice(b"\r\n");
    let permanent = if read_only {
        Vec::new()
    } else {
        let mut permanent: Vec<String> = all.iter().map(|f| (*f).to_owned()).collect();
        if keywords.len() < crate::keywords::MAX_KEYWORDS {
            permanent.push("\\*".to_owned());
        }
        permanent
    };
    response::status(
        out,
        None,
        Condition::Ok,
        Some(&Code::PermanentFlags(permanent)),
        "Flags permitted",
    );
}

/// Adds the keywords among `flags` that `keywords` lacks (case-insensitive; system
/// flags start with `\\` and are skipped), up to [`crate::keywords::MAX_KEYWORDS`];
/// true when one was added, so the client must get new FLAGS lines (RFC 3501 §7.2.6).
pub(super) fn learn_keywords<'a>(
    keywords: &mut Vec<String>,
    flags: impl IntoIterator<Item = &'a String>,
) -> bool {
    let mut added = false;
    for flag in flags {
        let known = flag.starts_with('\\') || keywords.iter().any(|k| k.eq_ignore_ascii_case(flag));
        if !known && keywords.len() < crate::keywords::MAX_KEYWORDS {
            keywords.push(flag.clone());
            added = true;
        }
    }
    added
}

impl ImapSession {
    pub(super) fn selected(&self) -> Option<&Selected> {
        match &self.state {
            State::Selected(_, selected) => Some(selected),
            _ => None,
        }
    }

    pub(super) fn selected_mut(&mut self) -> Option<&mut Selected> {
        match &mut self.state {
            State::Selected(_, selected) => Some(selected),
            _ => None,
        }
    }

    /// The UIDs a set names, ascending: sequence numbers (`uid` false) or UIDs.
    /// `Err` when a sequence number is beyond the mailbox (RFC 3501 §9 BAD).
    pub(super) fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<u32>, ()> {
        let Some(selected) = self.selected() else {
            return Err(());
        };
        let (last_seq, last_uid) = selected.last();
        if uid {
            return Ok(selected
                .messages
                .iter()
                .map(|m| m.uid)
                .filter(|&u| set.contains(u, last_uid))
                .collect());
        }
        if set.max_value() > last_seq {
            return Err(());
        }
        Ok(set
            .members(last_seq)
            .into_iter()
            .filter_map(|seq| selected.messages.get(seq as usize - 1).map(|m| m.uid))
            .collect())
    }

    pub(super) fn select(&mut self, now: Instant, tag: &str, name: String, read_only: bool) {
        let Some(account) = self.account().cloned() else {
            return self.bad(Some(tag), "Log in first");
        };
        let was_selected = matches!(self.state, State::Selected(..));
        // RFC 3501 §6.3.1: a SELECT deselects first, also when it fails.
        self.state = State::Authenticated(account.clone());
        if was_selected {
            self.untagged(
                Condition::Ok,
                Some(&Code::Closed),
                "Previous mailbox closed",
            );
        }
        let mailbox = MailboxRef {
            account: account.clone(),
            name,
        };
        self.request(
            now,
            tag,
            Op::Select {
                account,
                mailbox: mailbox.clone(),
                read_only,
            },
            ImapRequest::Snapshot {
                mailbox,
                claim_recent: !read_only,
            },
        );
    }

    pub(super) fn on_select(
        &mut self,
        tag: &str,
        account: Account,
        mailbox: MailboxRef,
        read_only: bool,
        reply: Reply,
    ) {
        let Reply::Imap(ImapReply::Snapshot(snapshot)) = reply else {
            return self.reply_failure(tag, reply, false);
        };
        let mut out = BytesMut::new();
        write_flag_lines(&mut out, &snapshot.keywords, read_only);
        let recent = snapshot.messages.iter().filter(|m| m.recent).count();
        let _ = write!(
            out,
            "* {} EXISTS\r\n* {recent} RECENT\r\n",
            snapshot.messages.len()
        );
        if let Some(first) = snapshot
            .messages
            .iter()
            .position(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")))
        {
            let code = Code::Unseen(u32::try_from(first + 1).unwrap_or(u32::MAX));
            response::status(&mut out, None, Condition::Ok, Some(&code), "First unseen");
        }
        response::status(
            &mut out,
            None,
            Condition::Ok,
            Some(&Code::UidValidity(snapshot.uid_validity)),
            "UIDs valid",
        );
        response::status(
            &mut out,
            None,
            Condition::Ok,
            Some(&Code::UidNext(snapshot.uid_next)),
            "Predicted next UID",
        );
        self.raw(&out);
        let (code, verb) = if read_only {
            (Code::ReadOnly, "EXAMINE")
        } else {
            (Code::ReadWrite, "SELECT")
        };
        self.tagged(
            tag,
            Condition::Ok,
            Some(&code),
            &format!("{verb} completed"),
        );
        let Snapshot {
            uid_validity,
            uid_next,
            mut messages,
            mut keywords,
        } = snapshot;
        keywords.truncate(crate::keywords::MAX_KEYWORDS);
        messages.sort_by_key(|m| m.uid);
        messages.dedup_by_key(|m| m.uid);
        self.state = State::Selected(
            account,
            Selected {
                mailbox,
                read_only,
                uid_validity,
                uid_next,
                messages,
                keywords,
            },
        );
    }

    pub(super) fn unselect(&mut self, tag: &str) {
        if let State::Selected(account, _) = &self.state {
            self.state = State::Authenticated(account.clone());
        }
        self.tagged(tag, Condition::Ok, None, "UNSELECT completed");
    }

    /// CLOSE: expunge silently (read-write only), then deselect (RFC 3501 §6.4.2).
    pub(super) fn close_mailbox(&mut self, now: Instant, tag: &str) {
        let Some(selected) = self.selected() else {
            return self.bad(Some(tag), "No mailbox selected");
        };
        let deleted = deleted_uids(selected, None);
        if selected.read_only || deleted.is_empty() {
            self.unselect_quietly();
            return self.tagged(tag, Condition::Ok, None, "CLOSE completed");
        }
        let mailbox = selected.mailbox.clone();
        self.request(
            now,
            tag,
            Op::Expunge { close: true },
            ImapRequest::Expunge {
                mailbox,
                uids: deleted,
            },
        );
    }

    fn unselect_quietly(&mut self) {
        if let State::Selected(account, _) = &self.state {
            self.state = State::Authenticated(account.clone());
        }
    }

    pub(super) fn expunge(&mut self, now: Instant, tag: &str, uids: Option<SequenceSet>) {
        let Some(selected) = self.selected() else {
            return self.bad(Some(tag), "No mailbox selected");
        };
        if selected.read_only {
            return self.tagged(
                tag,
                Condition::No,
                Some(&Code::Cannot),
                "Mailbox is read-only",
            );
        }
        let deleted = deleted_uids(selected, uids.as_ref());
        if deleted.is_empty() {
            return self.tagged(tag, Condition::Ok, None, "EXPUNGE completed");
        }
        let mailbox = selected.mailbox.clone();
        self.request(
            now,
            tag,
            Op::Expunge { close: false },
            ImapRequest::Expunge {
                mailbox,
                uids: deleted,
            },
        );
    }

    pub(super) fn on_expunge(&mut self, tag: &str, close: bool, reply: Reply) {
        let Reply::Imap(ImapReply::Expunged(uids)) = reply else {
            return self.reply_failure(tag, reply, false);
        };
        if close {
            self.unselect_quietly();
            return self.tagged(tag, Condition::Ok, None, "CLOSE completed");
        }
        self.report_expunged(&uids);
        self.tagged(tag, Condition::Ok, None, "EXPUNGE completed");
    }

    /// Removes `uids` from the snapshot with one `* n EXPUNGE` each. Highest first, so
    /// no number shifts under a later response (§7.4.1).
    pub(super) fn report_expunged(&mut self, uids: &[u32]) {
        let Some(selected) = self.selected_mut() else {
            return;
        };
        let mut indexes: Vec<usize> = uids.iter().filter_map(|&u| selected.index_of(u)).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let mut out = BytesMut::new();
        for &i in indexes.iter().rev() {
            selected.messages.remove(i);
            let _ = write!(out, "* {} EXPUNGE\r\n", i + 1);
        }
        self.raw(&out);
    }

    pub(super) fn search(
        &mut self,
        now: Instant,
        tag: &str,
        uid: bool,
        charset: Option<String>,
        key: SearchKey,
    ) {
        if charset.is_some_and(|c| c != "UTF-8" && c != "US-ASCII") {
            return self.tagged(
                tag,
                Condition::No,
                Some(&Code::BadCharset),
                "Supported charsets: US-ASCII UTF-8",
            );
        }
        let Some(selected) = self.selected() else {
            return self.bad(Some(tag), "No mailbox selected");
        };
        let last = selected.last();
        if key.needs_content() {
            let candidates = selected
                .messages
                .iter()
                .enumerate()
                .map(|(i, m)| SearchCandidate {
                    seq: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    meta: m.clone(),
                })
                .collect();
            let mailbox = selected.mailbox.clone();
            return self.request(
                now,
                tag,
                Op::Search { uid },
                ImapRequest::Search {
                    mailbox,
                    key,
                    candidates,
                    last,
                },
            );
        }
        let matches: Vec<u32> = selected
            .messages
            .iter()
            .enumerate()
            .filter(|(i, m)| {
                let facts = MessageFacts {
                    seq: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    uid: m.uid,
                    flags: &m.flags,
                    size: m.size,
                    internal_date: m.internal_date,
                    recent: m.recent,
                    last_seq: last.0,
                    last_uid: last.1,
                };
                search::evaluate(&key, &facts, None)
            })
            .map(|(_, m)| m.uid)
            .collect();
        self.on_search(tag, uid, Reply::Imap(ImapReply::Matches(matches)));
    }

    pub(super) fn on_search(&mut self, tag: &str, uid: bool, reply: Reply) {
        let Reply::Imap(ImapReply::Matches(mut uids)) = reply else {
            return self.reply_failure(tag, reply, false);
        };
        uids.sort_unstable();
        let mut out = BytesMut::from(&b"* SEARCH"[..]);
        if let Some(selected) = self.selected() {
            for u in uids {
                let number = if uid {
                    Some(u)
                } else {
                    selected.index_of(u).map(|i| i as u32 + 1)
                };
                if let Some(n) = number {
                    let _ = write!(out, " {n}");
                }
            }
        }
        out.extend_from_slice(b"\r\n");
        self.raw(&out);
        self.tagged(tag, Condition::Ok, None, "SEARCH completed");
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn store(
        &mut self,
        now: Instant,
        tag: &str,
        uid: bool,
        set: SequenceSet,
        mode: StoreMode,
        silent: bool,
        flags: Vec<String>,
    ) {
        if flags.iter().any(|f| f.eq_ignore_ascii_case("\\Recent")) {
            return self.bad(Some(tag), "\\Recent cannot be stored");
        }
        let Ok(uids) = self.resolve(&set, uid) else {
            return self.bad(Some(tag), "Invalid message sequence number");
        };
        let Some(selected) = self.selected() else {
            return self.bad(Some(tag), "No mailbox selected");
        };
        if selected.read_only {
            return self.tagged(
                tag,
                Condition::No,
                Some(&Code::Cannot),
                "Mailbox is read-only",
            );
        }
        if uids.is_empty() {
            return self.tagged(tag, Condition::Ok, None, "STORE completed");
        }
        let mailbox = selected.mailbox.clone();
        self.request(
            now,
            tag,
            Op::Store { uid, silent },
            ImapRequest::Store {
                mailbox,
                uids,
                mode,
                flags,
            },
        );
    }

    /// Applies new flags to the snapshot; with `report`, one FETCH response each.
    pub(super) fn apply_flags(&mut self, changes: &[(u32, Vec<String>)], report: bool, uid: bool) {
        let Some(selected) = self.selected_mut() else {
            return;
        };
        let mut out = BytesMut::new();
        let defined = learn_keywords(
            &mut selected.keywords,
            changes.iter().flat_map(|(_, flags)| flags),
        );
        if defined {
            write_flag_lines(&mut out, &selected.keywords, selected.read_only);
        }
        for (u, flags) in changes {
            let Some(i) = selected.index_of(*u) else {
                continue;
            };
            let message = &mut selected.messages[i];
            message.flags = flags.clone();
            if report {
                let _ = write!(out, "* {} FETCH (", i + 1);
                if uid {
                    let _ = write!(out, "UID {u} ");
                }
                out.extend_from_slice(b"FLAGS ");
                write_flags(&mut out, &message.flags, message.recent);
                out.extend_from_slice(b")\r\n");
            }
        }
        self.raw(&out);
    }

    pub(super) fn on_store(&mut self, tag: &str, uid: bool, silent: bool, reply: Reply) {
        let Reply::Imap(ImapReply::Flags(changes)) = reply else {
            return self.reply_failure(tag, reply, false);
        };
        self.apply_flags(&changes, !silent, uid);
        self.tagged(tag, Condition::Ok, None, "STORE completed");
    }

    pub(super) fn copy(
        &mut self,
        now: Instant,
        tag: &str,
        uid: bool,
        set: SequenceSet,
        target: String,
        remove: bool,
    ) {
        let Ok(uids) = self.resolve(&set, uid) else {
            return self.bad(Some(tag), "Invalid message sequence number");
        };
        let Some(selected) = self.selected() else {
            return self.bad(Some(tag), "No mailbox selected");
        };
        let verb = if remove { "MOVE" } else { "COPY" };
        if remove && selected.read_only {
            return self.tagged(
                tag,
                Condition::No,
                Some(&Code::Cannot),
                "Mailbox is read-only",
            );
        }
        if uids.is_empty() {
            return self.tagged(tag, Condition::Ok, None, &format!("{verb} completed"));
        }
        let mailbox = selected.mailbox.clone();
        self.request(
            now,
            tag,
            Op::Copy { uid, remove },
            ImapRequest::Copy {
                mailbox,
                uids,
                target,
                remove,
            },
        );
    }

    pub(super) fn on_copy(&mut self, tag: &str, _uid: bool, remove: bool, reply: Reply) {
        let Reply::Imap(ImapReply::Copied {
            uid_validity,
            pairs,
        }) = reply
        else {
            return self.reply_failure(tag, reply, true);
        };
        let source: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let target: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        let code = Code::CopyUid(uid_validity, compact(&source), compact(&target));
        if remove {
            // RFC 6851 §4.3: COPYUID goes in an untagged OK before the EXPUNGEs.
            if !pairs.is_empty() {
                self.untagged(Condition::Ok, Some(&code), "Moved UIDs");
            }
            self.report_expunged(&source);
            self.tagged(tag, Condition::Ok, None, "MOVE completed");
        } else if pairs.is_empty() {
            self.tagged(tag, Condition::Ok, None, "COPY completed");
        } else {
            self.tagged(tag, Condition::Ok, Some(&code), "COPY completed");
        }
    }
}

/// UIDs of messages flagged `\Deleted`, optionally only those in a UID set.
fn deleted_uids(selected: &Selected, within: Option<&SequenceSet>) -> Vec<u32> {
    let last_uid = selected.last().1;
    selected
        .messages
        .iter()
        .filter(|m| m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted")))
        .filter(|m| within.is_none_or(|set| set.contains(m.uid, last_uid)))
        .map(|m| m.uid)
        .collect()
}

/// A FLAGS list with `\Recent` added for messages recent in this session.
pub(super) fn write_flags(out: &mut BytesMut, flags: &[String], recent: bool) {
    let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
    if recent {
        all.push("\\Recent");
    }
    response::flag_list(out, &all);
}
