//! Proxy mode end to end: a front-end and two back-ends as separate `tidegate serve`
//! processes on their own 127.0.0.x addresses, real sockets, real files.
//!
//! Users: alice has `tohost=127.0.0.3` (back-end 2); bob has no `tohost` and is served by
//! `default_host = 127.0.0.2` (back-end 1). Each back-end has its own mailbox_path, so
//! the mail a user reads proves which back-end served them. The front-end connects
//! from 127.0.0.5, the only address the back-ends trust to send PROXY headers, and the
//! back-ends log the real client address.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Node, tidegate};

const FRONT: &str = "127.0.0.1";
const BACK1: &str = "127.0.0.2";
const BACK2: &str = "127.0.0.3";
const SOURCE: &str = "127.0.0.5";

/// A port free on every address the test uses.
fn free_port() -> u16 {
    support::free_port_on(&[BACK1, BACK2])
}

struct Cluster {
    dir: tempfile::TempDir,
    pop3: u16,
    submission: u16,
    imap: u16,
    front: Option<Node>,
    back1: Option<Node>,
    back2: Option<Node>,
}

fn backend_config(
    dir: &Path,
    (name, ip): (&str, &str),
    (pop3, submission, imap): (u16, u16, u16),
    mode: &str,
) -> PathBuf {
    // PROXY headers are required from the front-end only in the proxy-v2 mode; in the
    // others it connects plainly and names the client in XCLIENT or ID.
    let headers = mode == "proxy-v2";
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "hostname = \"{name}.test\"\n\
             [storage]\nmailbox_path = \"{name}-mail\"\nworkarea = \"{name}-work\"\n\
             [users]\nfile = \"users\"\n\
             [pop3]\nlisten = [\"{ip}:{pop3}\"]\nauth_failure_delay_ms = 10\n\
             [smtp]\nsubmission = [\"{ip}:{submission}\"]\nauth_failure_delay_ms = 10\n\
             [imap]\nlisten = [\"{ip}:{imap}\"]\nauth_failure_delay_ms = 10\n\
             [trust]\nnetworks = [\"{SOURCE}/32\"]\nproxy_protocol = {headers}\n\
             [server]\nallow_root = true\nshutdown_grace_secs = 1\n"
        ),
    )
    .unwrap();
    path
}

fn frontend_config(dir: &Path, (pop3, submission, imap): (u16, u16, u16), mode: &str) -> PathBuf {
    let path = dir.join("front.toml");
    std::fs::write(
        &path,
        format!(
            "hostname = \"front.test\"\n\
             [storage]\nmailbox_path = \"front-mail\"\nworkarea = \"front-work\"\n\
             [users]\nfile = \"users\"\n\
             [pop3]\nlisten = [\"{FRONT}:{pop3}\"]\nauth_failure_delay_ms = 10\n\
             [smtp]\nsubmission = [\"{FRONT}:{submission}\"]\n\
             [imap]\nlisten = [\"{FRONT}:{imap}\"]\n\
             [proxy]\ndefault_host = \"{BACK1}\"\n\
             backend_ports = {{ pop3 = {pop3}, submission = {submission}, imap = {imap} }}\n\
             source_addresses = [\"{SOURCE}\"]\nconnect_timeout_secs = 3\nbackend_down_secs = 1\n\
             client_address = \"{mode}\"\n\
             [server]\nallow_root = true\nshutdown_grace_secs = 1\n"
        ),
    )
    .unwrap();
    path
}

fn deliver(config: &Path, to: &str, subject: &str) {
    let mut child = tidegate()
        .args(["deliver", "--config"])
        .arg(config)
        .arg(to)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    write!(
        child.stdin.take().unwrap(),
        "From: x@example.org\r\nSubject: {subject}\r\n\r\nbody\r\n"
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with("proxy-v2")
    }

    /// A cluster whose front-end tells the back-ends the client address by `mode`.
    fn start_with(mode: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("users"),
            "alice@example.com {PLAIN}alice-pw tohost=127.0.0.3\n\
             bob@example.com {PLAIN}bob-pw\n",
        )
        .unwrap();
        let ports = (free_port(), free_port(), free_port());
        let (pop3, submission, imap) = ports;
        let b1 = backend_config(dir.path(), ("back1", BACK1), ports, mode);
        let b2 = backend_config(dir.path(), ("back2", BACK2), ports, mode);
        frontend_config(dir.path(), ports, mode);
        deliver(&b1, "bob@example.com", "bob on back-end 1");
        deliver(&b2, "alice@example.com", "alice on back-end 2");
        let mut cluster = Cluster {
            dir,
            pop3,
            submission,
            imap,
            front: None,
            back1: None,
            back2: None,
        };
        cluster.back1 = Some(Node::start(&b1, addr(BACK1, pop3)));
        cluster.back2 = Some(Node::start(&b2, addr(BACK2, pop3)));
        cluster.front = Some(Node::start(
            &cluster.dir.path().join("front.toml"),
            addr(FRONT, pop3),
        ));
        cluster
    }

    fn config(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.toml"))
    }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(to: SocketAddr) -> Client {
        let stream = TcpStream::connect(to).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    fn send(&mut self, text: &str) {
        self.reader.get_mut().write_all(text.as_bytes()).unwrap();
    }

    fn ask(&mut self, text: &str) -> String {
        self.send(text);
        self.line()
    }

    /// Reads a POP3 multi-line answer up to the lone dot.
    fn multiline(&mut self) -> String {
        let mut all = String::new();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "connection closed in a multi-line answer");
            if line == ".\r\n" {
                return all;
            }
            all.push_str(&line);
        }
    }
}

/// Logs in through the front-end and returns the client positioned after `+OK`.
fn pop3_login(port: u16, user: &str, password: &str) -> (Client, String) {
    let mut c = Client::connect(addr(FRONT, port));
    let greeting = c.line();
    assert!(greeting.starts_with("+OK"), "{greeting}");
    assert!(c.ask(&format!("USER {user}\r\n")).starts_with("+OK"));
    let answer = c.ask(&format!("PASS {password}\r\n"));
    (c, answer)
}

#[test]
fn users_reach_their_own_backend_and_the_backend_learns_the_client() {
    let cluster = Cluster::start();

    // alice: tohost = back-end 2; her mail there, nothing of back-end 1's.
    let (mut c, answer) = pop3_login(cluster.pop3, "alice@example.com", "alice-pw");
    assert!(answer.starts_with("+OK"), "{answer}");
    assert!(c.ask("STAT\r\n").starts_with("+OK 1 "));
    assert!(c.ask("RETR 1\r\n").starts_with("+OK"));
    let message = c.multiline();
    assert!(
        message.contains("Subject: alice on back-end 2"),
        "{message}"
    );
    assert!(c.ask("QUIT\r\n").starts_with("+OK back2.test POP3 closing"));

    // bob: no tohost, so default_host = back-end 1. Pipelined commands after PASS
    // travel with the hand-over.
    let mut c = Client::connect(addr(FRONT, cluster.pop3));
    assert!(c.line().starts_with("+OK front.test"));
    c.send("USER bob@example.com\r\nPASS bob-pw\r\nLIST\r\nQUIT\r\n");
    assert!(c.line().starts_with("+OK"));
    assert!(c.line().starts_with("+OK"), "login through the proxy");
    assert!(c.line().starts_with("+OK"));
    assert_eq!(c.multiline(), "1 57\r\n");
    assert!(c.line().starts_with("+OK back1.test POP3 closing"));

    // The back-ends logged the real client (127.0.0.1), not the front-end's 127.0.0.5.
    let back1 = cluster.back1.as_ref().unwrap();
    let back2 = cluster.back2.as_ref().unwrap();
    assert!(back2.log_contains("login alice@example.com from 127.0.0.1"));
    assert!(back1.log_contains("login bob@example.com from 127.0.0.1"));
    assert!(!back1.log_contains("from 127.0.0.5"));

    // A wrong password never reaches a back-end.
    let (_c, answer) = pop3_login(cluster.pop3, "alice@example.com", "wrong");
    assert!(answer.starts_with("-ERR [AUTH]"), "{answer}");
}

#[test]
fn the_backend_learns_the_client_by_xclient_and_imap_id_too() {
    for mode in ["xclient", "imap-id"] {
        let cluster = Cluster::start_with(mode);
        let back2 = cluster.back2.as_ref().unwrap();
        if mode == "xclient" {
            // POP3 and submission name the client in XCLIENT.
            let (mut c, answer) = pop3_login(cluster.pop3, "alice@example.com", "alice-pw");
            assert!(answer.starts_with("+OK"), "{mode}: {answer}");
            assert!(c.ask("QUIT\r\n").starts_with("+OK"));
        } else {
            // IMAP names it in ID before the login.
            let mut c = Client::connect(addr(FRONT, cluster.imap));
            assert!(c.line().starts_with("* OK"));
            let answer = c.ask("a LOGIN alice@example.com alice-pw\r\n");
            assert!(answer.starts_with("a OK"), "{mode}: {answer}");
        }
        assert!(
            back2.log_contains("login alice@example.com from 127.0.0.1"),
            "{mode}"
        );
        assert!(!back2.log_contains("from 127.0.0.5"), "{mode}");
    }
}

#[test]
fn imap_clients_reach_their_backend_through_the_front_end() {
    let cluster = Cluster::start();
    // Python's imaplib, a real client: login through the front-end, then the back-end's
    // IMAP server answers (alice's mail is on back-end 2).
    let script = format!(
        "import imaplib\n\
         c = imaplib.IMAP4('{FRONT}', {port})\n\
         print(c.login('alice@example.com', 'alice-pw')[0])\n\
         typ, data = c.select('INBOX')\n\
         print(typ, data[0].decode())\n\
         typ, data = c.fetch('1', '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')\n\
         print(data[0][1].decode().strip())\n\
         typ, data = c.list()\n\
         print(sorted(line.decode().split(' \"/\" ')[1] for line in data))\n\
         print(c.logout()[0])\n",
        port = cluster.imap
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines[0], "OK");
    assert_eq!(lines[1], "OK 1");
    assert_eq!(lines[2], "Subject: alice on back-end 2");
    assert!(
        lines[3].contains("INBOX") && lines[3].contains("Sent"),
        "{}",
        lines[3]
    );
    assert_eq!(lines[4], "BYE");
    let back2 = cluster.back2.as_ref().unwrap();
    assert!(back2.log_contains("login alice@example.com from 127.0.0.1"));
}

#[test]
fn submission_through_the_front_end_is_delivered_by_the_users_backend() {
    let cluster = Cluster::start();
    let mut c = Client::connect(addr(FRONT, cluster.submission));
    assert!(c.line().starts_with("220 "));
    c.send("EHLO client.example\r\n");
    loop {
        let line = c.line();
        assert!(line.starts_with("250"), "{line}");
        if line.starts_with("250 ") {
            break;
        }
    }
    // AUTH PLAIN for alice (on back-end 2).
    let answer = c.ask("AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAGFsaWNlLXB3\r\n");
    assert!(answer.starts_with("235"), "{answer}");
    assert!(
        c.ask("MAIL FROM:<alice@example.com>\r\n")
            .starts_with("250")
    );
    assert!(c.ask("RCPT TO:<alice@example.com>\r\n").starts_with("250"));
    assert!(c.ask("DATA\r\n").starts_with("354"));
    let answer = c.ask("Subject: via the front-end\r\n\r\nhello\r\n.\r\n");
    assert!(answer.starts_with("250"), "{answer}");
    assert!(c.ask("QUIT\r\n").starts_with("221"));

    // Back-end 2 delivered it, with the real client in its Received header.
    let (mut c, answer) = pop3_login(cluster.pop3, "alice@example.com", "alice-pw");
    assert!(answer.starts_with("+OK"), "{answer}");
    assert!(c.ask("STAT\r\n").starts_with("+OK 2 "));
    assert!(c.ask("RETR 2\r\n").starts_with("+OK"));
    let message = c.multiline();
    assert!(message.contains("Subject: via the front-end"), "{message}");
    assert!(message.contains("[127.0.0.1]"), "{message}");
    assert!(message.contains("by back2.test"), "{message}");
    assert!(!message.contains("127.0.0.5"), "{message}");
}

#[test]
fn a_backend_that_is_down_gets_a_temporary_failure_and_others_keep_serving() {
    let mut cluster = Cluster::start();
    let (mut alice, answer) = pop3_login(cluster.pop3, "alice@example.com", "alice-pw");
    assert!(answer.starts_with("+OK"), "{answer}");

    // Back-end 2 dies mid-session: alice's connection is closed, not hung.
    drop(cluster.back2.take());
    alice.send("STAT\r\n");
    let mut rest = String::new();
    let _ = alice.reader.read_to_string(&mut rest);
    assert!(!rest.starts_with("+OK"), "{rest}");

    // At login: a temporary failure for alice; bob (back-end 1) is unaffected.
    let (_c, answer) = pop3_login(cluster.pop3, "alice@example.com", "alice-pw");
    assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
    let (mut c, answer) = pop3_login(cluster.pop3, "bob@example.com", "bob-pw");
    assert!(answer.starts_with("+OK"), "{answer}");
    assert!(c.ask("STAT\r\n").starts_with("+OK 1 "));

    // Back-end 2 returns: after the circuit breaker's second, alice is served again.
    let b2 = cluster.config("back2");
    cluster.back2 = Some(Node::start(&b2, addr(BACK2, cluster.pop3)));
    std::thread::sleep(Duration::from_millis(1200));
    let (_c, answer) = pop3_login(cluster.pop3, "alice@example.com", "alice-pw");
    assert!(answer.starts_with("+OK"), "{answer}");
}

#[test]
fn a_backend_serves_direct_clients_and_requires_a_header_from_trusted_peers() {
    let cluster = Cluster::start();
    // A direct client (not in [trust] networks) is served by the back-end without a
    // PROXY header.
    let mut c = Client::connect(addr(BACK1, cluster.pop3));
    assert_eq!(c.line(), "+OK back1.test POP3 ready\r\n");
    drop(c);
    // A trusted peer must send the header: garbage instead gets the connection closed
    // without a greeting.
    let socket = socket_from(SOURCE, addr(BACK1, cluster.pop3));
    let mut c = Client {
        reader: BufReader::new(socket),
    };
    c.send("USER bob@example.com\r\n");
    assert_eq!(c.line(), "");
}

/// A TCP connection from a chosen local address.
fn socket_from(source: &str, to: SocketAddr) -> TcpStream {
    // Bind-before-connect through a throwaway listener is not possible with std; ask
    // the kernel by connecting a socket bound with the help of libc.
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor we own; errors are checked.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut local: libc::sockaddr_in = std::mem::zeroed();
        local.sin_family = libc::AF_INET as libc::sa_family_t;
        local.sin_addr.s_addr =
            u32::from_ne_bytes(source.parse::<std::net::Ipv4Addr>().unwrap().octets());
        assert_eq!(
            libc::bind(
                fd,
                &local as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32
            ),
            0
        );
        let SocketAddr::V4(v4) = to else {
            panic!("IPv4 only")
        };
        let mut remote: libc::sockaddr_in = std::mem::zeroed();
        remote.sin_family = libc::AF_INET as libc::sa_family_t;
        remote.sin_port = v4.port().to_be();
        remote.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
        assert_eq!(
            libc::connect(
                fd,
                &remote as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32
            ),
            0
        );
        let stream = TcpStream::from_raw_fd(fd);
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        stream
    }
}
