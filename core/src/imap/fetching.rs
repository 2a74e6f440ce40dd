//! FETCH (RFC 3501 §6.4.5, §7.4.2): one response per message, built item by item.
//!
//! FLAGS, UID, INTERNALDATE and RFC822.SIZE come from the snapshot; ENVELOPE, BODY,
//! BODYSTRUCTURE and sections from one [`ImapRequest::FetchContent`] per message; the
//! whole message (BODY[], RFC822, and their partials) is streamed from the file in
//! chunks with [`ImapRequest::Read`], one chunk per request, pausing while the client's
//! unread output is above the high-water mark. Non-PEEK body items first set `\Seen`
//! with one STORE for the whole set, and those messages' responses carry FLAGS.

use std::fmt::Write as _;
use std::time::Instant;

use bytes::Bytes;

use super::command::StoreMode;
use super::fetch::{ContentItem, FetchAttribute};
use super::request::{ImapReply, ImapRequest};
use super::response::{self, Condition};
use super::selected::write_flags;
use super::sequence::SequenceSet;
use super::session::{ImapSession, Op, Waiting};
use crate::request::Reply;

/// A FETCH command in progress.
#[derive(Debug)]
pub(super) struct FetchJob {
    pub(super) tag: String,
    uid: bool,
    items: Vec<FetchAttribute>,
    /// Distinct content items the store renders, in first-use order.
    content_items: Vec<ContentItem>,
    /// The messages, by UID, ascending.
    uids: Vec<u32>,
    /// The message being answered.
    pos: usize,
    /// Its store-rendered content, once fetched.
    content: Option<Vec<Option<Bytes>>>,
    /// The next item of its response; `None` before `* n FETCH (` is written.
    item: Option<usize>,
    /// A literal being streamed: next file offset and bytes still owed.
    stream: Option<(u64, u64)>,
    /// The item name of a streamed literal whose `{n}` header is not written yet: it
    /// goes out with the first chunk, so a message that vanished before that can still
    /// be answered with `NIL` instead of a broken literal.
    unopened: Option<String>,
    /// The outstanding request, if any.
    pub(super) request: Option<crate::io::RequestId>,
    /// Messages this FETCH marked `\Seen`: their responses include FLAGS.
    marked_seen: Vec<u32>,
}

impl FetchJob {
    /// True while a FETCH response is partly written (inside its parentheses or a
    /// literal): no other response may be interleaved.
    pub(super) fn mid_literal(&self) -> bool {
        self.stream.is_some() || self.item.is_some()
    }
}

impl ImapSession {
    pub(super) fn fetch(
        &mut self,
        now: Instant,
        tag: String,
        uid: bool,
        set: SequenceSet,
        items: Vec<FetchAttribute>,
    ) {
        let Ok(uids) = self.resolve(&set, uid) else {
            return self.bad(Some(&tag), "Invalid message sequence number");
        };
        let Some(selected) = self.selected() else {
            return self.bad(Some(&tag), "No mailbox selected");
        };
        let mut content_items: Vec<ContentItem> = Vec::new();
        for item in items.iter().filter_map(FetchAttribute::content) {
            if !content_items.contains(&item) {
                content_items.push(item);
            }
        }
        let mut job = FetchJob {
            tag,
            uid,
            items,
            content_items,
            uids,
            pos: 0,
            content: None,
            item: None,
            stream: None,
            unopened: None,
            request: None,
            marked_seen: Vec::new(),
        };
        let unseen: Vec<u32> = if selected.read_only || !job.items.iter().any(|i| i.sets_seen()) {
            Vec::new()
        } else {
            job.uids
                .iter()
                .copied()
                .filter(|&u| {
                    selected.index_of(u).is_some_and(|i| {
                        !selected.messages[i]
                            .flags
                            .iter()
                            .any(|f| f.eq_ignore_ascii_case("\\Seen"))
                    })
                })
                .collect()
        };
        if unseen.is_empty() {
            return self.fetch_step(now, job);
        }
        job.marked_seen = unseen.clone();
        let mailbox = selected.mailbox.clone();
        let tag = job.tag.clone();
        self.request(
            now,
            &tag,
            Op::FetchSeen(job),
            ImapRequest::Store {
                mailbox,
                uids: unseen,
                mode: StoreMode::Add,
                flags: vec!["\\Seen".into()],
            },
        );
    }

    pub(super) fn on_fetch_seen(&mut self, now: Instant, mut job: FetchJob, reply: Reply) {
        match reply {
            Reply::Imap(ImapReply::Flags(changes)) => self.apply_flags(&changes, false, false),
            // The messages are still fetched; only the flag change is lost.
            _ => job.marked_seen.clear(),
        }
        self.fetch_step(now, job);
    }

    /// Writes as much of the FETCH as possible, until a request is needed, output
    /// backs up, or every message is answered.
    pub(super) fn fetch_step(&mut self, now: Instant, mut job: FetchJob) {
        loop {
            if self.is_closed() {
                return;
            }
            let Some(&uid) = job.uids.get(job.pos) else {
                self.tagged(&job.tag, Condition::Ok, None, "FETCH completed");
                return;
            };
            if self.output_blocked() {
                self.waiting = Some(Waiting::Fetch(job));
                return;
            }
            let Some(selected) = self.selected() else {
                return;
            };
            let Some(index) = selected.index_of(uid) else {
                job.pos += 1;
                continue;
            };
            let mailbox = selected.mailbox.clone();
            if !job.content_items.is_empty() && job.content.is_none() {
                let request = ImapRequest::FetchContent {
                    mailbox,
                    uid,
                    items: job.content_items.clone(),
                };
                job.request = Some(self.send(now, crate::Request::Imap(request)));
                self.waiting = Some(Waiting::Fetch(job));
                return;
            }
            let message = selected.messages[index].clone();
            let mut next = match job.item {
                Some(next) => next,
                None => {
                    let _ = write!(self.io.out, "* {} FETCH (", index + 1);
                    if job.uid && !job.items.contains(&FetchAttribute::Uid) {
                        let _ = write!(self.io.out, "UID {uid} ");
                    }
                    0
                }
            };
            while let Some(item) = job.items.get(next).cloned() {
                if next > 0 {
                    self.raw(b" ");
                }
                next += 1;
                if let Some((offset, length)) = whole_message_range(&item, message.size) {
                    if length > 0 {
                        job.item = Some(next);
                        job.stream = Some((offset, length));
                        job.unopened = Some(item.response_name());
                        return self.request_chunk(now, job);
                    }
                    let _ = write!(self.io.out, "{} {{0}}\r\n", item.response_name());
                    continue;
                }
                self.write_item(&job, &item, &message);
            }
            if job.marked_seen.contains(&uid) && !job.items.contains(&FetchAttribute::Flags) {
                self.raw(b" FLAGS ");
                write_flags(&mut self.io.out, &message.flags, message.recent);
            }
            self.raw(b")\r\n");
            job.pos += 1;
            job.item = None;
            job.content = None;
        }
    }

    /// One item answered from the snapshot or the store's content.
    fn write_item(
        &mut self,
        job: &FetchJob,
        item: &FetchAttribute,
        message: &super::request::MessageMeta,
    ) {
        let name = item.response_name();
        match item {
            FetchAttribute::Flags => {
                self.raw(b"FLAGS ");
                write_flags(&mut self.io.out, &message.flags, message.recent);
            }
            FetchAttribute::Uid => {
                let _ = write!(self.io.out, "UID {}", message.uid);
            }
            FetchAttribute::Rfc822Size => {
                let _ = write!(self.io.out, "RFC822.SIZE {}", message.size);
            }
            FetchAttribute::InternalDate => {
                let date = response::date_time(message.internal_date, 0);
                let _ = write!(self.io.out, "INTERNALDATE {date}");
            }
            other => {
                let wanted = other.content();
                let index = job
                    .content_items
                    .iter()
                    .position(|c| Some(c) == wanted.as_ref());
                let value = index
                    .and_then(|i| job.content.as_ref().and_then(|c| c.get(i)))
                    .cloned()
                    .flatten();
                let _ = write!(self.io.out, "{name} ");
                match (other, value) {
                    (
                        FetchAttribute::Envelope
                        | FetchAttribute::Body
                        | FetchAttribute::BodyStructure,
                        Some(rendered),
                    ) => self.raw(&rendered),
                    (_, None) => self.raw(b"NIL"),
                    (FetchAttribute::Section { partial, .. }, Some(bytes)) => {
                        let bytes = apply_partial(&bytes, *partial);
                        response::literal(&mut self.io.out, bytes);
                    }
                    (_, Some(bytes)) => response::literal(&mut self.io.out, &bytes),
                }
            }
        }
    }

    fn request_chunk(&mut self, now: Instant, mut job: FetchJob) {
        let Some((offset, remaining)) = job.stream else {
            return self.fetch_step(now, job);
        };
        let Some(selected) = self.selected() else {
            return;
        };
        let Some(&uid) = job.uids.get(job.pos) else {
            return;
        };
        let request = ImapRequest::Read {
            mailbox: selected.mailbox.clone(),
            uid,
            offset,
            max_len: self
                .cfg
                .limits
                .chunk
                .min(usize::try_from(remaining).unwrap_or(usize::MAX)),
        };
        job.request = Some(self.send(now, crate::Request::Imap(request)));
        self.waiting = Some(Waiting::Fetch(job));
    }

    pub(super) fn on_fetch_reply(&mut self, now: Instant, mut job: FetchJob, reply: Reply) {
        job.request = None;
        if let Some((offset, remaining)) = job.stream {
            let Reply::Chunk { bytes, end } = reply else {
                if let Some(name) = job.unopened.take() {
                    // Another session expunged the message: `NIL` is a valid body
                    // section value (RFC 3501 §7.4.2 `nstring`, RFC 2180 §4.1.2).
                    let _ = write!(self.io.out, "{name} NIL");
                    job.stream = None;
                    return self.fetch_step(now, job);
                }
                // Part of a literal is out; an error now would be read as its data.
                return self.close();
            };
            if let Some(name) = job.unopened.take() {
                let _ = write!(self.io.out, "{name} {{{remaining}}}\r\n");
            }
            let take = bytes
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            self.raw(&bytes[..take]);
            let left = remaining - take as u64;
            if left == 0 {
                job.stream = None;
            } else if end || take == 0 {
                // The file is shorter than its snapshot size: the literal cannot be
                // completed honestly.
                return self.close();
            } else {
                job.stream = Some((offset + take as u64, left));
                if self.output_blocked() {
                    self.waiting = Some(Waiting::Fetch(job));
                    return;
                }
                return self.request_chunk(now, job);
            }
            return self.fetch_step(now, job);
        }
        match reply {
            Reply::Imap(ImapReply::Content(content)) => {
                job.content = Some(content);
                self.fetch_step(now, job);
            }
            // RFC 2180 §4.1.2: a message expunged by another session is skipped.
            _ => {
                job.pos += 1;
                job.content = None;
                self.fetch_step(now, job);
            }
        }
    }

    /// Resumes a FETCH that paused for output to drain.
    pub(super) fn continue_fetch(&mut self, now: Instant, job: FetchJob) {
        if job.stream.is_some() {
            self.request_chunk(now, job)
        } else {
            self.fetch_step(now, job)
        }
    }
}

/// For items streamed from the message file, the byte range to send.
fn whole_message_range(item: &FetchAttribute, size: u64) -> Option<(u64, u64)> {
    let partial = match item {
        FetchAttribute::Rfc822 => None,
        FetchAttribute::Section {
            section, partial, ..
        } if section.is_whole_message() => *partial,
        _ => return None,
    };
    Some(match partial {
        None => (0, size),
        Some((offset, length)) => {
            let start = u64::from(offset).min(size);
            (start, u64::from(length).min(size - start))
        }
    })
}

/// The `<offset.length>` slice of a section's bytes (RFC 3501 §6.4.5).
fn apply_partial(bytes: &[u8], partial: Option<(u32, u32)>) -> &[u8] {
    match partial {
        None => bytes,
        Some((offset, length)) => {
            let start = (offset as usize).min(bytes.len());
            let end = start.saturating_add(length as usize).min(bytes.len());
            &bytes[start..end]
        }
    }
}
