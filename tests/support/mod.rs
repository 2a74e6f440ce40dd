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

/// A port nobody listens on at 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// A running `tidegate serve`; its log (stderr) is collected; killed when dropped.
pub struct Node {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Node {
    /// Starts `tidegate serve --config config` and waits until `wait_for` accepts.
    pub fn start(config: &Path, wait_for: SocketAddr) -> Node {
        let mut child = tidegate()
            .args(["serve", "--config"])
            .arg(config)
            .env("TIDEGATE_LOG", "info")
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
