//! An in-memory mailbox store that answers core requests, shared by every driver:
//! POP3 access here, SMTP/LMTP recipient checks and deliveries in `memstore/smtp.rs`,
//! IMAP on real maildirs in a temporary directory in `memstore/imap.rs`.

mod imap;
mod smtp;

pub use imap::{FIRST_INTERNAL_DATE, UIDVALIDITY};

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use tidegate_core::{Account, Failure, MessageInfo, Reply, Request};
use tidegate_store::Executor;

use crate::step::FailKind;

#[derive(Debug, Clone)]
struct Message {
    /// The unique part of the file name (the UIDL).
    uid: String,
    /// In `cur/` with the Seen flag, after a POP3 session retrieved it.
    seen: bool,
    bytes: Bytes,
}

impl Message {
    fn file(&self) -> String {
        if self.seen {
            format!("cur/{}:2,S", self.uid)
        } else {
            format!("new/{}", self.uid)
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// name → (password, may log in)
    users: BTreeMap<String, (String, bool)>,
    boxes: BTreeMap<String, Vec<Message>>,
    added: u64,
    last_login: Option<String>,
    bytes_served: u64,
    commits: u64,
    /// Mailbox limits in octets (`@quota`).
    quotas: BTreeMap<String, u64>,
    /// Messages being received: delivery id → trace header and data so far.
    pending: BTreeMap<u64, Vec<u8>>,
    deliveries_begun: u64,
    deliveries_aborted: u64,
    /// Store requests that fail once, next time their kind comes (`@store-fail`).
    fail_next: Vec<FailKind>,
}

/// Users and maildir-like inboxes in memory. Implements [`Executor`], so the core
/// driver calls it directly and the shells run it on their workers.
///
/// For SMTP, the local domains are the domains of the `local@domain` user names; a
/// delivered message is appended to each recipient's inbox like [`MemStore::add_message`],
/// so a later POP3 session reads it.
///
/// Message files are named like maildir files (`new/UID`, `cur/UID:2,S`) and are found
/// again by their unique part, as the real store does.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
    /// Made on first use: users with a domain get an IMAP INBOX there.
    imap: std::sync::OnceLock<imap::ImapSide>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The IMAP maildirs; a failure to create the temporary directory is a broken test
    /// machine, not a script failure.
    fn imap(&self) -> &imap::ImapSide {
        self.imap.get_or_init(|| {
            imap::ImapSide::new()
                .unwrap_or_else(|e| panic!("cannot create the IMAP maildir root: {e}"))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces) an account; `nologin` accounts are refused with `Disabled`.
    pub fn add_user(&self, name: &str, password: &str, nologin: bool) {
        let mut inner = self.lock();
        inner
            .users
            .insert(name.to_owned(), (password.to_owned(), !nologin));
        inner.boxes.entry(name.to_owned()).or_default();
        drop(inner);
        if name.contains('@')
            && let Err(e) = self.imap().add_user(name)
        {
            panic!("cannot create the IMAP INBOX of {name}: {e}");
        }
    }

    /// Appends a message to `user`'s inbox (in `new/`) and returns its unique name.
    /// Names are deterministic (`1700000001.M1P1.test`, ...) so scripts can expect UIDLs.
    /// A user with a domain also gets it in the IMAP INBOX (`new/`, INTERNALDATE fixed).
    pub fn add_message(&self, user: &str, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let mut inner = self.lock();
        let unique = Self::append(&mut inner, user, bytes.clone());
        let n = inner.added;
        drop(inner);
        if user.contains('@')
            && let Err(e) = self.imap().add_message(user, &unique, &bytes, n)
        {
            panic!("cannot write an IMAP message of {user}: {e}");
        }
        unique
    }

    fn append(inner: &mut Inner, user: &str, bytes: Bytes) -> String {
        inner.added += 1;
        let n = inner.added;
        let uid = format!("{}.M{n}P1.test", 1_700_000_000 + n);
        inner
            .boxes
            .entry(user.to_owned())
            .or_default()
            .push(Message {
                uid: uid.clone(),
                seen: false,
                bytes,
            });
        uid
    }

    /// The bytes of `user`'s messages, in inbox order.
    pub fn messages(&self, user: &str) -> Vec<Bytes> {
        self.lock()
            .boxes
            .get(user)
            .map(|b| b.iter().map(|m| m.bytes.clone()).collect())
            .unwrap_or_default()
    }

    /// Deletes message `number` (1-based, current inbox order) of `user`, or of the last
    /// user who logged in, behind every session's back.
    pub fn vanish(&self, user: Option<&str>, number: usize) -> Result<(), String> {
        let mut inner = self.lock();
        let user = match user {
            Some(u) => u.to_owned(),
            None => inner
                .last_login
                .clone()
                .ok_or("@vanish without USER needs a login first")?,
        };
        let inbox = inner
            .boxes
            .get_mut(&user)
            .ok_or_else(|| format!("no inbox for {user}"))?;
        if number == 0 || number > inbox.len() {
            return Err(format!("{user} has no message {number}"));
        }
        inbox.remove(number - 1);
        Ok(())
    }

    /// The unique names of `user`'s messages, in order, and whether each was seen.
    pub fn inbox(&self, user: &str) -> Vec<(String, bool)> {
        self.lock()
            .boxes
            .get(user)
            .map(|b| b.iter().map(|m| (m.uid.clone(), m.seen)).collect())
            .unwrap_or_default()
    }

    /// Message bytes handed out by `ReadMessage` so far (backpressure checks).
    pub fn bytes_served(&self) -> u64 {
        self.lock().bytes_served
    }

    /// `CommitPop3` requests carried out so far.
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }

    fn find<'a>(inner: &'a mut Inner, account: &Account, file: &str) -> Option<&'a mut Message> {
        let name = file.split_once('/').map_or(file, |(_, n)| n);
        let unique = name.split_once(':').map_or(name, |(u, _)| u);
        inner
            .boxes
            .get_mut(&account.0)?
            .iter_mut()
            .find(|m| m.uid == unique)
    }
}

impl Executor for MemStore {
    fn execute(&self, request: Request) -> Reply {
        if let Request::Imap(request) = request {
            return self.imap().executor().execute(request);
        }
        let mut inner = self.lock();
        match request {
            Request::Authenticate { user, password, .. } => match inner.users.get(&user) {
                Some((pw, _)) if pw.as_bytes() != password.expose() => {
                    Reply::Failed(Failure::Denied)
                }
                Some((_, false)) => Reply::Failed(Failure::Disabled),
                Some(_) => {
                    inner.last_login = Some(user.clone());
                    Reply::Authenticated(Account(user))
                }
                None => Reply::Failed(Failure::Denied),
            },
            Request::ListMailbox { account } => match inner.boxes.get(&account.0) {
                Some(inbox) => Reply::Listing(
                    inbox
                        .iter()
                        .map(|m| MessageInfo {
                            file: tidegate_core::MessageRef(m.file()),
                            uid: m.uid.clone(),
                            size: m.bytes.len() as u64,
                        })
                        .collect(),
                ),
                None => Reply::Failed(Failure::Gone),
            },
            Request::ReadMessage {
                account,
                file,
                offset,
                max_len,
            } => {
                let Some(message) = MemStore::find(&mut inner, &account, &file.0) else {
                    return Reply::Failed(Failure::Gone);
                };
                let len = message.bytes.len();
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
                let end = start.saturating_add(max_len).min(len);
                let bytes = message.bytes.slice(start..end);
                inner.bytes_served += bytes.len() as u64;
                Reply::Chunk {
                    bytes,
                    end: end == len,
                }
            }
            Request::CommitPop3 {
                account,
                delete,
                seen,
            } => {
                inner.commits += 1;
                for file in &seen {
                    if let Some(m) = MemStore::find(&mut inner, &account, &file.0) {
                        m.seen = true;
                    }
                }
                for file in &delete {
                    // Deleting what another session already removed is not an error.
                    if let Some(m) = MemStore::find(&mut inner, &account, &file.0) {
                        let uid = m.uid.clone();
                        if let Some(inbox) = inner.boxes.get_mut(&account.0) {
                            inbox.retain(|m| m.uid != uid);
                        }
                    }
                }
                Reply::Done
            }
            other => self::smtp::execute(&mut inner, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_core::{MessageRef, Secret};

    #[test]
    fn read_commit_and_vanish() {
        let store = MemStore::new();
        store.add_user("alice", "pw", false);
        let a = store.add_message("alice", &b"hello"[..]);
        let b = store.add_message("alice", &b"world!"[..]);
        let account = Account("alice".into());
        let auth = store.execute(Request::Authenticate {
            user: "alice".into(),
            password: Secret::new(b"pw".to_vec()),
            client: "127.0.0.1".parse().unwrap(),
        });
        assert!(matches!(auth, Reply::Authenticated(Account(ref u)) if u == "alice"));
        let read = store.execute(Request::ReadMessage {
            account: account.clone(),
            file: MessageRef(format!("new/{a}")),
            offset: 2,
            max_len: 2,
        });
        assert!(matches!(read, Reply::Chunk { ref bytes, end: false } if &bytes[..] == b"ll"));
        let done = store.execute(Request::CommitPop3 {
            account: account.clone(),
            delete: vec![MessageRef(format!("new/{a}"))],
            seen: vec![MessageRef(format!("new/{b}"))],
        });
        assert!(matches!(done, Reply::Done));
        assert_eq!(store.inbox("alice"), vec![(b.clone(), true)]);
        // Found by its unique name even though it moved to cur/.
        let read = store.execute(Request::ReadMessage {
            account: account.clone(),
            file: MessageRef(format!("new/{b}")),
            offset: 0,
            max_len: 100,
        });
        assert!(matches!(read, Reply::Chunk { end: true, .. }));
        store.vanish(None, 1).unwrap();
        let gone = store.execute(Request::ReadMessage {
            account,
            file: MessageRef(format!("cur/{b}:2,S")),
            offset: 0,
            max_len: 100,
        });
        assert!(matches!(gone, Reply::Failed(Failure::Gone)));
    }
}
