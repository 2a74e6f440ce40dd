//! The queue directory on disk: `<workarea>/queue/`.
//!
//! Each entry is two files named by its id: `ID.msg` (the message, CRLF line ends, not
//! dot-stuffed, without a `Return-Path:`) and `ID.state` (the [`QueueEntry`] text form).
//! The message file is written and fsynced first, then the state file; a state change
//! is written to `ID.state.tmp`, fsynced and renamed over `ID.state`, so a crash leaves
//! either the old or the new state, never a mix. With `fsync` the directory is synced
//! after each rename or removal, so the change itself survives a crash; a new entry
//! needs one directory sync for both of its files.
//!
//! Directory syncs are shared (group commit, the maildir's [`DirSyncs`]): a directory
//! fsync makes durable every change to its entries made before it started, so while
//! one runs, every enqueue, state change or removal that finished its rename or unlink
//! meanwhile waits for it to end and then shares the next one. Under load one fsync of
//! the queue directory covers many acknowledged messages; alone, a caller syncs itself.
//!
//! A fresh entry keeps its state in a temp file renamed into place although no old
//! state exists to protect: the rename costs no sync, and a state file cut short by a
//! crash could otherwise parse as an entry with only some of its recipients.
//!
//! At start every `ID.state` is loaded. A message file without a state file (a crash
//! between the two writes: the client never got its `250`) and leftover `.tmp` files
//! are removed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::entry::{MAX_STATE_FILE, QueueEntry};
use crate::maildir::sync::DirSyncs;

/// Entries created by this process: the counter part of ids.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The directory holding the queue's files.
#[derive(Debug, Clone)]
pub struct SpoolDir {
    dir: PathBuf,
    fsync: bool,
    host: String,
    /// Shared directory fsyncs (clones share them).
    syncs: Arc<DirSyncs>,
}

/// Loading the queue at start: the entries, and what was cleaned up.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Complete entries.
    pub entries: Vec<QueueEntry>,
    /// Half-made or unreadable entries removed.
    pub removed: usize,
}

impl SpoolDir {
    /// The queue in `dir` (created, mode 0700, if missing). `fsync` follows
    /// `[storage] fsync`; `host` goes into ids, like maildir names.
    pub fn open(dir: &Path, fsync: bool, host: &str) -> io::Result<SpoolDir> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(SpoolDir {
            dir: dir.to_path_buf(),
            fsync,
            host: host
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
            syncs: Arc::default(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A fresh id: `SECONDSMMICROSPPIDQCOUNTER_HOST`, unique like a maildir name (the
    /// host keeps only letters, digits and `-`).
    pub fn new_id(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{}M{}P{}Q{}_{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            self.host
        )
    }

    /// The message file of an entry.
    pub fn message_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.msg"))
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.state"))
    }

    /// Writes a new entry's message from `source`, leaving out a leading
    /// `Return-Path:` field (RFC 5321 §4.4: only the final delivery adds it), and
    /// fsyncs it (with `fsync`). Returns the bytes written.
    pub fn write_message(&self, id: &str, source: impl Read) -> io::Result<u64> {
        let path = self.message_path(id);
        let written = (|| {
            let mut file = new_file(&path)?;
            let mut reader = BufReader::with_capacity(64 * 1024, source);
            let mut first = Vec::new();
            // Bounded: a trace line is short; anything longer is copied as it is.
            (&mut reader).take(4096).read_until(b'\n', &mut first)?;
            let skip = first.len() >= 12 && first[..12].eq_ignore_ascii_case(b"Return-Path:");
            let mut total = 0u64;
            if !skip {
                file.write_all(&first)?;
                total += first.len() as u64;
            }
            total += io::copy(&mut reader, &mut file)?;
            if self.fsync {
                file.sync_data()?;
            }
            Ok(total)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&path);
        }
        written
    }

    /// Writes an entry's state: temp file, fsync, rename, directory fsync.
    pub fn write_state(&self, entry: &QueueEntry) -> io::Result<()> {
        let path = self.state_path(&entry.id);
        let tmp = self.dir.join(format!("{}.state.tmp", entry.id));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(entry.to_text().as_bytes())?;
            if self.fsync {
                file.sync_data()?;
            }
            fs::rename(&tmp, &path)?;
            self.sync_dir()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Removes an entry's files (state first, so a crash never leaves a state without
    /// its message).
    pub fn remove(&self, id: &str) -> io::Result<()> {
        for path in [self.state_path(id), self.message_path(id)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.sync_dir()
    }

    /// Loads every complete entry; removes half-made ones and leftover temp files.
    pub fn load(&self) -> io::Result<Loaded> {
        let mut loaded = Loaded::default();
        let mut messages = Vec::new();
        for dirent in fs::read_dir(&self.dir)? {
            let name = dirent?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(".state") {
                match self.read_state(id) {
                    Some(entry) if self.message_path(id).exists() => loaded.entries.push(entry),
                    _ => {
                        log::warn!("queue: removing unreadable or incomplete entry {id}");
                        self.remove(id)?;
                        loaded.removed += 1;
                    }
                }
            } else if let Some(id) = name.strip_suffix(".msg") {
                messages.push(id.to_owned());
            } else if name.ends_with(".tmp") {
                let _ = fs::remove_file(self.dir.join(name));
            }
        }
        for id in messages {
            if !self.state_path(&id).exists() && fs::remove_file(self.message_path(&id)).is_ok() {
                log::warn!("queue: removed message {id} that had no state (never acknowledged)");
                loaded.removed += 1;
            }
        }
        loaded.entries.sort_by_key(|e| e.arrived);
        Ok(loaded)
    }

    fn read_state(&self, id: &str) -> Option<QueueEntry> {
        let mut text = String::new();
        File::open(self.state_path(id))
            .ok()?
            .take(MAX_STATE_FILE)
            .read_to_string(&mut text)
            .ok()?;
        QueueEntry::from_text(id, &text)
    }

    /// Makes every rename and removal done so far durable, sharing the fsync with
    /// concurrent callers.
    fn sync_dir(&self) -> io::Result<()> {
        if self.fsync {
            self.syncs.sync(&self.dir)?;
        }
        Ok(())
    }
}

/// Creates a file that must not exist yet, readable by the owner only.
fn new_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::entry::QueuedRecipient;

    fn entry(spool: &SpoolDir) -> QueueEntry {
        QueueEntry {
            id: spool.new_id(),
            sender: "a@example.com".into(),
            arrived: 100,
            eight_bit: false,
            smtputf8: false,
            client: None,
            warned: false,
            recipients: vec![QueuedRecipient::new("b@example.net".into(), 100)],
        }
    }

    #[test]
    fn message_loses_its_return_path_and_state_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolDir::open(&dir.path().join("queue"), true, "mx.example").unwrap();
        let e = entry(&spool);
        let body = b"Return-Path: <a@example.com>\r\nReceived: x\r\n\r\nhi\r\n";
        assert_eq!(spool.write_message(&e.id, &body[..]).unwrap(), 19);
        spool.write_state(&e).unwrap();
        assert_eq!(
            fs::read(spool.message_path(&e.id)).unwrap(),
            b"Received: x\r\n\r\nhi\r\n"
        );
        let loaded = spool.load().unwrap();
        assert_eq!(loaded.entries, vec![e.clone()]);
        assert_eq!(loaded.removed, 0);
        spool.remove(&e.id).unwrap();
        assert!(spool.load().unwrap().entries.is_empty());
        assert_eq!(fs::read_dir(spool.path()).unwrap().count(), 0);
    }

    #[test]
    fn half_made_entries_and_temp_files_are_cleaned_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolDir::open(dir.path(), false, "h").unwrap();
        let half = entry(&spool);
        spool.write_message(&half.id, &b"x\r\n"[..]).unwrap();
        let whole = entry(&spool);
        spool.write_message(&whole.id, &b"y\r\n"[..]).unwrap();
        spool.write_state(&whole).unwrap();
        fs::write(
            dir.path().join(format!("{}.state.tmp", whole.id)),
            "partial",
        )
        .unwrap();
        let broken = entry(&spool);
        spool.write_message(&broken.id, &b"z\r\n"[..]).unwrap();
        fs::write(spool.state_path(&broken.id), "tidegate-queue 1\nsender").unwrap();
        let loaded = spool.load().unwrap();
        assert_eq!(loaded.entries, vec![whole.clone()]);
        assert_eq!(loaded.removed, 2);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|d| d.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![format!("{}.msg", whole.id), format!("{}.state", whole.id)]
        );
    }

    #[test]
    fn ids_are_unique_and_file_name_safe() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolDir::open(dir.path(), false, "mx.example/../x").unwrap();
        let a = spool.new_id();
        let b = spool.new_id();
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'),
            "{a}"
        );
    }
}
