//! Streaming delivery: a message is written to a temporary file as it arrives, then made
//! durable and linked into every recipient's `new/` in one commit (renamed, for the
//! maildir whose `tmp/` holds it).
//!
//! Crash safety rests on two facts. The temporary file lives outside `new/` and `cur/`
//! (in the spool or a `tmp/`), and it is fsynced before it is linked, so a name in `new/`
//! always refers to a whole message: `link(2)` and `rename(2)` are atomic, on NFS too.
//! And a delivery is reported successful only after each `new/` holding a link was
//! fsynced, so an acknowledged message survives a crash. A crash between the link and
//! the acknowledgement may leave a copy the client will send again (a duplicate, never
//! a loss).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tidegate_core::Account;
use tidegate_core::maildir::UniqueName;

use super::quota::{fits, maildir_usage};
use super::spool::new_file;
use super::{MaildirStore, StoreError, make_dir};

/// Appended bytes are collected until they reach this size, then written; an append of
/// at least this size goes straight to the file. Memory per pending message stays below
/// it (up to [`crate::local::DEFAULT_MAX_PENDING`] of them may be open at once).
const FLUSH_AT: usize = 32 * 1024;

/// One recipient of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Whose inbox.
    pub account: Account,
    /// The mailbox size limit in octets (`quota=`), if any.
    pub quota: Option<u64>,
}

impl From<Account> for Recipient {
    fn from(account: Account) -> Self {
        Recipient {
            account,
            quota: None,
        }
    }
}

/// A message being received into a temporary file. Dropping it without
/// [`commit`](Self::commit) discards it, like [`abort`](Self::abort).
pub struct PendingMessage {
    store: MaildirStore,
    unique: UniqueName,
    path: PathBuf,
    /// `None` once the file is closed (committed) or a write failed.
    file: Option<File>,
    buffer: Vec<u8>,
    size: u64,
    /// The kind of the write error that broke this message, if one did.
    failed: Option<io::ErrorKind>,
    /// Whether the temporary file is already removed.
    removed: bool,
}

impl fmt::Debug for PendingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingMessage")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("failed", &self.failed)
            .finish()
    }
}

impl MaildirStore {
    /// Opens a message in the spool directory (see [`super::SPOOL_DIR`]), for when the
    /// recipients are not known yet.
    pub fn begin(&self) -> Result<PendingMessage, StoreError> {
        self.open_pending(None)
    }

    /// Opens a message in the `tmp/` of `first`'s maildir (created if missing), so a
    /// commit to that recipient is a link even when maildirs span filesystems.
    pub fn begin_in(&self, first: &Account) -> Result<PendingMessage, StoreError> {
        self.open_pending(Some(first))
    }

    fn open_pending(&self, near: Option<&Account>) -> Result<PendingMessage, StoreError> {
        let (unique, path, file) = self.create_temp(near)?;
        Ok(PendingMessage {
            store: self.clone(),
            unique,
            path,
            file: Some(file),
            buffer: Vec::new(),
            size: 0,
            failed: None,
            removed: false,
        })
    }
}

impl PendingMessage {
    /// Appends bytes to the message. After a write error (disk full) the temporary file
    /// is removed at once and every later call fails.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.check()?;
        self.size += bytes.len() as u64;
        if self.buffer.len() + bytes.len() < FLUSH_AT {
            self.buffer.extend_from_slice(bytes);
            return Ok(());
        }
        self.flush_buffer()?;
        if bytes.len() >= FLUSH_AT {
            self.write_out(bytes)
        } else {
            self.buffer.extend_from_slice(bytes);
            Ok(())
        }
    }

    /// Writes out what is buffered, so the temporary file holds every byte appended so
    /// far (to copy it elsewhere, e.g. into the outbound queue, before the commit).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.check()?;
        self.flush_buffer()
    }

    /// Octets appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The temporary file (for logs and tests).
    pub fn temp_path(&self) -> &Path {
        &self.path
    }

    /// The name the message gets in each `new/` if committed now
    /// (`TIME.M<usec>P<pid>Q<n>.<host>,S=<size>`).
    pub fn final_name(&self) -> String {
        self.unique.file_name(self.size)
    }

    /// Discards the message: the temporary file is removed.
    pub fn abort(mut self) {
        self.discard();
    }

    /// Makes the message durable and visible, returning one result per recipient in
    /// order: the file is fsynced (with `fsync`), quotas checked, and the file linked
    /// into each recipient's `new/` (maildir created if missing; a copy through that
    /// maildir's `tmp/` when on another filesystem), then each touched `new/` is fsynced
    /// (shared with concurrent commits). Recipients sharing a maildir get one copy.
    ///
    /// With `all_or_nothing` (SMTP) any failure removes the links made and fails every
    /// recipient: those that caused it with their own error, the others with
    /// [`StoreError::NotDelivered`]. Without it (LMTP) each recipient succeeds or fails
    /// alone. An over-quota recipient gets [`StoreError::OverQuota`]. The temporary file
    /// is removed either way.
    pub fn commit(
        mut self,
        recipients: &[Recipient],
        all_or_nothing: bool,
    ) -> Vec<Result<(), StoreError>> {
        let finished = self.finish();
        let mut results: Vec<Result<(), StoreError>> = match &finished {
            Ok(()) => recipients.iter().map(|_| Ok(())).collect(),
            Err(e) => recipients.iter().map(|_| Err(e.duplicate())).collect(),
        };
        if finished.is_ok() {
            self.place_all(recipients, all_or_nothing, &mut results);
        }
        self.discard();
        results
    }

    /// Steps after the file is complete; fills `results` (all `Ok` on entry).
    fn place_all(
        &mut self,
        recipients: &[Recipient],
        all_or_nothing: bool,
        results: &mut [Result<(), StoreError>],
    ) {
        let Some((target, dirs)) = self.check_recipients(recipients, all_or_nothing, results)
        else {
            return fail_others(results);
        };
        let dir_errors = self.link_and_sync(&dirs, all_or_nothing);
        for (i, index) in target.iter().enumerate() {
            if let Some(error) = index.and_then(|d| dir_errors[d].as_ref()) {
                results[i] = Err(error.duplicate());
            }
        }
        if all_or_nothing && dir_errors.iter().any(Option::is_some) {
            fail_others(results);
        }
    }

    /// Finds each recipient's maildir and checks its quota, recording failures in
    /// `results`. Returns the index into the distinct maildirs per recipient (`None` for
    /// one that failed) and those maildirs; `None` when all-or-nothing already failed.
    fn check_recipients(
        &self,
        recipients: &[Recipient],
        all_or_nothing: bool,
        results: &mut [Result<(), StoreError>],
    ) -> Option<(Vec<Option<usize>>, Vec<PathBuf>)> {
        let mut target = vec![None; recipients.len()];
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (i, recipient) in recipients.iter().enumerate() {
            let checked = self.store.mailbox_dir(&recipient.account).and_then(|dir| {
                if recipient.quota.is_some()
                    && !fits(maildir_usage(&dir)?, self.size, recipient.quota)
                {
                    return Err(StoreError::OverQuota);
                }
                Ok(dir)
            });
            match checked {
                Ok(dir) => {
                    let known = dirs.iter().position(|d| *d == dir);
                    target[i] = Some(known.unwrap_or(dirs.len()));
                    if known.is_none() {
                        dirs.push(dir);
                    }
                }
                Err(e) if all_or_nothing => {
                    results[i] = Err(e);
                    return None;
                }
                Err(e) => results[i] = Err(e),
            }
        }
        Some((target, dirs))
    }

    /// Links the message into each maildir's `new/`, then fsyncs those directories
    /// (sharing fsyncs with concurrent commits); links that end up failed (or, with
    /// all-or-nothing, all links once anything failed) are removed again. Returns the
    /// error of each maildir, if any. All links come before any fsync, so one slow
    /// directory does not hold up linking into the others.
    ///
    /// The maildir whose `tmp/` holds the file (the first recipient's, usually the only
    /// one) comes last and gets the file by `rename(2)` instead of a link: one call
    /// where link and unlink would be two, and the same atomic appearance in `new/`.
    fn link_and_sync(&mut self, dirs: &[PathBuf], all_or_nothing: bool) -> Vec<Option<StoreError>> {
        let name = self.final_name();
        let mut placed: Vec<Option<PathBuf>> = vec![None; dirs.len()];
        let mut errors: Vec<Option<StoreError>> = (0..dirs.len()).map(|_| None).collect();
        let home = self
            .path
            .parent()
            .and_then(|tmp| dirs.iter().position(|dir| dir.join("tmp") == tmp));
        let others = (0..dirs.len()).filter(|d| Some(*d) != home);
        for d in others.chain(home) {
            let dir = &dirs[d];
            if all_or_nothing && errors.iter().any(Option::is_some) {
                break;
            }
            let outcome = if Some(d) == home {
                let moved = self.store.move_into_new(&self.path, dir, &name);
                if moved.is_ok() {
                    // The temporary name is gone with the rename.
                    self.removed = true;
                }
                moved
            } else {
                self.store.place(&self.path, dir, &name)
            };
            match outcome {
                Ok(path) => placed[d] = Some(path),
                Err(e) => errors[d] = Some(e.into()),
            }
        }
        let failed = |errors: &[Option<StoreError>]| errors.iter().any(Option::is_some);
        if self.store.fsync {
            for (d, dir) in dirs.iter().enumerate() {
                if placed[d].is_none() || (all_or_nothing && failed(&errors)) {
                    continue;
                }
                if let Err(e) = self.store.syncs.sync(&dir.join("new")) {
                    errors[d] = Some(e.into());
                }
            }
        }
        // A rolled-back link is not fsynced away: should it survive a crash, the client,
        // told the delivery failed, sends again (a duplicate, never a loss).
        let rollback_all = all_or_nothing && failed(&errors);
        for (d, path) in placed.iter().enumerate() {
            if let Some(path) = path
                && (rollback_all || errors[d].is_some())
            {
                unplace(path);
            }
        }
        errors
    }

    fn check(&self) -> Result<(), StoreError> {
        match self.failed {
            Some(kind) => Err(StoreError::Io(io::Error::new(
                kind,
                "an earlier write to this message failed",
            ))),
            None => Ok(()),
        }
    }

    fn write_out(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let written = match &mut self.file {
            Some(file) => file.write_all(bytes),
            None => Err(io::Error::other("the message file is closed")),
        };
        written.map_err(|e| self.fail(e))
    }

    /// Writes out what is buffered (the buffer keeps its capacity, under `FLUSH_AT`).
    fn flush_buffer(&mut self) -> Result<(), StoreError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        self.write_out(&buffer)?;
        buffer.clear();
        self.buffer = buffer;
        Ok(())
    }

    /// Records a write error and frees the disk space the message took.
    fn fail(&mut self, error: io::Error) -> StoreError {
        self.failed = Some(error.kind());
        self.file = None;
        self.buffer = Vec::new();
        self.discard();
        StoreError::Io(error)
    }

    /// Writes what is buffered, fsyncs (with `fsync`) and closes the file.
    fn finish(&mut self) -> Result<(), StoreError> {
        self.check()?;
        self.flush_buffer()?;
        let Some(file) = self.file.take() else {
            return Err(StoreError::Io(io::Error::other(
                "message file closed twice",
            )));
        };
        // fdatasync: the data and the size (needed to read it back) reach the disk; the
        // timestamps fsync would also write are not needed for durability.
        if self.store.fsync
            && let Err(e) = file.sync_data()
        {
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// Removes the temporary file (once).
    fn discard(&mut self) {
        self.file = None;
        if std::mem::replace(&mut self.removed, true) {
            return;
        }
        if let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            log::warn!("could not remove {}: {e}", self.path.display());
        }
    }
}

impl Drop for PendingMessage {
    fn drop(&mut self) {
        self.discard();
    }
}

/// After a failure with all-or-nothing: every recipient still `Ok` becomes
/// [`StoreError::NotDelivered`].
fn fail_others(results: &mut [Result<(), StoreError>]) {
    for result in results.iter_mut().filter(|r| r.is_ok()) {
        *result = Err(StoreError::NotDelivered);
    }
}

/// Takes back a link made by a commit that failed.
fn unplace(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        log::error!("delivery rollback: cannot remove {}: {e}", path.display());
    }
}

impl MaildirStore {
    /// Moves the finished temporary file, which lives in `<dir>/tmp/`, to
    /// `<dir>/new/<name>`; a missing `new/` is made first (see
    /// [`MaildirStore::ensure_maildir`]).
    fn move_into_new(&self, temp: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
        let target = dir.join("new").join(name);
        match fs::rename(temp, &target) {
            // Any "not found" makes the maildir and retries. Deciding by a look at new/
            // instead would race a concurrent first delivery that makes it in between.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.ensure_maildir(dir)?;
                fs::rename(temp, &target)
            }
            other => other,
        }
        .map(|()| target)
    }

    /// Puts the finished temporary file into `<dir>/new/<name>`: a hard link, or a copy
    /// through `<dir>/tmp/` and a rename when `dir` is on another filesystem. A missing
    /// maildir is made first (the common case, an existing one, costs no extra call).
    fn place(&self, temp: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
        match self.place_existing(temp, dir, name) {
            // As in `move_into_new`: retry on every "not found". When the temporary file
            // itself is gone, the retry fails the same way and that error is returned.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.ensure_maildir(dir)?;
                self.place_existing(temp, dir, name)
            }
            other => other,
        }
    }

    fn place_existing(&self, temp: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
        let target = dir.join("new").join(name);
        match fs::hard_link(temp, &target) {
            Ok(()) => Ok(target),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::CrossesDevices | io::ErrorKind::Unsupported
                ) =>
            {
                let tmp = dir.join("tmp");
                make_dir(&tmp)?;
                let staging = tmp.join(name);
                let copied = self.copy_file(temp, &staging);
                let renamed = copied.and_then(|()| fs::rename(&staging, &target));
                if renamed.is_err() {
                    let _ = fs::remove_file(&staging);
                }
                renamed.map(|()| target)
            }
            Err(e) => Err(e),
        }
    }

    fn copy_file(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut source = File::open(from)?;
        let mut dest = new_file(to)?;
        io::copy(&mut source, &mut dest)?;
        if self.fsync {
            dest.sync_data()?;
        }
        Ok(())
    }
}
