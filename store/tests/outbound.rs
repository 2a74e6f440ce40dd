//! Outbound delivery over real loopback sockets: a small scripted SMTP server written
//! here (it records what it got, and speaks STARTTLS with a certificate from a test CA),
//! tidegate's own SMTP server on the smol shell, and Postfix's `smtp-sink` when it is
//! installed.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use tidegate_core::secret::Secret;
use tidegate_store::outbound::{
    Destination, OutboundMessage, Outcome, SendFailure, SendOptions, TlsPolicy, send,
};

// ---- test PKI -----------------------------------------------------------------------

/// A CA and a server certificate it signed for `mx.test`.
struct Pki {
    roots: Arc<RootCertStore>,
    server: Arc<ServerConfig>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["mx.test".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    Pki {
        roots: Arc::new(roots),
        server: server_config(
            vec![leaf.der().clone(), ca.der().clone()],
            key.serialize_der(),
        ),
    }
}

fn server_config(chain: Vec<CertificateDer<'static>>, key: Vec<u8>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)))
        .unwrap();
    Arc::new(config)
}

// ---- the scripted server ------------------------------------------------------------

/// How the test server behaves.
#[derive(Clone)]
struct Script {
    /// EHLO keywords after the first line.
    ehlo: Vec<&'static str>,
    /// Offer and do STARTTLS with this certificate.
    tls: Option<Arc<ServerConfig>>,
    /// After `220` to STARTTLS, send garbage instead of a handshake and hang up.
    break_tls: bool,
    /// The RCPT reply for an address.
    rcpt: fn(&str) -> &'static str,
    /// The reply to the end of the data.
    final_reply: &'static str,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            ehlo: vec!["PIPELINING", "8BITMIME", "SIZE 10000000"],
            tls: None,
            break_tls: false,
            rcpt: |_| "250 2.1.5 ok",
            final_reply: "250 2.0.0 queued",
        }
    }
}

/// What the server saw on one connection.
#[derive(Debug, Default)]
struct Seen {
    commands: Vec<String>,
    data: Vec<u8>,
    tls: bool,
}

trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

/// A buffered line/byte reader over a connection that can switch to TLS.
struct Wire {
    conn: Box<dyn Conn>,
    buf: Vec<u8>,
}

impl Wire {
    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 16 * 1024];
        match self.conn.read(&mut tmp) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..p + 2).take(p).collect();
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    fn send(&mut self, line: &str) {
        let _ = self.conn.write_all(format!("{line}\r\n").as_bytes());
        let _ = self.conn.flush();
    }
}

/// Serves `connections` connections one after the other; the thread returns what each saw.
fn serve(script: Script, connections: usize) -> (SocketAddr, JoinHandle<Vec<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = thread::spawn(move || {
        (0..connections)
            .map(|_| {
                let (sock, _) = listener.accept().unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                converse(sock, &script)
            })
            .collect()
    });
    (addr, thread)
}

fn converse(sock: TcpStream, script: &Script) -> Seen {
    let mut seen = Seen::default();
    let mut wire = Wire {
        conn: Box::new(sock.try_clone().unwrap()),
        buf: Vec::new(),
    };
    wire.send("220 mx.test ESMTP test server");
    while let Some(line) = wire.line() {
        seen.commands.push(line.clone());
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            let mut lines = vec!["mx.test"];
            lines.extend(script.ehlo.iter().copied());
            if script.tls.is_some() && !seen.tls {
                lines.push("STARTTLS");
            }
            for (i, l) in lines.iter().enumerate() {
                let sep = if i + 1 == lines.len() { ' ' } else { '-' };
                wire.send(&format!("250{sep}{l}"));
            }
        } else if upper == "STARTTLS" {
            let Some(config) = script.tls.clone() else {
                wire.send("502 5.5.1 no");
                continue;
            };
            wire.send("220 2.0.0 go ahead");
            if script.break_tls {
                let _ = wire.conn.write_all(b"this is not TLS\r\n");
                return seen;
            }
            assert!(wire.buf.is_empty(), "client pipelined after STARTTLS");
            let tls = ServerConnection::new(config).unwrap();
            wire.conn = Box::new(StreamOwned::new(tls, sock.try_clone().unwrap()));
            seen.tls = true;
        } else if upper.starts_with("AUTH PLAIN") {
            wire.send("235 2.7.0 ok");
        } else if upper.starts_with("MAIL") {
            wire.send("250 2.1.0 ok");
        } else if upper.starts_with("RCPT") {
            let address = line[8..].trim_matches(|c| c == '<' || c == '>');
            wire.send((script.rcpt)(address));
        } else if upper == "DATA" {
            wire.send("354 go ahead");
            while let Some(line) = wire.line() {
                if line == "." {
                    break;
                }
                let line = line.strip_prefix('.').unwrap_or(&line);
                seen.data.extend_from_slice(line.as_bytes());
                seen.data.extend_from_slice(b"\r\n");
            }
            wire.send(script.final_reply);
        } else if upper.starts_with("BDAT") {
            let mut words = line.split(' ').skip(1);
            let n: usize = words.next().unwrap().parse().unwrap();
            let last = words.next() == Some("LAST");
            let Some(chunk) = wire.exact(n) else {
                return seen;
            };
            seen.data.extend_from_slice(&chunk);
            if last {
                wire.send(script.final_reply);
            } else {
                wire.send(&format!("250 2.0.0 {n} octets"));
            }
        } else if upper == "QUIT" {
            wire.send("221 2.0.0 bye");
            return seen;
        } else {
            wire.send("500 5.5.2 what");
        }
    }
    seen
}

// ---- helpers ------------------------------------------------------------------------

fn options() -> SendOptions {
    let mut options = SendOptions::new("client.test");
    options.tls = TlsPolicy::Disabled;
    options.connect_timeout = Duration::from_secs(5);
    options.command_timeout = Duration::from_secs(10);
    options.data_timeout = Duration::from_secs(10);
    options
}

fn dest(addrs: &[SocketAddr]) -> Destination {
    Destination {
        addrs: addrs.to_vec(),
        tls_name: "mx.test".into(),
    }
}

/// Sends `body` (written to a file) to `dest` for `recipients`.
fn deliver(
    dest: &Destination,
    options: &SendOptions,
    recipients: &[&str],
    prefix: &[u8],
    body: &[u8],
) -> Result<Vec<(String, Outcome)>, SendFailure> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("message");
    fs::write(&path, body).unwrap();
    let recipients: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
    let message = OutboundMessage {
        mail_from: "alice@example.com",
        recipients: &recipients,
        prefix,
        path: &path,
        eight_bit: false,
        smtputf8: false,
        xclient: None,
    };
    send(dest, options, &message).map(|outcomes| {
        outcomes
            .into_iter()
            .map(|o| (o.recipient, o.outcome))
            .collect()
    })
}

fn delivered_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Delivered(reply) => reply.text(),
        other => panic!("not delivered: {other:?}"),
    }
}

const MESSAGE: &[u8] =
    b"From: alice@example.com\r\nSubject: test\r\n\r\n.starts with a dot\r\n..two\r\nend\r\n";

/// An address nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

// ---- the scripted server ------------------------------------------------------------

#[test]
fn data_delivery_reports_each_recipient_and_the_bytes_arrive_intact() {
    let script = Script {
        rcpt: |a| {
            if a.starts_with("nobody") {
                "550 5.1.1 no such user"
            } else {
                "250 2.1.5 ok"
            }
        },
        ..Script::default()
    };
    let (addr, server) = serve(script, 1);
    let prefix = b"DKIM-Signature: v=1; test\r\n";
    let outcomes = deliver(
        &dest(&[addr]),
        &options(),
        &["bob@example.net", "nobody@example.net"],
        prefix,
        MESSAGE,
    )
    .unwrap();
    let seen = server.join().unwrap().remove(0);
    assert_eq!(outcomes[0].0, "bob@example.net");
    assert_eq!(delivered_text(&outcomes[0].1), "250 2.0.0 queued");
    assert_eq!(
        outcomes[1],
        (
            "nobody@example.net".to_string(),
            Outcome::Failed(tidegate_core::smtp_client::SmtpReply {
                code: 550,
                enhanced: Some((5, 1, 1)),
                lines: vec!["5.1.1 no such user".into()],
            })
        )
    );
    let mut expected = prefix.to_vec();
    expected.extend_from_slice(MESSAGE);
    assert_eq!(
        String::from_utf8_lossy(&seen.data),
        String::from_utf8_lossy(&expected)
    );
    let size = expected.len();
    assert_eq!(
        seen.commands,
        vec![
            "EHLO client.test".to_string(),
            format!("MAIL FROM:<alice@example.com> SIZE={size}"),
            "RCPT TO:<bob@example.net>".into(),
            "RCPT TO:<nobody@example.net>".into(),
            "DATA".into(),
            "QUIT".into(),
        ]
    );
}

#[test]
fn bdat_delivery_of_a_large_message_in_chunks() {
    let script = Script {
        ehlo: vec!["PIPELINING", "CHUNKING"],
        ..Script::default()
    };
    let (addr, server) = serve(script, 1);
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..20_000 {
        body.extend_from_slice(format!(".line {i} of the body\r\n").as_bytes());
    }
    let outcomes = deliver(&dest(&[addr]), &options(), &["bob@example.net"], b"", &body).unwrap();
    assert_eq!(delivered_text(&outcomes[0].1), "250 2.0.0 queued");
    let seen = server.join().unwrap().remove(0);
    assert!(seen.data == body, "the BDAT chunks add up to the message");
    let bdats = seen
        .commands
        .iter()
        .filter(|c| c.starts_with("BDAT"))
        .count();
    assert!(bdats > 5, "{bdats} chunks");
    assert_eq!(seen.commands.last().unwrap(), "QUIT");
}

#[test]
fn an_address_refusing_connections_is_skipped_and_all_refusing_is_temporary() {
    let (addr, server) = serve(Script::default(), 1);
    let outcomes = deliver(
        &dest(&[closed_port(), addr]),
        &options(),
        &["bob@example.net"],
        b"",
        MESSAGE,
    )
    .unwrap();
    assert_eq!(delivered_text(&outcomes[0].1), "250 2.0.0 queued");
    server.join().unwrap();
    let failure = deliver(
        &dest(&[closed_port(), closed_port()]),
        &options(),
        &["bob@example.net"],
        b"",
        MESSAGE,
    )
    .unwrap_err();
    assert!(!failure.permanent);
    assert!(failure.detail.contains("cannot connect"), "{failure:?}");
    let failure = deliver(&dest(&[]), &options(), &["bob@example.net"], b"", MESSAGE).unwrap_err();
    assert!(!failure.permanent);
}

#[test]
fn opportunistic_starttls_accepts_an_unverified_certificate() {
    let pki = pki();
    let script = Script {
        tls: Some(pki.server.clone()),
        ..Script::default()
    };
    let (addr, server) = serve(script, 1);
    let mut options = options();
    options.tls = TlsPolicy::Opportunistic; // roots stay empty: nothing would verify
    let outcomes = deliver(&dest(&[addr]), &options, &["bob@example.net"], b"", MESSAGE).unwrap();
    assert_eq!(delivered_text(&outcomes[0].1), "250 2.0.0 queued");
    let seen = server.join().unwrap().remove(0);
    assert!(seen.tls);
    assert_eq!(seen.data, MESSAGE);
    assert_eq!(
        &seen.commands[..3],
        &["EHLO client.test", "STARTTLS", "EHLO client.test"]
    );
}

#[test]
fn opportunistic_tls_that_breaks_is_retried_in_plaintext() {
    let pki = pki();
    let script = Script {
        tls: Some(pki.server.clone()),
        break_tls: true,
        ..Script::default()
    };
    let (addr, server) = serve(script, 2);
    let mut options = options();
    options.tls = TlsPolicy::Opportunistic;
    let outcomes = deliver(&dest(&[addr]), &options, &["bob@example.net"], b"", MESSAGE).unwrap();
    assert_eq!(delivered_text(&outcomes[0].1), "250 2.0.0 queued");
    let seen = server.join().unwrap();
    assert_eq!(seen[0].commands, vec!["EHLO client.test", "STARTTLS"]);
    assert!(!seen[1].commands.iter().any(|c| c == "STARTTLS"));
    assert_eq!(seen[1].data, MESSAGE);
}

#[test]
fn required_starttls_verifies_the_certificate_for_the_name() {
    let pki = pki();
    let mut options = options();
    options.tls = TlsPolicy::Required;
    options.roots = pki.roots.clone();
    let script = Script {
        tls: Some(pki.server.clone()),
        ..Script::default()
    };

    let (addr, server) = serve(script.clone(), 1);
    let outcomes = deliver(&dest(&[addr]), &options, &["bob@example.net"], b"", MESSAGE).unwrap();
    assert_eq!(delivered_text(&outcomes[0].1), "250 2.0.0 queued");
    assert!(server.join().unwrap()[0].tls);

    // The certificate is for mx.test, not for the name this destination must match.
    let (addr, server) = serve(script, 1);
    let wrong = Destination {
        addrs: vec![addr],
        tls_name: "other.test".into(),
    };
    let failure = deliver(&wrong, &options, &["bob@example.net"], b"", MESSAGE).unwrap_err();
    assert!(!failure.permanent, "{failure:?}");
    assert!(failure.detail.contains("TLS"), "{failure:?}");
    let seen = server.join().unwrap().remove(0);
    assert!(seen.data.is_empty());
    assert!(!seen.commands.iter().any(|c| c.starts_with("MAIL")));

    // No STARTTLS offered at all.
    let (addr, server) = serve(Script::default(), 1);
    let failure =
        deliver(&dest(&[addr]), &options, &["bob@example.net"], b"", MESSAGE).unwrap_err();
    assert!(!failure.permanent);
    assert!(
        failure.detail.contains("STARTTLS is required"),
        "{failure:?}"
    );
    assert_eq!(
        server.join().unwrap()[0].commands,
        vec!["EHLO client.test", "QUIT"]
    );
}

#[test]
fn auth_plain_goes_to_the_smarthost_only_inside_tls() {
    let pki = pki();
    let script = Script {
        tls: Some(pki.server.clone()),
        ehlo: vec!["AUTH PLAIN LOGIN", "PIPELINING"],
        ..Script::default()
    };
    let (addr, server) = serve(script, 1);
    let mut options = options();
    options.tls = TlsPolicy::Required;
    options.roots = pki.roots.clone();
    options.auth = Some(("relay-user".into(), Secret::new(b"s3cret".to_vec())));
    let outcomes = deliver(&dest(&[addr]), &options, &["bob@example.net"], b"", MESSAGE).unwrap();
    assert_eq!(delivered_text(&outcomes[0].1), "250 2.0.0 queued");
    let seen = server.join().unwrap().remove(0);
    let auth = seen
        .commands
        .iter()
        .position(|c| c.starts_with("AUTH PLAIN "))
        .expect("AUTH sent");
    let starttls = seen.commands.iter().position(|c| c == "STARTTLS").unwrap();
    assert!(auth > starttls);
    let decoded = BASE64.decode(&seen.commands[auth][11..]).unwrap();
    assert_eq!(decoded, b"\0relay-user\0s3cret");
}

#[test]
fn a_server_that_never_greets_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        // Say nothing; wait until the client gives up and closes.
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = sock.read(&mut [0u8; 64]);
    });
    let mut options = options();
    options.command_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let failure =
        deliver(&dest(&[addr]), &options, &["bob@example.net"], b"", MESSAGE).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!failure.permanent);
    assert!(failure.detail.contains("timed out"), "{failure:?}");
    holder.join().unwrap();
}

#[test]
fn eight_bit_mail_to_a_server_without_8bitmime_fails_permanently() {
    let script = Script {
        ehlo: vec!["PIPELINING"],
        ..Script::default()
    };
    let (addr, server) = serve(script, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("message");
    fs::write(&path, "Subject: caf\u{e9}\r\n\r\nd\u{e9}j\u{e0} vu\r\n").unwrap();
    let recipients = vec!["bob@example.net".to_string()];
    let message = OutboundMessage {
        mail_from: "alice@example.com",
        recipients: &recipients,
        prefix: b"",
        path: &path,
        eight_bit: true,
        smtputf8: false,
        xclient: None,
    };
    let failure = send(&dest(&[addr]), &options(), &message).unwrap_err();
    assert!(failure.permanent);
    assert!(failure.detail.contains("8BITMIME"), "{failure:?}");
    assert_eq!(
        server.join().unwrap()[0].commands,
        vec!["EHLO client.test", "QUIT"]
    );
}

// ---- tidegate's own SMTP server -------------------------------------------------------

/// A tidegate SMTP or LMTP listener (smol shell, STARTTLS with the test PKI's server
/// certificate) delivering into a maildir under `dir`, for the users in `users`.
struct OwnServer {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    pki: Pki,
    shutdown: tidegate_store::Shutdown,
    thread: JoinHandle<()>,
}

impl OwnServer {
    fn start(role: tidegate_core::smtp::SmtpRole, hostname: &str, users: &str) -> OwnServer {
        use tidegate_core::net::PlaintextAuth;
        use tidegate_core::smtp::{SmtpConfig, SmtpListener};
        use tidegate_store::maildir::MaildirStore;
        use tidegate_store::users::UsersFile;
        use tidegate_store::{Listener, Listeners, LocalStore, ServerSpec, Shutdown};

        let dir = tempfile::tempdir().unwrap();
        let users_file = dir.path().join("users");
        fs::write(&users_file, users).unwrap();
        let maildir = MaildirStore::new(dir.path().join("mail"), true, hostname);
        let store = LocalStore::new(UsersFile::open(&users_file).unwrap(), maildir);
        let pki = pki();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let smtp = SmtpListener {
            config: Arc::new(SmtpConfig {
                hostname: hostname.into(),
                role,
                ..SmtpConfig::default()
            }),
            tls: Some(pki.server.clone()),
            plaintext_auth: PlaintextAuth::Never,
            trusted: Vec::new(),
        };
        let spec = ServerSpec {
            listeners: vec![listener],
            factory: Arc::new(Listeners(vec![Listener::Smtp(smtp)])),
            executor: Arc::new(store),
            max_connections: 10,
            shutdown_grace: Duration::ZERO,
            threads: 1,
            workers: 2,
        };
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let thread = thread::spawn(move || tidegate_shell_smol::serve(spec, stop).expect("serves"));
        OwnServer {
            dir,
            addr,
            pki,
            shutdown,
            thread,
        }
    }

    /// Stops the server and waits for it.
    fn stop(self) -> tempfile::TempDir {
        self.shutdown.trigger();
        self.thread.join().unwrap();
        self.dir
    }
}

#[test]
fn delivery_into_tidegate_smtp_server_with_starttls() {
    let server = OwnServer::start(
        tidegate_core::smtp::SmtpRole::Inbound,
        "mx.test",
        "bob@example.org {PLAIN}x\n",
    );
    let addr = server.addr;
    let mut options = options();
    options.tls = TlsPolicy::Required;
    options.roots = server.pki.roots.clone();
    let outcomes = deliver(
        &dest(&[addr]),
        &options,
        &["bob@example.org", "nobody@example.org"],
        b"X-Test: prefix\r\n",
        MESSAGE,
    )
    .unwrap();
    let dir = server.stop();
    assert!(
        matches!(outcomes[0].1, Outcome::Delivered(_)),
        "{outcomes:?}"
    );
    match &outcomes[1].1 {
        Outcome::Failed(reply) => assert_eq!(reply.code, 550),
        other => panic!("{other:?}"),
    }
    let new = dir.path().join("mail/example.org/bob/new");
    let files: Vec<_> = fs::read_dir(&new).unwrap().collect();
    assert_eq!(files.len(), 1);
    let stored = fs::read(files[0].as_ref().unwrap().path()).unwrap();
    let mut expected = b"X-Test: prefix\r\n".to_vec();
    expected.extend_from_slice(MESSAGE);
    assert!(
        stored.ends_with(&expected),
        "{}",
        String::from_utf8_lossy(&stored)
    );
}

// ---- Postfix smtp-sink ----------------------------------------------------------------

fn smtp_sink() -> Option<&'static str> {
    ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

#[test]
fn delivery_to_postfix_smtp_sink() {
    let Some(sink) = smtp_sink() else {
        eprintln!("smtp-sink (Postfix) is not installed: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dumps = dir.path().join("dumps");
    fs::create_dir(&dumps).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dumps, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let addr = closed_port();
    let mut command = std::process::Command::new(sink);
    // -u: the user to run as when started by root; -d: one file per transaction.
    command.args(["-u", "nobody", "-d"]);
    command.arg(format!("{}/%M.", dumps.display()));
    command.arg(addr.to_string()).arg("10");
    let mut child = command.spawn().expect("smtp-sink starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "smtp-sink did not listen");
        thread::sleep(Duration::from_millis(50));
    }
    let result = deliver(
        &dest(&[addr]),
        &options(),
        &["bob@example.net", "carol@example.net"],
        b"",
        MESSAGE,
    );
    let _ = child.kill();
    let _ = child.wait();
    let outcomes = result.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Delivered(_))),
        "{outcomes:?}"
    );
    let dumped: Vec<_> = fs::read_dir(&dumps).unwrap().collect();
    assert_eq!(dumped.len(), 1);
    // smtp-sink writes what it received, unstuffed, with its own trace fields first.
    let text = fs::read_to_string(dumped[0].as_ref().unwrap().path())
        .unwrap()
        .replace("\r\n", "\n");
    assert!(text.contains("X-Mail-Args: <alice@example.com>"), "{text}");
    assert!(
        text.contains("X-Rcpt-Args: <bob@example.net>\nX-Rcpt-Args: <carol@example.net>"),
        "{text}"
    );
    let body = String::from_utf8_lossy(MESSAGE).replace("\r\n", "\n");
    assert!(text.contains(&body), "{text}");
}

// ---- LMTP to a back-end (proxy mode) ----------------------------------------------------

#[test]
fn lmtp_relay_into_tidegate_lmtp_server_per_recipient() {
    use tidegate_store::queue::lmtp::{Dispatch, LmtpTransport};
    use tidegate_store::queue::{Attempt, Transport, Verdict};

    let server = OwnServer::start(
        tidegate_core::smtp::SmtpRole::Lmtp,
        "back.test",
        "bob@example.org {PLAIN}x\ncarol@example.org {PLAIN}x\n",
    );
    let addr = server.addr;

    // The queue's transport: a back-end attempt goes over LMTP to host:port.
    let mut options = options();
    options.lmtp = true;
    let dispatch = Dispatch {
        backends: Some(LmtpTransport {
            port: addr.port(),
            options: options.clone(),
            pool: tidegate_store::outbound::ConnectionPool::new(Default::default()),
            xclient: false,
        }),
        relay: None,
    };
    let path = server.dir.path().join("message");
    fs::write(&path, MESSAGE).unwrap();
    let recipients = vec![
        "bob@example.org".to_owned(),
        "nobody@example.org".to_owned(),
        "carol@example.org".to_owned(),
    ];
    let attempt = |backend| Attempt {
        id: "q1",
        domain: "127.0.0.1",
        backend,
        sender: "alice@example.com",
        recipients: &recipients,
        message: &path,
        eight_bit: false,
        smtputf8: false,
        client: None,
    };
    let verdicts = dispatch.send(&attempt(Some("127.0.0.1"))).unwrap();
    assert!(
        matches!(&verdicts[0], Verdict::Delivered(text) if text.contains("<bob@example.org>")),
        "{verdicts:?}"
    );
    assert!(
        matches!(&verdicts[1], Verdict::Failed(text) if text.starts_with("550 5.1.1")),
        "{verdicts:?}"
    );
    assert!(
        matches!(&verdicts[2], Verdict::Delivered(text) if text.contains("<carol@example.org>")),
        "{verdicts:?}"
    );
    // The connection waits in the pool and carries the next message to the back-end
    // (tidegate's LMTP server takes one transaction after the other).
    let pool = &dispatch.backends.as_ref().unwrap().pool;
    assert_eq!(pool.idle_count(), 1);
    let again = dispatch.send(&attempt(Some("127.0.0.1"))).unwrap();
    assert!(
        matches!(
            again.as_slice(),
            [
                Verdict::Delivered(_),
                Verdict::Failed(_),
                Verdict::Delivered(_)
            ]
        ),
        "{again:?}"
    );
    assert_eq!(pool.idle_count(), 1);
    dispatch.close_all();
    assert_eq!(pool.idle_count(), 0);
    // Without [relay], an ordinary remote attempt fails permanently.
    let remote = dispatch.send(&attempt(None)).unwrap_err();
    assert!(remote.permanent, "{remote:?}");

    // LMTP inside required, verified STARTTLS.
    options.tls = TlsPolicy::Required;
    options.roots = server.pki.roots.clone();
    let outcomes = deliver(&dest(&[addr]), &options, &["bob@example.org"], b"", MESSAGE).unwrap();
    assert!(
        delivered_text(&outcomes[0].1).contains("<bob@example.org>"),
        "{outcomes:?}"
    );
    let dir = server.stop();

    let stored = |user: &str| -> Vec<Vec<u8>> {
        let new = dir.path().join(format!("mail/example.org/{user}/new"));
        fs::read_dir(&new)
            .unwrap()
            .map(|f| fs::read(f.unwrap().path()).unwrap())
            .collect()
    };
    let bob = stored("bob");
    assert_eq!(bob.len(), 3);
    let carol = stored("carol");
    assert_eq!(carol.len(), 2);
    let text = String::from_utf8_lossy(&carol[0]).into_owned();
    assert!(
        text.starts_with("Return-Path: <alice@example.com>\r\n"),
        "{text}"
    );
    assert!(text.contains(" with LMTP"), "{text}");
    assert!(carol[0].ends_with(MESSAGE), "{text}");
}
