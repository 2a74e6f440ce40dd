//! A served maildir for the SMTP real-client tests: a users file (argon2id), a maildir
//! in a temporary directory (`LocalStore`), the store's self-signed certificate, and a
//! shell serving POP3, SMTP (inbound), submission (STARTTLS required before AUTH) and
//! LMTP on loopback. Messages are read back over POP3 RETR.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use tidegate_conformance::interp::{Conn, Received};
use tidegate_conformance::pattern::{Pattern, escape};
use tidegate_conformance::shell_driver::{Running, TcpConn};
use tidegate_conformance::{ShellDriver, TestPki};
use tidegate_core::Account;
use tidegate_core::net::PlaintextAuth;
use tidegate_core::pop3::{Pop3Config, Pop3Listener};
use tidegate_core::smtp::{SmtpConfig, SmtpListener, SmtpRole};
use tidegate_store::{Listener, LocalStore, MaildirStore, UsersFile};

/// Every account's password.
pub const PASSWORD: &str = "secret";

/// The accounts: `carol` has a 600-octet quota; `jörg` has a UTF-8 local part.
pub const USERS: [(&str, &str); 4] = [
    ("alice@example.test", ""),
    ("bob@example.test", ""),
    ("carol@example.test", "quota=600"),
    ("jörg@example.test", ""),
];

/// Dot-led lines (one is only "."), 8-bit UTF-8 and Latin-1 bytes, CRLF line ends.
pub const M1: &[u8] = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: dots \
and 8 bits\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n\
caf\xc3\xa9 \xe2\x82\xac \xe6\x97\xa5\xe6\x9c\xac\r\nlatin-1 \xe9\xff\r\nlast line\r\n";

/// The served store and its listeners.
pub struct SmtpEnv {
    dir: tempfile::TempDir,
    running: Option<Running>,
    /// POP3 (plain; login allowed from loopback).
    pub pop3: SocketAddr,
    /// SMTP inbound (MX).
    pub smtp: SocketAddr,
    /// Submission: AUTH only after STARTTLS.
    pub submission: SocketAddr,
    /// LMTP.
    pub lmtp: SocketAddr,
    /// The self-signed certificate, for clients that verify it.
    pub cafile: PathBuf,
    maildir: MaildirStore,
}

impl SmtpEnv {
    /// Starts `driver`'s shell on a fresh maildir.
    pub fn start(driver: &ShellDriver) -> SmtpEnv {
        let dir = tempfile::tempdir().expect("temporary directory");
        let cheap = argon2::Params::new(64, 1, 1, None).expect("valid argon2 parameters");
        let hash = tidegate_store::password::hash_argon2id_with(cheap, PASSWORD.as_bytes());
        let users_path = dir.path().join("users");
        let lines: Vec<String> = USERS
            .iter()
            .map(|(user, fields)| format!("{user} {hash} {fields}\n"))
            .collect();
        std::fs::write(&users_path, lines.concat()).expect("write users file");
        let users = UsersFile::open(&users_path).expect("users file parses");
        let maildir = MaildirStore::new(dir.path().join("mail"), false, "conformance");
        let work = dir.path().join("work");
        let tls = tidegate_store::tls::server_config(None, None, &work, "localhost")
            .expect("self-signed certificate");
        let pop3 = Listener::Pop3(Pop3Listener {
            config: Arc::new(Pop3Config {
                hostname: "pop.test".into(),
                auth_failure_delay: Duration::from_millis(50),
                ..Pop3Config::default()
            }),
            tls: Some(tls.clone()),
            implicit_tls: false,
            plaintext_auth: PlaintextAuth::Trusted(Vec::new()),
            trusted: Vec::new(),
        });
        let smtp = |role, plaintext_auth| {
            Listener::Smtp(SmtpListener {
                config: Arc::new(SmtpConfig {
                    hostname: "mx.test".into(),
                    role,
                    auth_failure_delay: Duration::from_millis(50),
                    ..SmtpConfig::default()
                }),
                tls: Some(tls.clone()),
                plaintext_auth,
                trusted: Vec::new(),
            })
        };
        let listeners = vec![
            pop3,
            smtp(SmtpRole::Inbound, PlaintextAuth::Never),
            smtp(SmtpRole::Submission, PlaintextAuth::Never),
            smtp(SmtpRole::Lmtp, PlaintextAuth::Never),
        ];
        let store = Arc::new(LocalStore::new(users, maildir.clone()));
        let running = driver.start(listeners, store).expect("the shell starts");
        let addrs = running.addrs.clone();
        SmtpEnv {
            pop3: addrs[0],
            smtp: addrs[1],
            submission: addrs[2],
            lmtp: addrs[3],
            running: Some(running),
            cafile: work.join("tls").join("cert.pem"),
            maildir,
            dir,
        }
    }

    /// Writes `bytes` to a file in the temporary directory.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write message file");
        path
    }

    /// How many messages `user`'s maildir holds.
    pub fn count(&self, user: &str) -> usize {
        self.maildir
            .list(&Account(user.into()))
            .expect("maildir lists")
            .len()
    }

    /// Message `number` of `user`, read over POP3 (USER/PASS, RETR, QUIT), unstuffed:
    /// the bytes as stored.
    pub fn retr(&self, user: &str, number: usize) -> Vec<u8> {
        let mut conn = TcpConn::connect(self.pop3, TestPki::shared(), Duration::from_secs(30))
            .expect("POP3 connects");
        let command = format!("USER {user}\r\nPASS {PASSWORD}\r\nRETR {number}\r\n");
        conn.send(command.as_bytes()).expect("send");
        for _ in 0..4 {
            let reply = next_line(&mut conn);
            assert!(reply.starts_with(b"+OK"), "POP3: {}", escape(&reply));
        }
        let mut message = Vec::new();
        loop {
            let line = next_line(&mut conn);
            if line == b".\r\n" {
                break;
            }
            let unstuffed = line.strip_prefix(b".").filter(|l| l.starts_with(b"."));
            message.extend_from_slice(unstuffed.unwrap_or(&line));
        }
        conn.send(b"QUIT\r\n").expect("send");
        message
    }

    /// Stops the shell, which must shut down cleanly.
    pub fn stop(mut self) {
        let running = self.running.take().expect("running");
        running
            .stop(Duration::from_secs(10))
            .expect("clean shutdown");
    }
}

fn next_line(conn: &mut TcpConn) -> Vec<u8> {
    match conn.read_line().expect("POP3 reply") {
        Received::Line(l) => l,
        Received::Closed { .. } => panic!("POP3 closed the connection early"),
    }
}

/// Whether `tool` runs; says loudly when it does not.
pub fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        eprintln!(
            "!!!!! {tool} is not installed: SKIPPING its real-client test (CI installs it) !!!!!"
        );
    }
    found
}

/// Runs a command; panics with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// A client's `KEY VALUE` output lines.
pub fn lines(out: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap_or((l, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The values of `key`, in order.
pub fn values<'a>(out: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    out.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Checks a delivered message: `Return-Path: <sender>`, a `Received:` field (unfolded
/// here, since where it folds depends on the client's EHLO name) from the client's
/// loopback address by `mx.test` with `protocol` (RFC 3848), then exactly `body`.
pub fn check_delivered(stored: &[u8], sender: &str, protocol: &str, body: &[u8]) {
    let show = |b: &[u8]| escape(&b[..b.len().min(400)]);
    let Some(trace) = stored.strip_suffix(body) else {
        let same = stored.iter().zip(body).take_while(|(a, b)| a == b).count();
        panic!(
            "the stored message ({} bytes) does not end with the {} bytes sent: {}",
            stored.len(),
            body.len(),
            show(&stored[same.saturating_sub(100)..])
        );
    };
    let unfolded = String::from_utf8_lossy(trace).replace("\r\n\t", " ");
    let pattern = format!(
        "Return-Path: <{sender}>\\r\\nReceived: from * ([127.0.0.1]) by mx.test (tidegate) \
         with {protocol} id *; * +0000\\r\\n"
    );
    let pattern = Pattern::parse(&pattern).expect("valid pattern");
    assert!(
        pattern.matches(unfolded.as_bytes()),
        "trace fields {} do not match {pattern}",
        show(trace)
    );
}

/// `conformance/clients/NAME`.
pub fn client(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}
