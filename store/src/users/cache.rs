//! An authentication cache in front of any [`UserDirectory`], like Dovecot's
//! `auth_cache`: a successful password check is remembered for a while, so a mail client
//! that logs in every minute does not cost an Argon2 computation or an LDAP bind each
//! time.
//!
//! An entry is keyed by the normalised user and holds HMAC-SHA256 of the password under
//! a random key made when the process starts (`ring::hmac`), never the password itself:
//! a memory dump yields nothing to try offline without the key. Only `Accepted` is
//! cached; a different password misses the cache and goes to the directory, so a wrong
//! password after a right one is still `Denied`. Entries live [`CacheConfig::ttl`]; at
//! most [`CacheConfig::capacity`] are kept, the oldest dropped first; `reload()` and
//! [`CachedDirectory::invalidate`] forget them. A password changed in the directory
//! still works from the cache until its entry expires (as in Dovecot): keep the TTL
//! short or invalidate on change.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ring::hmac;
use subtle::ConstantTimeEq;
use tidegate_core::user::{AuthOutcome, Lookup, UserRecord};

use super::{UserDirectory, normalize_address};

/// The rules of a [`CachedDirectory`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long a successful check is remembered.
    pub ttl: Duration,
    /// Most users remembered at once (about 200 bytes each plus the record's fields).
    pub capacity: usize,
}

impl Default for CacheConfig {
    /// Five minutes, 100,000 users.
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(300),
            capacity: 100_000,
        }
    }
}

/// One remembered successful check.
#[derive(Debug)]
struct Entry {
    tag: hmac::Tag,
    record: UserRecord,
    stored: Instant,
}

/// A [`UserDirectory`] that remembers successful password checks of another one.
pub struct CachedDirectory {
    inner: Arc<dyn UserDirectory>,
    config: CacheConfig,
    /// `None` when the OS gave no randomness for a key: then nothing is cached.
    key: Option<hmac::Key>,
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for CachedDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedDirectory")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl CachedDirectory {
    /// A cache in front of `inner`, with a fresh random HMAC key.
    pub fn new(inner: Arc<dyn UserDirectory>, config: CacheConfig) -> CachedDirectory {
        let mut secret = [0u8; 32];
        let key = match getrandom::getrandom(&mut secret) {
            Ok(()) => Some(hmac::Key::new(hmac::HMAC_SHA256, &secret)),
            Err(error) => {
                log::error!(
                    "no OS randomness for the authentication cache key ({error}); caching disabled"
                );
                None
            }
        };
        CachedDirectory {
            inner,
            config,
            key,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The directory behind the cache.
    pub fn inner(&self) -> &Arc<dyn UserDirectory> {
        &self.inner
    }

    /// Forgets `user`'s entry (after a password change or `nologin`).
    pub fn invalidate(&self, user: &str) {
        self.lock().remove(&normalize_address(user));
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How many users are remembered now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`UserDirectory::verify`] at a given time (tests pass their own clock).
    pub fn verify_at(
        &self,
        user: &str,
        password: &[u8],
        client: IpAddr,
        now: Instant,
    ) -> AuthOutcome {
        let Some(key) = &self.key else {
            return self.inner.verify(user, password, client);
        };
        let address = normalize_address(user);
        let tag = hmac::sign(key, password);
        if let Some(record) = self.cached(&address, &tag, now) {
            log::debug!("authentication of {address} from {client}: cached");
            return AuthOutcome::Accepted(record);
        }
        let outcome = self.inner.verify(&address, password, client);
        if let AuthOutcome::Accepted(record) = &outcome {
            self.remember(address, tag, record.clone(), now);
        }
        outcome
    }

    /// [`UserDirectory::verify_fast`] at a given time: a hit, else whatever the
    /// directory behind answers at once (remembered like any successful check).
    pub fn verify_fast_at(&self, user: &str, password: &[u8], now: Instant) -> Option<UserRecord> {
        let key = self.key.as_ref()?;
        let address = normalize_address(user);
        let tag = hmac::sign(key, password);
        if let Some(record) = self.cached(&address, &tag, now) {
            return Some(record);
        }
        let record = self.inner.verify_fast(&address, password)?;
        self.remember(address, tag, record.clone(), now);
        Some(record)
    }

    fn cached(&self, address: &str, tag: &hmac::Tag, now: Instant) -> Option<UserRecord> {
        let mut entries = self.lock();
        let entry = entries.get(address)?;
        if now.saturating_duration_since(entry.stored) >= self.config.ttl {
            entries.remove(address);
            return None;
        }
        let same = entry.tag.as_ref().ct_eq(tag.as_ref());
        bool::from(same).then(|| entry.record.clone())
    }

    fn remember(&self, address: String, tag: hmac::Tag, record: UserRecord, now: Instant) {
        if self.config.capacity == 0 || self.config.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.config.capacity && !entries.contains_key(&address) {
            self.make_room(&mut entries, now);
        }
        entries.insert(
            address,
            Entry {
                tag,
                record,
                stored: now,
            },
        );
    }

    /// Drops expired entries; if still full, the oldest eighth.
    fn make_room(&self, entries: &mut HashMap<String, Entry>, now: Instant) {
        entries.retain(|_, e| now.saturating_duration_since(e.stored) < self.config.ttl);
        if entries.len() < self.config.capacity || entries.is_empty() {
            return;
        }
        let evict = (entries.len() / 8).max(1);
        let mut ages: Vec<Instant> = entries.values().map(|e| e.stored).collect();
        let (_, cutoff, _) = ages.select_nth_unstable(evict - 1);
        let cutoff = *cutoff;
        let mut removed = 0;
        entries.retain(|_, e| {
            let drop = e.stored <= cutoff && removed < evict;
            removed += usize::from(drop);
            !drop
        });
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl UserDirectory for CachedDirectory {
    /// Lookups are not cached: they are cheap for the file and recipient checks want
    /// fresh answers.
    fn lookup(&self, address: &str) -> Lookup {
        self.inner.lookup(address)
    }

    fn lookup_in_memory(&self, address: &str) -> Option<Lookup> {
        self.inner.lookup_in_memory(address)
    }

    fn verify(&self, user: &str, password: &[u8], client: IpAddr) -> AuthOutcome {
        self.verify_at(user, password, client, Instant::now())
    }

    fn verify_fast(&self, user: &str, password: &[u8]) -> Option<UserRecord> {
        self.verify_fast_at(user, password, Instant::now())
    }

    /// Forgets every entry, then reloads the directory behind.
    fn reload(&self) -> Result<(), String> {
        self.clear();
        self.inner.reload()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A directory with one user per entry of `users` that counts password checks.
    #[derive(Debug, Default)]
    struct Counting {
        users: Mutex<HashMap<String, String>>,
        checks: AtomicUsize,
    }

    impl Counting {
        fn with(users: &[(&str, &str)]) -> Arc<Counting> {
            let map = users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect();
            Arc::new(Counting {
                users: Mutex::new(map),
                checks: AtomicUsize::new(0),
            })
        }

        fn checks(&self) -> usize {
            self.checks.load(Ordering::SeqCst)
        }

        fn set(&self, user: &str, password: &str) {
            self.users
                .lock()
                .unwrap()
                .insert(user.into(), password.into());
        }
    }

    impl UserDirectory for Counting {
        fn lookup(&self, address: &str) -> Lookup {
            match self.users.lock().unwrap().get(address) {
                Some(_) => Lookup::Found(UserRecord::new(address)),
                None => Lookup::NotFound,
            }
        }

        fn verify(&self, user: &str, password: &[u8], _: IpAddr) -> AuthOutcome {
            self.checks.fetch_add(1, Ordering::SeqCst);
            match self.users.lock().unwrap().get(user) {
                Some(p) if p.as_bytes() == password => AuthOutcome::Accepted(UserRecord::new(user)),
                _ => AuthOutcome::Denied,
            }
        }
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const SEC: Duration = Duration::from_secs(1);

    fn cache(inner: &Arc<Counting>, ttl: Duration, capacity: usize) -> CachedDirectory {
        CachedDirectory::new(inner.clone(), CacheConfig { ttl, capacity })
    }

    fn accepted(outcome: &AuthOutcome) -> bool {
        matches!(outcome, AuthOutcome::Accepted(_))
    }

    #[test]
    fn a_success_is_remembered_for_the_ttl() {
        let inner = Counting::with(&[("a@x.org", "right")]);
        let cache = cache(&inner, 60 * SEC, 10);
        let t0 = Instant::now();
        assert!(accepted(&cache.verify_at("a@x.org", b"right", CLIENT, t0)));
        assert!(accepted(&cache.verify_at(
            "A@X.ORG ",
            b"right",
            CLIENT,
            t0 + SEC
        )));
        assert_eq!(inner.checks(), 1, "second check came from the cache");
        assert!(accepted(&cache.verify_at(
            "a@x.org",
            b"right",
            CLIENT,
            t0 + 60 * SEC
        )));
        assert_eq!(inner.checks(), 2, "expired entry went to the directory");
    }

    #[test]
    fn a_wrong_password_after_a_cached_right_one_is_denied() {
        let inner = Counting::with(&[("a@x.org", "right")]);
        let cache = cache(&inner, 60 * SEC, 10);
        let t0 = Instant::now();
        assert!(accepted(&cache.verify_at("a@x.org", b"right", CLIENT, t0)));
        assert_eq!(
            cache.verify_at("a@x.org", b"wrong", CLIENT, t0),
            AuthOutcome::Denied
        );
        assert_eq!(
            cache.verify_at("a@x.org", b"wrong", CLIENT, t0),
            AuthOutcome::Denied
        );
        assert_eq!(inner.checks(), 3, "denials are never cached");
        assert!(accepted(&cache.verify_at("a@x.org", b"right", CLIENT, t0)));
        assert_eq!(inner.checks(), 3);
        assert_eq!(
            cache.verify_at("nobody@x.org", b"right", CLIENT, t0),
            AuthOutcome::Denied
        );
    }

    #[test]
    fn invalidate_and_reload_forget() {
        let inner = Counting::with(&[("a@x.org", "old"), ("b@x.org", "b")]);
        let cache = cache(&inner, 60 * SEC, 10);
        let t0 = Instant::now();
        assert!(accepted(&cache.verify_at("a@x.org", b"old", CLIENT, t0)));
        assert!(accepted(&cache.verify_at("b@x.org", b"b", CLIENT, t0)));
        inner.set("a@x.org", "new");
        // Until invalidated, the old password still works from the cache (by design).
        assert!(accepted(&cache.verify_at("a@x.org", b"old", CLIENT, t0)));
        cache.invalidate("A@x.org");
        assert_eq!(
            cache.verify_at("a@x.org", b"old", CLIENT, t0),
            AuthOutcome::Denied
        );
        assert_eq!(cache.len(), 1);
        cache.reload().unwrap();
        assert!(cache.is_empty());
        assert!(accepted(&cache.verify_at("b@x.org", b"b", CLIENT, t0)));
        assert_eq!(inner.checks(), 4);
    }

    #[test]
    fn size_is_bounded_and_the_oldest_go_first() {
        let users: Vec<(String, String)> = (0..40)
            .map(|i| (format!("u{i}@x.org"), format!("p{i}")))
            .collect();
        let refs: Vec<(&str, &str)> = users
            .iter()
            .map(|(u, p)| (u.as_str(), p.as_str()))
            .collect();
        let inner = Counting::with(&refs);
        let cache = cache(&inner, 600 * SEC, 8);
        let t0 = Instant::now();
        for (i, (u, p)) in refs.iter().enumerate() {
            assert!(accepted(&cache.verify_at(
                u,
                p.as_bytes(),
                CLIENT,
                t0 + SEC * i as u32
            )));
            assert!(cache.len() <= 8);
        }
        let before = inner.checks();
        let newest = refs[39];
        assert!(accepted(&cache.verify_at(
            newest.0,
            newest.1.as_bytes(),
            CLIENT,
            t0 + 50 * SEC
        )));
        assert_eq!(inner.checks(), before, "the newest entry survived");
        let oldest = refs[0];
        assert!(accepted(&cache.verify_at(
            oldest.0,
            oldest.1.as_bytes(),
            CLIENT,
            t0 + 50 * SEC
        )));
        assert_eq!(inner.checks(), before + 1, "the oldest was evicted");
    }

    #[test]
    fn the_password_is_not_kept() {
        let inner = Counting::with(&[("a@x.org", "sekrit-password")]);
        let cache = cache(&inner, 60 * SEC, 10);
        assert!(accepted(&cache.verify_at(
            "a@x.org",
            b"sekrit-password",
            CLIENT,
            Instant::now()
        )));
        let entries = cache.lock();
        let entry = entries.get("a@x.org").unwrap();
        assert_eq!(entry.tag.as_ref().len(), 32);
        assert!(!format!("{entries:?}").contains("sekrit"));
    }
}
