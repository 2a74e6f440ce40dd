//! Python `smtplib` against both shells, on a real maildir and users file (see
//! `support`; `curl` and `swaks` are in `real_smtp_tools.rs`): plain, STARTTLS with AUTH
//! PLAIN and LOGIN on submission, SMTPUTF8, LMTP with per-recipient replies
//! (`clients/smtplib_client.py`). Every delivery is read back over POP3 RETR and compared
//! byte for byte after the trace fields: dot-led lines, 8-bit content and a 20 MiB
//! message.
//!
//! Without `python3` the tests say so loudly and pass; CI installs it.

mod support;

use std::process::Command;

use support::{M1, PASSWORD, SmtpEnv, check_delivered, client, have, lines, run, values};
use tidegate_conformance::ShellDriver;
use tidegate_conformance::script::big_message;

fn mio() -> ShellDriver {
    ShellDriver::new("mio", tidegate_shell_mio::serve)
}

fn smol() -> ShellDriver {
    ShellDriver::new("smol", tidegate_shell_smol::serve)
}

/// Runs `smtplib_client.py COMMAND PORT FROM TO FILE ARGS...` on 127.0.0.1.
fn smtplib(
    command: &str,
    port: u16,
    from: &str,
    to: &str,
    file: &str,
    args: &[&str],
) -> Vec<(String, String)> {
    let script = client("smtplib_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args([command, "127.0.0.1", &port.to_string(), from, to, file])
        .args(args);
    lines(&run(&mut cmd))
}

fn one<'a>(out: &'a [(String, String)], key: &str) -> &'a str {
    match values(out, key).as_slice() {
        [v] => v,
        other => panic!("expected one {key:?} line, got {other:?} in {out:?}"),
    }
}

fn check_smtplib(driver: ShellDriver) {
    if !have("python3") {
        return;
    }
    let env = SmtpEnv::start(&driver);
    let m1 = env.file("m1.eml", M1);
    let m1 = m1.to_str().expect("UTF-8 path");
    let cafile = env.cafile.to_str().expect("UTF-8 path");

    // Inbound: no AUTH offered; plain send with BODY=8BITMIME.
    let out = smtplib(
        "send",
        env.smtp.port(),
        "alice@remote.test",
        "bob@example.test",
        m1,
        &["--8bitmime"],
    );
    let ehlo = one(&out, "ehlo");
    for ext in [
        "pipelining",
        "size",
        "8bitmime",
        "enhancedstatuscodes",
        "chunking",
        "smtputf8",
        "starttls",
    ] {
        assert!(
            ehlo.split(' ').any(|e| e == ext),
            "EHLO lacks {ext}: {ehlo}"
        );
    }
    assert!(
        !ehlo.contains("auth"),
        "AUTH offered on the inbound port: {ehlo}"
    );
    assert!(
        one(&out, "data").starts_with("* 250 2.0.0 Ok: queued as "),
        "{out:?}"
    );
    check_delivered(
        &env.retr("bob@example.test", 1),
        "alice@remote.test",
        "ESMTP",
        M1,
    );

    // Submission: STARTTLS, then AUTH PLAIN; a foreign recipient is refused, bob gets it.
    let tls = [
        "--starttls",
        cafile,
        "--auth",
        "PLAIN",
        "alice@example.test",
        PASSWORD,
    ];
    let out = smtplib(
        "send",
        env.submission.port(),
        "alice@example.test",
        "x@elsewhere.test,bob@example.test",
        m1,
        &tls,
    );
    assert_eq!(one(&out, "starttls"), "220 2.0.0 Ready to start TLS");
    let ehlo = values(&out, "ehlo");
    assert!(
        !ehlo[0].contains("auth") && ehlo[0].contains("starttls"),
        "{ehlo:?}"
    );
    assert!(
        ehlo[1].contains("auth") && !ehlo[1].contains("starttls"),
        "{ehlo:?}"
    );
    assert_eq!(one(&out, "auth"), "235 2.7.0 Authentication successful");
    assert_eq!(
        values(&out, "rcpt"),
        [
            "x@elsewhere.test 554 5.7.1 <x@elsewhere.test>: outbound delivery is not configured",
            "bob@example.test 250 2.1.5 Recipient ok"
        ]
    );
    check_delivered(
        &env.retr("bob@example.test", 2),
        "alice@example.test",
        "ESMTPSA",
        M1,
    );

    // AUTH LOGIN works; a wrong password gets 535.
    let login = [
        "--starttls",
        cafile,
        "--auth",
        "LOGIN",
        "alice@example.test",
        PASSWORD,
    ];
    let out = smtplib(
        "send",
        env.submission.port(),
        "alice@example.test",
        "bob@example.test",
        m1,
        &login,
    );
    assert_eq!(one(&out, "auth"), "235 2.7.0 Authentication successful");
    check_delivered(
        &env.retr("bob@example.test", 3),
        "alice@example.test",
        "ESMTPSA",
        M1,
    );
    let wrong = [
        "--starttls",
        cafile,
        "--auth",
        "PLAIN",
        "alice@example.test",
        "wrong",
    ];
    let out = smtplib(
        "send",
        env.submission.port(),
        "alice@example.test",
        "bob@example.test",
        m1,
        &wrong,
    );
    assert_eq!(
        one(&out, "auth"),
        "535 5.7.8 Authentication credentials invalid"
    );
    // Without AUTH, MAIL is refused.
    let out = smtplib(
        "send",
        env.submission.port(),
        "alice@example.test",
        "bob@example.test",
        m1,
        &[],
    );
    assert_eq!(one(&out, "mail"), "530 5.7.0 Authentication required");
    assert_eq!(env.count("bob@example.test"), 3);

    // SMTPUTF8: a UTF-8 sender and local part, UTF-8 headers.
    let utf8 = "From: Z\u{fc}rich <z\u{fc}rich@remote.test>\r\nTo: j\u{f6}rg@example.test\r\n\
                Subject: Gr\u{fc}\u{df}e \u{2603}\r\n\r\n\u{65e5}\u{672c}\u{8a9e}\r\n";
    let m2 = env.file("m2.eml", utf8.as_bytes());
    let out = smtplib(
        "send",
        env.smtp.port(),
        "z\u{fc}rich@remote.test",
        "j\u{f6}rg@example.test",
        m2.to_str().expect("path"),
        &["--smtputf8"],
    );
    assert!(one(&out, "data").starts_with("* 250 "), "{out:?}");
    let stored = env.retr("j\u{f6}rg@example.test", 1);
    check_delivered(&stored, "z\u{fc}rich@remote.test", "*", utf8.as_bytes());
    env.stop();
}

fn check_lmtp(driver: ShellDriver) {
    if !have("python3") {
        return;
    }
    let env = SmtpEnv::start(&driver);
    // 700 octets: carol (quota=600) has room at RCPT time, not for the message.
    let mut message = b"Subject: lmtp\r\n\r\n".to_vec();
    while message.len() < 700 {
        message.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    let path = env.file("lmtp.eml", &message);
    let to = "bob@example.test,nobody@example.test,carol@example.test,alice@example.test";
    let out = smtplib(
        "lmtp",
        env.lmtp.port(),
        "sender@remote.test",
        to,
        path.to_str().expect("path"),
        &[],
    );
    assert_eq!(
        values(&out, "rcpt")[1],
        "nobody@example.test 550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown"
    );
    assert_eq!(
        values(&out, "data"),
        [
            "bob@example.test 250 2.0.0 <bob@example.test> delivered",
            "carol@example.test 552 5.2.2 <carol@example.test> Mailbox full",
            "alice@example.test 250 2.0.0 <alice@example.test> delivered",
        ]
    );
    assert_eq!(one(&out, "quit"), "221");
    for user in ["bob@example.test", "alice@example.test"] {
        let stored = env.retr(user, 1);
        check_delivered(&stored, "sender@remote.test", "LMTP", &message);
    }
    assert_eq!(env.count("carol@example.test"), 0);
    env.stop();
}

/// 20 MiB with dot-led lines and 8-bit lines, sent with smtplib, read back over POP3.
fn check_twenty_mib(driver: ShellDriver) {
    if !have("python3") {
        return;
    }
    let env = SmtpEnv::start(&driver);
    let mut message = big_message(20 * 1024 * 1024);
    message.extend_from_slice(b".\r\n..\r\n8-bit \xc3\xa9\xff\r\n");
    let path = env.file("big.eml", &message);
    let out = smtplib(
        "send",
        env.smtp.port(),
        "alice@remote.test",
        "bob@example.test",
        path.to_str().expect("path"),
        &["--8bitmime"],
    );
    assert!(
        one(&out, "data").starts_with("* 250 2.0.0 Ok: queued as "),
        "{out:?}"
    );
    check_delivered(
        &env.retr("bob@example.test", 1),
        "alice@remote.test",
        "ESMTP",
        &message,
    );
    env.stop();
}

#[test]
fn smtplib_against_mio() {
    check_smtplib(mio());
}

#[test]
fn smtplib_against_smol() {
    check_smtplib(smol());
}

#[test]
fn lmtp_per_recipient_against_mio() {
    check_lmtp(mio());
}

#[test]
fn lmtp_per_recipient_against_smol() {
    check_lmtp(smol());
}

#[test]
fn twenty_mib_round_trip_against_mio() {
    check_twenty_mib(mio());
}

#[test]
fn twenty_mib_round_trip_against_smol() {
    check_twenty_mib(smol());
}
