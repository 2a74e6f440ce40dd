//! Smoke tests of the smol shell over real loopback sockets: a real POP3 session, a
//! fake store, and blocking std clients with a timeout on every read.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidegate_core::pop3::{BUSY_REPLY, ConnInfo, Pop3Config, Pop3Session};
use tidegate_core::refusal::Refusal;
use tidegate_core::{Account, Failure, MessageInfo, MessageRef, Reply, Request};
use tidegate_store::service::BoxedSession;
use tidegate_store::{Executor, ServerSpec, SessionFactory, Shutdown};

/// Every client read gives up after this long, so a broken server fails a test instead
/// of hanging it.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const HOST: &str = "test.example";
/// A message with a line that needs dot-stuffing.
const SMALL_BODY: &[u8] = b"Subject: hi\r\n\r\nHello Alice\r\n.dot line\r\nbye\r\n";

// ---- the server side: a session factory and a fake store -------------------------------

struct Pop3Factory {
    config: Arc<Pop3Config>,
}

impl SessionFactory for Pop3Factory {
    fn open(&self, _listener: usize, peer: SocketAddr, now: Instant) -> BoxedSession {
        let conn = ConnInfo {
            client: peer,
            implicit_tls: false,
            starttls_available: false,
            plaintext_auth: true,
            may_override_client: false,
        };
        Box::new(Pop3Session::new(self.config.clone(), conn, now))
    }

    fn busy(&self, _listener: usize, _peer: SocketAddr, _now: Instant) -> BoxedSession {
        Box::new(Refusal::new(BUSY_REPLY))
    }
}

/// One mailbox (alice/secret) holding one message with this body.
struct FakeStore {
    body: Bytes,
}

impl Executor for FakeStore {
    fn execute(&self, request: Request) -> Reply {
        match request {
            Request::Authenticate { user, password, .. }
                if user == "alice" && password.expose() == b"secret" =>
            {
                Reply::Authenticated(Account("alice@example.com".into()))
            }
            Request::Authenticate { .. } => Reply::Failed(Failure::Denied),
            Request::ListMailbox { .. } => Reply::Listing(vec![MessageInfo {
                file: MessageRef("new/1.msg".into()),
                uid: "1.msg".into(),
                size: self.body.len() as u64,
            }]),
            Request::ReadMessage {
                offset, max_len, ..
            } => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(self.body.len());
                let end = start.saturating_add(max_len).min(self.body.len());
                Reply::Chunk {
                    bytes: self.body.slice(start..end),
                    end: end == self.body.len(),
                }
            }
            Request::CommitPop3 { .. } => Reply::Done,
            _ => Reply::Failed(Failure::Permanent("not supported by the fake store".into())),
        }
    }

    /// "quick" logs in only inline: the blocking pool's `execute` denies it, so a
    /// successful login proves the shell asked `execute_inline` first.
    fn execute_inline(&self, request: &Request) -> Option<Reply> {
        match request {
            Request::Authenticate { user, .. } if user == "quick" => {
                Some(Reply::Authenticated(Account("alice@example.com".into())))
            }
            _ => None,
        }
    }
}

/// A running `serve` on its own thread; triggers shutdown when dropped.
struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
    thread: Option<JoinHandle<io::Result<()>>>,
}

fn start(max_connections: usize, shutdown_grace: Duration, body: &[u8]) -> Server {
    let config = Pop3Config {
        hostname: HOST.into(),
        ..Pop3Config::default()
    };
    start_with(config, max_connections, shutdown_grace, body)
}

fn start_with(
    config: Pop3Config,
    max_connections: usize,
    shutdown_grace: Duration,
    body: &[u8],
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let spec = ServerSpec {
        listeners: vec![listener],
        factory: Arc::new(Pop3Factory {
            config: Arc::new(config),
        }),
        executor: Arc::new(FakeStore {
            body: Bytes::copy_from_slice(body),
        }),
        max_connections,
        shutdown_grace,
        threads: 2,
        workers: 0,
    };
    let shutdown = Shutdown::new();
    let signal = shutdown.clone();
    let thread = thread::spawn(move || tidegate_shell_smol::serve(spec, signal));
    Server {
        addr,
        shutdown,
        thread: Some(thread),
    }
}

impl Server {
    /// Triggers shutdown and returns how long `serve` took to return (at most `limit`).
    fn stop_within(&mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        self.shutdown.trigger();
        let thread = self.thread.take().expect("server already stopped");
        while !thread.is_finished() {
            assert!(
                started.elapsed() < limit,
                "serve did not return within {limit:?} of shutdown"
            );
            thread::sleep(Duration::from_millis(10));
        }
        let took = started.elapsed();
        thread
            .join()
            .expect("serve panicked")
            .expect("serve failed");
        took
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !thread.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

// ---- the client side ------------------------------------------------------------------

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).expect("send");
    }

    /// Reads more bytes into the buffer; false at EOF.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) => panic!("read failed (timeout?): {e}; got so far: {:?}", self.text()),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// The next reply line, without CRLF.
    fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                return String::from_utf8_lossy(&line[..end]).into_owned();
            }
            assert!(self.fill(), "EOF before a full line: {:?}", self.text());
        }
    }

    /// Sends a command and returns its one-line reply.
    fn command(&mut self, text: &str) -> String {
        self.send(&format!("{text}\r\n"));
        self.line()
    }

    /// Bytes up to and including a multi-line terminator `CRLF.CRLF`.
    fn multiline(&mut self) -> Vec<u8> {
        while !self.buf.ends_with(b"\r\n.\r\n") {
            assert!(self.fill(), "EOF inside a multi-line reply");
        }
        std::mem::take(&mut self.buf)
    }

    /// Everything until the server closes the connection.
    fn rest(&mut self) -> Vec<u8> {
        while self.fill() {}
        std::mem::take(&mut self.buf)
    }

    /// The first line, or everything up to EOF if the server closes first.
    fn greeting_or_refusal(&mut self) -> Vec<u8> {
        while !self.buf.ends_with(b"\r\n") && self.fill() {}
        std::mem::take(&mut self.buf)
    }

    fn expect_closed(&mut self) {
        let rest = self.rest();
        assert!(rest.is_empty(), "unexpected bytes before close: {rest:?}");
    }

    fn login(&mut self) {
        assert!(self.line().starts_with("+OK"), "greeting");
        assert_eq!(self.command("USER alice"), "+OK");
        assert!(self.command("PASS secret").starts_with("+OK Logged in"));
    }
}

/// What RETR sends for `body`: status line, dot-stuffed body, terminator.
fn retr_reply(body: &[u8]) -> Vec<u8> {
    let mut out = format!("+OK {} octets\r\n", body.len()).into_bytes();
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
    out
}

// ---- tests ----------------------------------------------------------------------------

#[test]
fn full_pop3_session() {
    let server = start(100, Duration::from_secs(5), SMALL_BODY);
    let mut c = Client::connect(server.addr);
    assert_eq!(c.line(), format!("+OK {HOST} POP3 ready"));
    assert_eq!(c.command("USER alice"), "+OK");
    assert_eq!(
        c.command("PASS secret"),
        format!("+OK Logged in, 1 messages ({} octets)", SMALL_BODY.len())
    );
    assert_eq!(c.command("STAT"), format!("+OK 1 {}", SMALL_BODY.len()));
    c.send("RETR 1\r\n");
    assert_eq!(c.multiline(), retr_reply(SMALL_BODY));
    assert_eq!(
        c.command("QUIT"),
        format!("+OK {HOST} POP3 closing (0 messages deleted)")
    );
    c.expect_closed();
}

#[test]
fn wrong_password_is_refused() {
    let server = start(100, Duration::from_secs(5), SMALL_BODY);
    let mut c = Client::connect(server.addr);
    c.line();
    assert_eq!(c.command("USER alice"), "+OK");
    // The session delays failed logins (2 s by default); the shell keeps the timer.
    assert_eq!(c.command("PASS wrong"), "-ERR [AUTH] Authentication failed");
}

/// The connection's timer is only ever moved earlier (each command pushes the idle
/// deadline later): it then fires before the session's deadline and must neither close
/// a session that is still in use nor keep one open past its real deadline.
#[test]
fn idle_timeout_counts_from_the_last_command() {
    let idle = Duration::from_millis(700);
    let config = Pop3Config {
        hostname: HOST.into(),
        idle_timeout: idle,
        ..Pop3Config::default()
    };
    let server = start_with(config, 100, Duration::from_secs(5), SMALL_BODY);
    let mut c = Client::connect(server.addr);
    c.login();
    // Active for over three idle periods: the timer armed at login fires early on
    // the way, and the session stays open.
    for _ in 0..8 {
        thread::sleep(Duration::from_millis(300));
        assert_eq!(c.command("NOOP"), "+OK");
    }
    let last = Instant::now();
    assert_eq!(c.line(), "-ERR Autologout: idle for too long");
    let waited = last.elapsed();
    c.expect_closed();
    assert!(
        waited >= idle && waited < idle + Duration::from_secs(3),
        "closed {waited:?} after the last command, idle timeout {idle:?}"
    );
}

#[test]
fn inline_answers_skip_the_blocking_pool() {
    let server = start(100, Duration::from_secs(5), SMALL_BODY);
    let mut c = Client::connect(server.addr);
    c.line();
    assert_eq!(c.command("USER quick"), "+OK");
    assert_eq!(
        c.command("PASS anything"),
        format!("+OK Logged in, 1 messages ({} octets)", SMALL_BODY.len())
    );
    assert_eq!(c.command("STAT"), format!("+OK 1 {}", SMALL_BODY.len()));
}

#[test]
fn pipelined_commands_in_one_write() {
    let server = start(100, Duration::from_secs(5), SMALL_BODY);
    let mut c = Client::connect(server.addr);
    c.send("USER alice\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nLIST\r\nQUIT\r\n");
    let n = SMALL_BODY.len();
    let mut expected = format!(
        "+OK {HOST} POP3 ready\r\n+OK\r\n+OK Logged in, 1 messages ({n} octets)\r\n+OK 1 {n}\r\n"
    )
    .into_bytes();
    expected.extend_from_slice(&retr_reply(SMALL_BODY));
    expected.extend_from_slice(
        format!("+OK\r\n1 {n}\r\n.\r\n+OK {HOST} POP3 closing (0 messages deleted)\r\n").as_bytes(),
    );
    let got = c.rest();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected)
    );
}

#[test]
fn large_message_streams_past_the_high_water_mark() {
    // Several times the session's 256 KiB output high-water mark and 64 KiB read chunk:
    // the transfer only completes if the shell reports handle_drained.
    let mut body = Vec::new();
    for i in 0..40_000 {
        let dot = if i % 7 == 0 { "." } else { "" };
        body.extend_from_slice(format!("{dot}line {i} of a long message body\r\n").as_bytes());
    }
    assert!(body.len() > 1024 * 1024);
    let server = start(100, Duration::from_secs(5), &body);
    let mut c = Client::connect(server.addr);
    c.login();
    c.send("RETR 1\r\n");
    assert!(c.multiline() == retr_reply(&body), "RETR bytes differ");
    assert!(c.command("QUIT").starts_with("+OK"));
}

#[test]
fn connection_cap_sends_the_busy_reply() {
    let server = start(1, Duration::from_secs(5), SMALL_BODY);
    let mut first = Client::connect(server.addr);
    assert!(first.line().starts_with("+OK"), "first client is served");

    let mut second = Client::connect(server.addr);
    assert_eq!(
        second.rest(),
        BUSY_REPLY,
        "second client gets the busy reply"
    );

    // The slot is released when the first connection ends. Until the server has seen
    // both ends, a new client may still be refused (busy reply, or closed at once at
    // twice the cap), so retry for a while.
    assert!(first.command("QUIT").starts_with("+OK"));
    first.expect_closed();
    drop(first);
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = Client::connect(server.addr);
        let got = next.greeting_or_refusal();
        if got.starts_with(b"+OK") {
            break;
        }
        assert!(
            got.is_empty() || got == BUSY_REPLY,
            "unexpected answer {got:?}"
        );
        assert!(Instant::now() < deadline, "slot never released");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn client_that_never_reads_is_bounded_and_others_are_served() {
    let server = start(100, Duration::from_secs(5), SMALL_BODY);
    // The hog logs in, then pipelines NOOPs without reading a single reply. Once the
    // session's output backs up, the shell must stop reading, so the hog's writes stall
    // (kernel socket buffers only) long before it could push LIMIT bytes.
    const LIMIT: usize = 32 * 1024 * 1024;
    const NOOP: &[u8] = b"NOOP\r\n";
    let mut hog = Client::connect(server.addr);
    hog.login();
    hog.stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let block = NOOP.repeat(64 * 1024 / NOOP.len());
    let mut written = 0;
    while written < LIMIT {
        // Continue after a partial write, so the stream stays a sequence of NOOPs.
        match hog.stream.write(&block[written % block.len()..]) {
            Ok(n) => written += n,
            Err(_) => break, // stalled: the write timed out without progress
        }
    }
    assert!(
        written < LIMIT,
        "server kept reading from a client that never reads"
    );

    // While the hog is stuck, others are served normally.
    let mut c = Client::connect(server.addr);
    c.login();
    c.send("RETR 1\r\n");
    assert_eq!(c.multiline(), retr_reply(SMALL_BODY));
    assert!(c.command("QUIT").starts_with("+OK"));
    c.expect_closed();

    // The hog's session survived backpressure without losing a byte: once it reads,
    // every pipelined NOOP is answered, then its QUIT.
    let mut reader = hog.stream.try_clone().expect("clone");
    let replies = thread::spawn(move || {
        let mut got = Vec::new();
        reader.read_to_end(&mut got).map(|_| got)
    });
    hog.stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    let partial = written % NOOP.len();
    if partial > 0 {
        hog.stream
            .write_all(&NOOP[partial..])
            .expect("finish the last NOOP");
    }
    hog.stream.write_all(b"QUIT\r\n").expect("QUIT");
    let got = replies.join().expect("reader").expect("read replies");
    let noops = written.div_ceil(NOOP.len());
    let mut expected = b"+OK\r\n".repeat(noops);
    expected
        .extend_from_slice(format!("+OK {HOST} POP3 closing (0 messages deleted)\r\n").as_bytes());
    assert_eq!(got.len(), expected.len(), "reply count after backpressure");
    assert!(got == expected, "replies after backpressure differ");
}

#[test]
fn shutdown_lets_open_sessions_finish() {
    let mut server = start(100, Duration::from_secs(30), SMALL_BODY);
    let mut c = Client::connect(server.addr);
    c.login();
    server.shutdown.trigger();
    // Still served during the grace period...
    assert_eq!(c.command("STAT"), format!("+OK 1 {}", SMALL_BODY.len()));
    assert!(c.command("QUIT").starts_with("+OK"));
    c.expect_closed();
    drop(c);
    // ...and serve returns as soon as the last session ended, long before the grace.
    let took = server.stop_within(Duration::from_secs(10));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        TcpStream::connect(server.addr).is_err(),
        "listener still open"
    );
}

#[test]
fn shutdown_cuts_idle_sessions_after_the_grace() {
    let grace = Duration::from_millis(300);
    let mut server = start(100, grace, SMALL_BODY);
    let mut c = Client::connect(server.addr);
    assert!(c.line().starts_with("+OK"));
    let took = server.stop_within(Duration::from_secs(10));
    assert!(took >= grace, "cut before the grace period: {took:?}");
    // The idle client sees its connection end.
    let mut byte = [0u8; 1];
    match c.stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection to be closed, got {other:?}"),
    }
}

#[test]
fn shutdown_without_connections_returns_promptly() {
    let mut server = start(100, Duration::from_secs(30), SMALL_BODY);
    let took = server.stop_within(Duration::from_secs(5));
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
