//! APPEND in progress (RFC 3501 §6.3.11): the literal is written to a temporary file in
//! the target folder's `tmp/` (the Maildir place for files being written) and handed to
//! [`ImapMailboxes::append`] on commit.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tidegate_core::imap::AppendId;
use tidegate_core::{Account, Failure};

use crate::imap::{Appended, Flags, ImapMailboxes};

use super::convert::failure;

/// Most APPENDs open at once across all sessions; more are refused as temporary.
pub const MAX_PENDING_APPENDS: usize = 1024;

/// How long an APPEND may go without data before its file is dropped (its client
/// vanished mid-literal).
pub const DEFAULT_APPEND_TIMEOUT: Duration = Duration::from_secs(600);

/// One APPEND being received.
struct Pending {
    account: Account,
    folder: String,
    flags: Flags,
    date: Option<i64>,
    announced: u64,
    written: u64,
    file: File,
    path: PathBuf,
    touched: Instant,
}

impl Pending {
    fn discard(self) {
        drop(self.file);
        let _ = fs::remove_file(&self.path);
    }
}

/// The open APPENDs, bounded in number and age.
pub(super) struct Appends {
    next_id: AtomicU64,
    timeout: Duration,
    pending: Mutex<HashMap<u64, Pending>>,
}

fn busy() -> Failure {
    Failure::Temporary("too many uploads in progress".into())
}

fn unknown() -> Failure {
    Failure::Permanent("no such upload (it timed out?)".into())
}

impl Appends {
    pub(super) fn new(timeout: Duration) -> Self {
        Appends {
            next_id: AtomicU64::new(1),
            timeout,
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops appends untouched for longer than the timeout and removes their files.
    pub(super) fn expire(&self, now: Instant) {
        let stale: Vec<Pending> = {
            let mut pending = self.lock();
            let ids: Vec<u64> = pending
                .iter()
                .filter(|(_, p)| now.saturating_duration_since(p.touched) > self.timeout)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| pending.remove(id)).collect()
        };
        for append in stale {
            append.discard();
        }
    }

    /// AppendBegin: opens the temporary file in the existing folder's `tmp/`.
    pub(super) fn begin(
        &self,
        mailboxes: &ImapMailboxes,
        account: &Account,
        folder: &str,
        flags: Flags,
        date: Option<i64>,
        size: u32,
    ) -> Result<AppendId, Failure> {
        if self.lock().len() >= MAX_PENDING_APPENDS {
            return Err(busy());
        }
        let dir = mailboxes
            .existing_folder(account, folder)
            .map_err(failure)?;
        let path = dir
            .join("tmp")
            .join(format!("{}.append", mailboxes.next_unique().file_name(0)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| failure(e.into()))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let append = Pending {
            account: account.clone(),
            folder: folder.to_owned(),
            flags,
            date,
            announced: u64::from(size),
            written: 0,
            file,
            path,
            touched: Instant::now(),
        };
        let mut pending = self.lock();
        if pending.len() >= MAX_PENDING_APPENDS {
            drop(pending);
            append.discard();
            return Err(busy());
        }
        pending.insert(id, append);
        Ok(AppendId(id))
    }

    /// AppendData: writes the next bytes; more than the announced size drops the append.
    pub(super) fn data(&self, id: AppendId, bytes: &[u8]) -> Result<(), Failure> {
        let mut append = self.lock().remove(&id.0).ok_or_else(unknown)?;
        let len = bytes.len() as u64;
        if append.written.saturating_add(len) > append.announced {
            append.discard();
            return Err(Failure::Permanent("more data than announced".into()));
        }
        if let Err(e) = append.file.write_all(bytes) {
            append.discard();
            return Err(failure(e.into()));
        }
        append.written += len;
        append.touched = Instant::now();
        self.lock().insert(id.0, append);
        Ok(())
    }

    /// AppendCommit: stores the complete message in its folder.
    pub(super) fn commit(
        &self,
        mailboxes: &ImapMailboxes,
        id: AppendId,
    ) -> Result<Appended, Failure> {
        let mut append = self.lock().remove(&id.0).ok_or_else(unknown)?;
        if append.written != append.announced {
            append.discard();
            return Err(Failure::Permanent("message shorter than announced".into()));
        }
        let result = append
            .file
            .seek(SeekFrom::Start(0))
            .map_err(Into::into)
            .and_then(|_| {
                mailboxes.append(
                    &append.account,
                    &append.folder,
                    append.flags,
                    append.date,
                    &append.file,
                )
            });
        append.discard();
        result.map_err(failure)
    }

    /// AppendAbort: drops the append and its file; unknown ids are already gone.
    pub(super) fn abort(&self, id: AppendId) {
        if let Some(append) = self.lock().remove(&id.0) {
            append.discard();
        }
    }
}
