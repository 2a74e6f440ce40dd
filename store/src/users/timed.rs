//! A [`UserDirectory`] that times every lookup and password check of the directory
//! it wraps, for the `tidegate_user_lookup_seconds` histogram.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tidegate_core::user::{AuthOutcome, Lookup, UserRecord};

use super::UserDirectory;
use crate::metrics::{self, DirectoryKind};

/// Times the calls to `inner` and records them under `kind`. Placed under the
/// authentication cache, so cache hits are not counted: the histogram is the latency of
/// the database itself (for `verify`, including the password hash check).
#[derive(Debug)]
pub struct TimedDirectory {
    inner: Arc<dyn UserDirectory>,
    kind: DirectoryKind,
}

impl TimedDirectory {
    /// Wraps `inner`, a directory of `kind`.
    pub fn new(inner: Arc<dyn UserDirectory>, kind: DirectoryKind) -> TimedDirectory {
        TimedDirectory { inner, kind }
    }
}

impl UserDirectory for TimedDirectory {
    fn lookup(&self, address: &str) -> Lookup {
        let started = Instant::now();
        let found = self.inner.lookup(address);
        metrics::global().user_lookup(self.kind, started.elapsed());
        found
    }

    fn lookup_in_memory(&self, address: &str) -> Option<Lookup> {
        let started = Instant::now();
        let found = self.inner.lookup_in_memory(address)?;
        metrics::global().user_lookup(self.kind, started.elapsed());
        Some(found)
    }

    fn verify(&self, user: &str, password: &[u8], client: IpAddr) -> AuthOutcome {
        let started = Instant::now();
        let outcome = self.inner.verify(user, password, client);
        metrics::global().user_lookup(self.kind, started.elapsed());
        outcome
    }

    /// Timed like [`UserDirectory::verify`] when the directory answers.
    fn verify_fast(&self, user: &str, password: &[u8]) -> Option<UserRecord> {
        let started = Instant::now();
        let record = self.inner.verify_fast(user, password)?;
        metrics::global().user_lookup(self.kind, started.elapsed());
        Some(record)
    }

    fn reload(&self) -> Result<(), String> {
        self.inner.reload()
    }
}
