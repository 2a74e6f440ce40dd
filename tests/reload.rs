//! Live reload of a running `tidegate serve`: `tidegate ctl reload`, SIGHUP and
//! `[control] watch` apply a changed config to new connections without dropping open
//! ones, and a config that cannot be applied is refused while the old one keeps running.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use support::{Node, free_port, local, tidegate};

fn write_config(dir: &Path, hostname: &str, pop3: &[u16], extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let listen: Vec<String> = pop3.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let text = format!(
        "hostname = \"{hostname}\"\n{extra}\n[storage]\nmailbox_path = \"mail\"\nworkarea = \"work\"\n[users]\nfile = \"users\"\n[pop3]\nlisten = [{}]\n[server]\nallow_root = true\nshutdown_grace_secs = 1\n",
        listen.join(", ")
    );
    // Write then rename, as editors and config management do: the watcher must never
    // see a half-written file.
    let tmp = dir.join("config.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn setup() -> (tempfile::TempDir, u16) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), "alice@example.com {PLAIN}pw\n").unwrap();
    (dir, free_port())
}

fn greeting(port: u16) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

fn ctl(config: &Path, command: &str) -> Output {
    tidegate()
        .args(["ctl", command, "--config"])
        .arg(config)
        .output()
        .unwrap()
}

fn wait_for_greeting(port: u16, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let line = greeting(port);
        if line == expected {
            return;
        }
        assert!(Instant::now() < deadline, "still greeted with {line:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ctl_reload_applies_to_new_connections_and_keeps_open_ones() {
    let (dir, port) = setup();
    let config = write_config(dir.path(), "one.example", &[port], "");
    let _server = Node::start(&config, local(port));
    assert_eq!(greeting(port), "+OK one.example POP3 ready\r\n");

    let status = ctl(&config, "status");
    assert!(status.status.success(), "{status:?}");
    let text = String::from_utf8(status.stdout).unwrap();
    assert!(
        text.contains(&format!("listener pop3://127.0.0.1:{port}")),
        "{text}"
    );

    // A session opened before the reload keeps its settings.
    let open = TcpStream::connect(("127.0.0.1", port)).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut open = BufReader::new(open);
    let mut line = String::new();
    open.read_line(&mut line).unwrap();
    assert_eq!(line, "+OK one.example POP3 ready\r\n");

    write_config(dir.path(), "two.example", &[port], "");
    let reload = ctl(&config, "reload");
    assert!(reload.status.success(), "{reload:?}");
    assert!(String::from_utf8_lossy(&reload.stdout).contains("reloaded"));
    assert_eq!(greeting(port), "+OK two.example POP3 ready\r\n");

    open.get_mut().write_all(b"QUIT\r\n").unwrap();
    line.clear();
    open.read_line(&mut line).unwrap();
    assert_eq!(line, "+OK one.example POP3 closing\r\n");
}

#[test]
fn a_config_that_cannot_be_applied_is_refused_and_the_old_one_keeps_running() {
    let (dir, port) = setup();
    let config = write_config(dir.path(), "one.example", &[port], "");
    let _server = Node::start(&config, local(port));

    std::fs::write(
        &config,
        "hostname = \"broken.example\"\nlisten_everywhere = true\n",
    )
    .unwrap();
    let reload = ctl(&config, "reload");
    assert!(!reload.status.success());
    let err = String::from_utf8_lossy(&reload.stderr).into_owned();
    assert!(err.contains("listen_everywhere"), "{err}");
    assert_eq!(greeting(port), "+OK one.example POP3 ready\r\n");

    // A listener that cannot be bound (someone else has the port) refuses the whole
    // reload: the hostname does not change either.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = taken.local_addr().unwrap().port();
    write_config(dir.path(), "two.example", &[port, other], "");
    let reload = ctl(&config, "reload");
    assert!(!reload.status.success());
    let err = String::from_utf8_lossy(&reload.stderr).into_owned();
    assert!(err.contains(&format!("+pop3://127.0.0.1:{other}")), "{err}");
    assert_eq!(greeting(port), "+OK one.example POP3 ready\r\n");
    drop(taken);
}

/// Waits until nothing accepts on `port` any more (the shell applies a removal after
/// the reload answered).
fn wait_refused(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "port {port} still accepts");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects to `port`, waiting for the shell to start accepting there.
fn wait_greeting(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing accepts on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    greeting(port)
}

#[test]
fn a_reload_adds_and_removes_listeners_and_open_sessions_on_removed_ones_go_on() {
    let (dir, first) = setup();
    let config = write_config(dir.path(), "one.example", &[first], "");
    let _server = Node::start(&config, local(first));

    // A session on the listener that is about to go.
    let open = TcpStream::connect(("127.0.0.1", first)).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut open = BufReader::new(open);
    let mut line = String::new();
    open.read_line(&mut line).unwrap();
    assert_eq!(line, "+OK one.example POP3 ready\r\n");

    // Added: accepted at once, with the new settings, and listed by `ctl status`.
    let second = free_port();
    write_config(dir.path(), "two.example", &[first, second], "");
    let reload = ctl(&config, "reload");
    assert!(reload.status.success(), "{reload:?}");
    let said = String::from_utf8_lossy(&reload.stdout).into_owned();
    assert!(
        said.contains(&format!("+pop3://127.0.0.1:{second}")),
        "{said}"
    );
    assert_eq!(wait_greeting(second), "+OK two.example POP3 ready\r\n");
    assert_eq!(greeting(first), "+OK two.example POP3 ready\r\n");
    let status = String::from_utf8(ctl(&config, "status").stdout).unwrap();
    assert!(
        status.contains(&format!("listener pop3://127.0.0.1:{second}")),
        "{status}"
    );

    // Removed: refused, its port free again; the session opened on it goes on.
    write_config(dir.path(), "three.example", &[second], "");
    let reload = ctl(&config, "reload");
    assert!(reload.status.success(), "{reload:?}");
    let said = String::from_utf8_lossy(&reload.stdout).into_owned();
    assert!(
        said.contains(&format!("-pop3://127.0.0.1:{first}")),
        "{said}"
    );
    wait_refused(first);
    std::net::TcpListener::bind(("127.0.0.1", first)).expect("the removed listener's port is free");
    let status = String::from_utf8(ctl(&config, "status").stdout).unwrap();
    assert!(
        !status.contains(&format!("listener pop3://127.0.0.1:{first}")),
        "{status}"
    );
    assert_eq!(greeting(second), "+OK three.example POP3 ready\r\n");
    open.get_mut()
        .write_all(b"USER alice@example.com\r\n")
        .unwrap();
    line.clear();
    open.read_line(&mut line).unwrap();
    assert!(line.starts_with("+OK"), "{line}");
    open.get_mut().write_all(b"PASS pw\r\n").unwrap();
    line.clear();
    open.read_line(&mut line).unwrap();
    assert!(line.starts_with("+OK Logged in"), "{line}");
    open.get_mut().write_all(b"QUIT\r\n").unwrap();
    line.clear();
    open.read_line(&mut line).unwrap();
    assert_eq!(
        line,
        "+OK one.example POP3 closing (0 messages deleted)\r\n"
    );

    // A changed address is a removal and an addition.
    let third = free_port();
    write_config(dir.path(), "four.example", &[third], "");
    let reload = ctl(&config, "reload");
    assert!(reload.status.success(), "{reload:?}");
    assert_eq!(wait_greeting(third), "+OK four.example POP3 ready\r\n");
    wait_refused(second);
}

#[test]
fn sighup_and_the_watcher_reload_too() {
    let (dir, port) = setup();
    let config = write_config(dir.path(), "one.example", &[port], "");
    let server = Node::start(&config, local(port));
    write_config(dir.path(), "hup.example", &[port], "");
    // SAFETY: kill(2) on our own child's pid.
    let sent = unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    assert_eq!(sent, 0);
    wait_for_greeting(port, "+OK hup.example POP3 ready\r\n");
    drop(server);

    let port = free_port();
    let config = write_config(
        dir.path(),
        "watched.example",
        &[port],
        "[control]\nwatch = true",
    );
    let _server = Node::start(&config, local(port));
    assert_eq!(greeting(port), "+OK watched.example POP3 ready\r\n");
    // mtime granularity: make sure the rewrite is a visibly newer file.
    std::thread::sleep(Duration::from_millis(1100));
    write_config(
        dir.path(),
        "changed.example",
        &[port],
        "[control]\nwatch = true",
    );
    wait_for_greeting(port, "+OK changed.example POP3 ready\r\n");
}

#[test]
fn ctl_without_a_running_server_says_so() {
    let (dir, port) = setup();
    let config = write_config(dir.path(), "one.example", &[port], "");
    let out = ctl(&config, "status");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("control socket"), "{err}");
}
