//! The POP3, SMTP, submission and LMTP conformance scripts against the sans-IO core
//! (whole, byte-by-byte and randomly split input), plus the core-level bad-input checks.

use tidegate_conformance::{CoreDriver, assert_suite, checks};

#[test]
fn pop3_scripts() {
    assert_suite(&CoreDriver::new(), "pop3");
}

#[test]
fn smtp_scripts() {
    assert_suite(&CoreDriver::new(), "smtp");
}

#[test]
fn submission_scripts() {
    assert_suite(&CoreDriver::new(), "submission");
}

#[test]
fn lmtp_scripts() {
    assert_suite(&CoreDriver::new(), "lmtp");
}

#[test]
fn imap_scripts() {
    assert_suite(&CoreDriver::new(), "imap");
}

#[test]
fn client_that_never_reads_is_bounded() {
    checks::core_never_reading_client().unwrap();
}

#[test]
fn disconnect_mid_retr_closes_without_update() {
    checks::core_disconnect_mid_retr().unwrap();
}

#[test]
fn autologout_mid_retr_does_not_corrupt_the_message() {
    checks::core_autologout_mid_retr().unwrap();
}

/// Each script's first connection, recorded as a `pop3_session` fuzz script (what
/// `TIDEGATE_WRITE_SEEDS=1` writes), replays through the fuzz harness with all its
/// driving-contract invariants holding.
#[test]
fn recorded_seeds_pass_the_fuzz_harness() {
    let driver = CoreDriver::new();
    let scripts = tidegate_conformance::load_scripts("pop3").expect("scripts parse");
    let epoch = std::time::Instant::now();
    let mut failed = Vec::new();
    for script in &scripts {
        // A script that fails (a core bug) is reported by `pop3_scripts`, not here.
        let Ok(seed) = driver.seed(script) else {
            continue;
        };
        let run = std::panic::catch_unwind(|| tidegate_core::fuzzing::pop3_session(epoch, &seed));
        if run.is_err() {
            failed.push(format!(
                "{}: {:?}",
                script.name,
                String::from_utf8_lossy(&seed)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "harness invariants broken:\n{}",
        failed.join("\n")
    );
}
