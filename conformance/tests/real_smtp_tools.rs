//! `curl smtp://` and `swaks` against both shells, on a real maildir and users file (see
//! `support`): plain delivery on the inbound port, and STARTTLS plus AUTH on submission
//! (`curl --ssl-reqd -u`, `swaks -tls --auth PLAIN`). Each delivery is read back over
//! POP3 RETR and compared byte for byte after the trace fields.
//!
//! A missing `curl` or `swaks` is reported loudly and its test passes; CI installs both.

mod support;

use std::process::Command;

use support::{M1, PASSWORD, SmtpEnv, check_delivered, have, run};
use tidegate_conformance::ShellDriver;

fn mio() -> ShellDriver {
    ShellDriver::new("mio", tidegate_shell_mio::serve)
}

fn smol() -> ShellDriver {
    ShellDriver::new("smol", tidegate_shell_smol::serve)
}

fn check_curl(driver: ShellDriver) {
    if !have("curl") {
        return;
    }
    let env = SmtpEnv::start(&driver);
    let m1 = env.file("m1.eml", M1);
    let url = |port: u16| format!("smtp://127.0.0.1:{port}/client.test");
    let base = [
        "-s",
        "-S",
        "--max-time",
        "20",
        "--mail-from",
        "alice@example.test",
    ];
    run(Command::new("curl")
        .args(base)
        .args(["--mail-rcpt", "bob@example.test", "--upload-file"])
        .arg(&m1)
        .arg(url(env.smtp.port())));
    check_delivered(
        &env.retr("bob@example.test", 1),
        "alice@example.test",
        "ESMTP",
        M1,
    );
    // Submission: STARTTLS required (--ssl-reqd), then AUTH.
    let login = format!("alice@example.test:{PASSWORD}");
    run(Command::new("curl")
        .args(base)
        .args(["--ssl-reqd", "--cacert"])
        .arg(&env.cafile)
        .args([
            "-u",
            &login,
            "--mail-rcpt",
            "bob@example.test",
            "--upload-file",
        ])
        .arg(&m1)
        .arg(url(env.submission.port()).replace("127.0.0.1", "localhost")));
    check_delivered(
        &env.retr("bob@example.test", 2),
        "alice@example.test",
        "ESMTPSA",
        M1,
    );
    // A refused recipient makes curl fail.
    let out = Command::new("curl")
        .args(base)
        .args(["--mail-rcpt", "nobody@example.test", "--upload-file"])
        .arg(&m1)
        .arg(url(env.smtp.port()))
        .output()
        .expect("curl runs");
    assert!(!out.status.success(), "curl accepted an unknown recipient");
    assert_eq!(env.count("bob@example.test"), 2);
    env.stop();
}

fn check_swaks(driver: ShellDriver) {
    if !have("swaks") {
        return;
    }
    let env = SmtpEnv::start(&driver);
    let m1 = env.file("m1.eml", M1);
    let data = format!("@{}", m1.display());
    let swaks = |port: u16, extra: &[&str]| {
        let mut cmd = Command::new("swaks");
        cmd.args(["--server", "127.0.0.1", "--port", &port.to_string()])
            .args(["--from", "alice@example.test", "--to", "bob@example.test"])
            .args(["--helo", "client.test", "--data", &data, "--silent", "2"])
            .args(extra);
        run(&mut cmd)
    };
    // swaks always ends the data with CRLF "." CRLF after the file, so the message gains
    // an empty last line (checked against a plain socket: it is what swaks sends).
    let sent = [M1, b"\r\n"].concat();
    swaks(env.smtp.port(), &[]);
    check_delivered(
        &env.retr("bob@example.test", 1),
        "alice@example.test",
        "ESMTP",
        &sent,
    );
    let auth = [
        "-tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@example.test",
        "--auth-password",
        PASSWORD,
    ];
    swaks(env.submission.port(), &auth);
    check_delivered(
        &env.retr("bob@example.test", 2),
        "alice@example.test",
        "ESMTPSA",
        &sent,
    );
    env.stop();
}

#[test]
fn curl_against_mio() {
    check_curl(mio());
}

#[test]
fn curl_against_smol() {
    check_curl(smol());
}

#[test]
fn swaks_against_mio() {
    check_swaks(mio());
}

#[test]
fn swaks_against_smol() {
    check_swaks(smol());
}
