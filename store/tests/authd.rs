//! authd end to end: the real server session on the smol shell over loopback TCP, and
//! the real [`AuthdDirectory`] client (plain, TLS with a CA, TLS with a pinned
//! self-signed certificate), plus raw protocol clients for what the directory hides.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tidegate_core::authd::AuthdConfig;
use tidegate_core::secret::Secret;
use tidegate_core::user::{AuthOutcome, Lookup, UserRecord};
use tidegate_store::authd_server::{AuthdService, DirectoryExecutor};
use tidegate_store::users::{
    AuthdClientConfig, AuthdClientTls, AuthdDirectory, UserDirectory, UserTable,
};
use tidegate_store::{ServerSpec, Shutdown};

const SECRET: &[u8] = b"correct horse battery staple";
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const USERS: &str = "\
alice@example.com {PLAIN}wonderland tohost=b1 quota=1000
bob@example.com {PLAIN}builder nologin
carol@example.org {PLAIN}x note=two%20words
";

/// The server's user database: a users table, answers counted per address, and some
/// addresses that are slow or fail.
#[derive(Debug)]
struct TestDirectory {
    table: UserTable,
    lookups: Mutex<HashMap<String, usize>>,
    /// `slow@…` lookups sleep this long first.
    slow: Duration,
}

impl TestDirectory {
    fn new() -> Arc<Self> {
        Arc::new(TestDirectory {
            table: UserTable::parse(USERS).expect("valid users"),
            lookups: Mutex::new(HashMap::new()),
            slow: Duration::from_millis(1500),
        })
    }

    fn count(&self, address: &str) -> usize {
        self.lookups
            .lock()
            .unwrap()
            .get(address)
            .copied()
            .unwrap_or(0)
    }
}

impl UserDirectory for TestDirectory {
    fn lookup(&self, address: &str) -> Lookup {
        *self
            .lookups
            .lock()
            .unwrap()
            .entry(address.to_owned())
            .or_default() += 1;
        if address.starts_with("slow@") {
            thread::sleep(self.slow);
        }
        if address.starts_with("flaky@") {
            return Lookup::TempFail("database busy".into());
        }
        match self.table.lookup(address) {
            Some(record) => Lookup::Found(record.clone()),
            None => match address.rsplit_once('@') {
                Some((_, domain)) if self.table.is_local_domain(domain) => Lookup::NotFound,
                _ => Lookup::UnknownDomain,
            },
        }
    }

    fn verify(&self, user: &str, password: &[u8], _client: IpAddr) -> AuthOutcome {
        let Some(record) = self.table.lookup(user) else {
            return AuthOutcome::Denied;
        };
        match tidegate_store::password::verify(&record.password, password) {
            tidegate_store::password::Verification::Match if record.nologin() => {
                AuthOutcome::Disabled
            }
            tidegate_store::password::Verification::Match => AuthOutcome::Accepted(record.clone()),
            _ => AuthOutcome::Denied,
        }
    }
}

/// A running authd on the smol shell.
struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(
        listener: TcpListener,
        dir: Arc<TestDirectory>,
        tls: Option<Arc<ServerConfig>>,
    ) -> Server {
        let addr = listener.local_addr().unwrap();
        let mut config = AuthdConfig::new(Secret::new(SECRET.to_vec()));
        config.store_timeout = Duration::from_secs(3);
        let spec = ServerSpec {
            listeners: vec![listener],
            factory: Arc::new(AuthdService::new(config, tls)),
            executor: Arc::new(DirectoryExecutor::new(dir)),
            max_connections: 100,
            shutdown_grace: Duration::ZERO,
            threads: 2,
            workers: 4,
        };
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let thread = thread::spawn(move || {
            tidegate_shell_smol::serve(spec, stop).expect("authd serves");
        });
        Server {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }

    fn plain(dir: Arc<TestDirectory>) -> Server {
        Server::start(TcpListener::bind("127.0.0.1:0").unwrap(), dir, None)
    }

    /// Stops the server, cutting open connections, and waits until it is gone.
    fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn client_config(addrs: &[SocketAddr]) -> AuthdClientConfig {
    let mut cfg = AuthdClientConfig::new(
        addrs.iter().map(ToString::to_string).collect(),
        Secret::new(SECRET.to_vec()),
    );
    cfg.timeout = Duration::from_secs(5);
    cfg.cache_ttl = Duration::ZERO;
    cfg
}

fn directory(cfg: AuthdClientConfig) -> AuthdDirectory {
    AuthdDirectory::new(cfg).expect("valid client config")
}

fn record(address: &str, fields: &[(&str, &str)]) -> UserRecord {
    let mut record = UserRecord::new(address);
    for (k, v) in fields {
        record.fields.insert((*k).into(), (*v).into());
    }
    record
}

fn ip() -> IpAddr {
    "192.0.2.7".parse().unwrap()
}

/// Checks every kind of answer through the directory.
fn check_answers(users: &AuthdDirectory) {
    let alice = record("alice@example.com", &[("tohost", "b1"), ("quota", "1000")]);
    assert_eq!(
        users.lookup("Alice@Example.com"),
        Lookup::Found(alice.clone())
    );
    assert_eq!(users.lookup("nobody@example.com"), Lookup::NotFound);
    assert_eq!(users.lookup("alice@elsewhere.net"), Lookup::UnknownDomain);
    assert_eq!(
        users.lookup("carol@example.org"),
        Lookup::Found(record("carol@example.org", &[("note", "two%20words")]))
    );
    assert_eq!(
        users.verify("alice@example.com", b"wonderland", ip()),
        AuthOutcome::Accepted(alice)
    );
    assert_eq!(
        users.verify("alice@example.com", b"guess", ip()),
        AuthOutcome::Denied
    );
    assert_eq!(
        users.verify("nobody@example.com", b"x", ip()),
        AuthOutcome::Denied
    );
    assert_eq!(
        users.verify("bob@example.com", b"builder", ip()),
        AuthOutcome::Disabled
    );
}

#[test]
fn lookups_and_verifies_through_the_directory() {
    let server = Server::plain(TestDirectory::new());
    let users = directory(client_config(&[server.addr]));
    check_answers(&users);
    // The pool reuses connections: the second round works just the same.
    check_answers(&users);
}

/// A raw protocol client: sends lines, reads lines.
struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Raw {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
    }

    /// The next line without CRLF; empty at EOF.
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim_end_matches(['\r', '\n']).to_owned()
    }
}

#[test]
fn pipelined_requests_are_answered_by_tag_in_order() {
    let server = Server::plain(TestDirectory::new());
    let mut raw = Raw::connect(server.addr);
    assert_eq!(raw.line(), "* TIDEGATE-AUTHD 1");
    // Everything in one write: HELLO and requests with tags in no particular order.
    raw.send(
        "HELLO 1 correct%20horse%20battery%20staple\r\n\
         z9 LOOKUP alice@example.com\r\n\
         3 VERIFY alice@example.com d29uZGVybGFuZA== 192.0.2.7\r\n\
         17 LOOKUP nobody@example.com\r\n\
         2 VERIFY bob@example.com YnVpbGRlcg== 2001:db8::1\r\n\
         5 FROB x\r\n\
         1 LOOKUP x@elsewhere.net\r\n",
    );
    let lines: Vec<String> = (0..7).map(|_| raw.line()).collect();
    assert_eq!(
        lines,
        [
            "* OK 1",
            "z9 FOUND alice@example.com quota=1000 tohost=b1",
            "3 OK alice@example.com quota=1000 tohost=b1",
            "17 NOTFOUND",
            "2 DISABLED",
            "5 BAD unknown%20command",
            "1 NODOMAIN",
        ]
    );
    raw.send("QUIT\r\n");
    assert_eq!(raw.line(), "* BYE closing");
    assert_eq!(raw.line(), "");

    // The directory pipelines too: one round trip, answers in the caller's order.
    let users = directory(client_config(&[server.addr]));
    let answers = users.lookup_many(&["nobody@example.com", "alice@example.com", "a@b.c"]);
    assert_eq!(answers[0], Lookup::NotFound);
    assert!(matches!(&answers[1], Lookup::Found(r) if r.address == "alice@example.com"));
    assert_eq!(answers[2], Lookup::UnknownDomain);
    // More than one round trip's worth: every answer still lands in its place.
    let many: Vec<String> = (0..300)
        .map(|i| match i % 3 {
            0 => "alice@example.com".to_owned(),
            1 => format!("nobody{i}@example.com"),
            _ => format!("x{i}@elsewhere.net"),
        })
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    for (i, answer) in users.lookup_many(&refs).into_iter().enumerate() {
        match i % 3 {
            0 => assert!(matches!(answer, Lookup::Found(_)), "{i}: {answer:?}"),
            1 => assert_eq!(answer, Lookup::NotFound, "{i}"),
            _ => assert_eq!(answer, Lookup::UnknownDomain, "{i}"),
        }
    }
}

#[test]
fn wrong_secret_is_refused() {
    let dir = TestDirectory::new();
    let server = Server::plain(dir.clone());
    let mut raw = Raw::connect(server.addr);
    assert_eq!(raw.line(), "* TIDEGATE-AUTHD 1");
    raw.send("HELLO 1 guess\r\n1 LOOKUP alice@example.com\r\n");
    assert_eq!(raw.line(), "* BAD authentication%20failed");
    assert_eq!(raw.line(), "", "the server closes after a failed HELLO");

    let mut cfg = client_config(&[server.addr]);
    cfg.secret = Secret::new(b"wrong".to_vec());
    let users = directory(cfg);
    assert!(
        matches!(users.lookup("alice@example.com"), Lookup::TempFail(r) if r.contains("authentication"))
    );
    assert!(matches!(
        users.verify("alice@example.com", b"wonderland", ip()),
        AuthOutcome::TempFail(_)
    ));
    assert_eq!(
        dir.count("alice@example.com"),
        0,
        "nothing reached the database"
    );
}

#[test]
fn two_clients_at_once() {
    let server = Server::plain(TestDirectory::new());
    let addr = server.addr;
    let workers: Vec<_> = (0..2)
        .map(|n| {
            thread::spawn(move || {
                let users = directory(client_config(&[addr]));
                for i in 0..200 {
                    let (address, expected) = if (i + n) % 2 == 0 {
                        ("alice@example.com", true)
                    } else {
                        ("nobody@example.com", false)
                    };
                    match users.lookup(address) {
                        Lookup::Found(r) => assert!(expected && r.address == address),
                        Lookup::NotFound => assert!(!expected),
                        other => panic!("client {n} lookup {i}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("client thread");
    }
}

#[test]
fn restart_in_flight_tempfail_then_recovery() {
    let dir = TestDirectory::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = Server::start(listener, dir.clone(), None);
    let users = Arc::new(directory(client_config(&[addr])));
    // A pooled connection exists before the restart.
    assert!(matches!(
        users.lookup("alice@example.com"),
        Lookup::Found(_)
    ));

    let in_flight = {
        let users = users.clone();
        thread::spawn(move || users.lookup("slow@example.com"))
    };
    // Wait until the slow lookup reached the database, then kill the server.
    let waiting = Instant::now();
    while dir.count("slow@example.com") == 0 {
        assert!(
            waiting.elapsed() < READ_TIMEOUT,
            "slow lookup never arrived"
        );
        thread::sleep(Duration::from_millis(10));
    }
    server.stop();
    let answer = in_flight.join().unwrap();
    assert!(matches!(answer, Lookup::TempFail(_)), "{answer:?}");
    // While it is down: TempFail, quickly (connection refused).
    assert!(matches!(
        users.lookup("alice@example.com"),
        Lookup::TempFail(_)
    ));

    // Restarted on the same port: lookups work again.
    let _server = Server::start(TcpListener::bind(addr).unwrap(), dir, None);
    assert!(matches!(
        users.lookup("alice@example.com"),
        Lookup::Found(_)
    ));
    assert_eq!(users.lookup("nobody@example.com"), Lookup::NotFound);
}

#[test]
fn pooled_connection_closed_by_a_restart_is_replaced() {
    let dir = TestDirectory::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = Server::start(listener, dir.clone(), None);
    let users = directory(client_config(&[addr]));
    assert!(matches!(
        users.lookup("alice@example.com"),
        Lookup::Found(_)
    ));
    server.stop();
    let _server = Server::start(TcpListener::bind(addr).unwrap(), dir, None);
    // The pooled connection is dead; the directory notices and asks on a fresh one.
    assert!(matches!(
        users.lookup("alice@example.com"),
        Lookup::Found(_)
    ));
}

#[test]
fn a_silent_server_times_out_as_tempfail() {
    // Accepts connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = thread::spawn(move || {
        let held: Vec<TcpStream> = silent.incoming().take(2).filter_map(Result::ok).collect();
        thread::sleep(Duration::from_secs(3));
        drop(held);
    });
    let mut cfg = client_config(&[addr]);
    cfg.timeout = Duration::from_millis(300);
    let users = directory(cfg);
    let started = Instant::now();
    assert!(
        matches!(users.lookup("alice@example.com"), Lookup::TempFail(r) if r.contains("timed out"))
    );
    assert!(matches!(
        users.verify("alice@example.com", b"x", ip()),
        AuthOutcome::TempFail(_)
    ));
    // Two timeouts, no retries: well under the 3 s the server stays silent.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    holder.join().unwrap();
}

#[test]
fn failover_to_the_second_address() {
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let server = Server::plain(TestDirectory::new());
    let users = directory(client_config(&[dead, server.addr]));
    check_answers(&users);
    // Nothing listens on the first address: every lookup still works, and the dead
    // address is remembered rather than tried on every new connection.
    let users = Arc::new(users);
    let parallel: Vec<_> = (0..4)
        .map(|_| {
            let users = users.clone();
            thread::spawn(move || users.lookup("alice@example.com"))
        })
        .collect();
    for lookup in parallel {
        assert!(matches!(lookup.join().unwrap(), Lookup::Found(_)));
    }
}

#[test]
fn cache_keeps_answers_for_the_ttl_but_never_tempfail() {
    let dir = TestDirectory::new();
    let server = Server::plain(dir.clone());
    let mut cfg = client_config(&[server.addr]);
    cfg.cache_ttl = Duration::from_millis(500);
    let users = directory(cfg);
    for _ in 0..3 {
        assert!(matches!(
            users.lookup("ALICE@example.com"),
            Lookup::Found(_)
        ));
        assert_eq!(users.lookup("nobody@example.com"), Lookup::NotFound);
        assert_eq!(users.lookup("x@elsewhere.net"), Lookup::UnknownDomain);
        assert!(matches!(
            users.lookup("flaky@example.com"),
            Lookup::TempFail(_)
        ));
        users.verify("alice@example.com", b"wonderland", ip());
    }
    assert_eq!(dir.count("alice@example.com"), 1, "positive answer cached");
    assert_eq!(dir.count("nobody@example.com"), 1, "NotFound cached");
    assert_eq!(dir.count("x@elsewhere.net"), 1, "UnknownDomain cached");
    assert_eq!(dir.count("flaky@example.com"), 3, "TempFail never cached");
    thread::sleep(Duration::from_millis(600));
    assert!(matches!(
        users.lookup("alice@example.com"),
        Lookup::Found(_)
    ));
    assert_eq!(users.lookup("nobody@example.com"), Lookup::NotFound);
    assert_eq!(dir.count("alice@example.com"), 2, "expired after the TTL");
    assert_eq!(dir.count("nobody@example.com"), 2, "expired after the TTL");
    // reload forgets the cache.
    users.reload().unwrap();
    users.lookup("alice@example.com");
    assert_eq!(dir.count("alice@example.com"), 3);
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn tls_with_a_pinned_self_signed_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = tidegate_store::tls::generate_self_signed("authd.test").unwrap();
    let cert_path = write(tmp.path(), "cert.pem", &cert);
    let key_path = write(tmp.path(), "key.pem", &key);
    let tls = tidegate_store::tls::server_config(
        Some(&cert_path),
        Some(&key_path),
        tmp.path(),
        "authd.test",
    )
    .unwrap();
    let server = Server::start(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TestDirectory::new(),
        Some(tls),
    );
    let mut cfg = client_config(&[server.addr]);
    cfg.tls = Some(AuthdClientTls::pinned(&cert_path).unwrap());
    check_answers(&directory(cfg));

    // Another self-signed certificate is not the pinned one: no answers.
    let (other, _) = tidegate_store::tls::generate_self_signed("authd.test").unwrap();
    let other_path = write(tmp.path(), "other.pem", &other);
    let mut cfg = client_config(&[server.addr]);
    cfg.tls = Some(AuthdClientTls::pinned(&other_path).unwrap());
    assert!(matches!(
        directory(cfg).lookup("alice@example.com"),
        Lookup::TempFail(_)
    ));

    // A plain client on the TLS port gets nothing it could mistake for an answer.
    let users = directory(client_config(&[server.addr]));
    assert!(matches!(
        users.lookup("alice@example.com"),
        Lookup::TempFail(_)
    ));
}

#[test]
fn tls_with_a_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "authd test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["authd.example".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let ca_path = write(tmp.path(), "ca.pem", &ca.pem());
    let cert_path = write(tmp.path(), "cert.pem", &leaf.pem());
    let key_path = write(tmp.path(), "key.pem", &leaf_key.serialize_pem());
    let tls =
        tidegate_store::tls::server_config(Some(&cert_path), Some(&key_path), tmp.path(), "x")
            .unwrap();
    let server = Server::start(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TestDirectory::new(),
        Some(tls),
    );

    let mut cfg = client_config(&[server.addr]);
    cfg.tls = Some(AuthdClientTls::with_ca_file(&ca_path, "authd.example").unwrap());
    check_answers(&directory(cfg));

    // The certificate does not name this host: refused.
    let mut cfg = client_config(&[server.addr]);
    cfg.tls = Some(AuthdClientTls::with_ca_file(&ca_path, "other.example").unwrap());
    assert!(matches!(
        directory(cfg).lookup("alice@example.com"),
        Lookup::TempFail(_)
    ));
}

#[test]
fn counters_are_shared() {
    // Guards the test helper itself: lookups through two directories land in one count.
    let dir = TestDirectory::new();
    let server = Server::plain(dir.clone());
    let a = directory(client_config(&[server.addr]));
    let b = directory(client_config(&[server.addr]));
    a.lookup("nobody@example.com");
    b.lookup("nobody@example.com");
    assert_eq!(dir.count("nobody@example.com"), 2);
}
