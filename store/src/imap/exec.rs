//! The IMAP executor: answers the IMAP session's [`ImapRequest`]s (RFC 3501 §6.3
//! mailbox and §6.4 message commands, RFC 4315 UIDPLUS, RFC 6851 MOVE) from the maildir
//! folders of [`ImapMailboxes`], as `core/src/imap/request.rs` documents each answer.
//!
//! Requests name messages by UID; the store works on files. The executor keeps a UID →
//! file map per mailbox, refreshed by every snapshot it takes (SELECT, EXAMINE and the
//! rescans all come through here); a UID the map does not know triggers one fresh
//! EXAMINE-style snapshot. Mailbox names arrive as decoded UTF-8 and are stored in
//! modified UTF-7 (RFC 3501 §5.1.3). Keywords (RFC 3501 §2.3.2) are maildir letters
//! `a`..`z` named by each folder's keywords file: STORE and APPEND define the keywords
//! they set, snapshots and STORE answers name them; a keyword that finds no free letter
//! (26 per folder) is left out, as PERMANENTFLAGS then no longer offers `\*`.

mod append;
mod cache;
mod convert;

use std::time::{Duration, Instant};

use bytes::Bytes;
use tidegate_core::imap::command::StoreMode;
use tidegate_core::imap::fetch::{ContentItem, SectionText};
use tidegate_core::imap::search::{SearchKey, evaluate};
use tidegate_core::imap::{
    ImapReply, ImapRequest, MailboxRef, MailboxStatus, MessageMeta, SearchCandidate, Snapshot,
};
use tidegate_core::keywords::KeywordMap;
use tidegate_core::mime::{self, SectionPart};
use tidegate_core::{Failure, MessageRef, Reply};

use self::append::Appends;
use self::cache::UidCache;
use self::convert::{
    apply_store, failure, flags_from_strings, flags_to_strings, mailbox_info, split_flags,
    store_name,
};
use super::{ImapMailboxes, ImapStoreError, locate};

pub use self::append::{DEFAULT_APPEND_TIMEOUT, MAX_PENDING_APPENDS};
pub use self::cache::MAX_CACHED_MAILBOXES;

/// The largest message FETCH ENVELOPE/BODYSTRUCTURE/sections and SEARCH content keys
/// read into memory to parse; FETCH of a larger one fails, SEARCH treats its content
/// as not matching.
pub const MAX_PARSE_SIZE: u64 = 64 << 20;

/// Answers [`ImapRequest`]s from maildir folders. Shared by the worker threads.
pub struct ImapExecutor {
    mailboxes: ImapMailboxes,
    uids: UidCache,
    appends: Appends,
}

impl std::fmt::Debug for ImapExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapExecutor").finish_non_exhaustive()
    }
}

/// A request's answer before it becomes a [`Reply`].
type Answer = Result<Reply, Failure>;

fn imap(reply: ImapReply) -> Answer {
    Ok(Reply::Imap(reply))
}

impl ImapExecutor {
    /// An executor over these folders, with the default APPEND timeout.
    pub fn new(mailboxes: ImapMailboxes) -> ImapExecutor {
        ImapExecutor {
            mailboxes,
            uids: UidCache::default(),
            appends: Appends::new(DEFAULT_APPEND_TIMEOUT),
        }
    }

    /// Replaces how long an unfinished APPEND may stay idle before its temporary file
    /// is removed (checked on every request).
    pub fn with_append_timeout(mut self, timeout: Duration) -> ImapExecutor {
        self.appends = Appends::new(timeout);
        self
    }

    /// Carries out one request; always one reply, never a panic.
    pub fn execute(&self, request: ImapRequest) -> Reply {
        self.appends.expire(Instant::now());
        self.answer(request).unwrap_or_else(Reply::Failed)
    }

    fn answer(&self, request: ImapRequest) -> Answer {
        let store = &self.mailboxes;
        match request {
            ImapRequest::ListMailboxes { account } => {
                let folders = store.list_folders(&account).map_err(failure)?;
                imap(ImapReply::Mailboxes(
                    folders.iter().map(mailbox_info).collect(),
                ))
            }
            ImapRequest::Status { mailbox } => {
                let status = store
                    .status(&mailbox.account, &store_name(&mailbox.name))
                    .map_err(failure)?;
                imap(ImapReply::Status(MailboxStatus {
                    messages: status.messages,
                    recent: status.recent,
                    uid_next: status.uidnext,
                    uid_validity: status.uidvalidity,
                    unseen: status.unseen,
                }))
            }
            ImapRequest::Create { mailbox } => {
                let name = store_name(&mailbox.name);
                match store.create_folder(&mailbox.account, &name) {
                    Ok(()) => Ok(Reply::Done),
                    Err(ImapStoreError::AlreadyExists) => imap(ImapReply::AlreadyExists),
                    Err(e) => Err(failure(e)),
                }
            }
            ImapRequest::Delete { mailbox } => {
                let result = store.delete_folder(&mailbox.account, &store_name(&mailbox.name));
                self.uids.forget_account(&mailbox.account.0);
                result.map_err(failure)?;
                Ok(Reply::Done)
            }
            ImapRequest::Rename { mailbox, to } => {
                let result = store.rename_folder(
                    &mailbox.account,
                    &store_name(&mailbox.name),
                    &store_name(&to),
                );
                self.uids.forget_account(&mailbox.account.0);
                match result {
                    Ok(()) => Ok(Reply::Done),
                    Err(ImapStoreError::AlreadyExists) => imap(ImapReply::AlreadyExists),
                    Err(e) => Err(failure(e)),
                }
            }
            ImapRequest::Subscribe { mailbox, subscribe } => {
                let name = store_name(&mailbox.name);
                if subscribe {
                    store.subscribe(&mailbox.account, &name)
                } else {
                    store.unsubscribe(&mailbox.account, &name)
                }
                .map_err(failure)?;
                Ok(Reply::Done)
            }
            ImapRequest::Snapshot {
                mailbox,
                claim_recent,
            } => imap(ImapReply::Snapshot(self.snapshot(&mailbox, claim_recent)?)),
            ImapRequest::Read {
                mailbox,
                uid,
                offset,
                max_len,
            } => {
                let file = self.file_of(&mailbox, uid)?;
                let (bytes, end) = store
                    .read(
                        &mailbox.account,
                        &store_name(&mailbox.name),
                        &file,
                        offset,
                        max_len,
                    )
                    .map_err(failure)?;
                Ok(Reply::Chunk { bytes, end })
            }
            ImapRequest::FetchContent {
                mailbox,
                uid,
                items,
            } => self.fetch_content(&mailbox, uid, &items),
            ImapRequest::Store {
                mailbox,
                uids,
                mode,
                flags,
            } => self.store_flags(&mailbox, &uids, mode, &flags),
            ImapRequest::Copy {
                mailbox,
                uids,
                target,
                remove,
            } => self.copy(&mailbox, &uids, &target, remove),
            ImapRequest::Expunge { mailbox, uids } => {
                let folder = store_name(&mailbox.name);
                let files = self.files_of(&mailbox, &uids)?;
                let refs: Vec<MessageRef> = files.into_iter().map(|(_, f)| f).collect();
                let removed = store
                    .expunge(&mailbox.account, &folder, &refs)
                    .map_err(failure)?;
                self.uids.remove(&mailbox.account.0, &folder, &removed);
                imap(ImapReply::Expunged(removed))
            }
            ImapRequest::Search {
                mailbox,
                key,
                candidates,
                last,
            } => self.search(&mailbox, &key, &candidates, last),
            ImapRequest::AppendBegin {
                mailbox,
                flags,
                date,
                size,
            } => {
                let folder = store_name(&mailbox.name);
                let map = if split_flags(&flags).1.is_empty() {
                    KeywordMap::new()
                } else {
                    self.keyword_map(&mailbox.account, &folder, &flags, true)?
                };
                let id = self.appends.begin(
                    store,
                    &mailbox.account,
                    &folder,
                    flags_from_strings(&flags, &map),
                    date.map(|(seconds, _zone)| seconds),
                    size,
                )?;
                imap(ImapReply::AppendStarted(id))
            }
            ImapRequest::AppendData { append, bytes } => {
                self.appends.data(append, &bytes)?;
                Ok(Reply::Done)
            }
            ImapRequest::AppendCommit { append } => {
                let appended = self.appends.commit(store, append)?;
                imap(ImapReply::Appended {
                    uid_validity: appended.uidvalidity,
                    uid: appended.uid,
                })
            }
            ImapRequest::AppendAbort { append } => {
                self.appends.abort(append);
                Ok(Reply::Done)
            }
            _ => Err(Failure::Permanent("request not supported".into())),
        }
    }

    /// Takes a snapshot (claiming `\Recent` or not), refreshes the UID map from it and
    /// converts it for the session.
    fn snapshot(&self, mailbox: &MailboxRef, claim_recent: bool) -> Result<Snapshot, Failure> {
        let folder = store_name(&mailbox.name);
        let taken = self
            .mailboxes
            .open_shared(&mailbox.account, &folder, claim_recent)
            .map_err(failure)?;
        self.uids.refresh(&mailbox.account.0, &folder, &taken);
        Ok(Snapshot {
            uid_validity: taken.uidvalidity,
            uid_next: taken.uidnext,
            messages: taken
                .messages
                .iter()
                .map(|m| MessageMeta {
                    uid: m.uid,
                    flags: flags_to_strings(m.flags, &taken.keywords),
                    size: m.size,
                    internal_date: m.internal_date,
                    recent: m.recent,
                })
                .collect(),
            keywords: taken.keywords.names().map(str::to_owned).collect(),
        })
    }

    /// The keyword map of `folder` for these flag strings: with `define`, their keywords
    /// get letters first (as far as letters are left, RFC 3501 §7.1 PERMANENTFLAGS);
    /// otherwise the map as it is (a STORE answer names the keywords a message keeps).
    fn keyword_map(
        &self,
        account: &tidegate_core::Account,
        folder: &str,
        flags: &[String],
        define: bool,
    ) -> Result<KeywordMap, Failure> {
        let (_, names) = split_flags(flags);
        if define && !names.is_empty() {
            self.mailboxes.define_keywords(account, folder, &names)
        } else {
            self.mailboxes.keywords(account, folder)
        }
        .map_err(failure)
    }

    /// The files of those `uids` that exist, in order; one fresh snapshot (not claiming
    /// `\Recent`) when the map does not know them all.
    fn files_of(
        &self,
        mailbox: &MailboxRef,
        uids: &[u32],
    ) -> Result<Vec<(u32, MessageRef)>, Failure> {
        let folder = store_name(&mailbox.name);
        let (found, missed) = self.uids.lookup(&mailbox.account.0, &folder, uids);
        if !missed {
            return Ok(found);
        }
        self.snapshot(mailbox, false)?;
        Ok(self.uids.lookup(&mailbox.account.0, &folder, uids).0)
    }

    /// The file of one message, or `Gone`.
    fn file_of(&self, mailbox: &MailboxRef, uid: u32) -> Result<MessageRef, Failure> {
        self.files_of(mailbox, &[uid])?
            .pop()
            .map(|(_, file)| file)
            .ok_or(Failure::Gone)
    }

    /// A whole message for parsing, at most [`MAX_PARSE_SIZE`] bytes.
    fn read_whole(&self, mailbox: &MailboxRef, file: &MessageRef) -> Result<Vec<u8>, Failure> {
        match self.mailboxes.read_all(
            &mailbox.account,
            &store_name(&mailbox.name),
            file,
            MAX_PARSE_SIZE,
        ) {
            Ok(bytes) => Ok(bytes),
            Err(ImapStoreError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(Failure::Permanent("message too large to parse".into()))
            }
            Err(e) => Err(failure(e)),
        }
    }

    /// FETCH ENVELOPE, BODY, BODYSTRUCTURE and `BODY[section]` (RFC 3501 §6.4.5): one
    /// parse, one entry per item. Partials (`<o.n>`) are cut by the session.
    fn fetch_content(&self, mailbox: &MailboxRef, uid: u32, items: &[ContentItem]) -> Answer {
        let file = self.file_of(mailbox, uid)?;
        let message = self.read_whole(mailbox, &file)?;
        let root = mime::parse(&message);
        let content = items
            .iter()
            .map(|item| match item {
                ContentItem::Envelope => Some(Bytes::from(mime::envelope_of(&message, &root))),
                ContentItem::Body => {
                    Some(Bytes::from(mime::body_structure_of(&message, &root, false)))
                }
                ContentItem::BodyStructure => {
                    Some(Bytes::from(mime::body_structure_of(&message, &root, true)))
                }
                ContentItem::Section(section) => {
                    let part = match &section.text {
                        None => SectionPart::Full,
                        Some(SectionText::Header) => SectionPart::Header,
                        Some(SectionText::HeaderFields(names)) => {
                            SectionPart::HeaderFields(names.clone())
                        }
                        Some(SectionText::HeaderFieldsNot(names)) => {
                            SectionPart::HeaderFieldsNot(names.clone())
                        }
                        Some(SectionText::Text) => SectionPart::Text,
                        Some(SectionText::Mime) => SectionPart::Mime,
                    };
                    mime::section_of(&message, &root, &section.part, &part)
                        .map(|found| Bytes::copy_from_slice(&found.bytes(&message)))
                }
            })
            .collect();
        imap(ImapReply::Content(content))
    }

    /// STORE (RFC 3501 §6.4.6): new flags per message that still exists.
    fn store_flags(
        &self,
        mailbox: &MailboxRef,
        uids: &[u32],
        mode: StoreMode,
        flags: &[String],
    ) -> Answer {
        let folder = store_name(&mailbox.name);
        let account = &mailbox.account;
        // Removing keywords never defines them; a STORE that sets keywords defines them
        // before any file is renamed, so every letter on disk has its name.
        let map = self.keyword_map(account, &folder, flags, mode != StoreMode::Remove)?;
        let given = flags_from_strings(flags, &map);
        let dir = self
            .mailboxes
            .existing_folder(account, &folder)
            .map_err(failure)?;
        let mut changed = Vec::with_capacity(uids.len());
        for (uid, file) in self.files_of(mailbox, uids)? {
            // The file's current name holds its current flags (another session may
            // have changed them since the map was made).
            let (sub, name) = match locate(&dir, &file.0) {
                Ok(found) => found,
                Err(ImapStoreError::Gone) => continue,
                Err(e) => return Err(failure(e)),
            };
            let current = super::Flags::from_maildir(
                tidegate_core::maildir::parse_name(&name).map_or("", |p| p.flags),
            );
            let new_flags = apply_store(current, mode, given);
            let here = MessageRef(format!("{}/{name}", sub.name()));
            match self.mailboxes.set_flags(account, &folder, &here, new_flags) {
                Ok(new_file) => {
                    self.uids.update(&account.0, &folder, uid, new_file);
                    changed.push((uid, flags_to_strings(new_flags, &map)));
                }
                Err(ImapStoreError::Gone) => self.uids.remove(&account.0, &folder, &[uid]),
                Err(e) => return Err(failure(e)),
            }
        }
        imap(ImapReply::Flags(changed))
    }

    /// COPY (RFC 3501 §6.4.7) and MOVE (RFC 6851) with their UIDPLUS pairs.
    fn copy(&self, mailbox: &MailboxRef, uids: &[u32], target: &str, remove: bool) -> Answer {
        let folder = store_name(&mailbox.name);
        let account = &mailbox.account;
        let files = self.files_of(mailbox, uids)?;
        let refs: Vec<MessageRef> = files.into_iter().map(|(_, f)| f).collect();
        let to = store_name(target);
        let outcome = if remove {
            self.mailboxes.move_messages(account, &folder, &refs, &to)
        } else {
            self.mailboxes.copy(account, &folder, &refs, &to)
        }
        .map_err(failure)?;
        let pairs: Vec<(u32, u32)> = outcome
            .copied
            .iter()
            .map(|c| (c.from_uid, c.to_uid))
            .collect();
        if remove {
            let moved: Vec<u32> = pairs.iter().map(|(from, _)| *from).collect();
            self.uids.remove(&account.0, &folder, &moved);
        }
        imap(ImapReply::Copied {
            uid_validity: outcome.uidvalidity,
            pairs,
        })
    }

    /// SEARCH with content keys: reads each candidate (up to [`MAX_PARSE_SIZE`]) and
    /// keeps those [`evaluate`] accepts. Vanished candidates do not match.
    fn search(
        &self,
        mailbox: &MailboxRef,
        key: &SearchKey,
        candidates: &[SearchCandidate],
        last: (u32, u32),
    ) -> Answer {
        let uids: Vec<u32> = candidates.iter().map(|c| c.meta.uid).collect();
        let files: std::collections::HashMap<u32, MessageRef> =
            self.files_of(mailbox, &uids)?.into_iter().collect();
        let mut matches = Vec::new();
        for candidate in candidates {
            let Some(file) = files.get(&candidate.meta.uid) else {
                continue;
            };
            let content = if key.needs_content() {
                match self.read_whole(mailbox, file) {
                    Ok(bytes) => Some(bytes),
                    Err(Failure::Gone) => continue,
                    Err(Failure::Permanent(_)) => None,
                    Err(other) => return Err(other),
                }
            } else {
                None
            };
            if evaluate(key, &candidate.facts(last), content.as_deref()) {
                matches.push(candidate.meta.uid);
            }
        }
        imap(ImapReply::Matches(matches))
    }
}
