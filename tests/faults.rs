//! Faults under a running `tidegate serve` (docs/security.md): the mailbox filesystem
//! full or read-only during SMTP delivery and IMAP APPEND (a temporary failure, nothing
//! partial visible, delivery works again once the fault is gone), and a back-end killed
//! in the middle of proxied sessions (the client's connection ends, the front-end keeps
//! serving everyone else). The filesystem tests mount a small tmpfs, so they need root
//! and permission to mount; they say so and pass without checking anything otherwise.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{LineClient, Node, free_port, free_port_on, is_root, local, write};

const PASSWORD: &str = "pw-of-alice";

/// A tmpfs mounted for the length of a test; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`) at `dir`; `None` where mounting is
    /// not permitted.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if !is_root() {
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(dir.to_path_buf()))
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}");
    }

    /// Writes a filler file until the filesystem is full. Checks first that the tmpfs
    /// is really mounted there, and never writes more than 64 MiB, so a lost mount can
    /// never fill the disk under it.
    fn fill(&self) -> PathBuf {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let target = self.0.to_string_lossy();
        assert!(
            mounts
                .lines()
                .any(|l| l.starts_with("tmpfs ") && l.split(' ').nth(1) == Some(&*target)),
            "the tmpfs at {target} is gone"
        );
        let filler = self.0.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 16 * 1024];
        for _ in 0..64 * 64 {
            if file.write_all(&block).is_err() {
                break;
            }
        }
        let _ = file.write_all(&[0]);
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Files in the maildir's new/ and cur/, and in its tmp/ and the spool (which must
/// hold nothing once a delivery is over).
fn visible_and_leftover(mail: &Path) -> (usize, usize) {
    let count = |dir: PathBuf| std::fs::read_dir(dir).map_or(0, |d| d.count());
    let maildir = mail.join("faults.test/alice");
    let visible = count(maildir.join("new")) + count(maildir.join("cur"));
    let leftover = count(maildir.join("tmp")) + count(mail.join(".spool"));
    (visible, leftover)
}

/// Sends a message of `size` bytes over SMTP; the reply to the end of DATA (or to
/// DATA itself when the server refuses to start the message).
fn smtp_send(port: u16, size: usize) -> String {
    let mut c = LineClient::connect(local(port));
    assert!(c.line().starts_with("220"));
    c.send(b"EHLO client.test\r\n");
    c.until("250 ");
    assert!(c.ask("MAIL FROM:<x@elsewhere.test>").starts_with("250"));
    let rcpt = c.ask("RCPT TO:<alice@faults.test>");
    if !rcpt.starts_with("250") {
        return rcpt;
    }
    let data = c.ask("DATA");
    if !data.starts_with("354") {
        return data;
    }
    let mut body = b"Subject: fault\r\n\r\n".to_vec();
    while body.len() < size {
        body.extend_from_slice(&[b'y'; 78]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    c.send(&body);
    c.line()
}

/// APPENDs a message of `size` bytes over IMAP; the tagged reply.
fn imap_append(port: u16, size: usize) -> String {
    let mut c = LineClient::connect(local(port));
    c.line();
    c.send(format!("l LOGIN alice@faults.test {PASSWORD}\r\n").as_bytes());
    assert!(c.until("l ").starts_with("l OK"));
    let mut message = b"Subject: appended\r\n\r\n".to_vec();
    message.resize(size, b'z');
    let go = c.ask(&format!("a APPEND INBOX {{{}}}", message.len()));
    if !go.starts_with('+') {
        return go;
    }
    c.send(&message);
    c.send(b"\r\n");
    c.until("a ")
}

#[test]
fn full_and_read_only_mailbox_filesystems_fail_cleanly_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    let Some(tmpfs) = Tmpfs::mount(&mail, "2m") else {
        eprintln!("skipped: mounting a tmpfs needs root and mount permission");
        return;
    };
    write(
        dir.path(),
        "users",
        &format!("alice@faults.test {{PLAIN}}{PASSWORD}\n"),
    );
    let (smtp, imap) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "tidegate.toml",
        &format!(
            "hostname = \"faults.test\"\n[server]\nallow_root = true\nshutdown_grace_secs = 1\n\
             [storage]\nmailbox_path = \"mail\"\nworkarea = \"work\"\n[users]\nfile = \"users\"\n\
             [smtp]\nlisten = [\"127.0.0.1:{smtp}\"]\n\
             [imap]\nlisten = [\"127.0.0.1:{imap}\"]\nauth_failure_delay_ms = 10\n"
        ),
    );
    let node = Node::start(&config, local(smtp));
    support::wait_listening(local(imap), &|| node.log());

    let ok = smtp_send(smtp, 1000);
    assert!(ok.starts_with("250"), "{ok}");
    assert_eq!(visible_and_leftover(&mail), (1, 0));

    // Full: the message does not fit.
    let filler = tmpfs.fill();
    let full = smtp_send(smtp, 300_000);
    assert!(
        full.starts_with("452") || full.starts_with("451"),
        "SMTP on a full disk: {full}"
    );
    let full_append = imap_append(imap, 300_000);
    assert!(
        full_append.starts_with("a NO"),
        "APPEND on a full disk: {full_append}"
    );
    assert_eq!(
        visible_and_leftover(&mail),
        (1, 0),
        "something partial stayed"
    );

    // Read-only: nothing can be written at all.
    std::fs::remove_file(filler).unwrap();
    tmpfs.remount("ro");
    let read_only = smtp_send(smtp, 1000);
    assert!(
        read_only.starts_with("452") || read_only.starts_with("451"),
        "SMTP on a read-only disk: {read_only}"
    );
    let read_only_append = imap_append(imap, 1000);
    assert!(
        read_only_append.starts_with("a NO"),
        "APPEND on a read-only disk: {read_only_append}"
    );
    assert_eq!(visible_and_leftover(&mail), (1, 0));

    // Fixed: both work again without a restart.
    tmpfs.remount("rw");
    let ok = smtp_send(smtp, 300_000);
    assert!(ok.starts_with("250"), "{ok}");
    let appended = imap_append(imap, 300_000);
    assert!(appended.starts_with("a OK"), "{appended}");
    assert_eq!(visible_and_leftover(&mail), (3, 0));
    eprintln!(
        "disk full: SMTP {full:?}, IMAP {full_append:?}; read-only: SMTP {read_only:?}, \
         IMAP {read_only_append:?}"
    );
    drop(node);
}

const FRONT: &str = "127.0.0.1";
const BACK1: &str = "127.0.0.2";
const BACK2: &str = "127.0.0.3";
const SOURCE: &str = "127.0.0.5";

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn backend(dir: &Path, name: &str, ip: &str, (pop3, imap): (u16, u16)) -> PathBuf {
    write(
        dir,
        &format!("{name}.toml"),
        &format!(
            "hostname = \"{name}.test\"\n[server]\nallow_root = true\nshutdown_grace_secs = 1\n\
             [storage]\nmailbox_path = \"{name}-mail\"\nworkarea = \"{name}-work\"\n\
             [users]\nfile = \"users\"\n\
             [pop3]\nlisten = [\"{ip}:{pop3}\"]\nauth_failure_delay_ms = 10\n\
             [imap]\nlisten = [\"{ip}:{imap}\"]\nauth_failure_delay_ms = 10\n\
             [trust]\nnetworks = [\"{SOURCE}/32\"]\nproxy_protocol = true\n"
        ),
    )
}

fn pop3_login(port: u16, user: &str) -> (LineClient, String) {
    let mut c = LineClient::connect(at(FRONT, port));
    assert!(c.line().starts_with("+OK"));
    assert!(c.ask(&format!("USER {user}")).starts_with("+OK"));
    let answer = c.ask(&format!("PASS {PASSWORD}"));
    (c, answer)
}

#[test]
fn a_backend_killed_mid_session_ends_its_clients_and_the_front_end_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "users",
        &format!(
            "alice@faults.test {{PLAIN}}{PASSWORD} tohost={BACK2}\nbob@faults.test {{PLAIN}}{PASSWORD}\n"
        ),
    );
    let ports = (free_port_on(&[BACK1, BACK2]), free_port_on(&[BACK1, BACK2]));
    let (pop3, imap) = ports;
    let b1 = backend(dir.path(), "back1", BACK1, ports);
    let b2 = backend(dir.path(), "back2", BACK2, ports);
    let front = write(
        dir.path(),
        "front.toml",
        &format!(
            "hostname = \"front.test\"\n[server]\nallow_root = true\nshutdown_grace_secs = 1\n\
             [storage]\nmailbox_path = \"front-mail\"\nworkarea = \"front-work\"\n\
             [users]\nfile = \"users\"\n\
             [pop3]\nlisten = [\"{FRONT}:{pop3}\"]\nauth_failure_delay_ms = 10\n\
             [imap]\nlisten = [\"{FRONT}:{imap}\"]\n\
             [proxy]\ndefault_host = \"{BACK1}\"\nbackend_ports = {{ pop3 = {pop3}, imap = {imap} }}\n\
             source_addresses = [\"{SOURCE}\"]\nconnect_timeout_secs = 2\nbackend_down_secs = 1\n"
        ),
    );
    let _back1 = Node::start(&b1, at(BACK1, pop3));
    let mut back2 = Some(Node::start(&b2, at(BACK2, pop3)));
    let front_node = Node::start(&front, at(FRONT, pop3));

    // alice (back-end 2) in a POP3 and an IMAP session through the front-end.
    let (mut pop3_alice, answer) = pop3_login(pop3, "alice@faults.test");
    assert!(answer.starts_with("+OK"), "{answer}");
    assert!(pop3_alice.ask("STAT").starts_with("+OK"));
    let mut imap_alice = LineClient::connect(at(FRONT, imap));
    imap_alice.line();
    imap_alice.send(format!("l LOGIN alice@faults.test {PASSWORD}\r\n").as_bytes());
    assert!(imap_alice.until("l ").starts_with("l OK"));
    // bob (back-end 1) in a session that must survive.
    let (mut pop3_bob, answer) = pop3_login(pop3, "bob@faults.test");
    assert!(answer.starts_with("+OK"), "{answer}");

    // Kill back-end 2 outright (SIGKILL, no goodbye).
    let killed = Instant::now();
    drop(back2.take());
    let pop3_end = pop3_alice.ask("STAT");
    let imap_end = imap_alice.ask("n NOOP");
    let ended_after = killed.elapsed();
    assert_eq!(pop3_end, "", "the POP3 client still got {pop3_end:?}");
    assert!(
        imap_end.is_empty() || imap_end.starts_with("* BYE"),
        "the IMAP client still got {imap_end:?}"
    );
    assert!(
        imap_alice.line().is_empty(),
        "the IMAP connection stayed open"
    );
    assert!(
        ended_after < Duration::from_secs(10),
        "took {ended_after:?}"
    );

    // The front-end serves on: bob's session, a new bob, and alice gets a temporary
    // failure instead of a hang while her back-end is down.
    assert!(pop3_bob.ask("STAT").starts_with("+OK"));
    let (_, again) = pop3_login(pop3, "bob@faults.test");
    assert!(again.starts_with("+OK"), "{again}");
    let (_, down) = pop3_login(pop3, "alice@faults.test");
    assert!(down.starts_with("-ERR [SYS/TEMP]"), "{down}");

    // Back-end 2 returns: alice is served again without restarting the front-end.
    let _back2 = Node::start(&b2, at(BACK2, pop3));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, answer) = pop3_login(pop3, "alice@faults.test");
        if answer.starts_with("+OK") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice not served again: {answer}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(front_node.log_contains("listening"));
}
