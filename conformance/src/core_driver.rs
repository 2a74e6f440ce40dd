//! Drives core sessions in-process with a virtual clock and a [`MemStore`].
//!
//! Every script runs three ways: whole writes, byte by byte, and random splits chosen by
//! proptest. Each run must pass the script, and every run must read the same server
//! bytes as the whole-write run (chunking invariance).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestError, TestRunner};
use tidegate_store::Listener;

use crate::Driver;
use crate::config::Protocol;
use crate::core_conn::CoreConn;
use crate::interp::{self, Conn, Failure, Server, Transcript};
use crate::memstore::MemStore;
use crate::pki::TestPki;
use crate::script::Script;
use crate::seeds::{self, SeedLog};

/// How client writes are cut into `handle_input` calls.
#[derive(Debug, Clone)]
pub enum Chunking {
    /// Each write whole (at most [`MAX_READ`](tidegate_core::MAX_READ) bytes per call).
    Whole,
    /// One byte per call.
    Bytes,
    /// Chunks of these sizes, cycled across the whole run.
    Sizes(Vec<usize>),
}

impl Chunking {
    /// A short name for reports.
    pub fn label(&self) -> String {
        match self {
            Chunking::Whole => "whole writes".into(),
            Chunking::Bytes => "byte by byte".into(),
            Chunking::Sizes(s) => format!("chunks {s:?}"),
        }
    }
}

/// Runs scripts against `tidegate_core` sessions directly.
#[derive(Debug)]
pub struct CoreDriver {
    pki: Arc<TestPki>,
    split_cases: u32,
}

impl Default for CoreDriver {
    fn default() -> Self {
        CoreDriver::new()
    }
}

impl CoreDriver {
    /// A driver with the shared test certificate. Random-split runs per script come from
    /// `PROPTEST_CASES` (default 64).
    pub fn new() -> Self {
        let split_cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64);
        CoreDriver {
            pki: TestPki::shared(),
            split_cases,
        }
    }

    /// Runs `script` once with one chunking, on a fresh store.
    pub fn run_once(&self, script: &Script, chunking: Chunking) -> Result<Transcript, Failure> {
        self.run_recorded(script, chunking, None)
    }

    /// The first connection of a whole-write run of a POP3 `script` as a `pop3_session`
    /// fuzz script (see [`crate::seeds`]).
    pub fn seed(&self, script: &Script) -> Result<Vec<u8>, Failure> {
        let seed = self.seed_log(script);
        self.run_recorded(script, Chunking::Whole, Some(seed.clone()))?;
        Ok(seed.bytes())
    }

    fn seed_log(&self, script: &Script) -> SeedLog {
        let config = &script.config;
        let listener = crate::listener_for(config, &self.pki, Duration::ZERO);
        let client = config.client.unwrap_or([127, 0, 0, 1].into());
        let refused = !listener.plaintext_auth.allows(client) && !config.implicit_tls;
        SeedLog::new(config.starttls, refused)
    }

    /// [`CoreDriver::run_once`], recording the first connection into `seed`.
    fn run_recorded(
        &self,
        script: &Script,
        chunking: Chunking,
        seed: Option<SeedLog>,
    ) -> Result<Transcript, Failure> {
        let store = Arc::new(MemStore::new());
        let label = format!("core, {}", chunking.label());
        let mut server = CoreServer {
            listeners: crate::listeners::all_listeners(
                &script.config,
                &self.pki,
                Duration::from_secs(2),
            ),
            client: SocketAddr::new(
                script
                    .config
                    .client
                    .unwrap_or_else(|| "127.0.0.1".parse().expect("valid address")),
                40000,
            ),
            store: store.clone(),
            clock: Rc::new(Cell::new(base_instant())),
            chunking,
            pki: self.pki.clone(),
            implicit_tls: script.config.implicit_tls,
            seed,
        };
        interp::execute(script, &label, &mut server, &store)
    }
}

/// The wall-clock time of every accept in the core driver (Tue, 14 Nov 2023 22:13:20
/// UTC), so `Received:` dates and message ids are the same in every run of a script.
pub const ACCEPTED_AT_UNIX: u64 = 1_700_000_000;

/// One fixed starting point; virtual time only moves forward from it.
fn base_instant() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

impl Driver for CoreDriver {
    fn name(&self) -> &str {
        "core"
    }

    fn skip_reason(&self, _script: &Script) -> Option<&'static str> {
        None
    }

    fn run(&self, script: &Script) -> Result<(), Failure> {
        let pop3 = script.config.protocol == Protocol::Pop3;
        let seed = (pop3 && seeds::enabled()).then(|| self.seed_log(script));
        let whole = self.run_recorded(script, Chunking::Whole, seed.clone());
        if let Some(seed) = seed {
            // Written even when the script fails: the seed replays up to the failure.
            seeds::write(&script.name, &seed.bytes());
        }
        let whole = whole?;
        if script.no_split {
            return Ok(());
        }
        let same = |t: &Transcript| compare(&whole, t);
        let bytes = self.run_once(script, Chunking::Bytes)?;
        same(&bytes).map_err(|m| chunk_failure(script, "byte by byte", m))?;

        let mut runner = TestRunner::new(ProptestConfig {
            cases: self.split_cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let strategy = proptest::collection::vec(1usize..=40, 1..12);
        let outcome = runner.run(&strategy, |sizes| {
            match self.run_once(script, Chunking::Sizes(sizes)) {
                Ok(t) => same(&t).map_err(TestCaseError::fail),
                Err(f) => Err(TestCaseError::fail(f.to_string())),
            }
        });
        match outcome {
            Ok(()) => Ok(()),
            Err(TestError::Fail(why, sizes)) => Err(chunk_failure(
                script,
                &format!("split into chunks of {sizes:?} (cycled)"),
                why.to_string(),
            )),
            Err(TestError::Abort(why)) => {
                Err(chunk_failure(script, "random splits", why.to_string()))
            }
        }
    }
}

fn chunk_failure(script: &Script, how: &str, message: String) -> Failure {
    Failure {
        path: script.path.clone(),
        line: 0,
        driver: format!("core, {how}"),
        message,
        transcript: String::new(),
    }
}

/// Whether two runs read the same server bytes; the message shows the first difference.
fn compare(want: &Transcript, got: &Transcript) -> Result<(), String> {
    let (a, b) = (&want.server_bytes, &got.server_bytes);
    if a == b {
        return Ok(());
    }
    let at = a.iter().zip(b.iter()).take_while(|(x, y)| x == y).count();
    let window =
        |s: &[u8]| crate::pattern::escape(&s[at.saturating_sub(40)..(at + 80).min(s.len())]);
    Err(format!(
        "server output differs from the whole-write run at byte {at}:\n  whole: {}\n  this:  {}",
        window(a),
        window(b)
    ))
}

struct CoreServer {
    /// One per protocol, in [`Protocol::ALL`] order.
    listeners: Vec<Listener>,
    client: SocketAddr,
    store: Arc<MemStore>,
    clock: Rc<Cell<Instant>>,
    chunking: Chunking,
    pki: Arc<TestPki>,
    implicit_tls: bool,
    /// Taken by the first connection, which records itself into it.
    seed: Option<SeedLog>,
}

impl Server for CoreServer {
    fn connect(&mut self, raw: bool, protocol: Protocol) -> Result<Box<dyn Conn>, String> {
        let now = self.clock.get();
        let accepted_at = SystemTime::UNIX_EPOCH + Duration::from_secs(ACCEPTED_AT_UNIX);
        let session = match self.listeners.get(protocol.index()) {
            Some(Listener::Pop3(pop3)) => pop3.open(self.client, now),
            Some(Listener::Smtp(smtp)) => smtp.open(self.client, accepted_at, now),
            Some(Listener::Imap(imap)) => imap.open(self.client, now),
            _ => return Err(format!("no {protocol} listener")),
        };
        let mut conn = CoreConn::new(
            session,
            self.store.clone(),
            self.clock.clone(),
            self.chunking.clone(),
            self.pki.clone(),
        );
        if let Some(seed) = self.seed.take() {
            conn.record_seed(seed);
        }
        if self.implicit_tls && protocol.has_implicit_tls() && !raw {
            conn.start_tls()?;
        }
        Ok(Box::new(conn))
    }
}

#[cfg(test)]
mod tests {
    use super::{Transcript, compare};

    #[test]
    fn a_chunking_difference_is_reported_where_it_starts() {
        let mut whole = Transcript::default();
        whole.server_bytes = b"+OK ready\r\n-ERR Unknown command\r\n".to_vec();
        let mut split = whole.clone();
        assert!(compare(&whole, &split).is_ok());
        split.server_bytes = b"+OK ready\r\n-ERR Command line too long\r\n".to_vec();
        let err = compare(&whole, &split).unwrap_err();
        assert!(err.contains("at byte 16"), "{err}");
        assert!(err.contains("Command line too long"), "{err}");
    }
}
