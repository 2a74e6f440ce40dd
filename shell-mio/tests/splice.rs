//! Back-end connections and splicing over real loopback sockets.
//!
//! A tiny proxy session (below, test-only) waits for the client's first line
//! `CONNECT <port> [src=<ip>] [relay]`, connects to a back-end the test runs, relays the
//! back-end's greeting line, and then either hands both sockets to the shell with
//! `Action::Splice` (residual bytes on both sides) or, with `relay`, keeps relaying
//! through the session. The tests check bytes, order, half-closes, failures, timeouts and
//! backpressure from the outside, with blocking std sockets.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidegate_core::{Action, Peer, Reply, RequestId, Session};
use tidegate_store::service::BoxedSession;
use tidegate_store::{Executor, ServerSpec, SessionFactory, Shutdown as Stop};

/// Runs the shell under test.
fn serve(spec: ServerSpec, shutdown: Stop) -> io::Result<()> {
    tidegate_shell_mio::serve(spec, shutdown)
}

/// Every blocking socket call in a test gives up after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// What the session sends the back-end before anything the client sent after CONNECT.
const RESIDUAL_TO_BACKEND: &[u8] = b"RESIDUAL-B\r\n";
/// What the session sends the client right after the relayed greeting.
const RESIDUAL_TO_CLIENT: &[u8] = b"RESIDUAL-C\r\n";
/// The session's own buffers (a test session, but bounded all the same).
const LINE_MAX: usize = 4096;
/// Relay mode: unacknowledged bytes per direction before the session stops reading.
const RELAY_HIGH_WATER: usize = 64 * 1024;
/// How long the session waits for a connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MIB: usize = 1024 * 1024;

// ---- the test session -------------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum Stage {
    /// Reading the CONNECT line.
    Command,
    /// Connect in progress (until the deadline).
    Connecting { until: Instant },
    /// Reading the back-end's greeting line.
    Greeting,
    /// Relaying through the session.
    Relay,
    /// Handed over or closed: nothing more.
    Done,
}

struct ProxyTest {
    stage: Stage,
    idle_timeout: Duration,
    relay: bool,
    /// Bytes from the client not yet forwarded (the CONNECT line, then the residual).
    from_client: Vec<u8>,
    /// Bytes from the back-end not yet forwarded (the greeting, then the residual).
    from_backend: Vec<u8>,
    actions: std::collections::VecDeque<Action>,
    /// Relay mode: bytes written to each peer and not yet drained.
    unacked_client: usize,
    unacked_backend: usize,
    client_eof: bool,
}

impl ProxyTest {
    fn new(idle_timeout: Duration) -> Self {
        ProxyTest {
            stage: Stage::Command,
            idle_timeout,
            relay: false,
            from_client: Vec::new(),
            from_backend: Vec::new(),
            actions: Default::default(),
            unacked_client: 0,
            unacked_backend: 0,
            client_eof: false,
        }
    }

    fn write(&mut self, to: Peer, bytes: &[u8]) {
        match to {
            Peer::Client => self.unacked_client += bytes.len(),
            Peer::Backend => self.unacked_backend += bytes.len(),
        }
        self.actions.push_back(Action::Write {
            to,
            bytes: Bytes::copy_from_slice(bytes),
        });
    }

    fn fail(&mut self, why: &str) {
        let reply = format!("-ERR {why}\r\n");
        self.write(Peer::Client, reply.as_bytes());
        self.actions.push_back(Action::Close { to: Peer::Client });
        self.stage = Stage::Done;
    }

    fn take_line(buf: &mut Vec<u8>) -> Option<String> {
        let end = buf.windows(2).position(|w| w == b"\r\n")?;
        let line: Vec<u8> = buf.drain(..end + 2).collect();
        Some(String::from_utf8_lossy(&line[..end]).into_owned())
    }

    fn on_command(&mut self, now: Instant) {
        let Some(line) = Self::take_line(&mut self.from_client) else {
            return;
        };
        let mut words = line.split_whitespace();
        let port = match (words.next(), words.next().map(str::parse::<u16>)) {
            (Some("CONNECT"), Some(Ok(port))) => port,
            _ => return self.fail("expected CONNECT <port>"),
        };
        let mut source = None;
        for word in words {
            if word == "relay" {
                self.relay = true;
            } else if let Some(ip) = word.strip_prefix("src=") {
                source = ip.parse::<IpAddr>().ok();
            }
        }
        self.stage = Stage::Connecting {
            until: now + CONNECT_TIMEOUT,
        };
        self.actions.push_back(Action::Connect {
            to: Peer::Backend,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            source,
        });
    }

    fn on_greeting(&mut self) {
        let Some(greeting) = Self::take_line(&mut self.from_backend) else {
            return;
        };
        let relayed = format!("+OK relayed: {greeting}\r\n");
        self.write(Peer::Client, relayed.as_bytes());
        if self.relay {
            self.stage = Stage::Relay;
            let (to_backend, to_client) = (
                std::mem::take(&mut self.from_client),
                std::mem::take(&mut self.from_backend),
            );
            self.write(Peer::Backend, &to_backend);
            self.write(Peer::Client, &to_client);
            if self.client_eof {
                self.actions.push_back(Action::Close { to: Peer::Backend });
                self.actions.push_back(Action::Close { to: Peer::Client });
                self.stage = Stage::Done;
            }
            return;
        }
        let mut to_client = RESIDUAL_TO_CLIENT.to_vec();
        to_client.append(&mut self.from_backend);
        let mut to_backend = RESIDUAL_TO_BACKEND.to_vec();
        to_backend.append(&mut self.from_client);
        self.actions.push_back(Action::Splice {
            to_client: to_client.into(),
            to_backend: to_backend.into(),
            idle_timeout: self.idle_timeout,
        });
        self.stage = Stage::Done;
    }
}

impl Session for ProxyTest {
    fn handle_input(&mut self, now: Instant, from: Peer, bytes: &[u8]) {
        match (&self.stage, from) {
            (Stage::Relay, Peer::Client) => self.write(Peer::Backend, bytes),
            (Stage::Relay, Peer::Backend) => self.write(Peer::Client, bytes),
            (Stage::Done, _) => {}
            (_, Peer::Client) => {
                self.from_client.extend_from_slice(bytes);
                if self.stage == Stage::Command {
                    self.on_command(now);
                }
            }
            (_, Peer::Backend) => {
                self.from_backend.extend_from_slice(bytes);
                if self.stage == Stage::Greeting {
                    self.on_greeting();
                }
            }
        }
    }

    fn handle_eof(&mut self, _now: Instant, from: Peer) {
        match (&self.stage, from) {
            (Stage::Done, _) => {}
            (Stage::Relay, Peer::Client) => {
                // Nothing follows a Close for that peer, so no back-end EOF will come.
                self.actions.push_back(Action::Close { to: Peer::Backend });
                self.actions.push_back(Action::Close { to: Peer::Client });
                self.stage = Stage::Done;
            }
            (Stage::Relay, Peer::Backend) => {
                self.actions.push_back(Action::Close { to: Peer::Client });
                self.stage = Stage::Done;
            }
            (_, Peer::Client) => self.client_eof = true,
            (_, Peer::Backend) => self.fail("back-end closed before its greeting"),
        }
    }

    fn handle_reply(&mut self, _now: Instant, _id: RequestId, _reply: Reply) {}

    fn handle_timeout(&mut self, now: Instant) {
        if let Stage::Connecting { until } = self.stage
            && now >= until
        {
            self.actions.push_back(Action::Close { to: Peer::Backend });
            self.fail("connect timed out");
        }
    }

    fn handle_drained(&mut self, _now: Instant, to: Peer) {
        match to {
            Peer::Client => self.unacked_client = 0,
            Peer::Backend => self.unacked_backend = 0,
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.stage {
            Stage::Connecting { until } => Some(until),
            _ => None,
        }
    }

    fn wants_read(&self, from: Peer) -> bool {
        match (&self.stage, from) {
            (Stage::Done, _) => false,
            (Stage::Relay, Peer::Client) => self.unacked_backend < RELAY_HIGH_WATER,
            (Stage::Relay, Peer::Backend) => self.unacked_client < RELAY_HIGH_WATER,
            (_, Peer::Client) => self.from_client.len() < LINE_MAX,
            (_, Peer::Backend) => self.from_backend.len() < LINE_MAX,
        }
    }

    fn handle_connected(&mut self, _now: Instant, to: Peer, result: Result<(), String>) {
        if to != Peer::Backend || !matches!(self.stage, Stage::Connecting { .. }) {
            return;
        }
        match result {
            Ok(()) => {
                self.stage = Stage::Greeting;
                self.on_greeting();
            }
            Err(reason) => self.fail(&format!("connect failed: {reason}")),
        }
    }
}

// ---- the server ----------------------------------------------------------------------

struct Factory {
    idle_timeout: Duration,
}

impl SessionFactory for Factory {
    fn open(&self, _listener: usize, _peer: SocketAddr, _now: Instant) -> BoxedSession {
        Box::new(ProxyTest::new(self.idle_timeout))
    }
    fn busy(&self, _listener: usize, _peer: SocketAddr, _now: Instant) -> BoxedSession {
        Box::new(tidegate_core::refusal::Refusal::new(b"-ERR busy\r\n"))
    }
}

struct NoRequests;

impl Executor for NoRequests {
    fn execute(&self, _request: tidegate_core::Request) -> Reply {
        Reply::Failed(tidegate_core::Failure::Permanent("no requests here".into()))
    }
}

struct Server {
    addr: SocketAddr,
    shutdown: Stop,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    fn start(idle_timeout: Duration, grace: Duration) -> Server {
        Server::start_with(idle_timeout, grace, 100)
    }

    fn start_with(idle_timeout: Duration, grace: Duration, max_connections: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let spec = ServerSpec {
            listeners: vec![listener],
            factory: Arc::new(Factory { idle_timeout }),
            executor: Arc::new(NoRequests),
            max_connections,
            shutdown_grace: grace,
            threads: 2,
            workers: 1,
        };
        let shutdown = Stop::new();
        let signal = shutdown.clone();
        let thread = thread::spawn(move || serve(spec, signal));
        Server {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }

    fn default() -> Server {
        Server::start(Duration::from_secs(30), Duration::from_secs(5))
    }

    /// Triggers shutdown; returns how long `serve` took to return.
    fn stop(&mut self) -> Duration {
        let started = Instant::now();
        self.shutdown.trigger();
        let thread = self.thread.take().expect("stopped twice");
        while !thread.is_finished() {
            assert!(started.elapsed() < IO_TIMEOUT, "serve did not return");
            thread::sleep(Duration::from_millis(10));
        }
        thread
            .join()
            .expect("serve panicked")
            .expect("serve failed");
        started.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn timeouts(stream: &TcpStream) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
}

/// A back-end: accepts one connection and runs `script` on it in a thread.
struct Backend {
    port: u16,
    thread: JoinHandle<()>,
}

impl Backend {
    fn start(script: impl FnOnce(TcpStream) + Send + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind back-end");
        let port = listener.local_addr().expect("addr").port();
        let thread = thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            timeouts(&stream);
            script(stream);
        });
        Backend { port, thread }
    }

    /// Waits for the script to finish (its asserts count).
    fn join(self) {
        self.thread.join().expect("back-end script failed");
    }
}

/// Reads exactly `n` bytes.
fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Reads until EOF; a reset counts as a failure.
fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    stream.read_to_end(&mut all).expect("read to end");
    all
}

/// Reads one CRLF line (without it).
fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            other => panic!(
                "line cut short ({other:?}): {:?}",
                String::from_utf8_lossy(&line)
            ),
        }
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).expect("utf-8 line")
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.addr).expect("connect");
    timeouts(&stream);
    stream
}

/// A deterministic byte stream that does not repeat with any buffer size.
fn pattern(seed: u8, offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 11) as u8 ^ seed ^ (i / 4099) as u8)
        .collect()
}

/// Writes `total` pattern bytes in chunks.
fn send_pattern(stream: &mut TcpStream, seed: u8, total: usize) {
    let chunk = 100_000;
    let mut sent = 0;
    while sent < total {
        let n = chunk.min(total - sent);
        stream
            .write_all(&pattern(seed, sent, n))
            .expect("send pattern");
        sent += n;
    }
}

/// Reads `total` bytes and checks them against the pattern; `pause` between reads
/// makes a slow reader.
fn expect_pattern(stream: &mut TcpStream, seed: u8, total: usize, pause: Duration) {
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while got < total {
        let want = buf.len().min(total - got);
        let n = stream.read(&mut buf[..want]).expect("read pattern");
        assert!(n > 0, "EOF after {got} of {total} bytes");
        assert!(
            buf[..n] == pattern(seed, got, n)[..],
            "bytes differ at offset {got}"
        );
        got += n;
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    }
}

// ---- tests ---------------------------------------------------------------------------

#[test]
fn residuals_come_first_then_bytes_flow_both_ways() {
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 back-end ready\r\nEARLY-FROM-BACKEND")
            .unwrap();
        let expected = [RESIDUAL_TO_BACKEND, b"EARLY-FROM-CLIENT".as_slice()].concat();
        assert_eq!(read_n(&mut s, expected.len()), expected);
        // Echo from now on, until the client half-closes.
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).expect("back-end read");
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).unwrap();
        }
        s.write_all(b"BYE").unwrap();
    });
    let server = Server::default();
    let mut client = connect(&server);
    client
        .write_all(format!("CONNECT {}\r\nEARLY-FROM-CLIENT", backend.port).as_bytes())
        .unwrap();
    assert_eq!(read_line(&mut client), "+OK relayed: 220 back-end ready");
    let expected = [RESIDUAL_TO_CLIENT, b"EARLY-FROM-BACKEND".as_slice()].concat();
    assert_eq!(read_n(&mut client, expected.len()), expected);
    for round in 0..50 {
        let message = format!("round {round}: {}\r\n", "x".repeat(round * 100));
        client.write_all(message.as_bytes()).unwrap();
        assert_eq!(read_n(&mut client, message.len()), message.as_bytes());
    }
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut client), b"BYE");
    backend.join();
}

#[test]
fn ten_mib_each_way_arrive_byte_exact_with_a_slow_reader() {
    const TOTAL: usize = 10 * MIB;
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 hi\r\n").unwrap();
        assert_eq!(
            read_n(&mut s, RESIDUAL_TO_BACKEND.len()),
            RESIDUAL_TO_BACKEND
        );
        let mut writer = s.try_clone().unwrap();
        let sending = thread::spawn(move || {
            send_pattern(&mut writer, 0xB0, TOTAL);
            writer.shutdown(Shutdown::Write).unwrap();
        });
        expect_pattern(&mut s, 0xC0, TOTAL, Duration::ZERO);
        assert_eq!(read_to_end(&mut s), b"", "client's EOF after its bytes");
        sending.join().expect("back-end sender");
    });
    let server = Server::default();
    let mut client = connect(&server);
    client
        .write_all(format!("CONNECT {}\r\n", backend.port).as_bytes())
        .unwrap();
    assert_eq!(read_line(&mut client), "+OK relayed: 220 hi");
    assert_eq!(
        read_n(&mut client, RESIDUAL_TO_CLIENT.len()),
        RESIDUAL_TO_CLIENT
    );
    let mut writer = client.try_clone().unwrap();
    let sending = thread::spawn(move || {
        send_pattern(&mut writer, 0xC0, TOTAL);
        writer.shutdown(Shutdown::Write).unwrap();
    });
    // Slow at first (40 × 64 KiB reads, 10 ms apart), then at full speed.
    let slow = 40 * 64 * 1024;
    expect_pattern(&mut client, 0xB0, slow, Duration::from_millis(10));
    let mut rest = client.try_clone().unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while got < TOTAL - slow {
        let n = rest.read(&mut buf).expect("read");
        assert!(n > 0, "EOF early");
        assert!(
            buf[..n] == pattern(0xB0, slow + got, n)[..],
            "bytes differ at {}",
            slow + got
        );
        got += n;
    }
    assert_eq!(
        read_to_end(&mut client),
        b"",
        "back-end's EOF after its bytes"
    );
    sending.join().expect("client sender");
    backend.join();
}

#[test]
fn a_reader_that_stops_reading_stalls_the_sender() {
    // The back-end pushes as fast as it can into a client that does not read. Socket
    // buffers fill (a few MiB on loopback), then the splice must stop taking bytes from
    // the back-end: its writes time out long before 64 MiB went out.
    const LIMIT: usize = 64 * MIB;
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 hi\r\n").unwrap();
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let block = vec![b'z'; 64 * 1024];
        let mut written = 0;
        while written < LIMIT {
            match s.write(&block) {
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        assert!(
            written < LIMIT / 2,
            "the splice took {written} bytes for a client that never reads"
        );
    });
    let server = Server::default();
    let mut client = connect(&server);
    client
        .write_all(format!("CONNECT {}\r\n", backend.port).as_bytes())
        .unwrap();
    assert_eq!(read_line(&mut client), "+OK relayed: 220 hi");
    backend.join();
}

#[test]
fn client_half_close_reaches_the_backend_which_still_answers() {
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 hi\r\n").unwrap();
        let got = read_to_end(&mut s);
        assert_eq!(got, [RESIDUAL_TO_BACKEND, b"question".as_slice()].concat());
        s.write_all(b"answer after your EOF").unwrap();
    });
    let server = Server::default();
    let mut client = connect(&server);
    client
        .write_all(format!("CONNECT {}\r\n", backend.port).as_bytes())
        .unwrap();
    assert_eq!(read_line(&mut client), "+OK relayed: 220 hi");
    client.write_all(b"question").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let rest = read_to_end(&mut client);
    assert_eq!(
        rest,
        [RESIDUAL_TO_CLIENT, b"answer after your EOF".as_slice()].concat()
    );
    backend.join();
}

#[test]
fn backend_half_close_reaches_the_client_which_still_sends() {
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 hi\r\nlast words").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let got = read_to_end(&mut s);
        assert_eq!(
            got,
            [RESIDUAL_TO_BACKEND, b"more from the client".as_slice()].concat()
        );
    });
    let server = Server::default();
    let mut client = connect(&server);
    client
        .write_all(format!("CONNECT {}\r\n", backend.port).as_bytes())
        .unwrap();
    assert_eq!(read_line(&mut client), "+OK relayed: 220 hi");
    let expected = [RESIDUAL_TO_CLIENT, b"last words".as_slice()].concat();
    assert_eq!(
        read_to_end(&mut client),
        expected,
        "EOF passed on after the bytes"
    );
    client.write_all(b"more from the client").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    backend.join();
}

#[test]
fn backend_closing_mid_stream_closes_the_client_cleanly() {
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 hi\r\n").unwrap();
        // Read what was sent, so the close below is a FIN: closing a socket with unread
        // input is an abortive close (RST), which discards bytes still in flight.
        assert_eq!(
            read_n(&mut s, RESIDUAL_TO_BACKEND.len()),
            RESIDUAL_TO_BACKEND
        );
        send_pattern(&mut s, 0x11, MIB);
        // Dropped: closed while the client may still send.
    });
    let server = Server::default();
    let mut client = connect(&server);
    client
        .write_all(format!("CONNECT {}\r\n", backend.port).as_bytes())
        .unwrap();
    assert_eq!(read_line(&mut client), "+OK relayed: 220 hi");
    assert_eq!(
        read_n(&mut client, RESIDUAL_TO_CLIENT.len()),
        RESIDUAL_TO_CLIENT
    );
    expect_pattern(&mut client, 0x11, MIB, Duration::ZERO);
    assert_eq!(
        read_to_end(&mut client),
        b"",
        "clean EOF after the back-end's bytes"
    );
    backend.join();
}

#[test]
fn connection_refused_is_reported_to_the_session() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // nothing listens there any more
    let server = Server::default();
    let mut client = connect(&server);
    client
        .write_all(format!("CONNECT {port}\r\n").as_bytes())
        .unwrap();
    let reply = String::from_utf8(read_to_end(&mut client)).unwrap();
    assert!(
        reply.starts_with("-ERR connect failed: ") && reply.ends_with("\r\n"),
        "{reply:?}"
    );
    assert!(reply.to_lowercase().contains("refused"), "{reply:?}");
}

#[test]
fn a_connect_the_session_gives_up_on_is_cancelled() {
    // A listener that never accepts, its queue full: Linux drops further SYNs, so a
    // connect to it stays in progress until the session's deadline closes it.
    use rustix::net::{AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&fd, &SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    rustix::net::listen(&fd, 0).unwrap();
    let listener = TcpListener::from(fd);
    let addr = listener.local_addr().unwrap();
    let fillers: Vec<TcpStream> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();
    let mut server = Server::default();
    let mut client = connect(&server);
    let asked = Instant::now();
    client
        .write_all(format!("CONNECT {}\r\n", addr.port()).as_bytes())
        .unwrap();
    assert_eq!(read_to_end(&mut client), b"-ERR connect timed out\r\n");
    assert!(
        asked.elapsed() >= CONNECT_TIMEOUT,
        "answered before the deadline"
    );
    // Nothing of the cancelled connect is left for shutdown to wait for (the client
    // closes first: a shell may linger for the client's FIN after its last reply).
    drop(client);
    assert!(server.stop() < Duration::from_secs(2), "shutdown waited");
    drop((fillers, listener));
}

#[test]
fn a_source_address_is_bound_before_connecting() {
    let backend = Backend::start(|mut s| {
        let from = s.peer_addr().unwrap();
        s.write_all(format!("220 you are {}\r\n", from.ip()).as_bytes())
            .unwrap();
        assert_eq!(read_to_end(&mut s), RESIDUAL_TO_BACKEND);
    });
    let server = Server::default();
    let mut client = connect(&server);
    client
        .write_all(format!("CONNECT {} src=127.0.0.2\r\n", backend.port).as_bytes())
        .unwrap();
    assert_eq!(read_line(&mut client), "+OK relayed: 220 you are 127.0.0.2");
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut client), RESIDUAL_TO_CLIENT);
    backend.join();
}

#[test]
fn idle_spliced_connections_are_closed_on_both_sides() {
    let idle = Duration::from_millis(400);
    let backend = Backend::start(move |mut s| {
        s.write_all(b"220 hi\r\n").unwrap();
        assert_eq!(
            read_n(&mut s, RESIDUAL_TO_BACKEND.len()),
            RESIDUAL_TO_BACKEND
        );
        s.write_all(b"ping").unwrap();
        let quiet = Instant::now();
        assert_eq!(read_to_end(&mut s), b"", "closed without more bytes");
        assert!(
            quiet.elapsed() >= idle / 2,
            "closed too early: {:?}",
            quiet.elapsed()
        );
    });
    let server = Server::start(idle, Duration::from_secs(5));
    let mut client = connect(&server);
    client
        .write_all(format!("CONNECT {}\r\n", backend.port).as_bytes())
        .unwrap();
    assert_eq!(read_line(&mut client), "+OK relayed: 220 hi");
    let started = Instant::now();
    let rest = read_to_end(&mut client);
    assert_eq!(rest, [RESIDUAL_TO_CLIENT, b"ping".as_slice()].concat());
    assert!(started.elapsed() >= idle, "closed before the idle timeout");
    assert!(started.elapsed() < idle * 10, "idle timeout not enforced");
    backend.join();
}

#[test]
fn a_session_can_relay_without_splicing() {
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 relay me\r\nextra").unwrap();
        // Echo in upper case until the session closes us.
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).expect("back-end read");
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n].to_ascii_uppercase()).unwrap();
        }
    });
    let server = Server::default();
    let mut client = connect(&server);
    client
        .write_all(format!("CONNECT {} relay\r\n", backend.port).as_bytes())
        .unwrap();
    assert_eq!(read_line(&mut client), "+OK relayed: 220 relay me");
    assert_eq!(read_n(&mut client, 5), b"extra");
    // Large enough to pass the session's relay high-water mark many times.
    let big: Vec<u8> = pattern(0x20, 0, 2 * MIB)
        .into_iter()
        .map(|b| b'a' + b % 26)
        .collect();
    let mut writer = client.try_clone().unwrap();
    let payload = big.clone();
    let sending = thread::spawn(move || writer.write_all(&payload).expect("send"));
    assert!(
        read_n(&mut client, big.len()) == big.to_ascii_uppercase(),
        "relayed bytes differ"
    );
    sending.join().unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    // The session closes both on the client's EOF; the back-end sees its EOF too.
    assert_eq!(read_to_end(&mut client), b"");
    backend.join();
}

#[test]
fn shutdown_waits_for_spliced_connections_then_cuts_them() {
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 hi\r\n").unwrap();
        assert_eq!(
            read_n(&mut s, RESIDUAL_TO_BACKEND.len()),
            RESIDUAL_TO_BACKEND
        );
        let mut rest = Vec::new();
        // Cut: EOF or a reset, either way the connection ends.
        let _ = s.read_to_end(&mut rest);
    });
    let grace = Duration::from_millis(300);
    let mut server = Server::start(Duration::from_secs(30), grace);
    let mut client = connect(&server);
    client
        .write_all(format!("CONNECT {}\r\n", backend.port).as_bytes())
        .unwrap();
    assert_eq!(read_line(&mut client), "+OK relayed: 220 hi");
    assert_eq!(
        read_n(&mut client, RESIDUAL_TO_CLIENT.len()),
        RESIDUAL_TO_CLIENT
    );
    let took = server.stop();
    assert!(
        took >= grace,
        "a spliced connection was cut before the grace: {took:?}"
    );
    backend.join();
}

/// Throughput of one large transfer, direct and through the splice, alternating
/// over several rounds (best and median of each). A measurement, not a test: run it on
/// purpose, in release mode, on a quiet machine, and read the figures.
///
/// `cargo test -p tidegate-shell-mio --release --test splice -- --ignored --nocapture`
#[test]
#[ignore = "a measurement; run explicitly"]
fn measure_splice_throughput() {
    const TOTAL: usize = 256 * MIB;
    const ROUNDS: usize = 5;
    fn sink(mut s: TcpStream) -> usize {
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return got,
                Ok(n) => got += n,
            }
        }
    }
    fn blast(s: &mut TcpStream) {
        let block = vec![b'q'; 256 * 1024];
        let mut sent = 0;
        while sent < TOTAL {
            s.write_all(&block).expect("blast");
            sent += block.len();
        }
        s.shutdown(Shutdown::Write).unwrap();
    }
    /// CPU seconds (user + system) this process has used: clients, back-end and shell
    /// alike, so the difference between the two modes is the shell's cost. Linux only;
    /// USER_HZ is 100 on every Linux architecture.
    fn cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after_name = stat.rsplit(')').next().unwrap_or_default();
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / 100.0
    }
    /// (MiB/s, CPU ms per MiB) of one run.
    fn timed(run: impl FnOnce()) -> (f64, f64) {
        let (cpu, started) = (cpu_seconds(), Instant::now());
        run();
        let secs = started.elapsed().as_secs_f64();
        let mib = (TOTAL / MIB) as f64;
        (mib / secs, (cpu_seconds() - cpu) * 1000.0 / mib)
    }
    fn direct() -> (f64, f64) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = thread::spawn(move || sink(listener.accept().unwrap().0));
        let mut client = TcpStream::connect(addr).unwrap();
        timed(|| {
            blast(&mut client);
            assert_eq!(receiver.join().unwrap(), TOTAL);
        })
    }
    fn spliced(server: &Server) -> (f64, f64) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let receiver = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"220 sink\r\n").unwrap();
            sink(s)
        });
        let mut client = connect(server);
        client
            .write_all(format!("CONNECT {port}\r\n").as_bytes())
            .unwrap();
        assert_eq!(read_line(&mut client), "+OK relayed: 220 sink");
        timed(|| {
            blast(&mut client);
            assert_eq!(receiver.join().unwrap(), TOTAL + RESIDUAL_TO_BACKEND.len());
        })
    }
    let server = Server::default();
    let (mut direct_runs, mut spliced_runs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        direct_runs.push(direct());
        spliced_runs.push(spliced(&server));
    }
    let median = |runs: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let best = |runs: &[(f64, f64)]| runs.iter().map(|r| r.0).fold(0.0, f64::max);
    let (direct_rate, spliced_rate) = (
        median(&direct_runs, |r| r.0),
        median(&spliced_runs, |r| r.0),
    );
    let (direct_cpu, spliced_cpu) = (
        median(&direct_runs, |r| r.1),
        median(&spliced_runs, |r| r.1),
    );
    println!(
        "RESULT {TOTAL_MIB} MiB x {ROUNDS} rounds, medians: direct {direct_rate:.0} MiB/s \
         ({direct_cpu:.2} CPU ms/MiB), spliced {spliced_rate:.0} MiB/s ({spliced_cpu:.2} CPU \
         ms/MiB); throughput ratio {:.2} (best runs {:.0} vs {:.0} MiB/s: {:.2}); shell CPU \
         {:.2} ms/MiB",
        spliced_rate / direct_rate,
        best(&spliced_runs),
        best(&direct_runs),
        best(&spliced_runs) / best(&direct_runs),
        spliced_cpu - direct_cpu,
        TOTAL_MIB = TOTAL / MIB,
    );
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// Connects `count` clients through spliced connections to one back-end that keeps
/// every socket it accepts, and moves a few KiB both ways through each. Returns the
/// clients and the back-end's sockets, all left idle.
fn idle_spliced(server: &Server, count: usize) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepting = thread::spawn(move || {
        (0..count)
            .map(|_| {
                let (mut s, _) = listener.accept().unwrap();
                timeouts(&s);
                s.write_all(b"220 hi\r\n").unwrap();
                s
            })
            .collect::<Vec<_>>()
    });
    let clients: Vec<TcpStream> = (0..count)
        .map(|_| {
            let mut client = connect(server);
            client
                .write_all(format!("CONNECT {port}\r\n").as_bytes())
                .unwrap();
            assert_eq!(read_line(&mut client), "+OK relayed: 220 hi");
            assert_eq!(
                read_n(&mut client, RESIDUAL_TO_CLIENT.len()),
                RESIDUAL_TO_CLIENT
            );
            client
        })
        .collect();
    let mut backends = accepting.join().unwrap();
    let payload = pattern(0x33, 0, 8 * 1024);
    for (client, backend) in clients.iter().zip(&mut backends) {
        let mut client = client;
        client.write_all(&payload).unwrap();
        let expected = [RESIDUAL_TO_BACKEND, &payload].concat();
        assert_eq!(read_n(backend, expected.len()), expected);
        backend.write_all(&payload).unwrap();
        let mut echo = vec![0; payload.len()];
        client.read_exact(&mut echo).unwrap();
        assert_eq!(echo, payload);
    }
    (clients, backends)
}

#[test]
fn idle_spliced_connections_hold_no_pipes() {
    // Each spliced connection is four descriptors in this process: the client and the
    // back-end's socket (test side) and the shell's two. A pipe kept per direction would
    // add four more each; the pool holds only the few pipes in use at one time.
    const CONNECTIONS: usize = 40;
    let server = Server::default();
    let before = open_fds();
    let (clients, backends) = idle_spliced(&server, CONNECTIONS);
    let held = open_fds() - before;
    assert!(
        held <= 4 * CONNECTIONS + 8,
        "{held} descriptors for {CONNECTIONS} idle spliced connections"
    );
    drop((clients, backends));
}

/// Memory of idle spliced connections: resident set growth of this process per
/// connection (shell, clients and back-end together; the test side holds only socket
/// descriptors). A measurement: run explicitly.
///
/// `cargo test -p tidegate-shell-mio --release --test splice -- --ignored --nocapture`
#[test]
#[ignore = "a measurement; run explicitly"]
fn measure_idle_spliced_memory() {
    const CONNECTIONS: usize = 2000;
    fn rss_kib() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
    // Each spliced connection counts twice (client and back-end socket).
    let server = Server::start_with(
        Duration::from_secs(300),
        Duration::from_secs(5),
        3 * CONNECTIONS,
    );
    // Warm up the shell's threads and allocator before the baseline.
    drop(idle_spliced(&server, 10));
    let before = rss_kib();
    let held = idle_spliced(&server, CONNECTIONS);
    let after = rss_kib();
    println!(
        "RESULT {CONNECTIONS} idle spliced connections: {} bytes of RSS each",
        (after.saturating_sub(before)) * 1024 / CONNECTIONS
    );
    drop(held);
}
