//! The authd client backend (`[users] backend = "authd"`): a [`UserDirectory`] that asks
//! one of several authd servers over TCP (optionally TLS), with a small connection pool,
//! failover, and a short-lived answer cache for lookups.
//!
//! Every failure (no server reachable, a timeout, a broken connection, a protocol error)
//! is `TempFail`, never a wrong answer. Password checks are never cached here.

mod cache;
mod conn;
mod tls;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tidegate_core::authd::{AuthdClient, ClientEvent, SubmitError};
use tidegate_core::secret::Secret;
use tidegate_core::user::{AuthOutcome, Lookup, normalize_address};

pub use tls::AuthdClientTls;

use super::UserDirectory;
use cache::LookupCache;
use conn::{Answers, Conn};

/// Lookups [`AuthdDirectory::lookup_many`] sends in one round trip: below the codec's
/// in-flight limit (256) and a batch size the server handles in a few store requests.
const LOOKUPS_PER_ROUND_TRIP: usize = 128;

/// Settings of an [`AuthdDirectory`] (`[users]` with `backend = "authd"`).
#[derive(Debug, Clone)]
pub struct AuthdClientConfig {
    /// authd servers as `host:port`, in order of preference (`authd`).
    pub addrs: Vec<String>,
    /// The shared secret (`authd_secret` or the contents of `authd_secret_file`).
    pub secret: Secret,
    /// TLS towards the servers (`authd_tls_ca` or `authd_tls_pin`); `None` is plain TCP.
    pub tls: Option<AuthdClientTls>,
    /// How long a TCP connect may take before the next address is tried
    /// (`authd_connect_timeout`, default 2 s).
    pub connect_timeout: Duration,
    /// How long one request may wait for its answer (`authd_timeout`, default 5 s: more
    /// than the server's own 4 s database deadline, so its TEMPFAIL arrives first).
    pub timeout: Duration,
    /// How long lookup answers, negative ones included, are reused (`authd_cache_ttl`,
    /// default 10 s; 0 disables the cache). A changed user is seen after at most this.
    pub cache_ttl: Duration,
    /// Most cached answers; beyond it expired ones are dropped, then all (default 100,000:
    /// about 20 MB at most).
    pub cache_max_entries: usize,
    /// Idle connections kept for reuse (`authd_pool`, default 8). Callers beyond it open
    /// extra connections, closed after their call.
    pub pool_size: usize,
    /// How long an address that refused a connection is skipped (default 5 s).
    pub dead_for: Duration,
}

impl AuthdClientConfig {
    /// Defaults for everything but the servers and the secret.
    pub fn new(addrs: Vec<String>, secret: Secret) -> Self {
        AuthdClientConfig {
            addrs,
            secret,
            tls: None,
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(10),
            cache_max_entries: 100_000,
            pool_size: 8,
            dead_for: Duration::from_secs(5),
        }
    }
}

/// A user directory served by authd (docs/authd.md).
#[derive(Debug)]
pub struct AuthdDirectory {
    cfg: AuthdClientConfig,
    idle: Mutex<Vec<Conn>>,
    /// Per address: skipped until this time after a failed connect.
    dead_until: Mutex<Vec<Option<Instant>>>,
    cache: LookupCache,
}

impl AuthdDirectory {
    /// A directory using these servers. Connections are opened on first use.
    pub fn new(cfg: AuthdClientConfig) -> Result<Self, String> {
        if cfg.addrs.is_empty() {
            return Err("[users] backend = \"authd\" needs at least one authd address".into());
        }
        if cfg.secret.expose().is_empty() {
            return Err(
                "[users] backend = \"authd\" needs authd_secret or authd_secret_file".into(),
            );
        }
        Ok(AuthdDirectory {
            dead_until: Mutex::new(vec![None; cfg.addrs.len()]),
            cache: LookupCache::new(cfg.cache_ttl, cfg.cache_max_entries),
            idle: Mutex::new(Vec::new()),
            cfg,
        })
    }

    /// Looks up several addresses with one pipelined round trip (cached answers are not
    /// asked again). Answers are in the order of `addresses`.
    pub fn lookup_many(&self, addresses: &[&str]) -> Vec<Lookup> {
        let now = Instant::now();
        let keys: Vec<String> = addresses.iter().map(|a| normalize_address(a)).collect();
        let mut results: Vec<Option<Lookup>> =
            keys.iter().map(|k| self.cache.get(k, now)).collect();
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| results[i].is_none()).collect();
        // One round trip per batch the codec accepts in flight at once.
        for batch in missing.chunks(LOOKUPS_PER_ROUND_TRIP) {
            let answers = self.call(|codec| {
                batch
                    .iter()
                    .map(|&i| codec.lookup(&keys[i]))
                    .collect::<Result<Vec<u64>, _>>()
            });
            match answers {
                Ok((ids, mut events)) => {
                    for (&i, id) in batch.iter().zip(ids) {
                        let lookup = match events.remove(&id) {
                            Some(ClientEvent::Lookup { lookup, .. }) => lookup,
                            _ => Lookup::TempFail("authd: no answer".into()),
                        };
                        self.cache.put(keys[i].clone(), &lookup, Instant::now());
                        results[i] = Some(lookup);
                    }
                }
                Err(reason) => {
                    for &i in batch {
                        results[i] = Some(Lookup::TempFail(reason.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Lookup::TempFail("authd: no answer".into())))
            .collect()
    }

    /// Runs one call on a pooled or new connection; a pooled connection the server had
    /// closed is replaced by a fresh one once. Returns the request ids and their events.
    fn call(
        &self,
        submit: impl Fn(&mut AuthdClient) -> Result<Vec<u64>, SubmitError>,
    ) -> Result<(Vec<u64>, HashMap<u64, ClientEvent>), String> {
        let pooled = self.lock_idle().pop();
        let (mut conn, reused) = match pooled {
            Some(conn) => (conn, true),
            None => (self.connect()?, false),
        };
        let mut ids = Vec::new();
        let mut answers = conn.call(|codec| {
            ids = submit(codec)?;
            Ok(ids.clone())
        })?;
        if reused && answers.retryable {
            conn = self.connect()?;
            answers = conn.call(|codec| {
                ids = submit(codec)?;
                Ok(ids.clone())
            })?;
        }
        let Answers { events, .. } = answers;
        if conn.is_usable() {
            let mut idle = self.lock_idle();
            if idle.len() < self.cfg.pool_size {
                idle.push(conn);
            }
        }
        Ok((ids, events))
    }

    /// Opens a connection to the first address that accepts one: live addresses in
    /// order first, then those that failed recently (so a lone restarted server is
    /// found again at once).
    fn connect(&self) -> Result<Conn, String> {
        let now = Instant::now();
        let dead: Vec<bool> = self
            .lock_dead()
            .iter()
            .map(|until| until.is_some_and(|t| now < t))
            .collect();
        let order = (0..self.cfg.addrs.len())
            .filter(|&i| !dead[i])
            .chain((0..self.cfg.addrs.len()).filter(|&i| dead[i]));
        let mut errors = Vec::new();
        for index in order {
            let addr = &self.cfg.addrs[index];
            match Conn::open(
                addr,
                index,
                &self.cfg.secret,
                self.cfg.tls.as_ref(),
                self.cfg.connect_timeout,
                self.cfg.timeout,
            ) {
                Ok(conn) => {
                    self.lock_dead()[index] = None;
                    return Ok(conn);
                }
                Err(e) => {
                    log::warn!("{e}; trying the next authd address");
                    self.lock_dead()[index] = Some(Instant::now() + self.cfg.dead_for);
                    errors.push(e);
                }
            }
        }
        Err(format!("no authd server reachable ({})", errors.join("; ")))
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_dead(&self) -> MutexGuard<'_, Vec<Option<Instant>>> {
        self.dead_until.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl UserDirectory for AuthdDirectory {
    fn lookup(&self, address: &str) -> Lookup {
        self.lookup_many(&[address])
            .pop()
            .unwrap_or_else(|| Lookup::TempFail("authd: no answer".into()))
    }

    fn verify(&self, user: &str, password: &[u8], client: IpAddr) -> AuthOutcome {
        match self.call(|codec| codec.verify(user, password, client).map(|id| vec![id])) {
            Ok((ids, mut events)) => match ids.first().and_then(|id| events.remove(id)) {
                Some(ClientEvent::Verify { outcome, .. }) => outcome,
                _ => AuthOutcome::TempFail("authd: no answer".into()),
            },
            Err(reason) => AuthOutcome::TempFail(reason),
        }
    }

    /// Forgets cached answers and pooled connections.
    fn reload(&self) -> Result<(), String> {
        self.cache.clear();
        self.lock_idle().clear();
        Ok(())
    }
}
