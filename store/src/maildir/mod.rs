//! Maildir access on a filesystem that several hosts may share over NFS (the Maildir
//! convention, <https://cr.yp.to/proto/maildir.html>, with Maildir++ `S=` sizes; design.md
//! §4, "Mail storage").
//!
//! An account's inbox is `<root>/<domain>/<localpart>/` with `tmp/ new/ cur/`. Nothing
//! here holds a lock: every change is a single `rename`, `link` or `unlink`, and a
//! message that another session moved (new/ → cur/, a flag change) is found again under
//! its unique name, which never changes for the life of the message.
//!
//! Delivery streams: [`MaildirStore::begin`] opens a temporary file in the spool
//! directory `<root>/.tidegate-tmp/` ([`SPOOL_DIR`]; why there: the `spool` module),
//! [`PendingMessage::append`] writes to it, and [`PendingMessage::commit`] fsyncs it and
//! links it into each recipient's `new/`, all or nothing (crash safety: the `stream`
//! module). Concurrent commits into one `new/` share its fsync (group commit: the `sync`
//! module). [`MaildirStore::deliver`] is the same path for a whole message from a reader.

mod commit;
mod deliver;
mod quota;
mod spool;
mod stream;
pub(crate) mod sync;

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tidegate_core::maildir::{arrival_key, parse_name, pop3_uid, sanitize_host};
use tidegate_core::{Account, MessageInfo, MessageRef};

pub use deliver::LfToCrlf;
pub use spool::{SPOOL_DIR, STALE_AFTER};
pub use stream::{PendingMessage, Recipient};

/// The most bytes one [`MaildirStore::read_chunk`] returns, whatever the caller asks, so a
/// single request never allocates more than this.
pub const MAX_CHUNK: usize = 1 << 20;

/// Why a maildir operation failed.
#[derive(Debug)]
pub enum StoreError {
    /// The message no longer exists anywhere in the maildir (another session deleted it),
    /// or the reference does not name a message file.
    Gone,
    /// The account name cannot be a mailbox directory (empty part, `/`, NUL, `..`,
    /// leading `.`, control characters, no `@`), or no recipient was given.
    InvalidAccount,
    /// The filesystem failed.
    Io(io::Error),
    /// Delivering the message would take the recipient's mailbox over its `quota=`.
    OverQuota,
    /// An all-or-nothing delivery failed for another recipient, so this recipient did
    /// not get the message either.
    NotDelivered,
}

impl StoreError {
    /// A copy of this error, for reporting one failure against several recipients
    /// (`io::Error` is not `Clone`: the copy keeps its kind and text).
    pub fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Gone => StoreError::Gone,
            StoreError::InvalidAccount => StoreError::InvalidAccount,
            StoreError::Io(e) => StoreError::Io(io::Error::new(e.kind(), e.to_string())),
            StoreError::OverQuota => StoreError::OverQuota,
            StoreError::NotDelivered => StoreError::NotDelivered,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Gone => f.write_str("message no longer exists"),
            StoreError::InvalidAccount => f.write_str("invalid mailbox name"),
            StoreError::Io(e) => write!(f, "maildir I/O error: {e}"),
            StoreError::OverQuota => f.write_str("mailbox over quota"),
            StoreError::NotDelivered => {
                f.write_str("not delivered: delivery to another recipient failed")
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        StoreError::Io(e)
    }
}

/// The two maildir folders that hold messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    New,
    Cur,
}

impl Sub {
    fn name(self) -> &'static str {
        match self {
            Sub::New => "new",
            Sub::Cur => "cur",
        }
    }
}

/// The maildirs under one `mailbox_path`.
#[derive(Debug, Clone)]
pub struct MaildirStore {
    root: PathBuf,
    fsync: bool,
    host: String,
    /// Shared by clones, so concurrent deliveries share directory fsyncs.
    syncs: Arc<sync::DirSyncs>,
}

impl MaildirStore {
    /// A store rooted at `root` (`[storage] mailbox_path`). `fsync` makes delivery and
    /// changes durable before they are acknowledged (`[storage] fsync`); `host` goes into
    /// delivered file names (sanitised), so hosts sharing the root never collide.
    pub fn new(root: impl AsRef<Path>, fsync: bool, host: &str) -> Self {
        MaildirStore {
            root: root.as_ref().to_path_buf(),
            fsync,
            host: sanitize_host(host),
            syncs: Arc::default(),
        }
    }

    /// The maildir root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The maildir of an account: `<root>/<domain>/<localpart>/`, the domain lowercased.
    /// Names that could leave the root or hide as dot files are refused.
    pub fn mailbox_dir(&self, account: &Account) -> Result<PathBuf, StoreError> {
        let (local, domain) = split_address(&account.0).ok_or(StoreError::InvalidAccount)?;
        Ok(self.root.join(domain.to_lowercase()).join(local))
    }

    /// The messages of an account's inbox (new/ then cur/), oldest first: by the leading
    /// seconds of the unique name, then by the unique name, so message numbers are stable.
    /// A missing maildir is an empty inbox. A message seen in both folders (moved during
    /// the scan) is listed once.
    pub fn list(&self, account: &Account) -> Result<Vec<MessageInfo>, StoreError> {
        let maildir = self.mailbox_dir(account)?;
        let mut uniques = HashSet::new();
        let mut found = Vec::new();
        // new/ first: a message moving new/ → cur/ meanwhile is then seen twice, never
        // missed.
        for sub in [Sub::New, Sub::Cur] {
            let dir = maildir.join(sub.name());
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for entry in entries {
                let entry = entry?;
                let file_name = entry.file_name();
                let Some(name) = file_name.to_str() else {
                    continue;
                };
                let Some(parsed) = parse_name(name) else {
                    continue;
                };
                if uniques.contains(parsed.unique) {
                    continue;
                }
                match entry.file_type() {
                    Ok(kind) if kind.is_file() => {}
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
                let size = match parsed.size {
                    Some(size) => size,
                    None => match entry.metadata() {
                        Ok(meta) => meta.len(),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e.into()),
                    },
                };
                uniques.insert(parsed.unique.to_owned());
                let info = MessageInfo {
                    file: MessageRef(format!("{}/{name}", sub.name())),
                    uid: pop3_uid(parsed.unique),
                    size,
                };
                found.push((arrival_key(parsed.unique), parsed.unique.to_owned(), info));
            }
        }
        found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Ok(found.into_iter().map(|(_, _, info)| info).collect())
    }

    /// Reads up to `max_len` bytes (at most [`MAX_CHUNK`]) of a message from `offset`;
    /// the flag is true when the message ends after them. A message moved since it was
    /// listed is found again by its unique name; one deleted is [`StoreError::Gone`].
    pub fn read_chunk(
        &self,
        account: &Account,
        file: &MessageRef,
        offset: u64,
        max_len: usize,
    ) -> Result<(Bytes, bool), StoreError> {
        let maildir = self.mailbox_dir(account)?;
        let (sub, name) = split_ref(file).ok_or(StoreError::Gone)?;
        let mut path = maildir.join(sub.name()).join(name);
        // Each retry follows one more move by another session.
        for _ in 0..3 {
            match File::open(&path) {
                Ok(handle) => return read_at(&handle, offset, max_len),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match find_by_unique(&maildir, unique_of(name))? {
                        Some((sub, found)) => path = maildir.join(sub.name()).join(found),
                        None => return Err(StoreError::Gone),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Gone)
    }
}

/// Splits `local@domain` (at the last `@`) when both parts are safe directory names.
pub(crate) fn split_address(address: &str) -> Option<(&str, &str)> {
    let (local, domain) = address.rsplit_once('@')?;
    (safe_part(local) && safe_part(domain)).then_some((local, domain))
}

fn safe_part(part: &str) -> bool {
    !part.is_empty()
        && !part.starts_with('.')
        && !part.contains("..")
        && !part
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// `new/NAME` or `cur/NAME` with one plain message name.
fn split_ref(file: &MessageRef) -> Option<(Sub, &str)> {
    let (dir, name) = file.0.split_once('/')?;
    let sub = match dir {
        "new" => Sub::New,
        "cur" => Sub::Cur,
        _ => return None,
    };
    if name.contains('\0') || parse_name(name).is_none() {
        return None;
    }
    Some((sub, name))
}

fn unique_of(name: &str) -> &str {
    parse_name(name).map_or(name, |p| p.unique)
}

/// Finds the message with this unique name in new/ or cur/, whatever its flags.
fn find_by_unique(maildir: &Path, unique: &str) -> io::Result<Option<(Sub, String)>> {
    for sub in [Sub::New, Sub::Cur] {
        let entries = match fs::read_dir(maildir.join(sub.name())) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let file_name = entry?.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            if parse_name(name).is_some_and(|p| p.unique == unique) {
                return Ok(Some((sub, name.to_owned())));
            }
        }
    }
    Ok(None)
}

/// Reads up to `max_len` bytes at `offset` with positioned reads.
fn read_at(file: &File, offset: u64, max_len: usize) -> Result<(Bytes, bool), StoreError> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(StoreError::Gone);
    }
    let len = meta.len();
    let remaining = len.saturating_sub(offset);
    let want = usize::try_from(remaining)
        .map_or(MAX_CHUNK, |r| r.min(MAX_CHUNK))
        .min(max_len);
    let mut buf = vec![0u8; want];
    let mut filled = 0;
    let mut eof = remaining == 0;
    while filled < want {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(filled);
    let end = eof || offset.saturating_add(filled as u64) >= len;
    Ok((Bytes::from(buf), end))
}

/// Creates a directory and its missing parents with mode 0700 (mail is private).
fn make_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Makes a directory's entries durable (needed after link/rename/unlink on Linux).
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_are_checked() {
        let store = MaildirStore::new("/m", false, "h");
        let dir = |a: &str| store.mailbox_dir(&Account(a.into())).ok();
        assert_eq!(
            dir("Bob@Example.COM"),
            Some(PathBuf::from("/m/example.com/Bob"))
        );
        for bad in [
            "bob", "@x.org", "bob@", "../x@y", "a/b@c", "bob@..", ".bob@x", "bob@.x", "b\0b@x",
            "a..b@x", "bob@x\\y", "bob@x\n",
        ] {
            assert_eq!(dir(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn refs_are_checked() {
        let ok = |r: &str| split_ref(&MessageRef(r.into())).is_some();
        assert!(ok("new/1.M1P1Q1.h,S=3"));
        assert!(ok("cur/1.M1P1Q1.h,S=3:2,S"));
        for bad in [
            "tmp/x",
            "new/",
            "new/.x",
            "new/a/b",
            "x",
            "new/../cur/x",
            "/etc/passwd",
        ] {
            assert!(!ok(bad), "{bad}");
        }
    }
}
