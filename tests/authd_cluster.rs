//! authd between processes: one `tidegate serve` answers lookups from its users file,
//! two others authenticate POP3 logins through it. Killing the authd gives logins a
//! temporary failure (never a wrong answer); restarting it brings them back.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Node, free_port, local, write};

/// `USER`/`PASS` on a POP3 port; the answer to PASS.
fn login(port: u16, user: &str, password: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("+OK"), "{line}");
    write!(
        reader.get_mut(),
        "USER {user}\r\nPASS {password}\r\nQUIT\r\n"
    )
    .unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    line
}

#[test]
fn two_nodes_share_one_authd_that_dies_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "users",
        "alice@example.com {PLAIN}alice-pw tohost=10.0.0.2\n",
    );
    write(d, "secret", "s3cret-between-nodes\n");
    let authd_port = free_port();
    let authd = write(
        d,
        "authd.toml",
        &format!(
            "[server]\nallow_root = true\n[storage]\nworkarea = \"authd-work\"\n[users]\nfile = \"users\"\n\
             [authd]\nlisten = \"127.0.0.1:{authd_port}\"\nsecret_file = \"secret\"\n"
        ),
    );
    let node = |name: &str, port: u16, secret: &str| {
        write(
            d,
            &format!("{name}.toml"),
            &format!(
                "hostname = \"{name}.test\"\n[server]\nallow_root = true\n[storage]\nmailbox_path = \"mail\"\nworkarea = \"{name}-work\"\n\
                 [users]\nbackend = \"authd\"\nauthd = \"127.0.0.1:{authd_port}\"\nauthd_secret = \"{secret}\"\n\
                 authd_timeout = 2\nauthd_connect_timeout = 1\n\
                 [pop3]\nlisten = [\"127.0.0.1:{port}\"]\nauth_failure_delay_ms = 10\n"
            ),
        )
    };
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let one = node("one", p1, "s3cret-between-nodes");
    let two = node("two", p2, "s3cret-between-nodes");
    let intruder = node("intruder", p3, "guessed");

    let mut authd_node = Node::start(&authd, local(authd_port));
    let _one = Node::start(&one, local(p1));
    let _two = Node::start(&two, local(p2));
    let _intruder = Node::start(&intruder, local(p3));

    for port in [p1, p2] {
        assert!(login(port, "alice@example.com", "alice-pw").starts_with("+OK Logged in"));
        assert!(login(port, "alice@example.com", "wrong").starts_with("-ERR [AUTH]"));
        assert!(login(port, "nobody@example.com", "x").starts_with("-ERR [AUTH]"));
    }
    // A node with the wrong secret is refused by the authd: a temporary failure, not a
    // login.
    let answer = login(p3, "alice@example.com", "alice-pw");
    assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");

    drop(authd_node);
    for port in [p1, p2] {
        let answer = login(port, "alice@example.com", "alice-pw");
        assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
    }

    authd_node = Node::start(&authd, local(authd_port));
    for port in [p1, p2] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = login(port, "alice@example.com", "alice-pw");
            if answer.starts_with("+OK Logged in") {
                break;
            }
            // Until the client's dead-server memory expires: temporary, never wrong.
            assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
            assert!(Instant::now() < deadline, "logins did not recover");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    drop(authd_node);
}
