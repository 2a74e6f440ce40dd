//! Least privilege of `tidegate serve` (docs/security.md, "Privilege model"): started as
//! root it binds, then runs as `[server] user`; root without a user is refused unless
//! `allow_root`; files it creates are private to its user. The tests that need root
//! say so and return early when the test runner is not root.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use support::{LineClient, Node, free_port, is_root, local, proc_status, tidegate, write};

/// uid and gid of the account `nobody`, from the system's account database.
fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("the system has a nobody account");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

fn config(dir: &Path, pop3: u16, smtp: u16, server: &str) -> std::path::PathBuf {
    write(
        dir,
        "tidegate.toml",
        &format!(
            "hostname = \"priv.test\"\n[server]\n{server}\nshutdown_grace_secs = 1\n\
             [storage]\nmailbox_path = \"mail\"\nworkarea = \"work\"\n[users]\nfile = \"users\"\n\
             [pop3]\nlisten = [\"127.0.0.1:{pop3}\"]\nauth_failure_delay_ms = 10\n\
             [smtp]\nlisten = [\"127.0.0.1:{smtp}\"]\n"
        ),
    )
}

/// A temporary directory the dropped user can enter (tempdirs are 0700).
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    write(dir.path(), "users", "alice@priv.test {PLAIN}pw\n");
    dir
}

fn deliver(smtp: u16, to: &str) {
    let mut c = LineClient::connect(local(smtp));
    assert!(c.line().starts_with("220"));
    assert!(c.ask("EHLO client.test").starts_with("250"));
    c.until("250 ");
    assert!(c.ask("MAIL FROM:<x@elsewhere.test>").starts_with("250"));
    let rcpt = c.ask(&format!("RCPT TO:<{to}>"));
    assert!(rcpt.starts_with("250"), "{rcpt}");
    assert!(c.ask("DATA").starts_with("354"));
    let done = c.ask("Subject: hi\r\n\r\nhello\r\n.");
    assert!(done.starts_with("250"), "{done}");
}

#[test]
fn root_drops_to_the_configured_user_and_still_serves() {
    if !is_root() {
        eprintln!("skipped: dropping privileges needs a test run as root");
        return;
    }
    let (uid, gid) = nobody();
    let dir = open_tempdir();
    let (pop3, smtp) = (free_port(), free_port());
    let path = config(dir.path(), pop3, smtp, "user = \"nobody\"");
    let node = Node::start(&path, local(pop3));
    assert!(node.log_contains("dropped root"), "no drop logged");
    let pid = node.pid();
    // Every thread, not only the main one, runs as nobody.
    let expected = format!("{uid}\t{uid}\t{uid}\t{uid}");
    assert_eq!(proc_status(pid, "Uid").as_deref(), Some(expected.as_str()));
    let expected_gid = format!("{gid}\t{gid}\t{gid}\t{gid}");
    assert_eq!(
        proc_status(pid, "Gid").as_deref(),
        Some(expected_gid.as_str())
    );
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        assert!(
            status.contains(&format!("Uid:\t{expected}")),
            "a thread kept another uid: {status}"
        );
    }

    // It still serves: SMTP delivers into a maildir owned by nobody with private modes,
    // and POP3 reads it back.
    deliver(smtp, "alice@priv.test");
    let new = dir.path().join("mail/priv.test/alice/new");
    let deadline = Instant::now() + Duration::from_secs(5);
    let message = loop {
        if let Some(entry) = std::fs::read_dir(&new).ok().and_then(|mut d| d.next()) {
            break entry.unwrap().path();
        }
        assert!(Instant::now() < deadline, "nothing delivered");
        std::thread::sleep(Duration::from_millis(50));
    };
    let meta = std::fs::metadata(&message).unwrap();
    assert_eq!(meta.uid(), uid);
    assert_eq!(meta.mode() & 0o077, 0, "message mode {:o}", meta.mode());
    let maildir = std::fs::metadata(dir.path().join("mail/priv.test/alice")).unwrap();
    assert_eq!(
        maildir.mode() & 0o077,
        0,
        "maildir mode {:o}",
        maildir.mode()
    );

    let mut c = LineClient::connect(local(pop3));
    assert!(c.line().starts_with("+OK"));
    assert!(c.ask("USER alice@priv.test").starts_with("+OK"));
    let pass = c.ask("PASS pw");
    assert!(pass.starts_with("+OK"), "{pass}");
    assert!(c.ask("STAT").starts_with("+OK 1 "));
    assert!(c.ask("QUIT").starts_with("+OK"));

    // The control socket belongs to the dropped user and to nobody else.
    let socket = std::fs::metadata(dir.path().join("work/control.sock")).unwrap();
    assert_eq!(socket.uid(), uid);
    assert_eq!(socket.mode() & 0o777, 0o600);
    let status = tidegate()
        .args(["ctl", "status", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
}

#[test]
fn root_without_a_user_is_refused_with_a_clear_message() {
    if !is_root() {
        eprintln!("skipped: the root check needs a test run as root");
        return;
    }
    let dir = open_tempdir();
    let (pop3, smtp) = (free_port(), free_port());
    let path = config(dir.path(), pop3, smtp, "");
    let out = tidegate()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refusing to run as root") && stderr.contains("allow_root"),
        "{stderr}"
    );
    // Nothing was bound.
    assert!(std::net::TcpStream::connect(local(pop3)).is_err());

    let path = config(dir.path(), pop3, smtp, "user = \"no-such-account-here\"");
    let out = tidegate()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such user"));
}

#[test]
fn a_mailbox_root_the_dropped_user_cannot_write_is_reported() {
    if !is_root() {
        eprintln!("skipped: needs a test run as root");
        return;
    }
    let dir = open_tempdir();
    let mail = dir.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    std::fs::set_permissions(&mail, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (pop3, smtp) = (free_port(), free_port());
    let path = config(dir.path(), pop3, smtp, "user = \"nobody\"");
    let out = tidegate()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("mailbox_path") && stderr.contains("not usable by user \"nobody\""),
        "{stderr}"
    );
}

#[test]
fn a_users_file_the_dropped_user_cannot_read_is_warned_about() {
    if !is_root() {
        eprintln!("skipped: needs a test run as root");
        return;
    }
    let dir = open_tempdir();
    let users = dir.path().join("users");
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (pop3, smtp) = (free_port(), free_port());
    let path = config(dir.path(), pop3, smtp, "user = \"nobody\"");
    let node = Node::start(&path, local(pop3));
    assert!(
        node.log_contains("reloads will fail"),
        "no warning: {}",
        node.log()
    );
    // It still serves from the copy read as root.
    let mut c = LineClient::connect(local(pop3));
    assert!(c.line().starts_with("+OK"));
    assert!(c.ask("USER alice@priv.test").starts_with("+OK"));
    assert!(c.ask("PASS pw").starts_with("+OK"));
}

#[test]
fn the_test_support_allows_root_in_configs_that_do_not_say() {
    let dir = tempfile::tempdir().unwrap();
    for text in [
        "hostname = \"a.test\"\n[pop3]\nlisten = []\n",
        "hostname = \"a.test\"\n[server]\nthreads = 1\n[pop3]\nlisten = []\n",
    ] {
        let path = write(dir.path(), "c.toml", text);
        support::allow_root(&path);
        let out = tidegate()
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(printed.contains("allow_root = true"), "{printed}");
    }
}
