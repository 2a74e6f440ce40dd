//! An in-memory mail store answering the IMAP session's requests, and a driver that
//! runs a session against it with a virtual clock. Shared by the `imap_*` tests.
#![allow(dead_code, clippy::disallowed_methods)] // tests take a base instant from the clock

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidegate_core::imap::command::StoreMode;
use tidegate_core::imap::fetch::{ContentItem, SectionText};
use tidegate_core::imap::search;
use tidegate_core::imap::{
    AppendId, ConnInfo, ImapConfig, ImapReply, ImapRequest, ImapSession, MailboxInfo,
    MailboxStatus, MessageMeta, Snapshot,
};
use tidegate_core::{Account, Action, Failure, Peer, Reply, Request, RequestId, Session};

/// One stored message.
#[derive(Debug, Clone)]
pub struct Message {
    pub uid: u32,
    pub flags: Vec<String>,
    pub bytes: Vec<u8>,
    pub internal_date: i64,
    /// Still in `new/`: the next read-write snapshot claims it as recent.
    pub fresh: bool,
}

/// One mailbox.
#[derive(Debug, Clone)]
pub struct Mailbox {
    pub uid_validity: u32,
    pub uid_next: u32,
    pub messages: Vec<Message>,
    pub subscribed: bool,
}

impl Mailbox {
    fn new(uid_validity: u32) -> Self {
        Mailbox {
            uid_validity,
            uid_next: 1,
            messages: Vec::new(),
            subscribed: false,
        }
    }

    pub fn add(&mut self, bytes: &[u8], flags: &[&str], fresh: bool) -> u32 {
        let uid = self.uid_next;
        self.uid_next += 1;
        self.messages.push(Message {
            uid,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            bytes: bytes.to_vec(),
            internal_date: 837_596_665,
            fresh,
        });
        uid
    }
}

pub const MESSAGE_1: &[u8] =
    b"From: Alice <alice@example.com>\r\nSubject: Hello\r\n\r\nHi Bob!\r\n";
pub const MESSAGE_2: &[u8] = b"From: Carol <carol@example.com>\r\nSubject: Lunch\r\n\r\nNoon?\r\n";

/// The store: mailboxes by name, plus APPENDs in progress.
#[derive(Debug)]
pub struct Store {
    pub mailboxes: BTreeMap<String, Mailbox>,
    pub appends: BTreeMap<u64, (String, Vec<String>, Vec<u8>)>,
    next_append: u64,
    /// Requests seen, for assertions on what the session asked.
    pub log: Vec<String>,
}

impl Store {
    /// INBOX with two messages (the second unseen and new), and an empty Sent.
    pub fn new() -> Self {
        let mut inbox = Mailbox::new(3857529045);
        inbox.add(MESSAGE_1, &["\\Seen"], false);
        inbox.add(MESSAGE_2, &[], true);
        inbox.subscribed = true;
        let mut mailboxes = BTreeMap::new();
        mailboxes.insert("INBOX".to_string(), inbox);
        mailboxes.insert("Sent".to_string(), Mailbox::new(42));
        Store {
            mailboxes,
            appends: BTreeMap::new(),
            next_append: 0,
            log: Vec::new(),
        }
    }

    pub fn execute(&mut self, request: Request) -> Reply {
        match request {
            Request::Authenticate { user, password, .. } => {
                if user == "alice" && password.expose() == b"secret" {
                    Reply::Authenticated(Account("alice@example.com".into()))
                } else if user == "slow" {
                    Reply::Failed(Failure::Throttled(Duration::from_secs(10)))
                } else if user == "down" {
                    Reply::Failed(Failure::Temporary("user database unreachable".into()))
                } else {
                    Reply::Failed(Failure::Denied)
                }
            }
            Request::Imap(request) => {
                self.log.push(format!("{request:?}"));
                self.imap(request)
            }
            other => panic!("unexpected request {other:?}"),
        }
    }

    fn meta(message: &Message, recent: bool) -> MessageMeta {
        MessageMeta {
            uid: message.uid,
            flags: message.flags.clone(),
            size: message.bytes.len() as u64,
            internal_date: message.internal_date,
            recent,
        }
    }

    fn imap(&mut self, request: ImapRequest) -> Reply {
        let gone = Reply::Failed(Failure::Gone);
        let reply = match request {
            ImapRequest::ListMailboxes { .. } => {
                let names: Vec<String> = self.mailboxes.keys().cloned().collect();
                ImapReply::Mailboxes(
                    self.mailboxes
                        .iter()
                        .map(|(name, mb)| {
                            let children = names.iter().any(|n| n.starts_with(&format!("{name}/")));
                            let mut attributes = vec![if children {
                                "\\HasChildren".to_string()
                            } else {
                                "\\HasNoChildren".to_string()
                            }];
                            if name == "Sent" {
                                attributes.push("\\Sent".into());
                            }
                            MailboxInfo {
                                name: name.clone(),
                                attributes,
                                subscribed: mb.subscribed,
                            }
                        })
                        .collect(),
                )
            }
            ImapRequest::Status { mailbox } => {
                let Some(mb) = self.mailboxes.get(&mailbox.name) else {
                    return gone;
                };
                ImapReply::Status(MailboxStatus {
                    messages: mb.messages.len() as u32,
                    recent: mb.messages.iter().filter(|m| m.fresh).count() as u32,
                    uid_next: mb.uid_next,
                    uid_validity: mb.uid_validity,
                    unseen: mb
                        .messages
                        .iter()
                        .filter(|m| !m.flags.iter().any(|f| f == "\\Seen"))
                        .count() as u32,
                })
            }
            ImapRequest::Create { mailbox } => {
                if self.mailboxes.contains_key(&mailbox.name) {
                    return Reply::Imap(ImapReply::AlreadyExists);
                }
                self.mailboxes.insert(mailbox.name, Mailbox::new(7));
                return Reply::Done;
            }
            ImapRequest::Delete { mailbox } => {
                return match self.mailboxes.remove(&mailbox.name) {
                    Some(_) => Reply::Done,
                    None => gone,
                };
            }
            ImapRequest::Rename { mailbox, to } => {
                if self.mailboxes.contains_key(&to) {
                    return Reply::Imap(ImapReply::AlreadyExists);
                }
                let Some(mb) = self.mailboxes.remove(&mailbox.name) else {
                    return gone;
                };
                self.mailboxes.insert(to, mb);
                return Reply::Done;
            }
            ImapRequest::Subscribe { mailbox, subscribe } => {
                let Some(mb) = self.mailboxes.get_mut(&mailbox.name) else {
                    return gone;
                };
                mb.subscribed = subscribe;
                return Reply::Done;
            }
            ImapRequest::Snapshot {
                mailbox,
                claim_recent,
            } => {
                let Some(mb) = self.mailboxes.get_mut(&mailbox.name) else {
                    return gone;
                };
                let messages = mb
                    .messages
                    .iter_mut()
                    .map(|m| {
                        let recent = claim_recent && m.fresh;
                        if claim_recent {
                            m.fresh = false;
                        }
                        Store::meta(m, recent)
                    })
                    .collect();
                ImapReply::Snapshot(Snapshot {
                    uid_validity: mb.uid_validity,
                    uid_next: mb.uid_next,
                    messages,
                    keywords: Vec::new(),
                })
            }
            ImapRequest::Read {
                mailbox,
                uid,
                offset,
                max_len,
            } => {
                let Some(m) = self.message(&mailbox.name, uid) else {
                    return gone;
                };
                let start = (offset as usize).min(m.bytes.len());
                let end = (start + max_len).min(m.bytes.len());
                return Reply::Chunk {
                    bytes: Bytes::copy_from_slice(&m.bytes[start..end]),
                    end: end == m.bytes.len(),
                };
            }
            ImapRequest::FetchContent {
                mailbox,
                uid,
                items,
            } => {
                let Some(m) = self.message(&mailbox.name, uid) else {
                    return gone;
                };
                let (header, body) = search::split_header(&m.bytes);
                ImapReply::Content(
                    items
                        .iter()
                        .map(|item| match item {
                            ContentItem::Envelope => Some(Bytes::from_static(b"(\"envelope\")")),
                            ContentItem::Body | ContentItem::BodyStructure => {
                                Some(Bytes::from_static(b"(\"TEXT\" \"PLAIN\")"))
                            }
                            ContentItem::Section(s) if s.part.is_empty() => match &s.text {
                                Some(SectionText::Header) => Some(Bytes::copy_from_slice(header)),
                                Some(SectionText::Text) => Some(Bytes::copy_from_slice(body)),
                                _ => None,
                            },
                            ContentItem::Section(_) => None,
                        })
                        .collect(),
                )
            }
            ImapRequest::Store {
                mailbox,
                uids,
                mode,
                flags,
            } => {
                let Some(mb) = self.mailboxes.get_mut(&mailbox.name) else {
                    return gone;
                };
                let mut changes = Vec::new();
                for m in mb.messages.iter_mut().filter(|m| uids.contains(&m.uid)) {
                    match mode {
                        StoreMode::Replace => m.flags = flags.clone(),
                        StoreMode::Add => {
                            for f in &flags {
                                if !m.flags.contains(f) {
                                    m.flags.push(f.clone());
                                }
                            }
                        }
                        StoreMode::Remove => m.flags.retain(|f| !flags.contains(f)),
                    }
                    changes.push((m.uid, m.flags.clone()));
                }
                ImapReply::Flags(changes)
            }
            ImapRequest::Copy {
                mailbox,
                uids,
                target,
                remove,
            } => {
                if !self.mailboxes.contains_key(&target) {
                    return gone;
                }
                let Some(source) = self.mailboxes.get_mut(&mailbox.name) else {
                    return gone;
                };
                let copies: Vec<Message> = source
                    .messages
                    .iter()
                    .filter(|m| uids.contains(&m.uid))
                    .cloned()
                    .collect();
                if remove {
                    source.messages.retain(|m| !uids.contains(&m.uid));
                }
                let Some(dest) = self.mailboxes.get_mut(&target) else {
                    return gone;
                };
                let pairs = copies
                    .iter()
                    .map(|m| {
                        let flags: Vec<&str> = m.flags.iter().map(String::as_str).collect();
                        (m.uid, dest.add(&m.bytes, &flags, true))
                    })
                    .collect();
                ImapReply::Copied {
                    uid_validity: dest.uid_validity,
                    pairs,
                }
            }
            ImapRequest::Expunge { mailbox, uids } => {
                let Some(mb) = self.mailboxes.get_mut(&mailbox.name) else {
                    return gone;
                };
                mb.messages.retain(|m| !uids.contains(&m.uid));
                ImapReply::Expunged(uids)
            }
            ImapRequest::Search {
                mailbox,
                key,
                candidates,
                last,
            } => {
                let mut matches = Vec::new();
                for c in candidates {
                    let Some(m) = self.message(&mailbox.name, c.meta.uid) else {
                        continue;
                    };
                    let facts = c.facts(last);
                    if search::evaluate(&key, &facts, Some(&m.bytes)) {
                        matches.push(c.meta.uid);
                    }
                }
                ImapReply::Matches(matches)
            }
            ImapRequest::AppendBegin { mailbox, flags, .. } => {
                if !self.mailboxes.contains_key(&mailbox.name) {
                    return gone;
                }
                self.next_append += 1;
                self.appends
                    .insert(self.next_append, (mailbox.name, flags, Vec::new()));
                ImapReply::AppendStarted(AppendId(self.next_append))
            }
            ImapRequest::AppendData { append, bytes } => {
                let Some(entry) = self.appends.get_mut(&append.0) else {
                    return gone;
                };
                entry.2.extend_from_slice(&bytes);
                return Reply::Done;
            }
            ImapRequest::AppendCommit { append } => {
                let Some((name, flags, bytes)) = self.appends.remove(&append.0) else {
                    return gone;
                };
                let Some(mb) = self.mailboxes.get_mut(&name) else {
                    return gone;
                };
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                let uid = mb.add(&bytes, &flags, true);
                ImapReply::Appended {
                    uid_validity: mb.uid_validity,
                    uid,
                }
            }
            ImapRequest::AppendAbort { append } => {
                self.appends.remove(&append.0);
                return Reply::Done;
            }
            other => panic!("unexpected request {other:?}"),
        };
        Reply::Imap(reply)
    }

    fn message(&self, mailbox: &str, uid: u32) -> Option<&Message> {
        self.mailboxes
            .get(mailbox)?
            .messages
            .iter()
            .find(|m| m.uid == uid)
    }
}

/// A session, its store and a virtual clock.
pub struct Harness<S: Session> {
    pub session: S,
    pub store: Store,
    pub now: Instant,
    pub out: Vec<u8>,
    pub closed: bool,
    /// Report every write as drained at once (a client that always reads).
    pub auto_drain: bool,
    /// Requests answered, for the "exactly one reply" check.
    pub answered: Vec<RequestId>,
    /// The session asked for TLS (only seen without a `Secured` wrapper).
    pub started_tls: bool,
    /// Keep requests unanswered in `held` instead of asking the store.
    pub hold: bool,
    pub held: Vec<(RequestId, Request)>,
}

pub fn conn(plaintext_auth: bool, starttls: bool) -> ConnInfo {
    ConnInfo {
        client: "192.0.2.1:5000".parse().unwrap_or_else(|_| unreachable!()),
        implicit_tls: false,
        starttls_available: starttls,
        plaintext_auth,
        may_override_client: false,
    }
}

pub fn config() -> ImapConfig {
    ImapConfig {
        hostname: "imap.example.com".into(),
        ..ImapConfig::default()
    }
}

impl Harness<ImapSession> {
    pub fn new() -> Self {
        Harness::with(config(), conn(true, false))
    }

    pub fn with(cfg: ImapConfig, conn: ConnInfo) -> Self {
        let now = Instant::now();
        let session = ImapSession::new(Arc::new(cfg), conn, now);
        let mut h = Harness {
            session,
            store: Store::new(),
            now,
            out: Vec::new(),
            closed: false,
            auto_drain: true,
            answered: Vec::new(),
            started_tls: false,
            hold: false,
            held: Vec::new(),
        };
        h.pump();
        h
    }

    /// A session already logged in, greeting and login answer discarded.
    pub fn logged_in() -> Self {
        let mut h = Harness::new();
        h.send("a LOGIN alice secret\r\n");
        h.take();
        h
    }

    /// A logged-in session with INBOX selected.
    pub fn selected() -> Self {
        let mut h = Harness::logged_in();
        h.send("s SELECT INBOX\r\n");
        h.take();
        h
    }
}

impl<S: Session> Harness<S> {
    pub fn send(&mut self, input: &str) {
        self.send_bytes(input.as_bytes());
    }

    pub fn send_bytes(&mut self, input: &[u8]) {
        for chunk in input.chunks(tidegate_core::MAX_READ) {
            self.session.handle_input(self.now, Peer::Client, chunk);
            self.pump();
        }
    }

    /// Carries out every action, answering requests from the store, until quiet.
    pub fn pump(&mut self) {
        loop {
            let mut replies: Vec<(RequestId, Reply)> = Vec::new();
            let mut wrote = false;
            while let Some(action) = self.session.poll_action() {
                assert!(!self.closed, "action after Close: {action:?}");
                match action {
                    Action::Write { bytes, .. } => {
                        self.out.extend_from_slice(&bytes);
                        wrote = true;
                    }
                    Action::Request { id, request } => {
                        assert!(!self.answered.contains(&id), "request id reused");
                        self.answered.push(id);
                        if self.hold {
                            self.held.push((id, request));
                        } else {
                            replies.push((id, self.store.execute(request)));
                        }
                    }
                    Action::Close { .. } => self.closed = true,
                    Action::StartTls { .. } => self.started_tls = true,
                    other => panic!("unexpected action {other:?}"),
                }
            }
            if replies.is_empty() && !(wrote && self.auto_drain) {
                return;
            }
            if wrote && self.auto_drain {
                self.session.handle_drained(self.now, Peer::Client);
            }
            for (id, reply) in replies {
                self.session.handle_reply(self.now, id, reply);
            }
        }
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.session.handle_timeout(self.now);
        self.pump();
    }

    /// Everything written since the last call, as text.
    pub fn take(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.out).into_owned();
        self.out.clear();
        out
    }
}
