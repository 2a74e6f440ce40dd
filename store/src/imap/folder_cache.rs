//! Folder snapshots kept between sessions, so that a SELECT, EXAMINE or STATUS of an
//! unchanged folder (RFC 3501 §6.3.1, §6.3.2, §6.3.10) neither lists its directories,
//! nor stats its messages, nor takes the uidlist lock.
//!
//! # When a cached snapshot may be used
//!
//! Every change to a folder that a snapshot reflects changes one of four entries: a
//! message arriving, moving, being renamed for a flag change or removed is an entry
//! change in `new/` or `cur/`, which sets that directory's mtime and ctime; a new
//! UIDVALIDITY, UIDNEXT or UID assignment replaces the uidlist by `rename` (a new inode
//! and ctime); a newly defined keyword (RFC 3501 §2.3.2) replaces the keywords file
//! ([`super::KEYWORDS_FILE`]) by `rename` the same way. A [`FolderStamp`] records, for
//! those four, the device, inode, size, mtime and ctime (nanoseconds). `ctime` cannot be set by a program, so a tool that
//! puts a directory's mtime back (`rsync -t`, `touch -d`) is still seen; a directory or
//! uidlist replaced by another one differs in inode or ctime.
//!
//! Timestamps have a granularity (the kernel's clock tick for local filesystems, one
//! second for some NFS servers' filesystems): two changes within one tick leave the same
//! stamp. A stamp read at time T can therefore still be followed by a change that does
//! not alter it, as long as that change falls into the tick of the last change before T,
//! which ends at most one granularity after T. The cache never trusts a stamp on the
//! strength of one reading: a snapshot is only reused when a *later* scan, whose stamp
//! was read at least [`SETTLE`] after the first reading of the same stamp (measured on
//! this process's monotonic clock, so no host's wall clock is involved), saw the same
//! stamp again. By then the tick of the last change is over, every change after that
//! reading produces a new mtime or ctime, and every change before it is in that scan's
//! listing. Until then, and after every change, SELECT scans the folder as before (the
//! scan reuses the sizes and dates it already knows, so only new files are stat-ed).
//!
//! Stamps are read before the scan they describe: a change between the stamp and the
//! listing is in the listing *and* makes the stored stamp outdated, so it costs one
//! extra scan but never hides anything. The keywords file is read after the listing
//! (still under the uidlist lock), so the same holds for it: a keyword defined after the
//! stamp was read is either in the snapshot's map or outdates the stamp. A STORE defines
//! its keywords before it renames the message files, so every letter a listing shows
//! has its name in a map read after that listing. Stamps are read by opening the directory or file
//! and `fstat`ing the open descriptor: an NFS client revalidates the attributes of what
//! is opened with the server (close-to-open consistency, the default; mounts with
//! `nocto` must disable this cache), where a plain `stat` could be answered from the
//! client's attribute cache for up to `acdirmax` seconds.
//!
//! A hit is a consistent view: every stamp compared equal, so the folder was as cached at
//! the moment of the first comparison (later readings only show that nothing changed in
//! between); any change after that moment is ordered after this SELECT.
//!
//! # Memory
//!
//! At most `max_folders` folders (least recently used dropped first) and at most
//! [`MAX_CACHED_MESSAGES`] messages in all; a folder bigger than that is not kept. A
//! cached message costs its file name plus about 80 bytes, so roughly 150 bytes with
//! the usual maildir names: the default caps hold at most about 40 MB.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{KEYWORDS_FILE, Snapshot, UIDLIST_FILE};

/// Folders whose snapshots [`super::ImapMailboxes`] keeps for SELECT/EXAMINE/STATUS
/// (RFC 3501 §6.3.1, §6.3.2, §6.3.10) unless told otherwise (`[imap] folder_cache`).
pub const DEFAULT_CACHED_FOLDERS: usize = 1024;

/// The most messages all cached snapshots together may hold; a folder with more is
/// scanned on every SELECT.
pub const MAX_CACHED_MESSAGES: usize = 256 * 1024;

/// How long after a stamp was first read it must be read again, unchanged, before a
/// snapshot with it is trusted: longer than the coarsest timestamp granularity of a
/// filesystem a maildir lives on (one second for ext3 and some NFS servers), with a
/// margin for the file server's clock running at a slightly different rate.
pub const SETTLE: Duration = Duration::from_secs(2);

/// The change-relevant attributes of one directory or file, `None` when it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntryStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl EntryStamp {
    /// Opens `path` (a directory or file) and reads the attributes of the open
    /// descriptor (see the module comment on NFS).
    fn read(path: &Path) -> io::Result<Option<EntryStamp>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        Ok(Some(EntryStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }))
    }
}

/// What a folder's `new/`, `cur/`, uidlist and keywords file looked like at one moment;
/// any change a snapshot reflects changes it (see the module comment for the
/// granularity caveat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FolderStamp {
    new: Option<EntryStamp>,
    cur: Option<EntryStamp>,
    uidlist: Option<EntryStamp>,
    keywords: Option<EntryStamp>,
}

impl FolderStamp {
    /// Reads the stamp of the folder in `dir`: four opens and `fstat`s, no listing.
    pub(super) fn read(dir: &Path) -> io::Result<FolderStamp> {
        Ok(FolderStamp {
            new: EntryStamp::read(&dir.join("new"))?,
            cur: EntryStamp::read(&dir.join("cur"))?,
            uidlist: EntryStamp::read(&dir.join(UIDLIST_FILE))?,
            keywords: EntryStamp::read(&dir.join(KEYWORDS_FILE))?,
        })
    }
}

/// A [`FolderStamp`] with the moments just before and just after it was read.
#[derive(Debug, Clone, Copy)]
pub(super) struct StampReading {
    stamp: FolderStamp,
    /// No attribute was read before this moment.
    started: Instant,
    /// Every attribute was read by this moment.
    finished: Instant,
}

impl StampReading {
    /// Reads the stamp of the folder in `dir` (see [`FolderStamp::read`]).
    pub(super) fn take(dir: &Path) -> io::Result<StampReading> {
        let started = Instant::now();
        let stamp = FolderStamp::read(dir)?;
        Ok(StampReading {
            stamp,
            started,
            finished: Instant::now(),
        })
    }
}

/// A folder's snapshot with the stamp read before its scan.
struct Entry {
    stamp: FolderStamp,
    /// When the first reading of this stamp had finished: the last change it shows
    /// happened before.
    first_seen: Instant,
    /// A scan whose stamp was read at least [`SETTLE`] after `first_seen` saw the same
    /// stamp: the snapshot may be reused while the stamp stays the same.
    confirmed: bool,
    /// Every message is in `cur/`, so a SELECT would move nothing.
    new_empty: bool,
    /// The folder as scanned, no message `recent`.
    snapshot: Arc<Snapshot>,
    /// Last use, for the LRU (a counter, not a clock).
    used: u64,
}

#[derive(Default)]
struct Inner {
    clock: u64,
    messages: usize,
    folders: HashMap<PathBuf, Entry>,
}

/// Hit and miss counts of the folder snapshot cache since it was made: how many
/// SELECT/EXAMINE/STATUS answers (RFC 3501 §6.3.1, §6.3.2, §6.3.10) needed no scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FolderCacheStats {
    /// Snapshots served from the cache.
    pub hits: u64,
    /// Snapshots that needed a scan of the folder.
    pub misses: u64,
}

/// Snapshots of recently opened folders by directory, shared by the worker threads
/// (and by clones of [`super::ImapMailboxes`]).
pub(super) struct FolderCache {
    inner: Mutex<Inner>,
    max_folders: usize,
    settle: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for FolderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderCache")
            .field("max_folders", &self.max_folders)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl FolderCache {
    /// A cache of at most `max_folders` folders (0 keeps none).
    pub(super) fn new(max_folders: usize) -> FolderCache {
        FolderCache::with_settle(max_folders, SETTLE)
    }

    /// A cache that trusts stamps `settle` after their first reading (tests use a
    /// shorter time where the filesystem's granularity does not matter).
    pub(super) fn with_settle(max_folders: usize, settle: Duration) -> FolderCache {
        FolderCache {
            inner: Mutex::default(),
            max_folders,
            settle,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change below leaves the map consistent between statements that can
        // panic (none can), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the cache keeps anything at all.
    pub(super) fn enabled(&self) -> bool {
        self.max_folders > 0
    }

    /// The snapshot of `dir` if it is confirmed for exactly this `stamp` (and, when
    /// `need_empty_new`, nothing waits in `new/`); counts a hit or a miss.
    pub(super) fn fresh(
        &self,
        dir: &Path,
        stamp: &FolderStamp,
        need_empty_new: bool,
    ) -> Option<Arc<Snapshot>> {
        if !self.enabled() {
            return None;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let found = inner.folders.get_mut(dir).and_then(|entry| {
            let usable =
                entry.confirmed && entry.stamp == *stamp && (entry.new_empty || !need_empty_new);
            usable.then(|| {
                entry.used = now;
                Arc::clone(&entry.snapshot)
            })
        });
        drop(inner);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The last snapshot of `dir`, whatever its stamp: a scan takes the sizes and dates
    /// of messages it already knows from it.
    pub(super) fn previous(&self, dir: &Path) -> Option<Arc<Snapshot>> {
        if !self.enabled() {
            return None;
        }
        self.lock()
            .folders
            .get(dir)
            .map(|entry| Arc::clone(&entry.snapshot))
    }

    /// Records the snapshot a scan of `dir` produced; `reading` was taken before the
    /// scan began. `snapshot` must have no message marked recent.
    pub(super) fn store(
        &self,
        dir: &Path,
        reading: StampReading,
        snapshot: Arc<Snapshot>,
        new_empty: bool,
    ) {
        let StampReading {
            stamp,
            started,
            finished,
        } = reading;
        let size = snapshot.messages.len();
        if !self.enabled() || size > MAX_CACHED_MESSAGES {
            self.forget(dir);
            return;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let used = inner.clock;
        let (first_seen, confirmed) = match inner.folders.remove(dir) {
            Some(old) => {
                inner.messages = inner.messages.saturating_sub(old.snapshot.messages.len());
                if old.stamp == stamp {
                    // This reading began a full settle time after the first one had
                    // ended: the tick of the last change is over.
                    let settled = started.saturating_duration_since(old.first_seen) >= self.settle;
                    (old.first_seen, old.confirmed || settled)
                } else {
                    (finished, false)
                }
            }
            None => (finished, false),
        };
        while !inner.folders.is_empty()
            && (inner.folders.len() >= self.max_folders
                || inner.messages + size > MAX_CACHED_MESSAGES)
        {
            let oldest = inner
                .folders
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(dir, _)| dir.clone());
            let Some(oldest) = oldest else { break };
            if let Some(gone) = inner.folders.remove(&oldest) {
                inner.messages = inner.messages.saturating_sub(gone.snapshot.messages.len());
            }
        }
        inner.messages += size;
        inner.folders.insert(
            dir.to_path_buf(),
            Entry {
                stamp,
                first_seen,
                confirmed,
                new_empty,
                snapshot,
                used,
            },
        );
    }

    /// Drops what is known about `dir`.
    pub(super) fn forget(&self, dir: &Path) {
        let mut inner = self.lock();
        if let Some(gone) = inner.folders.remove(dir) {
            inner.messages = inner.messages.saturating_sub(gone.snapshot.messages.len());
        }
    }

    /// Hits and misses so far.
    pub(super) fn stats(&self) -> FolderCacheStats {
        FolderCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// How many folders are cached now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().folders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(messages: usize) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            uidvalidity: 1,
            uidnext: 1 + messages as u32,
            messages: (0..messages)
                .map(|i| super::super::MessageMeta {
                    uid: 1 + i as u32,
                    file: tidegate_core::MessageRef(format!("cur/{i}.M1P1.h:2,")),
                    flags: super::super::Flags::default(),
                    size: 10,
                    internal_date: 0,
                    recent: false,
                })
                .collect(),
            keywords: Default::default(),
        })
    }

    fn at(stamp: FolderStamp, when: Instant) -> StampReading {
        StampReading {
            stamp,
            started: when,
            finished: when,
        }
    }

    fn folder(root: &Path, name: &str) -> (PathBuf, FolderStamp) {
        let dir = root.join(name);
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let stamp = FolderStamp::read(&dir).unwrap();
        (dir, stamp)
    }

    #[test]
    fn a_stamp_is_trusted_only_after_a_second_reading_settle_later() {
        let root = tempfile::tempdir().unwrap();
        let (dir, stamp) = folder(root.path(), "a");
        let cache = FolderCache::with_settle(4, Duration::from_secs(2));
        let t0 = Instant::now();
        cache.store(&dir, at(stamp, t0), snapshot(3), true);
        assert!(cache.fresh(&dir, &stamp, true).is_none());
        // Read again too soon: still not trusted.
        cache.store(
            &dir,
            at(stamp, t0 + Duration::from_secs(1)),
            snapshot(3),
            true,
        );
        assert!(cache.fresh(&dir, &stamp, true).is_none());
        cache.store(
            &dir,
            at(stamp, t0 + Duration::from_secs(2)),
            snapshot(3),
            true,
        );
        let hit = cache.fresh(&dir, &stamp, true).unwrap();
        assert_eq!(hit.messages.len(), 3);
        // Something waits in new/: a SELECT must scan, an EXAMINE need not.
        cache.store(
            &dir,
            at(stamp, t0 + Duration::from_secs(3)),
            snapshot(3),
            false,
        );
        assert!(cache.fresh(&dir, &stamp, true).is_none());
        assert!(cache.fresh(&dir, &stamp, false).is_some());
        assert_eq!(cache.stats(), FolderCacheStats { hits: 2, misses: 3 });
    }

    #[test]
    fn a_different_stamp_starts_over() {
        let root = tempfile::tempdir().unwrap();
        let (dir, stamp) = folder(root.path(), "a");
        let cache = FolderCache::with_settle(4, Duration::ZERO);
        let t0 = Instant::now();
        cache.store(&dir, at(stamp, t0), snapshot(1), true);
        cache.store(&dir, at(stamp, t0), snapshot(1), true);
        assert!(cache.fresh(&dir, &stamp, true).is_some());
        std::fs::write(dir.join("cur").join("x"), b"x").unwrap();
        let changed = FolderStamp::read(&dir).unwrap();
        assert_ne!(changed, stamp, "an entry added to cur/ changes the stamp");
        assert!(cache.fresh(&dir, &changed, true).is_none());
        cache.store(&dir, at(changed, t0), snapshot(2), true);
        assert!(cache.fresh(&dir, &changed, true).is_none());
    }

    #[test]
    fn the_least_recently_used_folder_goes_first() {
        let root = tempfile::tempdir().unwrap();
        let cache = FolderCache::with_settle(2, Duration::ZERO);
        let now = Instant::now();
        let folders: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|name| folder(root.path(), name))
            .collect();
        for (dir, stamp) in &folders[..2] {
            cache.store(dir, at(*stamp, now), snapshot(1), true);
            cache.store(dir, at(*stamp, now), snapshot(1), true);
        }
        assert!(cache.fresh(&folders[0].0, &folders[0].1, true).is_some());
        let (dir, stamp) = &folders[2];
        cache.store(dir, at(*stamp, now), snapshot(1), true);
        assert_eq!(cache.len(), 2);
        assert!(cache.previous(&folders[1].0).is_none(), "b was used least");
        assert!(cache.previous(&folders[0].0).is_some());
        cache.forget(&folders[0].0);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn oversized_folders_and_a_zero_cap_keep_nothing() {
        let root = tempfile::tempdir().unwrap();
        let (dir, stamp) = folder(root.path(), "a");
        let cache = FolderCache::with_settle(4, Duration::ZERO);
        cache.store(
            &dir,
            at(stamp, Instant::now()),
            snapshot(MAX_CACHED_MESSAGES + 1),
            true,
        );
        assert_eq!(cache.len(), 0);
        let off = FolderCache::new(0);
        off.store(&dir, at(stamp, Instant::now()), snapshot(1), true);
        off.store(&dir, at(stamp, Instant::now()), snapshot(1), true);
        assert!(off.fresh(&dir, &stamp, true).is_none());
        assert_eq!(off.len(), 0);
    }
}
