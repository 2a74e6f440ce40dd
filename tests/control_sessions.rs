//! The session commands of the control socket on a running `tidegate serve`:
//! `ctl who [USER]` lists the open connections with their accounts, `ctl kick USER`
//! closes one account's connections and leaves the others alone, and `ctl status`
//! counts sessions per protocol and per listener and reports the config generation.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{LineClient, Node, free_port, local, tidegate, write};

struct Server {
    _dir: tempfile::TempDir,
    config: PathBuf,
    pop3: u16,
    imap: u16,
    _node: Node,
}

fn start() -> Server {
    start_with("")
}

/// A server whose `[pop3]` section also has `pop3_extra`.
fn start_with(pop3_extra: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "users",
        "alice@example.com {PLAIN}alice-pw\nbob@example.com {PLAIN}bob-pw\n",
    );
    let (pop3, imap) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "config.toml",
        &format!(
            "hostname = \"ctl.test\"\n[server]\nallow_root = true\nshutdown_grace_secs = 1\n\
             [storage]\nmailbox_path = \"mail\"\nworkarea = \"work\"\n[users]\nfile = \"users\"\n\
             [pop3]\nlisten = [\"127.0.0.1:{pop3}\"]\n{pop3_extra}\n\
             [imap]\nlisten = [\"127.0.0.1:{imap}\"]\n"
        ),
    );
    let node = Node::start(&config, local(imap));
    Server {
        _dir: dir,
        config,
        pop3,
        imap,
        _node: node,
    }
}

/// Runs `tidegate ctl ARGS --config CONFIG` and returns its standard output; fails the
/// test when the command fails.
fn ctl(config: &Path, args: &[&str]) -> String {
    let out = tidegate()
        .arg("ctl")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn pop3_login(port: u16, user: &str, password: &str) -> LineClient {
    let mut c = LineClient::connect(local(port));
    assert!(c.line().starts_with("+OK"));
    assert!(c.ask(&format!("USER {user}")).starts_with("+OK"));
    let answer = c.ask(&format!("PASS {password}"));
    assert!(answer.starts_with("+OK"), "{answer:?}");
    c
}

fn imap_login(port: u16, user: &str, password: &str) -> LineClient {
    let mut c = LineClient::connect(local(port));
    assert!(c.line().starts_with("* OK"));
    c.send(format!("a LOGIN {user} {password}\r\n").as_bytes());
    let answer = c.until("a ");
    assert!(answer.starts_with("a OK"), "{answer:?}");
    c
}

/// `ctl who` split into lines of words.
fn who(config: &Path, user: Option<&str>) -> Vec<Vec<String>> {
    let mut args = vec!["who"];
    args.extend(user);
    ctl(config, &args)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// Asks `ctl who` until `ready` accepts its lines (the registry follows the sessions).
fn who_until(config: &Path, ready: impl Fn(&[Vec<String>]) -> bool) -> Vec<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lines = who(config, None);
        if ready(&lines) {
            return lines;
        }
        assert!(Instant::now() < deadline, "ctl who still says {lines:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server closed `client`'s connection: a read gives EOF (or a reset), not a timeout.
fn assert_closed(client: &LineClient) {
    use std::io::Read;
    let mut stream = client.stream();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("the kicked connection sent {:?}", byte[0] as char),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

fn status_value(status: &str, key: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(str::to_owned))
}

#[test]
fn who_lists_sessions_kick_closes_one_accounts_and_status_counts_them() {
    let server = start();
    let config = &server.config;
    let alice_pop3 = pop3_login(server.pop3, "alice@example.com", "alice-pw");
    let mut bob_pop3 = pop3_login(server.pop3, "bob@example.com", "bob-pw");
    let alice_imap = imap_login(server.imap, "alice@example.com", "alice-pw");
    // Connected, not logged in.
    let mut anonymous = LineClient::connect(local(server.pop3));
    assert!(anonymous.line().starts_with("+OK"));

    let lines = who_until(config, |lines| lines.len() == 4);
    let pop3_addr = format!("127.0.0.1:{}", server.pop3);
    let imap_addr = format!("127.0.0.1:{}", server.imap);
    let alice_pop3_peer = alice_pop3.stream().local_addr().unwrap().to_string();
    let alice_imap_peer = alice_imap.stream().local_addr().unwrap().to_string();
    let bob_peer = bob_pop3.stream().local_addr().unwrap().to_string();
    let anonymous_peer = anonymous.stream().local_addr().unwrap().to_string();
    // Sorted by account, then start: alice's POP3 logged in first; not logged in last.
    let expected = [
        ["alice@example.com", "pop3", &pop3_addr, &alice_pop3_peer],
        ["alice@example.com", "imap", &imap_addr, &alice_imap_peer],
        ["bob@example.com", "pop3", &pop3_addr, &bob_peer],
        ["-", "pop3", &pop3_addr, &anonymous_peer],
    ];
    for (line, want) in lines.iter().zip(expected) {
        assert_eq!(line.len(), 5, "{line:?}");
        assert_eq!(&line[..4], want.as_slice(), "{lines:?}");
        let seconds = line[4].strip_suffix('s').unwrap();
        assert!(seconds.parse::<u64>().unwrap() < 60, "{line:?}");
    }

    let alice = who(config, Some("alice@example.com"));
    assert_eq!(alice.len(), 2, "{alice:?}");
    assert!(alice.iter().all(|l| l[0] == "alice@example.com"));
    assert!(who(config, Some("carol@example.com")).is_empty());

    let status = ctl(config, &["status"]);
    assert_eq!(
        status_value(&status, "config_generation").as_deref(),
        Some("1")
    );
    assert_eq!(status_value(&status, "sessions").as_deref(), Some("4"));
    assert_eq!(
        status_value(&status, "protocol_sessions pop3").as_deref(),
        Some("3")
    );
    assert_eq!(
        status_value(&status, "protocol_sessions imap").as_deref(),
        Some("1")
    );
    assert_eq!(
        status_value(&status, &format!("listener_sessions pop3://{pop3_addr}")).as_deref(),
        Some("3"),
        "{status}"
    );
    assert_eq!(
        status_value(&status, &format!("listener_sessions imap://{imap_addr}")).as_deref(),
        Some("1"),
        "{status}"
    );

    let kicked = ctl(config, &["kick", "alice@example.com"]);
    assert_eq!(kicked, "closed 2 sessions of alice@example.com\n");
    // Alice's clients see the connection end at once: nothing more, then EOF.
    assert_closed(&alice_pop3);
    assert_closed(&alice_imap);
    // Bob and the anonymous connection are untouched.
    assert!(bob_pop3.ask("NOOP").starts_with("+OK"));
    assert!(anonymous.ask("CAPA").starts_with("+OK"));
    let lines = who_until(config, |lines| lines.len() == 2);
    assert_eq!(lines[0][0], "bob@example.com");
    assert_eq!(lines[1][0], "-");
    assert_eq!(
        ctl(config, &["kick", "alice@example.com"]),
        "closed 0 sessions of alice@example.com\n"
    );

    // A new login of the kicked account works, and a reload counts a generation.
    let mut again = pop3_login(server.pop3, "alice@example.com", "alice-pw");
    ctl(config, &["reload"]);
    let status = ctl(config, &["status"]);
    assert_eq!(
        status_value(&status, "config_generation").as_deref(),
        Some("2")
    );
    assert!(again.ask("NOOP").starts_with("+OK"));
    assert!(bob_pop3.ask("QUIT").starts_with("+OK"));
}

#[test]
fn a_kicked_pop3_session_releases_its_mailbox_lock() {
    let server = start_with("lock = true");
    let kicked = pop3_login(server.pop3, "alice@example.com", "alice-pw");
    // The lock is held: a second session of alice is refused.
    let mut second = LineClient::connect(local(server.pop3));
    assert!(second.line().starts_with("+OK"));
    assert!(second.ask("USER alice@example.com").starts_with("+OK"));
    let refused = second.ask("PASS alice-pw");
    assert!(refused.starts_with("-ERR [IN-USE]"), "{refused:?}");
    who_until(&server.config, |lines| {
        lines.iter().any(|l| l[0] == "alice@example.com")
    });
    assert_eq!(
        ctl(&server.config, &["kick", "alice@example.com"]),
        "closed 1 sessions of alice@example.com\n"
    );
    assert_closed(&kicked);
    // The kicked session gave its lock back: a new login gets the mailbox.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = second.ask("PASS alice-pw");
        if answer.starts_with("+OK") {
            break;
        }
        assert!(answer.starts_with("-ERR"), "{answer:?}");
        assert!(Instant::now() < deadline, "still {answer:?}");
        std::thread::sleep(Duration::from_millis(100));
        assert!(second.ask("USER alice@example.com").starts_with("+OK"));
    }
    assert!(second.ask("STAT").starts_with("+OK"));
}

#[test]
fn who_and_kick_refuse_malformed_accounts() {
    let server = start();
    let out = tidegate()
        .args(["ctl", "kick", "a b", "--config"])
        .arg(&server.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an account name"));
}

#[test]
fn kick_on_a_front_end_closes_a_spliced_proxy_connection() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "users",
        "alice@example.com {PLAIN}alice-pw\nbob@example.com {PLAIN}bob-pw\n",
    );
    let pop3 = support::free_port_on(&["127.0.0.2"]);
    let back = write(
        dir.path(),
        "back.toml",
        &format!(
            "hostname = \"back.test\"\n[server]\nallow_root = true\nshutdown_grace_secs = 1\n\
             [storage]\nmailbox_path = \"back-mail\"\nworkarea = \"back-work\"\n\
             [users]\nfile = \"users\"\n[pop3]\nlisten = [\"127.0.0.2:{pop3}\"]\n\
             [trust]\nnetworks = [\"127.0.0.1/32\"]\nproxy_protocol = true\n"
        ),
    );
    let front = write(
        dir.path(),
        "front.toml",
        &format!(
            "hostname = \"front.test\"\n[server]\nallow_root = true\nshutdown_grace_secs = 1\n\
             [storage]\nmailbox_path = \"front-mail\"\nworkarea = \"front-work\"\n\
             [users]\nfile = \"users\"\n[pop3]\nlisten = [\"127.0.0.1:{pop3}\"]\n\
             [proxy]\ndefault_host = \"127.0.0.2\"\nbackend_ports = {{ pop3 = {pop3} }}\n\
             source_addresses = [\"127.0.0.1\"]\nclient_address = \"proxy-v2\"\n"
        ),
    );
    let _back = Node::start(&back, std::net::SocketAddr::from(([127, 0, 0, 2], pop3)));
    let _front = Node::start(&front, local(pop3));

    let alice = pop3_login(pop3, "alice@example.com", "alice-pw");
    let mut bob = pop3_login(pop3, "bob@example.com", "bob-pw");
    // Both are spliced through the front-end now, and listed there with their accounts.
    let lines = who_until(&front, |lines| lines.len() == 2);
    assert_eq!(lines[0][..2], ["alice@example.com", "pop3"]);
    assert_eq!(lines[1][..2], ["bob@example.com", "pop3"]);
    assert_eq!(
        ctl(&front, &["kick", "alice@example.com"]),
        "closed 1 sessions of alice@example.com\n"
    );
    assert_closed(&alice);
    // Bob's splice goes on, and alice's back-end session ends with the front-end's.
    assert!(bob.ask("NOOP").starts_with("+OK"));
    let back_lines = who_until(&back, |lines| lines.len() == 1);
    assert_eq!(back_lines[0][0], "bob@example.com");
}
