//! NFS-safe dotlocks: `NAME.lock` next to the file it guards (design.md §4, the uidlist
//! of a maildir folder).
//!
//! `O_EXCL` is not atomic on every NFS version, so a lock is taken the way NFS allows:
//! write a temporary file with a name unique to this host, process and attempt,
//! `link(2)` it to `NAME.lock`, then `stat` the temporary file: a link count of 2 means
//! the link happened, whatever the reply to the `link` call said (a retransmitted
//! request can report `EEXIST` for a link that succeeded). The temporary name is then
//! unlinked.
//!
//! The lock file holds `PID HOST SECONDS` (the holder and when it took the lock). A lock
//! is stale, and may be broken, when its file was last modified more than
//! [`LockOptions::stale_after`] ago (holders [`Dotlock::refresh`] it while working), or
//! when its holder ran on this host and that process no longer exists. Breaking checks
//! that the lock file is still the same one (inode and mtime) just before unlinking it;
//! a tiny window remains in which a lock taken between that check and the unlink is
//! removed, which is why `stale_after` must be much longer than any holder's work
//! between refreshes. A process killed between creating its temporary file and
//! unlinking it leaves that file (`.NAME.lock.HOST.PID.N`) behind; it is harmless.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tidegate_core::maildir::sanitize_host;

/// Attempts of this process so far: part of the temporary file name.
static ATTEMPTS: AtomicU64 = AtomicU64::new(0);

/// Longest wait between two attempts while another holder has the lock.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// Temporary names tried when one is taken.
const TEMP_ATTEMPTS: usize = 8;

/// Most bytes of a lock file read when checking its holder.
const MAX_LOCK_FILE: usize = 512;

/// How a lock is taken.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// This host's name, written into lock files; a holder on the same host is checked
    /// for being alive.
    pub host: String,
    /// A lock file not modified for this long is stale.
    pub stale_after: Duration,
    /// How long [`Dotlock::acquire`] waits for a live holder before giving up.
    pub timeout: Duration,
}

impl LockOptions {
    /// Options for `host` with a two-minute stale age and a 30-second wait.
    pub fn new(host: &str) -> Self {
        LockOptions {
            host: sanitize_host(host),
            stale_after: Duration::from_secs(120),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why a lock could not be taken or kept.
#[derive(Debug)]
pub enum LockError {
    /// A live holder kept the lock for the whole timeout.
    Timeout,
    /// The lock file is no longer ours (another process broke it as stale).
    Lost,
    /// The filesystem failed.
    Io(io::Error),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Timeout => f.write_str("timed out waiting for a lock"),
            LockError::Lost => f.write_str("lock was broken by another process"),
            LockError::Io(e) => write!(f, "lock I/O error: {e}"),
        }
    }
}

impl std::error::Error for LockError {}

impl From<io::Error> for LockError {
    fn from(e: io::Error) -> Self {
        LockError::Io(e)
    }
}

/// A held dotlock; dropping it releases it.
#[derive(Debug)]
pub struct Dotlock {
    path: PathBuf,
    /// The inode of our lock file, to tell it from a later holder's.
    inode: u64,
    released: bool,
}

/// `<target>.lock`.
pub fn lock_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl Dotlock {
    /// Takes the lock guarding `target` (the file `<target>.lock`), waiting for a live
    /// holder up to `options.timeout` and breaking stale locks.
    pub fn acquire(target: &Path, options: &LockOptions) -> Result<Dotlock, LockError> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(1);
        loop {
            if let Some(lock) = Dotlock::try_acquire(target, options)? {
                return Ok(lock);
            }
            if started.elapsed() >= options.timeout {
                return Err(LockError::Timeout);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One attempt: the lock if it was free or stale, `None` if a live holder has it.
    pub fn try_acquire(target: &Path, options: &LockOptions) -> Result<Option<Dotlock>, LockError> {
        let path = lock_path(target);
        if let Some(lock) = link_lock(&path, options)? {
            return Ok(Some(lock));
        }
        if break_if_stale(&path, options)? {
            return link_lock(&path, options).map_err(LockError::from);
        }
        Ok(None)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks the lock as in use now (its mtime), so it does not turn stale during long
    /// work. [`LockError::Lost`] if it was broken meanwhile.
    pub fn refresh(&self) -> Result<(), LockError> {
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(lost_if_missing)?;
        if file.metadata()?.ino() != self.inode {
            return Err(LockError::Lost);
        }
        file.set_modified(SystemTime::now())?;
        Ok(())
    }

    /// Releases the lock (unlinks its file if it is still ours).
    pub fn release(mut self) -> Result<(), LockError> {
        self.released = true;
        self.unlink()
    }

    fn unlink(&self) -> Result<(), LockError> {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.ino() == self.inode => {
                fs::remove_file(&self.path).map_err(lost_if_missing)
            }
            Ok(_) => Err(LockError::Lost),
            Err(e) => Err(lost_if_missing(e)),
        }
    }
}

impl Drop for Dotlock {
    fn drop(&mut self) {
        if !self.released
            && let Err(e) = self.unlink()
        {
            log::warn!("releasing {}: {e}", self.path.display());
        }
    }
}

fn lost_if_missing(e: io::Error) -> LockError {
    if e.kind() == io::ErrorKind::NotFound {
        LockError::Lost
    } else {
        LockError::Io(e)
    }
}

/// Writes a unique temporary file, links it to `path`, and decides by its link count.
fn link_lock(path: &Path, options: &LockOptions) -> io::Result<Option<Dotlock>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let pid = std::process::id();
    let base = path.file_name().and_then(|n| n.to_str()).unwrap_or("lock");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut tries = 0;
    let (temp, mut file) = loop {
        let attempt = ATTEMPTS.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".{base}.{}.{pid}.{attempt}", options.host));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
        {
            Ok(file) => break (temp, file),
            // Left by a crashed process that had our pid: take the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < TEMP_ATTEMPTS => {
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let written = file.write_all(format!("{pid} {} {now}\n", options.host).as_bytes());
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    let linked = fs::hard_link(&temp, path);
    let meta = fs::metadata(&temp);
    let _ = fs::remove_file(&temp);
    let meta = meta?;
    if meta.nlink() == 2 {
        return Ok(Some(Dotlock {
            path: path.to_path_buf(),
            inode: meta.ino(),
            released: false,
        }));
    }
    match linked {
        Ok(()) => Ok(None), // linked, but the count says otherwise: be safe, retry
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(e),
    }
}

/// The holder a lock file names: `PID HOST SECONDS`.
fn holder(path: &Path) -> io::Result<Option<(u32, String)>> {
    let mut text = Vec::with_capacity(64);
    match File::open(path) {
        Ok(file) => {
            use std::io::Read as _;
            file.take(MAX_LOCK_FILE as u64).read_to_end(&mut text)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&text);
    let mut words = text.split_whitespace();
    let pid = words.next().and_then(|p| p.parse().ok());
    let host = words.next().map(str::to_owned);
    Ok(pid.zip(host))
}

/// Whether a process with this id exists on this host.
fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    // Signal 0 only checks that the process exists and may be signalled; EPERM means it
    // exists under another user.
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

/// Removes the lock at `path` if it is stale; true if it did (or the lock vanished).
fn break_if_stale(path: &Path, options: &LockOptions) -> io::Result<bool> {
    let before = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    let age = before
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    let stale = age > options.stale_after
        || match holder(path)? {
            Some((pid, host)) => host == options.host && !alive(pid),
            None => false,
        };
    if !stale {
        return Ok(false);
    }
    match fs::symlink_metadata(path) {
        Ok(now) if now.ino() == before.ino() && now.mtime() == before.mtime() => {
            log::warn!("breaking stale lock {}", path.display());
            match fs::remove_file(path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
                Err(e) => Err(e),
            }
        }
        Ok(_) => Ok(false), // another holder took it meanwhile
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}
