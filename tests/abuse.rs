//! Abusive clients against a real `tidegate serve` (docs/security.md, "Abuse tests"):
//! slowloris, pipelining without reading, huge literals and DATA that stall, parallel
//! failed logins, TLS handshakes that never finish, and floods past `max_connections`.
//! Each test reads the server's resident memory (`VmRSS` in `/proc/PID/status`) while
//! the abuse is going on and holds it under a ceiling, and checks that an ordinary
//! client is still served. The clients come from many 127.0.0.x addresses, as they
//! would from many hosts. CI runs this file on both runtime builds.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use support::{LineClient, Node, connect_from, free_port, local, rss_kib, write};

const PASSWORD: &str = "right-horse-battery";
const WRONG: &str = "Wr0ng-guess-7731";

/// A server with POP3, IMAP, SMTP and their implicit-TLS ports, with `extra` config
/// lines added to `[server]`, and `session` lines to `[pop3]`, `[imap]` and `[smtp]`.
struct Server {
    node: Node,
    dir: tempfile::TempDir,
    pop3: u16,
    imap: u16,
    smtp: u16,
    pop3s: u16,
    imaps: u16,
}

impl Server {
    fn start(server: &str, session: &str) -> Server {
        Server::start_logging(server, session, "info")
    }

    fn start_logging(server: &str, session: &str, level: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "users",
            &format!("alice@abuse.test {{PLAIN}}{PASSWORD}\nbob@abuse.test {{PLAIN}}{PASSWORD}\n"),
        );
        let (pop3, imap, smtp, pop3s, imaps) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let config = write(
            dir.path(),
            "tidegate.toml",
            &format!(
                "hostname = \"abuse.test\"\n\
                 [server]\nallow_root = true\nshutdown_grace_secs = 1\n{server}\n\
                 [storage]\nmailbox_path = \"mail\"\nworkarea = \"work\"\nfsync = false\n\
                 [users]\nfile = \"users\"\n\
                 [pop3]\nlisten = [\"127.0.0.1:{pop3}\"]\nlisten_tls = [\"127.0.0.1:{pop3s}\"]\n{session}\n\
                 [imap]\nlisten = [\"127.0.0.1:{imap}\"]\nlisten_tls = [\"127.0.0.1:{imaps}\"]\n{session}\n\
                 [smtp]\nlisten = [\"127.0.0.1:{smtp}\"]\nmax_message_size = 10000000\n{session}\n"
            ),
        );
        let node = Node::start_logging(&config, local(pop3), level);
        for port in [imap, smtp, pop3s, imaps] {
            support::wait_listening(local(port), &|| node.log());
        }
        Server {
            node,
            dir,
            pop3,
            imap,
            smtp,
            pop3s,
            imaps,
        }
    }

    fn rss(&self) -> u64 {
        rss_kib(self.node.pid())
    }

    fn mailbox_files(&self, user: &str) -> usize {
        let maildir = self.dir.path().join("mail/abuse.test").join(user);
        ["new", "cur"]
            .iter()
            .filter_map(|d| std::fs::read_dir(maildir.join(d)).ok())
            .map(|d| d.count())
            .sum()
    }
}

/// Client address number `n` of the abusers: 127.0.0.2 upwards (127.0.0.1 is the
/// well-behaved client).
fn abuser(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, (2 + n / 250) as u8, (2 + n % 250) as u8)
}

/// Logs in over POP3 from `source` and returns how long the exchange took.
fn pop3_works(port: u16, source: Ipv4Addr) -> Duration {
    let started = Instant::now();
    let stream = connect_from(source, local(port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut c = LineClient::from(stream);
    assert!(c.line().starts_with("+OK"), "no POP3 greeting");
    assert!(c.ask("USER alice@abuse.test").starts_with("+OK"));
    let pass = c.ask(&format!("PASS {PASSWORD}"));
    assert!(pass.starts_with("+OK"), "{pass}");
    assert!(c.ask("QUIT").starts_with("+OK"));
    started.elapsed()
}

/// Logs in over IMAP from 127.0.0.1 and returns how long the exchange took.
fn imap_works(port: u16) -> Duration {
    let started = Instant::now();
    let mut c = LineClient::connect(local(port));
    assert!(c.line().starts_with("* OK"), "no IMAP greeting");
    c.send(format!("a LOGIN alice@abuse.test {PASSWORD}\r\n").as_bytes());
    let login = c.until("a ");
    assert!(login.starts_with("a OK"), "{login}");
    c.send(b"b LOGOUT\r\n");
    assert!(c.until("b ").starts_with("b OK"));
    started.elapsed()
}

/// Reads what is buffered without blocking; true once the server has closed.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

#[test]
fn slowloris_connections_are_reaped_and_others_are_served() {
    const CONNECTIONS: usize = 5_000;
    let server = Server::start("max_connections = 20000", "login_timeout_secs = 4");
    let baseline = server.rss();
    let mut peak = baseline;
    let started = Instant::now();
    let mut abusers = Vec::with_capacity(CONNECTIONS);
    for n in 0..CONNECTIONS {
        let port = if n % 2 == 0 { server.pop3 } else { server.imap };
        let stream = connect_from(abuser(n % 100), local(port)).unwrap();
        stream.set_nonblocking(true).unwrap();
        abusers.push(stream);
        if n % 500 == 0 {
            peak = peak.max(server.rss());
        }
    }
    let connected = started.elapsed();
    // A well-behaved client is served while every slow one is open.
    let pop3_took = pop3_works(server.pop3, Ipv4Addr::LOCALHOST);
    let imap_took = imap_works(server.imap);
    // One byte every two seconds (never a whole line) until the server gives up.
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut open = CONNECTIONS;
    while open > 0 && Instant::now() < deadline {
        open = 0;
        for stream in &mut abusers {
            if !closed_by_server(stream) {
                open += 1;
                let _ = stream.write(b"X");
            }
        }
        peak = peak.max(server.rss());
        std::thread::sleep(Duration::from_secs(2));
    }
    let reaped_after = started.elapsed();
    eprintln!(
        "slowloris: {CONNECTIONS} connections in {connected:?}; POP3 login {pop3_took:?}, \
         IMAP login {imap_took:?} meanwhile; all reaped after {reaped_after:?}; \
         RSS {baseline} KiB -> peak {peak} KiB"
    );
    assert_eq!(
        open, 0,
        "{open} slow connections outlived the login timeout"
    );
    assert!(pop3_took < Duration::from_secs(10) && imap_took < Duration::from_secs(10));
    assert!(
        peak - baseline < 64 * 1024,
        "RSS grew by {} KiB for {CONNECTIONS} idle connections",
        peak - baseline
    );
    drop(abusers);
    pop3_works(server.pop3, abuser(7));
}

/// Sends `commands` without reading while the server's memory is sampled, then reads
/// every answer; returns the number of lines starting with `ok`, and the peak RSS.
fn pipeline(
    server: &Server,
    mut client: LineClient,
    commands: Vec<u8>,
    count: usize,
    ok: impl Fn(usize) -> String,
) -> u64 {
    let mut writer = client.stream().try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&commands));
    let mut peak = server.rss();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(200));
        peak = peak.max(server.rss());
    }
    let mut answered = 0;
    while answered < count {
        let line = client.line();
        assert!(
            !line.is_empty(),
            "connection ended after {answered} answers"
        );
        if line.starts_with(&ok(answered)) {
            answered += 1;
        }
        if answered % 10_000 == 0 {
            peak = peak.max(server.rss());
        }
    }
    sender.join().unwrap().unwrap();
    peak
}

#[test]
fn pipelined_commands_without_reading_keep_memory_bounded() {
    const COMMANDS: usize = 100_000;
    let server = Server::start("", "");
    let baseline = server.rss();

    let mut imap = LineClient::connect(local(server.imap));
    imap.line();
    imap.send(format!("l LOGIN alice@abuse.test {PASSWORD}\r\n").as_bytes());
    assert!(imap.until("l ").starts_with("l OK"));
    let mut commands = Vec::new();
    for n in 0..COMMANDS {
        write!(commands, "a{n} NOOP\r\n").unwrap();
    }
    let started = Instant::now();
    let imap_peak = pipeline(&server, imap, commands, COMMANDS, |n| format!("a{n} OK"));
    let imap_took = started.elapsed();

    let mut pop3 = LineClient::connect(local(server.pop3));
    pop3.line();
    pop3.ask("USER bob@abuse.test");
    assert!(pop3.ask(&format!("PASS {PASSWORD}")).starts_with("+OK"));
    let commands = "NOOP\r\n".repeat(COMMANDS).into_bytes();
    let started = Instant::now();
    let pop3_peak = pipeline(&server, pop3, commands, COMMANDS, |_| "+OK".into());
    let pop3_took = started.elapsed();

    let peak = imap_peak.max(pop3_peak);
    eprintln!(
        "pipelining {COMMANDS} commands: IMAP {imap_took:?}, POP3 {pop3_took:?}; \
         RSS {baseline} KiB -> peak {peak} KiB"
    );
    assert!(
        peak - baseline < 16 * 1024,
        "RSS grew by {} KiB while a client did not read",
        peak - baseline
    );
}

#[test]
fn huge_literals_and_stalled_data_are_refused_or_bounded() {
    let server = Server::start("", "login_timeout_secs = 5");
    let baseline = server.rss();

    // Before login a literal larger than a command may be is refused, never invited.
    for literal in ["{4294967295}", "{4294967295+}", "{99999999999999999999}"] {
        let mut c = LineClient::connect(local(server.imap));
        c.line();
        let answer = c.ask(&format!("a LOGIN {literal}"));
        assert!(
            answer.is_empty()
                || answer.starts_with("a BAD")
                || answer.starts_with("a NO")
                || answer.starts_with("* BYE"),
            "{literal}: {answer}"
        );
    }
    // After login an APPEND past max_append_size is refused before any data.
    let login = |port| {
        let mut c = LineClient::connect(local(port));
        c.line();
        c.send(format!("l LOGIN alice@abuse.test {PASSWORD}\r\n").as_bytes());
        assert!(c.until("l ").starts_with("l OK"));
        c
    };
    let mut c = login(server.imap);
    let answer = c.ask("a APPEND INBOX {4294967295}");
    assert!(answer.starts_with("a NO"), "{answer}");

    // Twenty appends announce 40 MB, send 4 MB and stall; twenty SMTP clients do the
    // same in DATA. Memory stays well under the 160 MB in flight: the bytes go to
    // temporary files.
    let chunk = vec![b'x'; 4 << 20];
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut c = login(server.imap);
        assert!(c.ask("a APPEND INBOX {40000000}").starts_with("+"));
        c.send(&chunk);
        stalled.push(c);

        let mut s = LineClient::connect(local(server.smtp));
        assert!(s.line().starts_with("220"));
        s.send(b"EHLO abuser.test\r\n");
        s.until("250 ");
        let mail = s.ask("MAIL FROM:<x@abuser.test> SIZE=999999999999");
        assert!(mail.starts_with("552"), "{mail}");
        assert!(s.ask("MAIL FROM:<x@abuser.test>").starts_with("250"));
        assert!(s.ask("RCPT TO:<alice@abuse.test>").starts_with("250"));
        assert!(s.ask("DATA").starts_with("354"));
        s.send(&chunk);
        stalled.push(s);
    }
    std::thread::sleep(Duration::from_secs(1));
    let peak = server.rss();
    // An ordinary client is still served.
    let took = pop3_works(server.pop3, abuser(1));
    drop(stalled);
    std::thread::sleep(Duration::from_secs(1));
    eprintln!(
        "stalled literals and DATA: 40 clients with 4 MB each in flight; RSS {baseline} KiB \
         -> {peak} KiB; POP3 login meanwhile {took:?}"
    );
    assert!(
        peak.saturating_sub(baseline) < 48 * 1024,
        "RSS grew by {} KiB for 40 stalled uploads",
        peak.saturating_sub(baseline)
    );
    assert_eq!(
        server.mailbox_files("alice"),
        0,
        "a partial message became visible"
    );
}

#[test]
fn parallel_failed_logins_from_one_address_are_penalised_alone() {
    const ATTEMPTS: usize = 1_000;
    // The per-address connection cap would turn away all but 100 of these at connect
    // (tests/connection_caps.rs covers that); off here, so the login penalty is tested.
    let server = Server::start("max_connections_per_ip = 0", "auth_failure_delay_ms = 10");
    let baseline = server.rss();
    let attacker = Ipv4Addr::new(127, 0, 9, 9);
    let mut clients: Vec<LineClient> = (0..ATTEMPTS)
        .map(|_| {
            let stream = connect_from(attacker, local(server.pop3)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(40)))
                .unwrap();
            let mut c = LineClient::from(stream);
            c.send(format!("USER alice@abuse.test\r\nPASS {WRONG}\r\n").as_bytes());
            c
        })
        .collect();
    // Another address logs in at once while the attempts are in flight.
    let other = pop3_works(server.pop3, Ipv4Addr::new(127, 0, 8, 8));
    let mut peak = server.rss();
    let (mut checked, mut refused) = (0, 0);
    for c in &mut clients {
        assert!(c.line().starts_with("+OK"), "greeting");
        assert!(c.line().starts_with("+OK"), "USER");
        let answer = c.line();
        if answer.starts_with("-ERR [AUTH] Authentication failed") {
            checked += 1;
        } else if answer.starts_with("-ERR [SYS/TEMP]") {
            refused += 1;
        } else {
            panic!("unexpected answer {answer:?}");
        }
        peak = peak.max(server.rss());
    }
    // Even the right password is refused from the penalised address now.
    let stream = connect_from(attacker, local(server.pop3)).unwrap();
    let mut c = LineClient::from(stream);
    c.line();
    c.ask("USER alice@abuse.test");
    let answer = c.ask(&format!("PASS {PASSWORD}"));
    eprintln!(
        "{ATTEMPTS} parallel failed logins: {checked} checked, {refused} refused without \
         a check; another address logged in in {other:?}; RSS {baseline} KiB -> peak {peak} KiB"
    );
    assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
    assert!(
        refused >= ATTEMPTS - 50,
        "only {refused} attempts were refused"
    );
    assert!(
        other < Duration::from_secs(5),
        "the other address waited {other:?}"
    );
    assert!(
        peak - baseline < 64 * 1024,
        "RSS grew by {} KiB",
        peak - baseline
    );
    assert!(
        !server.node.log().contains(WRONG),
        "a password reached the log"
    );
}

#[test]
fn failed_logins_leave_no_password_in_the_log() {
    let server = Server::start_logging("", "auth_failure_delay_ms = 10", "trace");
    // POP3 USER/PASS and AUTH PLAIN, IMAP LOGIN, from an address without penalty yet.
    let mut c = LineClient::connect(local(server.pop3));
    c.line();
    c.ask("USER alice@abuse.test");
    assert!(c.ask(&format!("PASS {WRONG}")).starts_with("-ERR"));
    let plain = base64_plain("alice@abuse.test", WRONG);
    assert!(c.ask(&format!("AUTH PLAIN {plain}")).starts_with("-ERR"));
    let mut i = LineClient::connect(local(server.imap));
    i.line();
    i.send(format!("a LOGIN alice@abuse.test {WRONG}\r\n").as_bytes());
    assert!(i.until("a ").starts_with("a NO"));
    assert!(
        server.node.log_contains("login failed")
            || server.node.log_contains("authentication failed")
    );
    let log = server.node.log();
    assert!(!log.contains(WRONG), "a password reached the log:\n{log}");
    assert!(
        !log.contains(&plain),
        "a SASL response reached the log:\n{log}"
    );
}

/// `\0user\0password`, base64 (RFC 4616), without a crate: the test's own encoder.
fn base64_plain(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("\0{user}\0{password}").into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn tls_handshakes_that_never_finish_are_reaped() {
    const CONNECTIONS: usize = 400;
    let server = Server::start("", "login_timeout_secs = 3");
    let baseline = server.rss();
    let started = Instant::now();
    let mut stalled = Vec::new();
    for n in 0..CONNECTIONS {
        let port = if n % 2 == 0 {
            server.pop3s
        } else {
            server.imaps
        };
        let mut stream = connect_from(abuser(n % 50), local(port)).unwrap();
        // Half say nothing; half send a record header announcing a ClientHello and a
        // few of its bytes.
        if n % 4 >= 2 {
            stream
                .write_all(&[
                    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
                ])
                .unwrap();
        }
        stream.set_nonblocking(true).unwrap();
        stalled.push(stream);
    }
    let mut peak = server.rss();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut open = CONNECTIONS;
    while open > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        open = stalled
            .iter_mut()
            .map(|s| !closed_by_server(s))
            .filter(|o| *o)
            .count();
        peak = peak.max(server.rss());
    }
    eprintln!(
        "{CONNECTIONS} unfinished TLS handshakes: reaped after {:?}; RSS {baseline} KiB -> \
         peak {peak} KiB",
        started.elapsed()
    );
    assert_eq!(open, 0, "{open} handshakes outlived the login timeout");
    assert!(
        peak - baseline < 32 * 1024,
        "RSS grew by {} KiB",
        peak - baseline
    );
    pop3_works(server.pop3, abuser(3));
}

#[test]
fn a_flood_past_max_connections_is_refused_and_the_server_recovers() {
    const CAP: usize = 40;
    const FLOOD: usize = 1_000;
    let server = Server::start(&format!("max_connections = {CAP}"), "");
    let baseline = server.rss();
    let mut held: Vec<LineClient> = (0..CAP)
        .map(|n| {
            let mut c = LineClient::from(connect_from(abuser(n), local(server.pop3)).unwrap());
            assert!(c.line().starts_with("+OK"));
            c
        })
        .collect();
    let (mut busy, mut dropped) = (0, 0);
    let mut flood: Vec<TcpStream> = Vec::with_capacity(FLOOD);
    for n in 0..FLOOD {
        match connect_from(abuser(n % 200), local(server.pop3)) {
            Ok(stream) => flood.push(stream),
            Err(_) => dropped += 1,
        }
    }
    let peak = server.rss();
    for stream in flood {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut c = LineClient::from(stream);
        let first = c.line();
        if first.is_empty() {
            dropped += 1;
        } else {
            assert_eq!(
                first,
                "-ERR [SYS/TEMP] Too many connections, try again later\r\n"
            );
            assert_eq!(c.line(), "", "the busy reply is followed by the close");
            busy += 1;
        }
    }
    eprintln!(
        "flood of {FLOOD} past max_connections = {CAP}: {busy} got the busy reply, {dropped} \
         were closed at once; RSS {baseline} KiB -> {peak} KiB"
    );
    assert!(busy >= 1, "nobody got the busy reply");
    // The held sessions still work, and once they leave new clients are served.
    assert!(held[0].ask("CAPA").starts_with("+OK"));
    for c in &mut held {
        c.ask("QUIT");
    }
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = LineClient::connect(local(server.pop3));
        if c.line().starts_with("+OK") {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not recover");
        std::thread::sleep(Duration::from_millis(200));
    }
    pop3_works(server.pop3, abuser(5));
    assert!(
        peak - baseline < 32 * 1024,
        "RSS grew by {} KiB",
        peak - baseline
    );
}

/// The SMTP login timeout (`[smtp] login_timeout_secs`): an inbound client that keeps
/// talking but never starts a mail transaction is closed with `421 4.4.2` once the
/// timeout has passed since it connected; one that sent MAIL in time is still served.
#[test]
fn smtp_clients_that_never_start_a_transaction_are_closed_at_the_login_timeout() {
    let server = Server::start("", "login_timeout_secs = 2");
    let started = Instant::now();
    let mut idle = LineClient::connect(local(server.smtp));
    let mut sender = LineClient::connect(local(server.smtp));
    for c in [&mut idle, &mut sender] {
        assert!(c.line().starts_with("220 "), "no greeting");
        c.send(b"EHLO client.test\r\n");
        assert!(c.until("250 ").starts_with("250 "), "no EHLO answer");
    }
    assert_eq!(
        sender.ask("MAIL FROM:<friend@example.org>"),
        "250 2.1.0 Sender ok\r\n"
    );
    // The idle client's commands are answered until the server gives up on it.
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(15) {
        last = idle.ask("NOOP");
        if !last.starts_with("250 ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let closed_after = started.elapsed();
    assert_eq!(
        last,
        "421 4.4.2 abuse.test Error: timeout exceeded before a mail transaction\r\n"
    );
    assert!(
        closed_after >= Duration::from_secs(2),
        "closed after {closed_after:?}"
    );
    assert_eq!(idle.line(), "", "the connection is closed after the 421");
    assert_eq!(sender.ask("RSET"), "250 2.0.0 Ok\r\n");
}
