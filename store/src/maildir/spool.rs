//! Where messages being received are written: the spool directory.
//!
//! An SMTP/LMTP session opens the message file when DATA starts
//! ([`tidegate_core::Request::BeginDelivery`]), and that request carries no recipients,
//! so "the first recipient's `tmp/`" is not known then. The file goes to
//! `<mailbox_path>/.tidegate-tmp/` instead: on the same filesystem as the maildirs in the
//! usual layout, so commit can `link(2)` it into each `new/`; a domain mounted elsewhere
//! gets a copy through its own `tmp/`. The name can never clash with a maildir, since
//! domains starting with `.` are refused. Files are named by their unique name, which
//! includes the host, so hosts sharing the root over NFS never collide.
//!
//! A file left behind by a crash is never visible to readers; [`MaildirStore::clean_spool`]
//! removes those older than [`STALE_AFTER`] (the Maildir convention's 36 hours) at startup.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tidegate_core::Account;
use tidegate_core::maildir::UniqueName;

use super::{MaildirStore, StoreError, make_dir};

/// The spool directory's name under the maildir root.
pub const SPOOL_DIR: &str = ".tidegate-tmp";

/// Age after which a temporary file is certainly abandoned (the Maildir convention).
pub const STALE_AFTER: Duration = Duration::from_secs(36 * 3600);

/// Deliveries by this process so far: the `Q` part of unique names.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Attempts at a fresh name before giving up (a clash means a clock or pid reuse).
const NAME_ATTEMPTS: usize = 5;

impl MaildirStore {
    /// The spool directory, `<root>/.tidegate-tmp`.
    pub fn spool_dir(&self) -> PathBuf {
        self.root.join(SPOOL_DIR)
    }

    /// Removes spool files last modified more than `older_than` ago (left by a crash or
    /// a kill); returns how many. A missing spool directory is empty.
    pub fn clean_spool(&self, older_than: Duration) -> io::Result<usize> {
        let entries = match fs::read_dir(self.spool_dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if !meta.is_file() || age < older_than {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    pub(super) fn next_unique(&self) -> UniqueName {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        UniqueName {
            seconds: now.as_secs(),
            micros: now.subsec_micros(),
            pid: process_id(),
            counter: COUNTER.fetch_add(1, Ordering::Relaxed),
            host: self.host.clone(),
        }
    }

    /// Opens a new file named by a fresh unique name in the spool directory, or in the
    /// `tmp/` of `near`'s maildir (which is created, with `new/` and `cur/`, if missing).
    pub(super) fn create_temp(
        &self,
        near: Option<&Account>,
    ) -> Result<(UniqueName, PathBuf, File), StoreError> {
        let maildir = near.map(|account| self.mailbox_dir(account)).transpose()?;
        let dir = match &maildir {
            Some(maildir) => maildir.join("tmp"),
            None => self.spool_dir(),
        };
        for _ in 0..NAME_ATTEMPTS {
            let unique = self.next_unique();
            let path = dir.join(temp_name(&unique));
            let created = match new_file(&path) {
                // A maildir is made on its first delivery, the spool on first use (and
                // again if someone removed either); an existing one costs no extra call.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match &maildir {
                        Some(maildir) => self.ensure_maildir(maildir)?,
                        None => make_dir(&dir)?,
                    }
                    new_file(&path)
                }
                other => other,
            };
            match created {
                Ok(file) => return Ok((unique, path, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Io(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free unique name for a temporary file",
        )))
    }

    /// Creates a maildir's `tmp/ new/ cur/` (mode 0700), those missing. With `fsync`,
    /// the new entries are made durable up to the root, so a message linked into a
    /// freshly made `new/` cannot vanish with its directory in a crash. Concurrent
    /// first deliveries may all call this (each step tolerates the others). One window
    /// stays: a delivery whose link finds a `new/` that another thread has just made
    /// does not wait for that thread's directory fsyncs, still under way; it exists
    /// only while a maildir receives its first messages.
    pub(super) fn ensure_maildir(&self, maildir: &Path) -> io::Result<()> {
        for sub in ["tmp", "new", "cur"] {
            make_dir(&maildir.join(sub))?;
        }
        if self.fsync {
            let mut dir = Some(maildir);
            while let Some(current) = dir {
                super::sync_dir(current)?;
                if current == self.root {
                    break;
                }
                dir = current.parent().filter(|p| p.starts_with(&self.root));
            }
        }
        Ok(())
    }
}

/// This process's id, asked of the kernel once (the server never forks after start).
fn process_id() -> u32 {
    static PID: OnceLock<u32> = OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// A unique name without the size: the name of a file still being written.
fn temp_name(unique: &UniqueName) -> String {
    let full = unique.file_name(0);
    match full.strip_suffix(",S=0") {
        Some(base) => base.to_owned(),
        None => full,
    }
}

/// Creates a file that must not exist yet, readable by the owner only.
pub(super) fn new_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}
