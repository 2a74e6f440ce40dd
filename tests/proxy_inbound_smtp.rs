//! Inbound SMTP through a proxy front-end (issue 6 item 5): the front-end accepts the
//! transaction, queues the message for each recipient's back-end and relays it there
//! over LMTP. Three `tidegate serve` processes on their own 127.0.0.x addresses, real
//! sockets, real maildirs.
//!
//! Users: alice has `tohost=127.0.0.3` (back-end 2); bob has no `tohost` and lives on
//! `default_host = 127.0.0.2` (back-end 1); dave has `tohost=127.0.0.1`, the front-end
//! itself, which is also a back-end (its own LMTP listener). The front-end has no `[relay]`: its queue
//! exists because it is a front-end with an inbound SMTP listener. It connects to the
//! back-ends from 127.0.0.5, the only address they trust, which must begin each
//! connection with a PROXY v2 header (or, under `client_address = "xclient"`, names the
//! original SMTP client with XCLIENT instead).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{Node, tidegate};

const FRONT: &str = "127.0.0.1";
const BACK1: &str = "127.0.0.2";
const BACK2: &str = "127.0.0.3";
/// The front-end's address towards the back-ends: the one they trust, and from which
/// they require a PROXY header.
const SOURCE: &str = "127.0.0.5";

/// A port free on every address the test uses.
fn free_port() -> u16 {
    support::free_port_on(&[BACK1, BACK2])
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

struct Cluster {
    dir: tempfile::TempDir,
    smtp: u16,
    lmtp: u16,
    front: Option<Node>,
    back1: Option<Node>,
    back2: Option<Node>,
}

impl Cluster {
    /// Writes the configs and starts the front-end and the back-ends named.
    fn start(back1: bool, back2: bool) -> Cluster {
        Cluster::start_with(back1, back2, false)
    }

    /// Like [`Cluster::start`]; with `tls` the back-ends offer STARTTLS with one
    /// certificate for both their addresses and the front-end requires it, verified
    /// against that certificate (`backend_tls = "starttls"`, `backend_ca`).
    fn start_with(back1: bool, back2: bool, tls: bool) -> Cluster {
        Cluster::start_mode(back1, back2, tls, "proxy-v2")
    }

    /// Like [`Cluster::start_with`] with the front-end's `[proxy] client_address`; every
    /// mode but `proxy-v2` sends no PROXY header, so no node expects one.
    fn start_mode(back1: bool, back2: bool, tls: bool, client_address: &str) -> Cluster {
        let proxy_protocol = client_address == "proxy-v2";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("users"),
            "alice@example.com {PLAIN}alice-pw tohost=127.0.0.3\n\
             bob@example.com {PLAIN}bob-pw\n\
             dave@example.com {PLAIN}dave-pw tohost=127.0.0.1\n",
        )
        .unwrap();
        let (smtp, lmtp) = (free_port(), free_port());
        let (mut back_tls, mut front_tls) = (String::new(), String::new());
        if tls {
            let cert =
                rcgen::generate_simple_self_signed(vec![BACK1.into(), BACK2.into()]).unwrap();
            std::fs::write(dir.path().join("back.crt"), cert.cert.pem()).unwrap();
            std::fs::write(dir.path().join("back.key"), cert.key_pair.serialize_pem()).unwrap();
            back_tls = "[tls]\ncert = \"back.crt\"\nkey = \"back.key\"\n".into();
            front_tls = "backend_tls = \"starttls\"\nbackend_ca = \"back.crt\"\n".into();
        }
        for (name, ip) in [("back1", BACK1), ("back2", BACK2)] {
            std::fs::write(
                dir.path().join(format!("{name}.toml")),
                format!(
                    "hostname = \"{name}.test\"\n\
                     [storage]\nmailbox_path = \"{name}-mail\"\nworkarea = \"{name}-work\"\n\
                     [users]\nfile = \"users\"\n\
                     [lmtp]\nlisten = [\"{ip}:{lmtp}\"]\n\
                     [trust]\nnetworks = [\"{SOURCE}/32\"]\nproxy_protocol = {proxy_protocol}\n\
                     [server]\nallow_root = true\nshutdown_grace_secs = 1\n\
                     {back_tls}"
                ),
            )
            .unwrap();
        }
        std::fs::write(
            dir.path().join("front.toml"),
            format!(
                "hostname = \"front.test\"\n\
                 [storage]\nmailbox_path = \"front-mail\"\nworkarea = \"front-work\"\n\
                 [users]\nfile = \"users\"\n\
                 [smtp]\nlisten = [\"{FRONT}:{smtp}\"]\n\
                 [lmtp]\nlisten = [\"{FRONT}:{lmtp}\"]\n\
                 [trust]\nnetworks = [\"{SOURCE}/32\"]\nproxy_protocol = {proxy_protocol}\n\
                 [proxy]\ndefault_host = \"{BACK1}\"\n\
                 backend_ports = {{ lmtp = {lmtp} }}\nconnect_timeout_secs = 3\n\
                 source_addresses = [\"{SOURCE}\"]\nclient_address = \"{client_address}\"\n{front_tls}\
                 [server]\nallow_root = true\nshutdown_grace_secs = 1\n"
            ),
        )
        .unwrap();
        let mut cluster = Cluster {
            dir,
            smtp,
            lmtp,
            front: None,
            back1: None,
            back2: None,
        };
        if back1 {
            cluster.start_back(1);
        }
        if back2 {
            cluster.start_back(2);
        }
        cluster.front = Some(Node::start(&cluster.config("front"), addr(FRONT, smtp)));
        cluster
    }

    fn start_back(&mut self, n: u8) {
        let (name, ip) = if n == 1 {
            ("back1", BACK1)
        } else {
            ("back2", BACK2)
        };
        let node = Node::start(&self.config(name), addr(ip, self.lmtp));
        if n == 1 {
            self.back1 = Some(node);
        } else {
            self.back2 = Some(node);
        }
    }

    fn config(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.toml"))
    }

    fn ctl(&self, args: &[&str]) -> String {
        let out = tidegate()
            .arg("ctl")
            .args(args)
            .arg("--config")
            .arg(self.config("front"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The messages in `user`'s inbox on the node `name`, waiting up to 20 s for
    /// `count` of them.
    fn inbox(&self, name: &str, user: &str, count: usize) -> Vec<String> {
        let new = self
            .dir
            .path()
            .join(format!("{name}-mail/example.com/{user}/new"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = read_dir_texts(&new);
            if found.len() >= count || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        let node = |n: &Option<Node>| n.as_ref().map(Node::log).unwrap_or_default();
        format!(
            "front:\n{}\nback1:\n{}\nback2:\n{}",
            node(&self.front),
            node(&self.back1),
            node(&self.back2)
        )
    }
}

fn read_dir_texts(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect()
}

/// A raw SMTP client: one command, one reply (multi-line replies read whole).
struct Smtp {
    reader: BufReader<TcpStream>,
}

impl Smtp {
    fn connect(to: SocketAddr) -> Smtp {
        Smtp::over(TcpStream::connect(to).unwrap())
    }

    fn over(stream: TcpStream) -> Smtp {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut smtp = Smtp {
            reader: BufReader::new(stream),
        };
        let greeting = smtp.reply();
        assert!(greeting.starts_with("220 "), "{greeting}");
        smtp
    }

    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "connection closed after {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    fn ask(&mut self, command: &str) -> String {
        let stream = self.reader.get_mut();
        stream.write_all(command.as_bytes()).unwrap();
        stream.write_all(b"\r\n").unwrap();
        self.reply()
    }
}

const SENDER: &str = "carol@remote.example";

fn message(subject: &str) -> String {
    format!(
        "From: Carol <{SENDER}>\r\nTo: alice@example.com, bob@example.com\r\n\
         Subject: {subject}\r\nMessage-ID: <{subject}@remote.example>\r\n\r\n\
         Hello both,\r\n..a line that starts with a dot\r\nbye\r\n"
    )
}

/// The message as stored: the dot-stuffing undone.
fn stored_body() -> &'static str {
    "\r\n\r\nHello both,\r\n.a line that starts with a dot\r\nbye\r\n"
}

/// One transaction; returns the reply to the end of the data.
fn send(to: SocketAddr, recipients: &[(&str, &str)], subject: &str) -> String {
    send_over(Smtp::connect(to), recipients, subject)
}

fn send_over(mut smtp: Smtp, recipients: &[(&str, &str)], subject: &str) -> String {
    assert!(smtp.ask("EHLO client.remote.example").starts_with("250"));
    assert_eq!(
        smtp.ask(&format!("MAIL FROM:<{SENDER}>")),
        "250 2.1.0 Sender ok\r\n"
    );
    for (rcpt, expected) in recipients {
        let reply = smtp.ask(&format!("RCPT TO:<{rcpt}>"));
        assert!(reply.starts_with(expected), "RCPT {rcpt}: {reply}");
    }
    assert!(smtp.ask("DATA").starts_with("354"));
    let reply = smtp.ask(&format!("{}.", message(subject)));
    assert!(smtp.ask("QUIT").starts_with("221"));
    reply
}

/// Checks one stored copy: the front-end's message byte for byte after the trace
/// fields, the back-end's Return-Path and Received on top, the front-end's below.
fn check_copy(copy: &str, subject: &str, backend: &str) {
    check_copy_with(copy, subject, backend, "with LMTP");
}

fn check_copy_with(copy: &str, subject: &str, backend: &str, protocol: &str) {
    assert!(
        copy.starts_with(&format!(
            "Return-Path: <{SENDER}>\r\nReceived: from front.test"
        )),
        "{copy}"
    );
    let first_received = copy.split("\r\nReceived: ").nth(1).unwrap();
    assert!(
        first_received.contains(&format!("by {backend}.test"))
            && [" ", "\r\n"]
                .iter()
                .any(|end| first_received.contains(&format!("{protocol}{end}"))),
        "{copy}"
    );
    let second_received = copy.split("\r\nReceived: ").nth(2).unwrap();
    assert!(
        second_received.starts_with("from client.remote.example")
            && second_received.contains("by front.test")
            && second_received.contains("with ESMTP"),
        "{copy}"
    );
    // Exactly one Return-Path: the front-end's copy in the queue has none.
    assert_eq!(copy.matches("Return-Path:").count(), 1, "{copy}");
    let original = message(subject).replace("\r\n..", "\r\n.");
    assert!(copy.ends_with(&original), "{copy}");
    assert!(copy.contains(&format!("\r\nSubject: {subject}\r\n")));
    assert!(copy.ends_with(stored_body()));
}

#[test]
fn one_transaction_reaches_recipients_on_two_backends() {
    let cluster = Cluster::start(true, true);
    let front = addr(FRONT, cluster.smtp);
    let reply = send(
        front,
        &[
            ("alice@example.com", "250 2.1.5"),
            ("Bob@Example.com", "250 2.1.5"),
            ("nobody@example.com", "550 5.1.1"),
            ("dave@example.com", "250 2.1.5"),
        ],
        "two-backends",
    );
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    let alice = cluster.inbox("back2", "alice", 1);
    assert_eq!(alice.len(), 1, "{}", cluster.log());
    check_copy(&alice[0], "two-backends", "back2");
    let bob = cluster.inbox("back1", "bob", 1);
    assert_eq!(bob.len(), 1, "{}", cluster.log());
    check_copy(&bob[0], "two-backends", "back1");
    // dave's back-end is the front-end's own LMTP listener, which delivers locally.
    let dave = cluster.inbox("front", "dave", 1);
    assert_eq!(dave.len(), 1, "{}", cluster.log());
    check_copy(&dave[0], "two-backends", "front");
    // Each user only on their own back-end, nothing on the front-end.
    assert!(
        read_dir_texts(&cluster.dir.path().join("back1-mail/example.com/alice/new")).is_empty()
    );
    assert!(read_dir_texts(&cluster.dir.path().join("back2-mail/example.com/bob/new")).is_empty());
    for user in ["alice", "bob"] {
        let on_front = cluster
            .dir
            .path()
            .join(format!("front-mail/example.com/{user}"));
        assert!(!on_front.exists(), "{}", on_front.display());
    }
    // Delivered entries leave the queue.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.ctl(&["queue", "list"]).contains('@') {
        assert!(
            Instant::now() < deadline,
            "{}",
            cluster.ctl(&["queue", "list"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_backend_that_is_down_only_delays_delivery() {
    let mut cluster = Cluster::start(true, false);
    let front = addr(FRONT, cluster.smtp);
    let reply = send(
        front,
        &[
            ("alice@example.com", "250 2.1.5"),
            ("bob@example.com", "250 2.1.5"),
        ],
        "back2-down",
    );
    // Queued durably before 250: the whole transaction is accepted.
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    let bob = cluster.inbox("back1", "bob", 1);
    assert_eq!(bob.len(), 1, "{}", cluster.log());
    check_copy(&bob[0], "back2-down", "back1");
    // alice waits in the queue, bob's part is done.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listing = loop {
        let listing = cluster.ctl(&["queue", "list"]);
        if listing.contains("alice@example.com pending attempts=1") || Instant::now() > deadline {
            break listing;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        listing.contains(&format!("from={SENDER}"))
            && listing.contains("alice@example.com pending attempts=1")
            && listing.contains("backend=127.0.0.3")
            && listing.contains("bob@example.com delivered"),
        "{listing}\n{}",
        cluster.log()
    );
    assert!(cluster.inbox("back2", "alice", 0).is_empty());
    // The back-end comes up; a flush delivers the message there, exactly once.
    cluster.start_back(2);
    assert!(
        cluster
            .ctl(&["queue", "flush"])
            .contains("1 messages due now")
    );
    let alice = cluster.inbox("back2", "alice", 1);
    assert_eq!(alice.len(), 1, "{}", cluster.log());
    check_copy(&alice[0], "back2-down", "back2");
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.ctl(&["queue", "list"]).contains('@') {
        assert!(
            Instant::now() < deadline,
            "{}",
            cluster.ctl(&["queue", "list"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cluster.inbox("back1", "bob", 0).len(), 1, "bob got it once");
}

#[test]
fn the_lmtp_leg_uses_verified_starttls_when_backend_tls_asks_for_it() {
    let cluster = Cluster::start_with(true, true, true);
    let reply = send(
        addr(FRONT, cluster.smtp),
        &[
            ("alice@example.com", "250 2.1.5"),
            ("bob@example.com", "250 2.1.5"),
        ],
        "over-tls",
    );
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    for (node, user) in [("back2", "alice"), ("back1", "bob")] {
        let copies = cluster.inbox(node, user, 1);
        assert_eq!(copies.len(), 1, "{}", cluster.log());
        // RFC 3848: LMTPS is LMTP with STARTTLS.
        check_copy_with(&copies[0], "over-tls", node, "with LMTPS");
    }
}

#[test]
fn with_xclient_the_backend_received_field_names_the_original_client() {
    // The client sends from an address no node has; the front-end names it to each
    // back-end with XCLIENT on the LMTP leg (it is in their [trust] networks).
    let client = Ipv4Addr::new(127, 0, 0, 9);
    let cluster = Cluster::start_mode(true, true, false, "xclient");
    let smtp = Smtp::over(
        support::connect_from(client, addr(FRONT, cluster.smtp)).expect("connect from 127.0.0.9"),
    );
    let reply = send_over(
        smtp,
        &[
            ("alice@example.com", "250 2.1.5"),
            ("bob@example.com", "250 2.1.5"),
        ],
        "xclient",
    );
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    for (node, user) in [("back2", "alice"), ("back1", "bob")] {
        let copies = cluster.inbox(node, user, 1);
        assert_eq!(copies.len(), 1, "{}", cluster.log());
        let copy = &copies[0];
        let received: Vec<&str> = copy.split("\r\nReceived: ").skip(1).collect();
        // The back-end's own trace field: the original client and its HELO name, not
        // the front-end (127.0.0.5) that connected.
        assert!(
            received[0].starts_with("from client.remote.example ([127.0.0.9]) by ")
                && received[0].contains(&format!("by {node}.test"))
                && received[0].contains("with LMTP"),
            "{copy}\n{}",
            cluster.log()
        );
        assert!(!received[0].contains("127.0.0.5"), "{copy}");
        assert!(
            received[1].starts_with("from client.remote.example ([127.0.0.9]) by front.test"),
            "{copy}"
        );
        assert!(copy.ends_with(stored_body()), "{copy}");
    }
}
