//! # tidegate-conformance: one POP3 suite, three drivers
//!
//! Scripted sessions in `scripts/pop3/*.txt` (format: [`script`]) run unchanged against
//! the sans-IO core ([`CoreDriver`]: virtual time, an in-memory [`MemStore`], whole,
//! byte-by-byte and randomly split input) and against each runtime shell over loopback
//! ([`ShellDriver`], given the shell's `serve` function). `tests/real_clients.rs` adds
//! real third-party clients (Python `poplib`, `curl`) against both shells.
//!
//! ```no_run
//! use tidegate_conformance::{CoreDriver, assert_suite};
//! assert_suite(&CoreDriver::new(), "pop3");
//! ```
//!
//! With `TIDEGATE_WRITE_SEEDS=1` the core driver also writes each script's client bytes
//! to `fuzz/corpus/pop3_session/seed-<script>`.

pub mod checks;
pub mod config;
pub mod core_conn;
pub mod core_driver;
pub mod interp;
pub mod memstore;
pub mod pattern;
pub mod pki;
pub mod script;
pub mod seeds;
pub mod shell_driver;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidegate_core::net::PlaintextAuth;
use tidegate_core::pop3::{Pop3Config, Pop3Limits, Pop3Listener};

pub use core_driver::CoreDriver;
pub use interp::Failure;
pub use memstore::MemStore;
pub use pki::TestPki;
pub use script::{Script, ScriptConfig};
pub use shell_driver::{ServeFn, ShellDriver};

/// A target the scripts run against.
pub trait Driver {
    /// A short name for reports (`core`, `mio`, `smol`).
    fn name(&self) -> &str;
    /// Why this driver does not run `script`, or `None` if it does.
    fn skip_reason(&self, script: &Script) -> Option<&'static str>;
    /// Runs one script on a fresh server and store.
    fn run(&self, script: &Script) -> Result<(), Failure>;
}

/// `conformance/scripts/<proto>/`.
pub fn scripts_dir(proto: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(proto)
}

/// Parses every `*.txt` script of a protocol, sorted by name. Parse errors are returned
/// together so one bad file does not hide the others.
pub fn load_scripts(proto: &str) -> Result<Vec<Script>, Vec<String>> {
    let dir = scripts_dir(proto);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| vec![format!("{}: {e}", dir.display())])?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    let (mut scripts, mut errors) = (Vec::new(), Vec::new());
    for path in paths {
        match Script::load(&path) {
            Ok(s) => scripts.push(s),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(scripts)
    } else {
        Err(errors)
    }
}

/// Runs every script of `proto` with `driver` and panics with every failure (file:line,
/// message and transcript) if any script fails. `TIDEGATE_SCRIPT=name` runs one script.
pub fn assert_suite(driver: &dyn Driver, proto: &str) {
    let scripts = load_scripts(proto).unwrap_or_else(|errors| {
        panic!("scripts do not parse:\n{}", errors.join("\n"));
    });
    assert!(
        !scripts.is_empty(),
        "no scripts in {}",
        scripts_dir(proto).display()
    );
    let only = std::env::var("TIDEGATE_SCRIPT").ok();
    let (mut ran, mut skipped, mut failures) = (0, 0, Vec::new());
    for script in &scripts {
        if only.as_deref().is_some_and(|o| o != script.name) {
            continue;
        }
        if let Some(why) = driver.skip_reason(script) {
            eprintln!("[{}] skip {}: {why}", driver.name(), script.name);
            skipped += 1;
            continue;
        }
        let started = Instant::now();
        let result = driver.run(script);
        eprintln!(
            "[{}] {} {} ({} ms)",
            driver.name(),
            if result.is_ok() { "ok  " } else { "FAIL" },
            script.name,
            started.elapsed().as_millis()
        );
        ran += 1;
        if let Err(f) = result {
            failures.push(f);
        }
    }
    assert!(ran > 0, "no script ran");
    if !failures.is_empty() {
        let report: Vec<String> = failures.iter().map(|f| f.to_string()).collect();
        panic!(
            "{} of {ran} scripts failed with the {} driver ({skipped} skipped):\n\n{}",
            failures.len(),
            driver.name(),
            report.join("\n")
        );
    }
}

/// The POP3 listener a script describes; `auth_failure_delay` is short for real-time
/// drivers so failed logins do not slow the suite.
pub fn listener_for(
    config: &ScriptConfig,
    pki: &TestPki,
    auth_failure_delay: Duration,
) -> Pop3Listener {
    let mut limits = Pop3Limits::default();
    if let Some(n) = config.max_bad_commands {
        limits.max_bad_commands = n;
    }
    if let Some(n) = config.max_auth_failures {
        limits.max_auth_failures = n;
    }
    let pop3 = Pop3Config {
        hostname: config.hostname.clone(),
        limits,
        auth_failure_delay,
        ..Pop3Config::default()
    };
    Pop3Listener {
        config: Arc::new(pop3),
        tls: (config.starttls || config.implicit_tls).then(|| pki.server.clone()),
        implicit_tls: config.implicit_tls,
        plaintext_auth: match config.plaintext_auth {
            script::PlaintextSetting::Never => PlaintextAuth::Never,
            script::PlaintextSetting::Trusted => PlaintextAuth::Trusted(Vec::new()),
            script::PlaintextSetting::Always => PlaintextAuth::Always,
        },
    }
}
