//! The POP3, SMTP, submission and LMTP conformance scripts against the mio shell over
//! loopback, plus the shell-level bad-input checks (a client that never reads, a
//! disconnect mid-RETR, a 10 MiB line, the connection cap).

use tidegate_conformance::{ShellDriver, assert_suite, checks};

fn driver() -> ShellDriver {
    ShellDriver::new("mio", tidegate_shell_mio::serve)
}

#[test]
fn pop3_scripts() {
    assert_suite(&driver(), "pop3");
}

#[test]
fn smtp_scripts() {
    assert_suite(&driver(), "smtp");
}

#[test]
fn submission_scripts() {
    assert_suite(&driver(), "submission");
}

#[test]
fn lmtp_scripts() {
    assert_suite(&driver(), "lmtp");
}

#[test]
fn imap_scripts() {
    assert_suite(&driver(), "imap");
}

#[test]
fn client_that_never_reads_is_bounded() {
    checks::shell_never_reading_client(&driver()).unwrap();
}

#[test]
fn disconnect_mid_retr_keeps_serving() {
    checks::shell_disconnect_mid_retr(&driver()).unwrap();
}

#[test]
fn ten_mib_line_is_discarded() {
    checks::shell_ten_mib_line(&driver()).unwrap();
}

#[test]
fn connection_cap_answers_busy() {
    checks::shell_connection_cap(&driver()).unwrap();
}
