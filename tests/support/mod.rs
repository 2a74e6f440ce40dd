//! What the process-level tests share: the binary, free ports, and `tidegate serve`
//! processes that are killed when the test drops them.
// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `tidegate` binary under test.
pub fn tidegate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tidegate"))
}

/// A port free on 127.0.0.1 that no earlier call in this test process returned.
///
/// Ports come from a per-process sequence between 10,000 and 31,999, below the
/// kernel's ephemeral range (32,768 and up by default): a port the kernel picked for
/// `bind(:0)` could be handed out twice to one test (two listeners on one port), or be
/// taken by one of the many client sockets a test opens before the server binds it.
/// The start of the sequence depends on the process id, so test binaries running side
/// by side rarely walk the same ports.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % u32::from(PORT_COUNT)) as u16;
    for _ in 0..PORT_COUNT {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) % PORT_COUNT;
        let port = PORT_FIRST + (start + step) % PORT_COUNT;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {}", port_range());
}

/// A port free on 127.0.0.1 and on every address in `others` (clusters on several
/// loopback addresses give every node the same port numbers); see [`free_port`].
pub fn free_port_on(others: &[&str]) -> u16 {
    for _ in 0..PORT_COUNT {
        let port = free_port();
        if others
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
    panic!(
        "no port in {} free on 127.0.0.1 and {others:?}",
        port_range()
    );
}

/// The ports [`free_port`] hands out: `PORT_COUNT` of them from `PORT_FIRST`.
const PORT_FIRST: u16 = 10_000;
const PORT_COUNT: u16 = 22_000;

fn port_range() -> String {
    format!("{PORT_FIRST}-{}", PORT_FIRST + PORT_COUNT - 1)
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Waits until something accepts connections at `addr`.
pub fn wait_listening(addr: SocketAddr, what: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr}: {}",
            what()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Adds `[server] allow_root = true` to the config file at `path` unless it says
/// something about `allow_root` already: CI runs the process tests as root, and
/// `tidegate serve` refuses root without `[server] user` unless told (docs/security.md).
/// A config that sets `user` still drops to it.
pub fn allow_root(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    if text.contains("allow_root") {
        return;
    }
    let patched = if text.lines().any(|l| l.trim() == "[server]") {
        let mut out = String::new();
        for line in text.lines() {
            out.push_str(line);
            out.push('\n');
            if line.trim() == "[server]" {
                out.push_str("allow_root = true\n");
            }
        }
        out
    } else {
        format!("{text}\n[server]\nallow_root = true\n")
    };
    std::fs::write(path, patched).unwrap();
}

/// A running `tidegate serve`; its log (stderr) is collected; killed when dropped.
pub struct Node {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Node {
    /// Starts `tidegate serve --config config` and waits until `wait_for` accepts.
    pub fn start(config: &Path, wait_for: SocketAddr) -> Node {
        Node::start_logging(config, wait_for, "info")
    }

    /// Like [`Node::start`], logging at `level` (`TIDEGATE_LOG`: `info`, `trace`...).
    pub fn start_logging(config: &Path, wait_for: SocketAddr, level: &str) -> Node {
        allow_root(config);
        let mut child = tidegate()
            .args(["serve", "--config"])
            .arg(config)
            .env("TIDEGATE_LOG", level)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let node = Node { child, log };
        wait_listening(wait_for, &|| node.log.lock().unwrap().clone());
        node
    }

    /// Whether the log has (or within 5 seconds gets) a line containing `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.log.lock().unwrap().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit (after a signal) and returns its status and the
    /// log it wrote.
    pub fn wait(&mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        // The log reader ends with the process; give it a moment to take the last bytes.
        std::thread::sleep(Duration::from_millis(100));
        (status, self.log.lock().unwrap().clone())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line-based client (POP3, SMTP, IMAP) over a plain socket, with a read timeout.
pub struct LineClient {
    reader: std::io::BufReader<TcpStream>,
}

impl From<TcpStream> for LineClient {
    fn from(stream: TcpStream) -> LineClient {
        LineClient {
            reader: std::io::BufReader::new(stream),
        }
    }
}

impl LineClient {
    /// Connects to `addr` (reads nothing yet).
    pub fn connect(addr: SocketAddr) -> LineClient {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        LineClient {
            reader: std::io::BufReader::new(stream),
        }
    }

    /// Reads one line (with its CRLF); empty at end of stream or on a timeout.
    pub fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        let _ = self.reader.read_line(&mut line);
        line
    }

    /// Reads lines until one starts with `prefix` and returns that line.
    pub fn until(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line();
            if line.is_empty() || line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    /// Sends `command` and CRLF, and reads one line.
    pub fn ask(&mut self, command: &str) -> String {
        self.send(format!("{command}\r\n").as_bytes());
        self.line()
    }

    /// The socket, for timeouts and shutdowns.
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }
}

/// A field of `/proc/PID/status` (`VmRSS`, `Uid`, ...), its value trimmed.
pub fn proc_status(pid: u32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// The resident memory of process `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Whether this test process runs as root (it can mount, chown and drop privileges).
pub fn is_root() -> bool {
    proc_status(std::process::id(), "Uid")
        .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}

/// Connects to `to` from the loopback address `source` (127.0.0.x), so one test can
/// play many clients: std cannot bind a client socket before connecting, so this makes
/// the three calls itself.
pub fn connect_from(source: std::net::Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: socket(2) with constant arguments; the descriptor it returns is owned by
    // `stream` at once, which closes it on every path below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nothing else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let local = sockaddr(source, 0);
    let remote = sockaddr(*to.ip(), to.port());
    // SAFETY: the addresses are live, properly sized sockaddr_in values; `fd` is open.
    let bound = unsafe { libc::bind(fd, (&raw const local).cast(), len) };
    if bound != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    let connected = unsafe { libc::connect(fd, (&raw const remote).cast(), len) };
    if connected != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}
