//! The users file of a running server: loaded at start, reloaded when it changes, and
//! answering as a [`UserDirectory`].

use std::fs;
use std::io::BufReader;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tidegate_core::user::{AuthOutcome, Lookup, UserRecord};

use super::{UserDirectory, UserTable, UsersError, normalize_address};
use crate::password::{self, Scheme, Verification};

/// How often [`UsersFile::reload_if_changed`] looks at the file by default.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies one version of the file: an atomic rewrite changes the inode, an
/// edit in place changes mtime or size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: meta.ino(),
            device: meta.dev(),
        }
    }
}

#[derive(Debug)]
struct State {
    table: Arc<UserTable>,
    stamp: Option<Stamp>,
    checked: Instant,
}

/// A users file and its current table. Readers take an `Arc` snapshot
/// ([`UsersFile::current`]); a reload swaps the snapshot, so lookups never block on a
/// reload for long and never see a half-read file.
#[derive(Debug)]
pub struct UsersFile {
    path: PathBuf,
    interval: Duration,
    state: Mutex<State>,
}

impl UsersFile {
    /// Loads the users file at `path`; a missing or malformed file is an error.
    pub fn open(path: impl AsRef<Path>) -> Result<UsersFile, UsersError> {
        let path = path.as_ref().to_path_buf();
        let (table, stamp) = read(&path)?;
        Ok(UsersFile {
            path,
            interval: CHECK_INTERVAL,
            state: Mutex::new(State {
                table: Arc::new(table),
                stamp: Some(stamp),
                checked: Instant::now(),
            }),
        })
    }

    /// Sets how often [`UsersFile::reload_if_changed`] looks at the file (default 1 s;
    /// tests use zero).
    pub fn with_check_interval(mut self, interval: Duration) -> UsersFile {
        self.interval = interval;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current table.
    pub fn current(&self) -> Arc<UserTable> {
        self.lock().table.clone()
    }

    /// Reloads the table if the file changed (looking at most once per check interval).
    /// A file with a syntax error keeps the old table and logs the line; a file that
    /// vanished keeps the old table too. Returns whether a new table was loaded.
    pub fn reload_if_changed(&self) -> bool {
        let mut state = self.lock();
        if state.checked.elapsed() < self.interval {
            return false;
        }
        state.checked = Instant::now();
        let stamp = match fs::metadata(&self.path) {
            Ok(meta) => Stamp::of(&meta),
            Err(e) => {
                if state.stamp.take().is_some() {
                    log::error!(
                        "users file {}: {e}; keeping the old table",
                        self.path.display()
                    );
                }
                return false;
            }
        };
        if state.stamp == Some(stamp) {
            return false;
        }
        // Remember the version even when it is broken, so the error is logged once.
        state.stamp = Some(stamp);
        self.load_into(&mut state).is_ok()
    }

    /// Reloads the table now (`tidegate ctl reload`, SIGHUP). On error the old table
    /// stays and the error is returned (and logged).
    pub fn reload(&self) -> Result<(), UsersError> {
        let mut state = self.lock();
        state.checked = Instant::now();
        self.load_into(&mut state)
    }

    fn load_into(&self, state: &mut State) -> Result<(), UsersError> {
        match read(&self.path) {
            Ok((table, stamp)) => {
                log::info!(
                    "users file {} loaded: {} users",
                    self.path.display(),
                    table.len()
                );
                state.table = Arc::new(table);
                state.stamp = Some(stamp);
                Ok(())
            }
            Err(e) => {
                log::error!(
                    "users file {} not reloaded, keeping the old table: {e}",
                    self.path.display()
                );
                Err(e)
            }
        }
    }

    /// The current table when using it needs no look at the file (checked within the
    /// interval) and no wait (a reload reads the file under the lock); `None`
    /// otherwise. For answers on an event loop.
    fn fresh_table(&self) -> Option<Arc<UserTable>> {
        let state = self.state.try_lock().ok()?;
        (state.checked.elapsed() < self.interval).then(|| state.table.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads and parses the file, with the stamp of the version read. Edits replace the
/// file by rename, so the open file is one whole version.
fn read(path: &Path) -> Result<(UserTable, Stamp), UsersError> {
    let file = fs::File::open(path)?;
    let stamp = Stamp::of(&file.metadata()?);
    let table = UserTable::read_sized(BufReader::with_capacity(64 * 1024, file), stamp.len)?;
    Ok((table, stamp))
}

impl UsersFile {
    /// `lookup` on the current table, after a [`UsersFile::reload_if_changed`].
    ///
    /// A bare `postmaster` (RFC 5321 §4.1.1.3) is the `postmaster@` user of the first
    /// local domain that has one.
    fn lookup_now(&self, address: &str) -> Lookup {
        self.reload_if_changed();
        lookup_in(&self.current(), address)
    }
}

/// Looks `address` up in one version of the table.
fn lookup_in(table: &UserTable, address: &str) -> Lookup {
    let address = normalize_address(address);
    if address == "postmaster" {
        return table
            .local_domains()
            .iter()
            .find_map(|domain| table.lookup(&format!("postmaster@{domain}")))
            .map_or(Lookup::NotFound, Lookup::Found);
    }
    if let Some(record) = table.lookup(&address) {
        return Lookup::Found(record);
    }
    match address.rsplit_once('@') {
        Some((_, domain)) if table.is_local_domain(domain) => Lookup::NotFound,
        _ => Lookup::UnknownDomain,
    }
}

impl UserDirectory for UsersFile {
    fn lookup(&self, address: &str) -> Lookup {
        self.lookup_now(address)
    }

    /// The loaded table answers unless a look at the file for changes is due (then
    /// [`UserDirectory::lookup`] on a worker makes it) or a reload is reading the file.
    fn lookup_in_memory(&self, address: &str) -> Option<Lookup> {
        self.fresh_table().map(|table| lookup_in(&table, address))
    }

    /// An unknown user costs one check against the file's first hashed password (same
    /// scheme and cost as a real user), then `Denied`, like a wrong password.
    fn verify(&self, user: &str, password: &[u8], client: IpAddr) -> AuthOutcome {
        self.reload_if_changed();
        let table = self.current();
        let address = normalize_address(user);
        let Some(record) = table.lookup(&address) else {
            password::verify_dummy(table.dummy_hash(), password);
            log::info!("authentication failed from {client}: unknown user {address:?}");
            return AuthOutcome::Denied;
        };
        match password::verify(&record.password, password) {
            Verification::Match if record.nologin() => {
                log::info!("authentication refused from {client}: {address} has nologin");
                AuthOutcome::Disabled
            }
            Verification::Match => AuthOutcome::Accepted(record),
            Verification::Mismatch => {
                log::info!("authentication failed from {client}: wrong password for {address}");
                AuthOutcome::Denied
            }
            Verification::Unsupported => {
                log::warn!(
                    "authentication failed from {client}: the password of {address} uses \
                     a scheme or cost this build cannot check"
                );
                AuthOutcome::Denied
            }
        }
    }

    /// Answers from the table in memory when no file check is due and the password's
    /// scheme costs one hash at most (`{PLAIN}`, `{SSHA}`, `{SSHA256}`, `{SSHA512}`).
    fn verify_fast(&self, user: &str, password: &[u8]) -> Option<UserRecord> {
        let table = self.fresh_table()?;
        let record = table.lookup(user)?;
        let cheap = matches!(
            Scheme::split(&record.password),
            Some((
                Scheme::Plain | Scheme::Ssha | Scheme::Ssha256 | Scheme::Ssha512,
                _
            ))
        );
        (cheap
            && !record.nologin()
            && password::verify(&record.password, password) == Verification::Match)
            .then_some(record)
    }

    fn reload(&self) -> Result<(), String> {
        UsersFile::reload(self).map_err(|e| e.to_string())
    }
}

/// Lets `LocalStore::new` take a users file directly.
impl From<UsersFile> for Arc<dyn UserDirectory> {
    fn from(file: UsersFile) -> Self {
        Arc::new(file)
    }
}
