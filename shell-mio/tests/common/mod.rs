//! Shared harness for the shell's smoke tests: a real POP3 session behind a test factory,
//! a fake store, the server on its own thread, and a blocking client with a deadline on
//! every read so no test can hang.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidegate_core::pop3::{BUSY_REPLY, ConnInfo, Pop3Config, Pop3Session};
use tidegate_core::refusal::Refusal;
use tidegate_core::{Account, Failure, MessageInfo, MessageRef, Reply, Request};
use tidegate_store::service::BoxedSession;
use tidegate_store::{Executor, ServerSpec, SessionFactory, Shutdown};

/// How long any single client read may wait.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the session waits before answering a failed login (its `AuthDelay` timer).
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_millis(200);
/// The greeting host name.
pub const HOSTNAME: &str = "test.example";
/// The one message in alice's mailbox: the line starting with a dot gets stuffed.
pub const BODY: &[u8] = b"Subject: hi\r\n\r\nHello Alice.\r\n.dot line\r\nbye\r\n";
/// `BODY` as RETR sends it, after the `+OK` line.
pub const BODY_STUFFED: &[u8] = b"Subject: hi\r\n\r\nHello Alice.\r\n..dot line\r\nbye\r\n.\r\n";

/// Makes real POP3 sessions, plaintext login allowed.
struct Factory {
    config: Arc<Pop3Config>,
}

impl SessionFactory for Factory {
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

/// A store with one user (alice/secret) and one message.
pub struct FakeStore {
    body: Bytes,
    auth_delay: Duration,
}

impl Executor for FakeStore {
    fn execute(&self, request: Request) -> Reply {
        match request {
            Request::Authenticate { user, password, .. } => {
                std::thread::sleep(self.auth_delay);
                if user == "alice" && password.expose() == b"secret" {
                    Reply::Authenticated(Account("alice@example.com".into()))
                } else {
                    Reply::Failed(Failure::Denied)
                }
            }
            Request::ListMailbox { .. } => Reply::Listing(vec![MessageInfo {
                file: MessageRef("new/1.test".into()),
                uid: "1".into(),
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

    /// "quick" logs in only inline: `execute` denies it, so a successful login proves
    /// the shell asked `execute_inline` before queueing the request for a worker.
    fn execute_inline(&self, request: &Request) -> Option<Reply> {
        match request {
            Request::Authenticate { user, .. } if user == "quick" => {
                Some(Reply::Authenticated(Account("alice@example.com".into())))
            }
            _ => None,
        }
    }
}

/// Server settings a test may change.
pub struct Options {
    pub max_connections: usize,
    pub threads: usize,
    pub workers: usize,
    pub shutdown_grace: Duration,
    pub body: Bytes,
    /// How long the store takes to check a password.
    pub auth_delay: Duration,
    /// The POP3 autologout.
    pub idle_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_connections: 100,
            threads: 2,
            workers: 2,
            shutdown_grace: Duration::from_secs(5),
            body: Bytes::from_static(BODY),
            auth_delay: Duration::ZERO,
            idle_timeout: Pop3Config::default().idle_timeout,
        }
    }
}

/// `serve` running on its own thread.
pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    pub fn start(options: Options) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let config = Pop3Config {
            hostname: HOSTNAME.into(),
            auth_failure_delay: AUTH_FAILURE_DELAY,
            idle_timeout: options.idle_timeout,
            ..Pop3Config::default()
        };
        let spec = ServerSpec {
            listeners: vec![listener],
            factory: Arc::new(Factory {
                config: Arc::new(config),
            }),
            executor: Arc::new(FakeStore {
                body: options.body,
                auth_delay: options.auth_delay,
            }),
            max_connections: options.max_connections,
            shutdown_grace: options.shutdown_grace,
            threads: options.threads,
            workers: options.workers,
        };
        let shutdown = Shutdown::new();
        let signal = shutdown.clone();
        let thread = std::thread::spawn(move || tidegate_shell_mio::serve(spec, signal));
        Server {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Waits up to `within` for `serve` to return, and returns its result.
    pub fn wait(&mut self, within: Duration) -> io::Result<()> {
        let deadline = Instant::now() + within;
        let thread = self.thread.take().expect("serve already joined");
        while !thread.is_finished() {
            assert!(
                Instant::now() < deadline,
                "serve did not return within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        thread.join().expect("serve panicked")
    }

    /// Triggers shutdown and expects `serve` to return `Ok` within `within`.
    pub fn stop(mut self, within: Duration) {
        self.shutdown.trigger();
        self.wait(within).expect("serve failed");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failed test must not leave the server running; don't wait for it.
        self.shutdown.trigger();
    }
}

/// A blocking POP3 client; every read fails the test after [`READ_TIMEOUT`].
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("write timeout");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads until the buffered input contains `terminator`; returns everything up to
    /// and including it.
    pub fn read_until(&mut self, terminator: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = find(&self.buf, terminator) {
                return self.buf.drain(..at + terminator.len()).collect();
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "connection closed while waiting for {:?}; got {:?}",
                    String::from_utf8_lossy(terminator),
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!(
                    "read failed ({e}) while waiting for {:?}; got {:?}",
                    String::from_utf8_lossy(terminator),
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// One reply line, or `None` if the connection ends (or breaks) first.
    pub fn try_line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            match self.stream.read(&mut byte) {
                Ok(1) => line.push(byte[0]),
                _ => return None,
            }
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).ok()
    }

    /// One reply line, CRLF stripped.
    pub fn line(&mut self) -> String {
        let line = self.read_until(b"\r\n");
        String::from_utf8(line[..line.len() - 2].to_vec()).expect("utf-8 reply")
    }

    /// Sends `command` and returns the one-line reply.
    pub fn command(&mut self, command: &str) -> String {
        self.send(format!("{command}\r\n").as_bytes());
        self.line()
    }

    /// Reads until the server closes; returns what arrived (buffered bytes included).
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut all = std::mem::take(&mut self.buf);
        self.stream.read_to_end(&mut all).expect("read to end");
        all
    }

    /// Greeting, USER and PASS.
    pub fn login(&mut self) {
        assert!(self.line().starts_with("+OK"), "greeting");
        assert_eq!(self.command("USER alice"), "+OK");
        assert!(
            self.command("PASS secret")
                .starts_with("+OK Logged in, 1 messages")
        );
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
