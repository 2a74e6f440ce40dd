//! The harness of the splice tests shared by both runtime shells: a test-only proxy
//! session, a server running it on the shell under test, loopback back-ends driven by
//! scripts, and blocking client helpers with a timeout on every call.
//!
//! The shell under test is the `serve` function at the root of the test binary that
//! includes this module (`crate::serve`, with the signature both shells share:
//! `fn(ServerSpec, Shutdown) -> io::Result<()>`).
//!
//! The session waits for the client's first line `CONNECT <port> [src=<ip>] [relay]`,
//! connects to that port on 127.0.0.1 (from `src` if given), relays the back-end's
//! greeting line as `+OK relayed: <line>`, and then either hands both sockets to the
//! shell with `Action::Splice` (residuals [`RESIDUAL_TO_CLIENT`] and
//! [`RESIDUAL_TO_BACKEND`], each followed by whatever it had read beyond the lines) or,
//! with `relay`, keeps relaying through itself with `Write`, `handle_input` and
//! `handle_drained` on both peers.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidegate_core::{Action, Peer, Reply, RequestId, Session};
use tidegate_store::service::BoxedSession;
use tidegate_store::{Executor, ServerSpec, SessionFactory, Shutdown as Stop};

use crate::serve;

/// Every blocking socket call in a test gives up after this long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// What the session sends the back-end before anything the client sent after CONNECT.
pub const RESIDUAL_TO_BACKEND: &[u8] = b"RESIDUAL-B\r\n";
/// What the session sends the client right after the relayed greeting.
pub const RESIDUAL_TO_CLIENT: &[u8] = b"RESIDUAL-C\r\n";
/// The session's own buffers (a test session, but bounded all the same).
const LINE_MAX: usize = 4096;
/// Relay mode: unacknowledged bytes per direction before the session stops reading.
const RELAY_HIGH_WATER: usize = 64 * 1024;
/// How long the session waits for a connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One mebibyte, the unit of the transfer sizes.
pub const MIB: usize = 1024 * 1024;

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

/// `serve` running on its own thread with the test session behind every listener.
pub struct Server {
    addr: SocketAddr,
    shutdown: Stop,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    /// A server whose sessions splice with `idle_timeout` and whose shutdown waits up to
    /// `grace` for open connections.
    pub fn start(idle_timeout: Duration, grace: Duration) -> Server {
        Server::start_with(idle_timeout, grace, 100)
    }

    /// [`Server::start`] with a connection limit.
    pub fn start_with(idle_timeout: Duration, grace: Duration, max_connections: usize) -> Server {
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
        // Named like the shells' own threads, so measurements can count the shell's
        // CPU apart from the test's (`tidegate-*`).
        let thread = thread::Builder::new()
            .name("tidegate-serve".into())
            .spawn(move || serve(spec, signal))
            .unwrap();
        Server {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }

    /// A server with a long idle timeout (30 s) and grace (5 s).
    pub fn default() -> Server {
        Server::start(Duration::from_secs(30), Duration::from_secs(5))
    }

    /// Triggers shutdown; returns how long `serve` took to return.
    pub fn stop(&mut self) -> Duration {
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

/// Puts [`IO_TIMEOUT`] on every blocking read and write of `stream`.
pub fn timeouts(stream: &TcpStream) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
}

/// A back-end: accepts one connection and runs `script` on it in a thread.
pub struct Backend {
    /// Where it listens on 127.0.0.1.
    pub port: u16,
    thread: JoinHandle<()>,
}

impl Backend {
    /// Listens on a free port of 127.0.0.1 and runs `script` on the first connection.
    pub fn start(script: impl FnOnce(TcpStream) + Send + 'static) -> Backend {
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
    pub fn join(self) {
        self.thread.join().expect("back-end script failed");
    }
}

/// Reads exactly `n` bytes.
pub fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Reads until EOF; a reset counts as a failure.
pub fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    stream.read_to_end(&mut all).expect("read to end");
    all
}

/// Reads one CRLF line (without it).
pub fn read_line(stream: &mut TcpStream) -> String {
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

/// A client connection to `server`, with [`timeouts`].
pub fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.addr).expect("connect");
    timeouts(&stream);
    stream
}

/// A client connection to `server` that has sent `CONNECT <port><options>` and read the
/// session's `+OK relayed: <greeting>` line (`options` is empty or starts with a space).
pub fn connect_through(server: &Server, port: u16, options: &str, greeting: &str) -> TcpStream {
    let mut client = connect(server);
    client
        .write_all(format!("CONNECT {port}{options}\r\n").as_bytes())
        .expect("send CONNECT");
    assert_eq!(read_line(&mut client), format!("+OK relayed: {greeting}"));
    client
}

/// Reads exactly `expected.len()` bytes and checks they are `expected` (a residual the
/// session put in front of the spliced bytes).
pub fn expect_bytes(stream: &mut TcpStream, expected: &[u8]) {
    assert_eq!(read_n(stream, expected.len()), expected);
}

/// Connects `count` clients through spliced connections to one back-end that keeps
/// every socket it accepts, and moves a few KiB both ways through each. Returns the
/// clients and the back-end's sockets, all left idle.
pub fn idle_spliced(server: &Server, count: usize) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("idle spliced connection");
    let port = listener
        .local_addr()
        .expect("idle spliced connection")
        .port();
    let accepting = thread::spawn(move || {
        (0..count)
            .map(|_| {
                let (mut s, _) = listener.accept().expect("idle spliced connection");
                timeouts(&s);
                s.write_all(b"220 hi\r\n").expect("idle spliced connection");
                s
            })
            .collect::<Vec<_>>()
    });
    let clients: Vec<TcpStream> = (0..count)
        .map(|_| {
            let mut client = connect_through(server, port, "", "220 hi");
            expect_bytes(&mut client, RESIDUAL_TO_CLIENT);
            client
        })
        .collect();
    let mut backends = accepting.join().expect("idle spliced connection");
    let payload = pattern(0x33, 0, 8 * 1024);
    for (client, backend) in clients.iter().zip(&mut backends) {
        let mut client = client;
        client.write_all(&payload).expect("idle spliced connection");
        let expected = [RESIDUAL_TO_BACKEND, &payload].concat();
        assert_eq!(read_n(backend, expected.len()), expected);
        backend
            .write_all(&payload)
            .expect("idle spliced connection");
        let mut echo = vec![0; payload.len()];
        client
            .read_exact(&mut echo)
            .expect("idle spliced connection");
        assert_eq!(echo, payload);
    }
    (clients, backends)
}

/// A deterministic byte stream that does not repeat with any buffer size.
pub fn pattern(seed: u8, offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 11) as u8 ^ seed ^ (i / 4099) as u8)
        .collect()
}

/// Writes `total` pattern bytes in chunks.
pub fn send_pattern(stream: &mut TcpStream, seed: u8, total: usize) {
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
pub fn expect_pattern(stream: &mut TcpStream, seed: u8, total: usize, pause: Duration) {
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
