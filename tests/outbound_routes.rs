//! Outbound routing end to end, after the queue: MX lookups through a DNS responder on
//! loopback (preference and fallback), STARTTLS required of a server that does not
//! offer it (the message stays queued), and DKIM signatures a verifier accepts.

mod dns;
mod sink;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use dns::Record;
use sink::Sink;
use support::{Node, free_port, local, tidegate, write};

/// A server whose `[relay]` section is `relay`; returns it with its submission port.
fn server(dir: &Path, relay: &str) -> (PathBuf, u16) {
    let submission = free_port();
    write(dir, "users", "alice@local.test {PLAIN}secret\n");
    let config = write(
        dir,
        "tidegate.toml",
        &format!(
            "hostname = \"mx.local.test\"\n\
             [storage]\nmailbox_path = \"mail\"\nworkarea = \"work\"\n\
             [users]\nfile = \"users\"\n\
             [smtp]\nsubmission = [\"127.0.0.1:{submission}\"]\n\
             [relay]\nretry_min_secs = 1\nretry_max_secs = 1\n{relay}"
        ),
    );
    (config, submission)
}

/// Submits one message as alice; returns the final reply.
fn submit(port: u16, to: &str, message: &str) -> String {
    let stream = TcpStream::connect(local(port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut read = || {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return all;
            }
        }
    };
    read();
    let token = base64::engine::general_purpose::STANDARD.encode("\0alice@local.test\0secret");
    let mut last = String::new();
    for command in [
        "EHLO client.test\r\n".to_owned(),
        format!("AUTH PLAIN {token}\r\n"),
        "MAIL FROM:<alice@local.test>\r\n".to_owned(),
        format!("RCPT TO:<{to}>\r\n"),
        "DATA\r\n".to_owned(),
        format!("{message}.\r\n"),
    ] {
        writer.write_all(command.as_bytes()).unwrap();
        last = read();
        assert!(
            last.starts_with('2') || last.starts_with('3'),
            "{command:?}: {last}"
        );
    }
    last
}

const MESSAGE: &str = "From: Alice <alice@local.test>\r\nTo: <friend@remote.test>\r\n\
    Subject: routed\r\nDate: Sun, 29 Nov 2026 12:00:00 +0000\r\nMessage-ID: <r1@local.test>\r\n\r\n\
    Hello over MX.\r\n";

#[test]
fn mx_hosts_are_tried_by_preference_with_fallback() {
    let port = free_port();
    // Preference 5 points at an address where nothing listens: the runner falls back
    // to preference 10, never reaching preference 20.
    let best = Sink::start_on_addr(SocketAddr::from(([127, 0, 0, 2], port)));
    let worst = Sink::start_on_addr(SocketAddr::from(([127, 0, 0, 3], port)));
    let nameserver = dns::start(vec![
        Record::Mx("remote.test", 20, "mx2.remote.test"),
        Record::Mx("remote.test", 5, "dead.remote.test"),
        Record::Mx("remote.test", 10, "mx1.remote.test"),
        Record::A("dead.remote.test", Ipv4Addr::new(127, 0, 0, 4)),
        Record::A("mx1.remote.test", Ipv4Addr::new(127, 0, 0, 2)),
        Record::A("mx2.remote.test", Ipv4Addr::new(127, 0, 0, 3)),
        Record::Mx("null.test", 0, "."),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (config, submission) = server(
        dir.path(),
        &format!("nameservers = [\"{nameserver}\"]\nmx_port = {port}\ntls = \"none\"\n"),
    );
    let _node = Node::start(&config, local(submission));
    assert!(submit(submission, "friend@remote.test", MESSAGE).starts_with("250"));
    let got = best.wait_for(1, 30);
    assert_eq!(got[0].recipients, vec!["friend@remote.test"]);
    assert!(String::from_utf8_lossy(&got[0].data).contains("Hello over MX."));
    assert!(worst.received().is_empty());
    // A null MX (RFC 7505) fails at once: alice gets a bounce.
    assert!(submit(submission, "someone@null.test", MESSAGE).starts_with("250"));
    let inbox = dir.path().join("mail/local.test/alice/new");
    wait_until("a bounce", 20, || {
        std::fs::read_dir(&inbox).is_ok_and(|mut d| d.next().is_some())
    });
    let bounce = std::fs::read_dir(&inbox)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bounce = std::fs::read_to_string(bounce).unwrap();
    assert!(
        bounce
            .contains("Final-Recipient: rfc822; someone@null.test\r\nAction: failed\r\nStatus: 5."),
        "{bounce}"
    );
}

#[test]
fn required_starttls_that_is_not_offered_keeps_the_message_queued() {
    let sink = Sink::start();
    let dir = tempfile::tempdir().unwrap();
    let (config, submission) = server(
        dir.path(),
        &format!(
            "smarthost = \"127.0.0.1:{}\"\ntls = \"required\"\n",
            sink.addr.port()
        ),
    );
    let node = Node::start(&config, local(submission));
    assert!(submit(submission, "friend@remote.test", MESSAGE).starts_with("250"));
    assert!(node.log_contains("deferred (attempt 2"));
    assert!(sink.received().is_empty());
    let out = tidegate()
        .args(["ctl", "queue", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("friend@remote.test pending attempts="),
        "{listed}"
    );
    assert!(listed.to_ascii_lowercase().contains("tls"), "{listed}");
}

#[test]
fn dkim_signed_mail_passes_a_verifier() {
    // .ci/run installs python3-dkim; a developer machine may lack it.
    let Some(python) = ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import dkim"])
            .output()
            .is_ok_and(|out| out.status.success())
    }) else {
        eprintln!("skipping: no python3 with the dkim module (python3-dkim)");
        return;
    };
    let sink = Sink::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("dkim.pem");
    let out = tidegate()
        .args([
            "dkim",
            "generate",
            "local.test",
            "--selector",
            "s1",
            "--key",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let record = printed
        .lines()
        .find(|l| l.contains("v=DKIM1"))
        .map(|l| {
            let start = l.find("v=DKIM1").unwrap();
            l[start..]
                .trim_end_matches('"')
                .replace("\" \"", "")
                .to_owned()
        })
        .expect("a TXT record");
    let (config, submission) = server(
        dir.path(),
        &format!(
            "smarthost = \"127.0.0.1:{}\"\ntls = \"none\"\n[[relay.dkim]]\ndomain = \"local.test\"\nselector = \"s1\"\nkey = \"dkim.pem\"\n",
            sink.addr.port()
        ),
    );
    let _node = Node::start(&config, local(submission));
    assert!(submit(submission, "friend@remote.test", MESSAGE).starts_with("250"));
    let got = sink.wait_for(1, 30);
    let text = String::from_utf8_lossy(&got[0].data).to_string();
    assert!(text.starts_with("DKIM-Signature: "), "{text}");
    let file = dir.path().join("received.eml");
    std::fs::write(&file, &got[0].data).unwrap();
    let verify = Path::new(env!("CARGO_MANIFEST_DIR")).join("store/tests/dkim/verify.py");
    let out = Command::new(python)
        .arg(verify)
        .arg(&file)
        .arg("s1._domainkey.local.test")
        .arg(&record)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "pass",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A tampered copy fails, so the check can fail.
    std::fs::write(&file, text.replace("Hello over MX.", "Hello over MX!")).unwrap();
    let out = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("store/tests/dkim/verify.py"))
        .arg(&file)
        .arg("s1._domainkey.local.test")
        .arg(&record)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "fail");
}

fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
