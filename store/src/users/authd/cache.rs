//! The per-process answer cache of an [`super::AuthdDirectory`]: LOOKUP answers by
//! normalised address for a short TTL, negative answers included, `TempFail` never.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tidegate_core::user::Lookup;

/// Lookup answers with their expiry time, at most `max_entries` of them.
#[derive(Debug)]
pub(super) struct LookupCache {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<String, (Instant, Lookup)>>,
}

impl LookupCache {
    /// A cache keeping answers for `ttl` (zero disables it).
    pub(super) fn new(ttl: Duration, max_entries: usize) -> Self {
        LookupCache {
            ttl,
            max_entries,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached answer for `key`, if it has not expired.
    pub(super) fn get(&self, key: &str, now: Instant) -> Option<Lookup> {
        let entries = self.lock();
        let (expires, lookup) = entries.get(key)?;
        (now < *expires).then(|| lookup.clone())
    }

    /// Remembers an answer; `TempFail` is never remembered, so the next call asks again.
    pub(super) fn put(&self, key: String, lookup: &Lookup, now: Instant) {
        if self.ttl.is_zero() || self.max_entries == 0 || matches!(lookup, Lookup::TempFail(_)) {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.max_entries {
            entries.retain(|_, (expires, _)| now < *expires);
            if entries.len() >= self.max_entries {
                // Still full of live answers: start over rather than grow.
                entries.clear();
            }
        }
        entries.insert(key, (now + self.ttl, lookup.clone()));
    }

    /// Forgets everything (`reload`).
    pub(super) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Instant, Lookup)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_skips_tempfail_and_stays_bounded() {
        let t0 = Instant::now();
        let cache = LookupCache::new(Duration::from_secs(10), 2);
        cache.put("a".into(), &Lookup::NotFound, t0);
        cache.put("b".into(), &Lookup::TempFail("down".into()), t0);
        assert_eq!(cache.get("a", t0), Some(Lookup::NotFound));
        assert_eq!(cache.get("b", t0), None);
        assert_eq!(cache.get("a", t0 + Duration::from_secs(10)), None);
        cache.put("b".into(), &Lookup::UnknownDomain, t0);
        cache.put("c".into(), &Lookup::UnknownDomain, t0);
        assert!(cache.lock().len() <= 2);
        assert_eq!(cache.get("c", t0), Some(Lookup::UnknownDomain));
    }
}
