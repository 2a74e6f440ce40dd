//! # tidegate-conformance: one suite, four protocols, three drivers
//!
//! Scripted sessions in `scripts/<protocol>/*.txt` (format: [`script`]; `pop3`, `smtp`,
//! `submission`, `lmtp`) run unchanged against the sans-IO core ([`CoreDriver`]: virtual
//! time, an in-memory [`MemStore`], whole, byte-by-byte and randomly split input) and
//! against each runtime shell over loopback ([`ShellDriver`], given the shell's `serve`
//! function). Every driver serves one listener per [`Protocol`] from one store, so a
//! script can deliver over SMTP and read the message back over POP3.
//! `tests/real_clients.rs`, `tests/real_smtp.rs` and `tests/real_smtp_tools.rs` add real
//! third-party clients (Python `poplib` and `smtplib`, `curl`, `swaks`) against both
//! shells on a real maildir.
//!
//! ```no_run
//! use tidegate_conformance::{CoreDriver, assert_suite};
//! assert_suite(&CoreDriver::new(), "pop3");
//! assert_suite(&CoreDriver::new(), "smtp");
//! ```
//!
//! With `TIDEGATE_WRITE_SEEDS=1` the core driver also writes each POP3 script's first
//! connection to `fuzz/corpus/pop3_session/seed-conf-<script>`.

pub mod checks;
pub mod config;
pub mod core_conn;
pub mod core_driver;
pub mod interp;
pub mod listeners;
pub mod memstore;
pub mod pattern;
pub mod pki;
pub mod script;
pub mod seeds;
pub mod shell_driver;
pub mod step;
pub mod store_steps;
pub mod transcript;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use core_driver::CoreDriver;
pub use interp::Failure;
pub use listeners::{listener_for, smtp_listener_for};
pub use memstore::MemStore;
pub use pki::TestPki;
pub use script::{Protocol, Script, ScriptConfig};
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

/// Runs every script of `proto` (a directory of `scripts/`) with `driver` and panics
/// with every failure (file:line, message and transcript) if any script fails.
/// `TIDEGATE_SCRIPT=name` runs one script.
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
