//! Outbound delivery end to end: `tidegate serve` processes with `[relay]`, a real
//! receiving SMTP server (the sink) as smarthost, submission over real sockets, and the
//! queue, bounces and `ctl queue` as users and operators see them.

mod sink;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use sink::Sink;
use support::{Node, free_port, local, tidegate, write};

/// A server with `[relay]` sending to `smarthost`, and its ports.
struct Server {
    dir: tempfile::TempDir,
    config: PathBuf,
    smtp: u16,
    submission: u16,
}

impl Server {
    fn new(smarthost: u16, extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (smtp, submission) = (free_port(), free_port());
        // Tiny retry times unless the test sets its own.
        let retry = if extra.contains("retry_min_secs") {
            ""
        } else {
            "retry_min_secs = 1\nretry_max_secs = 1\n"
        };
        write(
            dir.path(),
            "users",
            "alice@local.test {PLAIN}secret\nbob@local.test {PLAIN}bobpw\n",
        );
        let config = write(
            dir.path(),
            "tidegate.toml",
            &format!(
                "hostname = \"mx.local.test\"\n\
                 [storage]\nmailbox_path = \"mail\"\nworkarea = \"work\"\n\
                 [users]\nfile = \"users\"\n\
                 [smtp]\nlisten = [\"127.0.0.1:{smtp}\"]\nsubmission = [\"127.0.0.1:{submission}\"]\n\
                 [relay]\nsmarthost = \"127.0.0.1:{smarthost}\"\ntls = \"none\"\n{retry}{extra}"
            ),
        );
        Server {
            dir,
            config,
            smtp,
            submission,
        }
    }

    /// Starts the server and waits until its control socket answers too (the SMTP
    /// ports accept connections as soon as they are bound, a moment earlier).
    fn start(&self) -> Node {
        let node = Node::start(&self.config, local(self.submission));
        let socket = self.dir.path().join("work/control.sock");
        wait_until("the control socket", 20, || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        node
    }

    fn ctl(&self, args: &[&str]) -> String {
        let out = tidegate()
            .arg("ctl")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn inbox(&self, user: &str) -> Vec<String> {
        let new = self
            .dir
            .path()
            .join("mail/local.test")
            .join(user)
            .join("new");
        match std::fs::read_dir(new) {
            Ok(entries) => entries
                .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn queue_dir(&self) -> PathBuf {
        self.dir.path().join("work/queue")
    }
}

/// An SMTP client: sends one command (or data) and reads one whole reply.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(local(port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut client = Client {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        };
        assert!(client.read().starts_with("220 "));
        client
    }

    fn read(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return all;
            }
        }
    }

    fn send(&mut self, text: &str) -> String {
        self.writer.write_all(text.as_bytes()).unwrap();
        self.read()
    }

    /// Logs in on submission.
    fn login(port: u16, user: &str, password: &str) -> Client {
        let mut c = Client::connect(port);
        c.send("EHLO client.test\r\n");
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        assert_eq!(
            c.send(&format!("AUTH PLAIN {token}\r\n")),
            "235 2.7.0 Authentication successful\r\n"
        );
        c
    }

    /// One whole transaction; returns the final reply.
    fn mail(&mut self, from: &str, to: &[&str], message: &str) -> String {
        assert!(
            self.send(&format!("MAIL FROM:<{from}>\r\n"))
                .starts_with("250")
        );
        for rcpt in to {
            let reply = self.send(&format!("RCPT TO:<{rcpt}>\r\n"));
            assert!(reply.starts_with("250"), "{rcpt}: {reply}");
        }
        assert!(self.send("DATA\r\n").starts_with("354"));
        self.send(&format!("{message}.\r\n"))
    }
}

fn message(subject: &str) -> String {
    format!(
        "From: Alice <alice@local.test>\r\nTo: <friend@remote.test>\r\nSubject: {subject}\r\n\r\nHello from the queue.\r\n..a stuffed line\r\n"
    )
}

fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn queue_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn relaying_is_refused_on_the_inbound_port_and_for_a_foreign_sender() {
    let sink = Sink::start();
    let server = Server::new(sink.addr.port(), "");
    let _node = server.start();
    let mut inbound = Client::connect(server.smtp);
    inbound.send("EHLO client.test\r\n");
    assert!(
        inbound
            .send("MAIL FROM:<x@remote.test>\r\n")
            .starts_with("250")
    );
    assert_eq!(
        inbound.send("RCPT TO:<friend@remote.test>\r\n"),
        "550 5.7.1 <friend@remote.test>: Relaying denied\r\n"
    );
    let mut sub = Client::login(server.submission, "alice@local.test", "secret");
    assert_eq!(
        sub.send("MAIL FROM:<bob@local.test>\r\n"),
        "553 5.7.1 Sender address not owned by the authenticated user\r\n"
    );
    assert_eq!(
        sub.send("MAIL FROM:<>\r\n"),
        "553 5.7.1 The null sender is not allowed on submission\r\n"
    );
    // Without [relay], submission keeps refusing remote recipients.
    let plain = tempfile::tempdir().unwrap();
    let port = free_port();
    write(plain.path(), "users", "alice@local.test {PLAIN}secret\n");
    let config = write(
        plain.path(),
        "t.toml",
        &format!(
            "[storage]\nmailbox_path = \"mail\"\nworkarea = \"work\"\n[users]\nfile = \"users\"\n\
             [smtp]\nsubmission = [\"127.0.0.1:{port}\"]\n"
        ),
    );
    let _plain_node = Node::start(&config, local(port));
    let mut c = Client::login(port, "alice@local.test", "secret");
    assert!(
        c.send("MAIL FROM:<bob@elsewhere.test>\r\n")
            .starts_with("250")
    );
    assert_eq!(
        c.send("RCPT TO:<friend@remote.test>\r\n"),
        "554 5.7.1 <friend@remote.test>: outbound delivery is not configured\r\n"
    );
    assert!(sink.received().is_empty());
}

#[test]
fn submission_to_an_outside_address_reaches_the_smarthost_and_local_copies_stay_local() {
    let sink = Sink::start();
    let server = Server::new(sink.addr.port(), "");
    let node = server.start();
    let mut c = Client::login(server.submission, "alice@local.test", "secret");
    let reply = c.mail(
        "alice@local.test",
        &["friend@remote.test", "bob@local.test", "other@far.test"],
        &message("mixed"),
    );
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let got = sink.wait_for(2, 20);
    let mut to: Vec<Vec<String>> = got.iter().map(|r| r.recipients.clone()).collect();
    to.sort();
    assert_eq!(
        to,
        vec![
            vec!["friend@remote.test".to_owned()],
            vec!["other@far.test".to_owned()]
        ]
    );
    for r in &got {
        assert_eq!(r.sender, "alice@local.test");
        let text = String::from_utf8(r.data.clone()).unwrap();
        assert!(text.starts_with("Received: from client.test"), "{text}");
        assert!(!text.contains("Return-Path:"), "{text}");
        assert!(
            // Sent dot-stuffed, stored unstuffed, stuffed again by the client, unstuffed
            // by the sink.
            text.ends_with("Subject: mixed\r\n\r\nHello from the queue.\r\n.a stuffed line\r\n"),
            "{text:?}"
        );
    }
    let bob = server.inbox("bob");
    assert_eq!(bob.len(), 1);
    assert!(bob[0].starts_with("Return-Path: <alice@local.test>\r\n"));
    wait_until("an empty queue", 10, || {
        queue_files(&server.queue_dir()) == 0
    });
    assert!(node.log_contains("delivered to <friend@remote.test>"));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sink.received().len(), 2, "each copy exactly once");
}

#[test]
fn a_temporary_failure_is_retried_and_then_delivered_exactly_once() {
    let sink = Sink::start();
    sink.answer_once("friend@remote.test", "451 4.2.1 mailbox busy, try later");
    sink.answer_once("friend@remote.test", "452 4.2.2 still busy");
    let server = Server::new(sink.addr.port(), "");
    let node = server.start();
    let mut c = Client::login(server.submission, "alice@local.test", "secret");
    assert!(
        c.mail(
            "alice@local.test",
            &["friend@remote.test"],
            &message("retry")
        )
        .starts_with("250")
    );
    let got = sink.wait_for(1, 30);
    assert_eq!(got[0].recipients, vec!["friend@remote.test"]);
    assert!(node.log_contains("deferred (attempt 1"));
    assert!(node.log_contains("deferred (attempt 2"));
    wait_until("an empty queue", 10, || {
        queue_files(&server.queue_dir()) == 0
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(sink.received().len(), 1, "delivered exactly once");
    assert!(server.inbox("alice").is_empty(), "no bounce, no warning");
}

#[test]
fn a_permanent_failure_is_bounced_with_a_dsn_to_the_local_sender() {
    let sink = Sink::start();
    sink.answer_always(
        "nobody@remote.test",
        "550 5.1.1 <nobody@remote.test>: no such user here",
    );
    let server = Server::new(sink.addr.port(), "");
    let _node = server.start();
    let mut c = Client::login(server.submission, "alice@local.test", "secret");
    assert!(
        c.mail(
            "alice@local.test",
            &["nobody@remote.test", "friend@remote.test"],
            &message("doomed")
        )
        .starts_with("250")
    );
    let got = sink.wait_for(1, 20);
    assert_eq!(got[0].recipients, vec!["friend@remote.test"]);
    wait_until("a bounce in alice's inbox", 20, || {
        !server.inbox("alice").is_empty()
    });
    let bounce = server.inbox("alice").remove(0);
    assert!(bounce.starts_with("Return-Path: <>\r\n"), "{bounce}");
    assert!(bounce.contains("From: Mail Delivery System <MAILER-DAEMON@mx.local.test>\r\n"));
    assert!(bounce.contains("Content-Type: multipart/report; report-type=delivery-status;"));
    assert!(
        bounce.contains(
            "Final-Recipient: rfc822; nobody@remote.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 <nobody@remote.test>: no such user here\r\n"
        ),
        "{bounce}"
    );
    assert!(!bounce.contains("Final-Recipient: rfc822; friend@remote.test"));
    assert!(bounce.contains("Content-Type: text/rfc822-headers\r\n\r\nReceived: "));
    assert!(bounce.contains("Subject: doomed\r\n"));
    assert!(!bounce.contains("Hello from the queue."));
    wait_until("an empty queue", 10, || {
        queue_files(&server.queue_dir()) == 0
    });
}

#[test]
fn a_restart_with_a_full_queue_delivers_everything_exactly_once() {
    let sink_port = free_port();
    let server = Server::new(sink_port, "retry_min_secs = 3600\nretry_max_secs = 3600\n");
    let mut node = server.start();
    let mut c = Client::login(server.submission, "alice@local.test", "secret");
    for n in 0..5 {
        let to = format!("friend{n}@remote.test");
        assert!(
            c.mail(
                "alice@local.test",
                &[&to],
                &message(&format!("restart {n}"))
            )
            .starts_with("250")
        );
    }
    drop(c);
    // The sink is down: every message is deferred for an hour.
    wait_until("five deferred messages", 20, || {
        server
            .ctl(&["queue", "list"])
            .matches(" pending attempts=1")
            .count()
            == 5
    });
    let listed = server.ctl(&["queue", "list"]);
    assert_eq!(listed.matches(" pending attempts=").count(), 5, "{listed}");
    assert!(server.ctl(&["status"]).contains("queue_size 5\n"));
    // Stop, bring the sink up, start again, flush.
    unsafe { libc::kill(node.pid() as i32, libc::SIGTERM) };
    let (status, _) = node.wait();
    assert!(status.success());
    assert_eq!(queue_files(&server.queue_dir()), 10);
    let sink = Sink::start_at(sink_port);
    let _node = server.start();
    assert!(server.ctl(&["status"]).contains("queue_size 5\n"));
    assert!(
        server
            .ctl(&["queue", "flush"])
            .contains("5 messages due now")
    );
    let got = sink.wait_for(5, 30);
    wait_until("an empty queue", 10, || {
        queue_files(&server.queue_dir()) == 0
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut subjects: Vec<String> = sink
        .received()
        .iter()
        .map(|r| {
            let text = String::from_utf8_lossy(&r.data).to_string();
            text.lines()
                .find(|l| l.starts_with("Subject: "))
                .unwrap()
                .to_owned()
        })
        .collect();
    subjects.sort();
    assert_eq!(got.len(), 5);
    assert_eq!(
        subjects,
        (0..5)
            .map(|n| format!("Subject: restart {n}"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn ctl_queue_lists_and_deletes() {
    let server = Server::new(
        free_port(),
        "retry_min_secs = 3600\nretry_max_secs = 3600\n",
    );
    let node = server.start();
    let mut c = Client::login(server.submission, "alice@local.test", "secret");
    assert!(
        c.mail("alice@local.test", &["friend@remote.test"], &message("ctl"))
            .starts_with("250")
    );
    assert!(node.log_contains("deferred (attempt 1"));
    wait_until("the attempt in the listing", 10, || {
        server.ctl(&["queue", "list"]).contains("attempts=1")
    });
    let listed = server.ctl(&["queue", "list"]);
    let id = listed.split_whitespace().next().unwrap().to_owned();
    assert!(listed.contains(" from=alice@local.test next="), "{listed}");
    assert!(
        listed.contains("  friend@remote.test pending attempts=1 last="),
        "{listed}"
    );
    assert!(
        server
            .ctl(&["queue", "delete", &id])
            .contains(&format!("deleted {id}"))
    );
    assert_eq!(server.ctl(&["queue", "list"]), "");
    assert!(server.ctl(&["status"]).contains("queue_size 0\n"));
    assert_eq!(queue_files(&server.queue_dir()), 0);
    let out = tidegate()
        .args(["ctl", "queue", "delete", "nope", "--config"])
        .arg(&server.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no queued message nope"));
    // [relay] settings are taken at start: a reload that changes them is refused.
    let text = std::fs::read_to_string(&server.config).unwrap();
    std::fs::write(
        &server.config,
        text.replace("retry_min_secs = 3600", "retry_min_secs = 60"),
    )
    .unwrap();
    let out = tidegate()
        .args(["ctl", "reload", "--config"])
        .arg(&server.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[relay] changed"));
}
