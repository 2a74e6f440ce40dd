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

    let other = free_port();
    write_config(dir.path(), "two.example", &[port, other], "");
    let reload = ctl(&config, "reload");
    assert!(!reload.status.success());
    let err = String::from_utf8_lossy(&reload.stderr).into_owned();
    assert!(err.contains(&format!("+pop3://127.0.0.1:{other}")), "{err}");
    assert_eq!(greeting(port), "+OK one.example POP3 ready\r\n");
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
