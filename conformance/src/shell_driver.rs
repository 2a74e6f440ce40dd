//! Runs scripts against a real runtime shell over loopback.
//!
//! The shell's `serve` runs in a thread with the script's listeners (one per protocol,
//! each on `127.0.0.1:0`) and a [`MemStore`]; a blocking `TcpStream` client (with rustls
//! for STLS/STARTTLS and implicit TLS) plays the script, with a deadline on every
//! expectation. Scripts marked `@skip-shell`
//! (virtual time, fake client addresses) are skipped.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tidegate_store::{Executor, Listener, Listeners, ServerSpec, Shutdown};

use crate::Driver;
use crate::config::Protocol;
use crate::interp::{self, Conn, Failure, Received, Server};
use crate::memstore::MemStore;
use crate::pki::TestPki;
use crate::script::Script;

/// A shell's entry point: `tidegate_shell_mio::serve` or `tidegate_shell_smol::serve`.
pub type ServeFn = fn(ServerSpec, Shutdown) -> io::Result<()>;

/// Runs scripts against one shell.
#[derive(Debug, Clone)]
pub struct ShellDriver {
    name: &'static str,
    serve: ServeFn,
    pki: Arc<TestPki>,
    /// The longest wait for any one expectation.
    pub timeout: Duration,
    /// Open connections above which the shell answers with the busy reply.
    pub max_connections: usize,
}

impl ShellDriver {
    /// A driver for the shell called `name` whose entry point is `serve`.
    pub fn new(name: &'static str, serve: ServeFn) -> Self {
        ShellDriver {
            name,
            serve,
            pki: TestPki::shared(),
            timeout: Duration::from_secs(5),
            max_connections: 64,
        }
    }

    /// Starts the shell with `listeners` (each bound to `127.0.0.1:0`), running requests
    /// on `executor` (a [`MemStore`] or the real `LocalStore`).
    pub fn start(
        &self,
        listeners: Vec<Listener>,
        executor: Arc<dyn Executor>,
    ) -> io::Result<Running> {
        let mut sockets = Vec::new();
        let mut addrs = Vec::new();
        for _ in &listeners {
            let socket = TcpListener::bind("127.0.0.1:0")?;
            addrs.push(socket.local_addr()?);
            sockets.push(socket);
        }
        let spec = ServerSpec {
            listeners: sockets,
            factory: Arc::new(Listeners(listeners)),
            executor,
            max_connections: self.max_connections,
            shutdown_grace: Duration::from_secs(1),
            threads: 1,
            workers: 2,
        };
        let shutdown = Shutdown::new();
        let serve = self.serve;
        let signal = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{}-serve", self.name))
            .spawn(move || serve(spec, signal))?;
        Ok(Running {
            addrs,
            shutdown,
            thread: Some(thread),
        })
    }
}

/// A shell serving in a background thread.
pub struct Running {
    /// The listening addresses, in the order of the listeners given to `start`.
    pub addrs: Vec<SocketAddr>,
    shutdown: Shutdown,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    /// Whether `serve` is still running (it returns only after shutdown or on error).
    pub fn is_serving(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Triggers shutdown and waits up to `within` for `serve` to return `Ok`.
    pub fn stop(mut self, within: Duration) -> Result<(), String> {
        self.shutdown.trigger();
        let thread = self.thread.take().expect("stopped once");
        let deadline = Instant::now() + within;
        while !thread.is_finished() {
            if Instant::now() > deadline {
                return Err(format!(
                    "serve did not return within {within:?} of shutdown"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("serve returned an error: {e}")),
            Err(_) => Err("serve panicked".into()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl Driver for ShellDriver {
    fn name(&self) -> &str {
        self.name
    }

    fn skip_reason(&self, script: &Script) -> Option<&'static str> {
        script
            .skip_shell
            .then_some("@skip-shell (virtual time or a fake client address)")
    }

    fn run(&self, script: &Script) -> Result<(), Failure> {
        let fail = |message: String| Failure {
            path: script.path.clone(),
            line: 0,
            driver: self.name.to_owned(),
            message,
            transcript: String::new(),
        };
        let store = Arc::new(MemStore::new());
        let listeners =
            crate::listeners::all_listeners(&script.config, &self.pki, Duration::from_millis(50));
        let running = self
            .start(listeners, store.clone())
            .map_err(|e| fail(format!("cannot start the shell: {e}")))?;
        let mut server = TcpServer {
            addrs: running.addrs.clone(),
            implicit_tls: script.config.implicit_tls,
            pki: self.pki.clone(),
            timeout: self.timeout,
        };
        let result = interp::execute(script, self.name, &mut server, &store);
        let stopped = running.stop(Duration::from_secs(10));
        result?;
        stopped.map_err(fail)
    }
}

struct TcpServer {
    /// One per protocol, in [`Protocol::ALL`] order.
    addrs: Vec<SocketAddr>,
    implicit_tls: bool,
    pki: Arc<TestPki>,
    timeout: Duration,
}

impl Server for TcpServer {
    fn connect(&mut self, raw: bool, protocol: Protocol) -> Result<Box<dyn Conn>, String> {
        let addr = self.addrs[protocol.index()];
        let mut conn = TcpConn::connect(addr, self.pki.clone(), self.timeout)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        if self.implicit_tls && protocol.has_implicit_tls() && !raw {
            conn.start_tls()?;
        }
        Ok(Box::new(conn))
    }

    fn patience(&self) -> Duration {
        self.timeout
    }
}

/// A blocking loopback client with optional TLS and a deadline per expectation.
pub struct TcpConn {
    sock: TcpStream,
    tls: Option<rustls::ClientConnection>,
    pki: Arc<TestPki>,
    timeout: Duration,
    /// Plaintext read and not yet consumed.
    buf: Vec<u8>,
    eof: bool,
}

impl TcpConn {
    /// Connects to `addr`; every later read waits at most `timeout`.
    pub fn connect(addr: SocketAddr, pki: Arc<TestPki>, timeout: Duration) -> io::Result<TcpConn> {
        let sock = TcpStream::connect_timeout(&addr, timeout)?;
        sock.set_nodelay(true)?;
        sock.set_write_timeout(Some(timeout))?;
        Ok(TcpConn {
            sock,
            tls: None,
            pki,
            timeout,
            buf: Vec::new(),
            eof: false,
        })
    }

    /// Reads more plaintext into `buf` before `deadline`; false at EOF.
    fn fill(&mut self, deadline: Instant) -> Result<bool, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no reply within {:?}", self.timeout));
        }
        self.sock
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 16 * 1024];
        let Some(tls) = self.tls.as_mut() else {
            return match self.sock.read(&mut chunk) {
                Ok(0) => Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    Ok(true)
                }
                Err(e) => read_error(e, self.timeout),
            };
        };
        loop {
            match tls.reader().read(&mut chunk) {
                Ok(0) => return Ok(false), // close_notify
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Ok(false), // closed without close_notify
            }
            match tls.read_tls(&mut self.sock) {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(e) => return read_error(e, self.timeout),
            }
            tls.process_new_packets()
                .map_err(|e| format!("TLS error from the server: {e}"))?;
            while tls.wants_write() {
                tls.write_tls(&mut self.sock).map_err(|e| e.to_string())?;
            }
        }
    }
}

/// How long `@expect quiet` listens on a real connection.
const QUIET: Duration = Duration::from_millis(100);

/// A reset counts as a close; a timeout is a failure.
fn read_error(e: io::Error, timeout: Duration) -> Result<bool, String> {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            Err(format!("no reply within {timeout:?}"))
        }
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => Ok(false),
        _ => Err(format!("read failed: {e}")),
    }
}

impl Conn for TcpConn {
    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let result = match self.tls.as_mut() {
            None => self.sock.write_all(bytes),
            Some(tls) => tls.writer().write_all(bytes).and_then(|()| {
                while tls.wants_write() {
                    tls.write_tls(&mut self.sock)?;
                }
                Ok(())
            }),
        };
        match result {
            Ok(()) => Ok(()),
            // The server may close first (too many bad commands); the script's next
            // expectation decides whether that was right.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(format!("write failed: {e}")),
        }
    }

    fn read_line(&mut self) -> Result<Received, String> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(Received::Line(self.buf.drain(..=end).collect()));
            }
            if self.eof || !self.fill(deadline)? {
                self.eof = true;
                return Ok(Received::Closed {
                    leftover: std::mem::take(&mut self.buf),
                });
            }
        }
    }

    fn expect_quiet(&mut self) -> Result<(), String> {
        if self.buf.is_empty() && !self.eof {
            let deadline = Instant::now() + QUIET;
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) => self.eof = true,
                Err(e) if e.starts_with("no reply") => return Ok(()), // nothing came
                Err(e) => return Err(e),
            }
        }
        if self.eof && self.buf.is_empty() {
            return Err("expected silence; the server closed the connection".into());
        }
        Err(format!(
            "expected silence; the server sent {}",
            crate::pattern::escape(&self.buf[..self.buf.len().min(200)])
        ))
    }

    fn start_tls(&mut self) -> Result<(), String> {
        if self.tls.is_some() || !self.buf.is_empty() {
            return Err("TLS already on, or plaintext arrived before the handshake".into());
        }
        let mut tls = self.pki.client_connection();
        self.sock
            .set_read_timeout(Some(self.timeout))
            .map_err(|e| e.to_string())?;
        while tls.is_handshaking() {
            tls.complete_io(&mut self.sock)
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
        }
        while tls.wants_write() {
            tls.write_tls(&mut self.sock).map_err(|e| e.to_string())?;
        }
        self.tls = Some(tls);
        Ok(())
    }

    fn shutdown_write(&mut self) -> Result<(), String> {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            while tls.wants_write() {
                tls.write_tls(&mut self.sock).map_err(|e| e.to_string())?;
            }
        }
        self.sock
            .shutdown(NetShutdown::Write)
            .map_err(|e| e.to_string())
    }

    fn advance(&mut self, _by: Duration) -> Result<(), String> {
        Err("@tick needs virtual time; shells run in real time".into())
    }

    fn unread(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}
