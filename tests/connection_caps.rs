//! `[server] max_connections_per_ip` on a running `tidegate serve`: one client address
//! gets at most that many sessions (the next is told `-ERR [SYS/TEMP]` and closed),
//! another address is not affected, a closed session frees its slot, and addresses in
//! `[trust] networks` are never capped.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use support::{Node, free_port, local, write};

/// Connects from `from` and returns the connection with the server's first line.
fn greeting(from: Ipv4Addr, to: SocketAddr) -> (BufReader<TcpStream>, String) {
    let stream = support::connect_from(from, to).expect("connect from a loopback address");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    (reader, line)
}

fn start(dir: &Path, port: u16, extra: &str) -> Node {
    write(dir, "users", "alice@example.com {PLAIN}pw\n");
    let config = write(
        dir,
        "tidegate.toml",
        &format!(
            "hostname = \"mx.test\"\n[storage]\nmailbox_path = \"mail\"\nworkarea = \"work\"\n\
             [users]\nfile = \"users\"\n[pop3]\nlisten = [\"127.0.0.1:{port}\"]\n\
             [server]\nmax_connections_per_ip = 3\n{extra}"
        ),
    );
    Node::start(&config, local(port))
}

#[test]
fn one_address_gets_the_cap_others_are_unaffected_and_a_close_frees_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _node = start(dir.path(), port, "");
    let server = local(port);
    let busy = Ipv4Addr::new(127, 0, 0, 2);
    let other = Ipv4Addr::new(127, 0, 0, 3);

    let mut held = Vec::new();
    for _ in 0..3 {
        let (conn, line) = greeting(busy, server);
        assert!(line.starts_with("+OK"), "{line:?}");
        held.push(conn);
    }
    // The fourth from the same address is refused with the RFC 2449 busy code, then closed.
    let (mut refused, line) = greeting(busy, server);
    assert!(line.starts_with("-ERR [SYS/TEMP]"), "{line:?}");
    let mut rest = String::new();
    assert_eq!(refused.read_line(&mut rest).unwrap(), 0, "{rest:?}");

    // Another address still gets in, twice.
    let (_a, line) = greeting(other, server);
    assert!(line.starts_with("+OK"), "{line:?}");
    let (_b, line) = greeting(other, server);
    assert!(line.starts_with("+OK"), "{line:?}");

    // A session that ends gives its slot back (the server notices the QUIT at once).
    let mut first = held.remove(0);
    first.get_mut().write_all(b"QUIT\r\n").unwrap();
    let mut bye = String::new();
    first.read_line(&mut bye).unwrap();
    assert!(bye.starts_with("+OK"), "{bye:?}");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (conn, line) = greeting(busy, server);
        if line.starts_with("+OK") {
            held.push(conn);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot never came back: {line:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_c, line) = greeting(busy, server);
    assert!(line.starts_with("-ERR [SYS/TEMP]"), "{line:?}");
}

#[test]
fn trusted_networks_are_not_capped() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _node = start(dir.path(), port, "[trust]\nnetworks = [\"127.0.0.4/32\"]\n");
    let server = local(port);
    let front = Ipv4Addr::new(127, 0, 0, 4);
    let held: Vec<_> = (0..8)
        .map(|_| {
            let (conn, line) = greeting(front, server);
            assert!(line.starts_with("+OK"), "{line:?}");
            conn
        })
        .collect();
    // Its neighbour is not in the network and is capped.
    let neighbour = Ipv4Addr::new(127, 0, 0, 5);
    let _kept: Vec<_> = (0..3).map(|_| greeting(neighbour, server)).collect();
    let (_, line) = greeting(neighbour, server);
    assert!(line.starts_with("-ERR [SYS/TEMP]"), "{line:?}");
    drop(held);
}

/// Sends `command` and returns the reply line.
fn ask(conn: &mut BufReader<TcpStream>, command: &str) -> String {
    conn.get_mut()
        .write_all(format!("{command}\r\n").as_bytes())
        .unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    line
}

#[test]
fn a_proxied_session_keeps_its_slot_while_it_is_spliced() {
    let dir = tempfile::tempdir().unwrap();
    let (front_port, back_port) = (free_port(), free_port());
    write(dir.path(), "users", "alice@example.com {PLAIN}pw\n");
    // The back-end trusts the front-end's address: every proxied client arrives from it.
    let back = write(
        dir.path(),
        "back.toml",
        &format!(
            "hostname = \"back.test\"\n[storage]\nmailbox_path = \"mail\"\nworkarea = \"back-work\"\n\
             [users]\nfile = \"users\"\n[pop3]\nlisten = [\"127.0.0.1:{back_port}\"]\n\
             [trust]\nnetworks = [\"127.0.0.1/32\"]\n[server]\nmax_connections_per_ip = 1\n"
        ),
    );
    let front = write(
        dir.path(),
        "front.toml",
        &format!(
            "hostname = \"front.test\"\n[storage]\nmailbox_path = \"front-mail\"\nworkarea = \"front-work\"\n\
             [users]\nfile = \"users\"\n[pop3]\nlisten = [\"127.0.0.1:{front_port}\"]\n\
             [proxy]\ndefault_host = \"127.0.0.1\"\nbackend_ports = {{ pop3 = {back_port} }}\n\
             client_address = \"none\"\n[server]\nmax_connections_per_ip = 2\n"
        ),
    );
    let _back = Node::start(&back, local(back_port));
    let _front = Node::start(&front, local(front_port));
    let server = local(front_port);
    let client = Ipv4Addr::new(127, 0, 0, 6);

    let mut spliced = Vec::new();
    for _ in 0..2 {
        let (mut conn, line) = greeting(client, server);
        assert!(line.starts_with("+OK"), "{line:?}");
        assert!(ask(&mut conn, "USER alice@example.com").starts_with("+OK"));
        let answer = ask(&mut conn, "PASS pw");
        assert!(answer.starts_with("+OK"), "{answer:?}");
        // Served by the back-end through the splice from here on.
        assert!(ask(&mut conn, "STAT").starts_with("+OK 0 0"));
        spliced.push(conn);
    }
    let (_, line) = greeting(client, server);
    assert!(line.starts_with("-ERR [SYS/TEMP]"), "{line:?}");

    // The back-end closes after QUIT and the client closes too: the splice ends and
    // the slot comes back.
    let mut first = spliced.remove(0);
    assert!(ask(&mut first, "QUIT").starts_with("+OK"));
    let mut rest = String::new();
    assert_eq!(first.read_line(&mut rest).unwrap(), 0);
    // The splice lasts until both sides closed.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_conn, line) = greeting(client, server);
        if line.starts_with("+OK") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot never came back: {line:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
