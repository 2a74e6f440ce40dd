//! The cluster-wide POP3 lock between two `tidegate serve` processes that share one
//! maildir root, as two hosts on one NFS export would: one POP3 session per mailbox
//! across both, released at QUIT or when the connection drops, and broken when its
//! holder dies; other users are unaffected. Both processes run on this machine under
//! one host name, so a dead holder is recognised by its pid at once; the lock of a
//! crashed *other* host expires after `lock_stale_secs` (the dotlock's own tests cover
//! that age rule).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{Node, free_port, local};

fn node_config(dir: &Path, name: &str, port: u16) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "hostname = \"mx.test\"\n[server]\nallow_root = true\n[storage]\nmailbox_path = \"shared-mail\"\nworkarea = \"{name}-work\"\n\
             [users]\nfile = \"users\"\n\
             [pop3]\nlisten = [\"127.0.0.1:{port}\"]\nlock = true\nlock_stale_secs = 60\nauth_failure_delay_ms = 10\n"
        ),
    )
    .unwrap();
    path
}

struct Pop3(BufReader<TcpStream>);

impl Pop3 {
    /// Connects and logs in; the answer to PASS.
    fn login(port: u16, user: &str) -> (Pop3, String) {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut c = Pop3(BufReader::new(stream));
        assert!(c.line().starts_with("+OK"));
        assert!(c.ask(&format!("USER {user}")).starts_with("+OK"));
        let answer = c.ask("PASS pw");
        (c, answer)
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        line
    }

    fn ask(&mut self, command: &str) -> String {
        write!(self.0.get_mut(), "{command}\r\n").unwrap();
        self.line()
    }
}

/// Logs in until the answer is `+OK` (a released lock becomes free as soon as the
/// server has processed the close, which races with the next connect).
fn login_eventually(port: u16, user: &str) -> Pop3 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (c, answer) = Pop3::login(port, user);
        if answer.starts_with("+OK") {
            return c;
        }
        assert!(answer.starts_with("-ERR [IN-USE]"), "{answer}");
        assert!(Instant::now() < deadline, "the lock was never released");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn one_pop3_session_per_mailbox_across_hosts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users"),
        "alice@example.com {PLAIN}pw\nbob@example.com {PLAIN}pw\n",
    )
    .unwrap();
    let (pa, pb) = (free_port(), free_port());
    let a = node_config(dir.path(), "a", pa);
    let b = node_config(dir.path(), "b", pb);
    let node_a = Node::start(&a, local(pa));
    let _node_b = Node::start(&b, local(pb));

    let (mut first, answer) = Pop3::login(pa, "alice@example.com");
    assert!(answer.starts_with("+OK Logged in"), "{answer}");
    // The same mailbox on the other host, and on this one: in use.
    for port in [pb, pa] {
        let (_c, answer) = Pop3::login(port, "alice@example.com");
        assert_eq!(
            answer,
            "-ERR [IN-USE] Mailbox is in use by another POP3 session\r\n"
        );
    }
    // Another user is unaffected.
    let (_bob, answer) = Pop3::login(pb, "bob@example.com");
    assert!(answer.starts_with("+OK Logged in"), "{answer}");

    // QUIT releases it.
    assert!(first.ask("QUIT").starts_with("+OK"));
    let second = login_eventually(pb, "alice@example.com");
    // A dropped connection releases it too.
    drop(second);
    let third = login_eventually(pa, "alice@example.com");

    // The holder's process dies (no QUIT, no release): its lock is broken because its
    // pid is gone, without waiting for the stale age.
    drop(node_a);
    drop(third);
    let mut fourth = login_eventually(pb, "alice@example.com");
    assert!(fourth.ask("QUIT").starts_with("+OK"));
}
