//! A proxy loop is refused, not followed forever: two front-ends whose `default_host` is
//! each other. Every hop carries the remaining hop count to the next (the PROXY v2 TLV),
//! so the sixth front-end on the path refuses with a permanent error and the client gets a
//! prompt, clean answer from the first one, for POP3, IMAP and submission.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::{Node, free_port, write};

const A: &str = "127.0.0.41";
const B: &str = "127.0.0.42";

/// A front-end at `me` that sends every user to `other` and accepts PROXY headers from it.
fn looping_frontend(me: &str, other: &str, (pop3, submission, imap): (u16, u16, u16)) -> String {
    format!(
        "hostname = \"{me}.test\"\n\
         [storage]\nmailbox_path = \"mail-{me}\"\nworkarea = \"work-{me}\"\n\
         [users]\nfile = \"users\"\n\
         [pop3]\nlisten = [\"{me}:{pop3}\"]\nauth_failure_delay_ms = 10\n\
         [smtp]\nsubmission = [\"{me}:{submission}\"]\nauth_failure_delay_ms = 10\n\
         [imap]\nlisten = [\"{me}:{imap}\"]\nauth_failure_delay_ms = 10\n\
         [proxy]\ndefault_host = \"{other}\"\n\
         backend_ports = {{ pop3 = {pop3}, submission = {submission}, imap = {imap} }}\n\
         source_addresses = [\"{me}\"]\nconnect_timeout_secs = 3\n\
         [trust]\nnetworks = [\"{other}/32\"]\nproxy_protocol = true\n\
         [server]\nshutdown_grace_secs = 1\n"
    )
}

struct Line(BufReader<TcpStream>);

impl Line {
    fn connect(to: SocketAddr) -> Line {
        let stream = TcpStream::connect(to).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Line(BufReader::new(stream))
    }
    fn read(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        line
    }
    fn ask(&mut self, text: &str) -> String {
        self.0.get_mut().write_all(text.as_bytes()).unwrap();
        self.read()
    }
}

#[test]
fn two_front_ends_pointing_at_each_other_refuse_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "users", "carol@example.com {PLAIN}carol-pw\n");
    let ports = (free_port(), free_port(), free_port());
    let (pop3, submission, imap) = ports;
    let a = write(dir.path(), "a.toml", &looping_frontend(A, B, ports));
    let b = write(dir.path(), "b.toml", &looping_frontend(B, A, ports));
    let addr = |ip: &str, port: u16| SocketAddr::new(ip.parse().unwrap(), port);
    let _node_a = Node::start(&a, addr(A, pop3));
    let _node_b = Node::start(&b, addr(B, pop3));

    // POP3 (RFC 2449 §8.1.2 SYS/PERM: the failure will not go away by itself).
    let mut c = Line::connect(addr(A, pop3));
    assert!(c.read().starts_with("+OK"));
    assert!(c.ask("USER carol@example.com\r\n").starts_with("+OK"));
    let reply = c.ask("PASS carol-pw\r\n");
    assert_eq!(reply, "-ERR [SYS/PERM] Mailbox unavailable\r\n");
    assert!(c.ask("QUIT\r\n").starts_with("+OK"));

    // IMAP: a tagged NO, and the session stays usable.
    let mut c = Line::connect(addr(A, imap));
    assert!(c.read().starts_with("* OK"));
    let reply = c.ask("a LOGIN carol@example.com carol-pw\r\n");
    assert!(reply.starts_with("a NO [UNAVAILABLE] "), "{reply:?}");
    assert_eq!(c.ask("b NOOP\r\n"), "b OK NOOP completed\r\n");

    // Submission: the last front-end's refusal comes back as it is (not a 535, since
    // the password was right).
    let mut c = Line::connect(addr(A, submission));
    assert!(c.read().starts_with("220"));
    c.0.get_mut().write_all(b"EHLO client.test\r\n").unwrap();
    while !c.read().starts_with("250 ") {}
    // "\0carol@example.com\0carol-pw" in base64.
    let reply = c.ask("AUTH PLAIN AGNhcm9sQGV4YW1wbGUuY29tAGNhcm9sLXB3\r\n");
    assert_eq!(reply, "554 5.4.6 Proxy loop: too many proxy hops\r\n");
}
