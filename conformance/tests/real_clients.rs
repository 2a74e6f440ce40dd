//! Real third-party clients against both shells: Python `poplib` (plain USER/PASS, STLS,
//! POP3_SSL) and `curl` (`pop3://`, `pop3s://`, `--ssl-reqd` over STLS), on a real
//! maildir and users file in a temporary directory (the store's `LocalStore`), with the
//! store's generated self-signed certificate. Every check compares exact message bytes.
//!
//! If `python3` or `curl` is missing the affected tests say so loudly and pass; CI
//! installs both.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tidegate_conformance::ShellDriver;
use tidegate_conformance::shell_driver::Running;
use tidegate_core::Account;
use tidegate_core::net::PlaintextAuth;
use tidegate_core::pop3::{Pop3Config, Pop3Listener};
use tidegate_store::{Listener, LocalStore, MaildirStore, UsersFile};

const M1: &[u8] = b"From: carol@example.test\r\nSubject: hello\r\n\r\nHi,\r\n.a line with a leading dot\r\n..\r\nbye\r\n";
const M2: &[u8] = b"Subject: second\r\n\r\nno final newline";
/// What a client reads for M2: the server completes the last line (RFC 1939 §3).
const M2_READ: &[u8] = b"Subject: second\r\n\r\nno final newline\r\n";
const USERS: [&str; 2] = ["alice@example.test", "bob@example.test"];

/// A served maildir: both users have M1 and M2.
struct Env {
    _dir: tempfile::TempDir,
    running: Option<Running>,
    plain: SocketAddr,
    tls: SocketAddr,
    cafile: PathBuf,
    maildir: MaildirStore,
}

impl Env {
    fn start(driver: &ShellDriver) -> Env {
        let dir = tempfile::tempdir().expect("temporary directory");
        let cheap = argon2::Params::new(64, 1, 1, None).expect("valid argon2 parameters");
        let hash = tidegate_store::password::hash_argon2id_with(cheap, b"secret");
        let users_path = dir.path().join("users");
        let lines: Vec<String> = USERS.iter().map(|u| format!("{u} {hash}\n")).collect();
        std::fs::write(&users_path, lines.concat()).expect("write users file");
        let users = UsersFile::open(&users_path).expect("users file parses");
        let maildir = MaildirStore::new(dir.path().join("mail"), false, "conformance");
        for user in USERS {
            for message in [M1, M2] {
                maildir
                    .deliver(&[Account(user.into())], message)
                    .expect("deliver");
            }
        }
        let work = dir.path().join("work");
        let tls = tidegate_store::tls::server_config(None, None, &work, "localhost")
            .expect("self-signed certificate");
        let config = Arc::new(Pop3Config {
            hostname: "pop.test".into(),
            auth_failure_delay: Duration::from_millis(50),
            ..Pop3Config::default()
        });
        let listener = |implicit_tls| {
            Listener::Pop3(Pop3Listener {
                config: config.clone(),
                tls: Some(tls.clone()),
                implicit_tls,
                plaintext_auth: PlaintextAuth::Trusted(Vec::new()),
                trusted: Vec::new(),
            })
        };
        let store = Arc::new(LocalStore::new(users, maildir.clone()));
        let running = driver
            .start(vec![listener(false), listener(true)], store)
            .expect("the shell starts");
        Env {
            plain: running.addrs[0],
            tls: running.addrs[1],
            running: Some(running),
            cafile: work.join("tls").join("cert.pem"),
            maildir,
            _dir: dir,
        }
    }

    /// The files of `user`'s inbox: `(file, uid)`.
    fn inbox(&self, user: &str) -> Vec<(String, String)> {
        let listing = self
            .maildir
            .list(&Account(user.into()))
            .expect("maildir lists");
        listing.into_iter().map(|m| (m.file.0, m.uid)).collect()
    }

    fn stop(mut self) {
        let running = self.running.take().expect("running");
        running
            .stop(Duration::from_secs(10))
            .expect("clean shutdown");
    }
}

fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        eprintln!(
            "!!!!! {tool} is not installed: SKIPPING its real-client test (CI installs it) !!!!!"
        );
    }
    found
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/poplib_client.py")
}

/// Runs the poplib client; returns its `KEY VALUE` lines.
fn poplib(env: &Env, mode: &str, user: &str, delete_first: bool) -> Vec<(String, String)> {
    let port = if mode == "ssl" {
        env.tls.port()
    } else {
        env.plain.port()
    };
    let mut cmd = Command::new("python3");
    cmd.arg(script_path())
        .args([mode, "127.0.0.1", &port.to_string(), user, "secret"])
        .arg(&env.cafile);
    if delete_first {
        cmd.arg("--delete-first");
    }
    let out = cmd.output().expect("python3 runs");
    assert!(
        out.status.success(),
        "poplib ({mode}) failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap_or((l, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn values<'a>(out: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    out.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn one<'a>(out: &'a [(String, String)], key: &str) -> &'a str {
    match values(out, key).as_slice() {
        [v] => v,
        other => panic!("expected one {key:?} line, got {other:?} in {out:?}"),
    }
}

fn decode(b64: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64 from the client")
}

fn check_poplib(driver: ShellDriver) {
    if !have("python3") {
        return;
    }
    let env = Env::start(&driver);
    let user = USERS[0];
    let uids: Vec<String> = env.inbox(user).into_iter().map(|(_, uid)| uid).collect();
    let sizes = [M1.len(), M2.len()];
    for (mode, delete) in [("stls", false), ("ssl", false), ("plain", true)] {
        let out = poplib(&env, mode, user, delete);
        assert!(
            one(&out, "welcome").starts_with("+OK pop.test"),
            "{mode}: {out:?}"
        );
        let capa = one(&out, "capa");
        for cap in ["TOP", "UIDL", "USER", "SASL", "PIPELINING"] {
            assert!(
                capa.split(' ').any(|c| c == cap),
                "{mode}: CAPA lacks {cap}: {capa}"
            );
        }
        assert_eq!(
            capa.split(' ').any(|c| c == "STLS"),
            mode == "plain",
            "{mode}: {capa}"
        );
        assert_eq!(
            one(&out, "pass"),
            format!("+OK Logged in, 2 messages ({} octets)", sizes[0] + sizes[1])
        );
        assert_eq!(one(&out, "stat"), format!("2 {}", sizes[0] + sizes[1]));
        assert_eq!(one(&out, "list"), format!("1 {},2 {}", sizes[0], sizes[1]));
        assert_eq!(one(&out, "uidl"), format!("1 {},2 {}", uids[0], uids[1]));
        let messages: Vec<Vec<u8>> = values(&out, "message").into_iter().map(decode).collect();
        assert_eq!(
            messages,
            vec![M1.to_vec(), M2_READ.to_vec()],
            "{mode}: message bytes"
        );
        assert_eq!(
            decode(one(&out, "top")),
            b"From: carol@example.test\r\nSubject: hello\r\n\r\n".to_vec(),
            "{mode}: TOP 1 0"
        );
        let deleted = if delete { 1 } else { 0 };
        assert_eq!(
            one(&out, "quit"),
            format!("+OK pop.test POP3 closing ({deleted} messages deleted)")
        );
        if delete {
            assert_eq!(one(&out, "dele"), "+OK Message 1 deleted");
            assert_eq!(one(&out, "stat_after"), format!("1 {}", sizes[1]));
        } else {
            // Retrieved, not deleted: QUIT moved both to cur/ and kept their names.
            let inbox = env.inbox(user);
            assert!(
                inbox.iter().all(|(file, _)| file.starts_with("cur/")),
                "{inbox:?}"
            );
            assert_eq!(
                inbox.iter().map(|(_, u)| u).collect::<Vec<_>>(),
                uids.iter().collect::<Vec<_>>()
            );
        }
    }
    assert_eq!(env.inbox(user).len(), 1, "DELE + QUIT removed the file");
    env.stop();
}

/// Runs curl; returns stdout, asserting success unless `fail` is expected.
fn curl(args: &[&str], expect_success: bool) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl runs");
    assert_eq!(
        out.status.success(),
        expect_success,
        "curl {args:?}: exit {:?}, stderr {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn check_curl(driver: ShellDriver) {
    if !have("curl") {
        return;
    }
    let env = Env::start(&driver);
    let login = format!("{}:secret", USERS[1]);
    let plain = |path: &str| format!("pop3://127.0.0.1:{}/{path}", env.plain.port());
    let cafile = env.cafile.to_str().expect("UTF-8 path");

    assert_eq!(
        curl(&[&plain("1"), "-u", &login], true),
        M1,
        "RETR over plain POP3"
    );
    assert_eq!(
        curl(&[&plain(""), "-u", &login], true),
        format!("1 {}\r\n2 {}\r\n", M1.len(), M2.len()).into_bytes(),
        "LIST"
    );
    assert_eq!(
        curl(
            &["--ssl-reqd", "--cacert", cafile, &plain("2"), "-u", &login],
            true
        ),
        M2_READ,
        "RETR after STLS"
    );
    let tls = format!("pop3s://127.0.0.1:{}/1", env.tls.port());
    assert_eq!(
        curl(&["-k", &tls, "-u", &login], true),
        M1,
        "RETR over pop3s"
    );
    let wrong = format!("{}:wrong", USERS[1]);
    curl(&[&plain("1"), "-u", &wrong], false);
    curl(
        &[
            "--ssl-reqd",
            "--cacert",
            cafile,
            &plain("1"),
            "-X",
            "DELE",
            "-I",
            "-u",
            &login,
        ],
        true,
    );
    assert_eq!(
        curl(&[&plain(""), "-u", &login], true),
        format!("1 {}\r\n", M2.len()).into_bytes(),
        "LIST after DELE 1 and QUIT"
    );
    assert_eq!(env.inbox(USERS[1]).len(), 1);
    env.stop();
}

fn mio() -> ShellDriver {
    ShellDriver::new("mio", tidegate_shell_mio::serve)
}

fn smol() -> ShellDriver {
    ShellDriver::new("smol", tidegate_shell_smol::serve)
}

#[test]
fn poplib_against_mio() {
    check_poplib(mio());
}

#[test]
fn poplib_against_smol() {
    check_poplib(smol());
}

#[test]
fn curl_against_mio() {
    check_curl(mio());
}

#[test]
fn curl_against_smol() {
    check_curl(smol());
}
