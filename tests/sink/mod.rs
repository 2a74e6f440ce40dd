//! A receiving SMTP server for the outbound tests: it records every transaction
//! (envelope and exact message bytes) and answers RCPT per recipient from a script
//! (`451 …` once, then `250`, or always `550 …`). Plain ESMTP with 8BITMIME, SMTPUTF8
//! and PIPELINING; no STARTTLS, no AUTH.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One message the sink accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// MAIL FROM, without angle brackets.
    pub sender: String,
    /// Accepted RCPT TOs.
    pub recipients: Vec<String>,
    /// The message, unstuffed, CRLF line ends, without the final `.` line.
    pub data: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    /// Replies for RCPT of an address (lowercased), used once each, in order.
    rcpt_script: Mutex<HashMap<String, VecDeque<String>>>,
    /// Replies for every RCPT of an address.
    rcpt_always: Mutex<HashMap<String, String>>,
    stop: AtomicBool,
}

/// A running sink; stops accepting when dropped.
pub struct Sink {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Sink {
    /// Starts a sink on a free port of 127.0.0.1.
    pub fn start() -> Sink {
        Sink::start_on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// Starts a sink on `port` (to come back on the port a config names).
    pub fn start_at(port: u16) -> Sink {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => return Sink::start_on(listener),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("cannot bind the sink on {port}: {e}"),
            }
        }
    }

    /// Starts a sink on this address (another loopback address, for MX tests).
    pub fn start_on_addr(addr: SocketAddr) -> Sink {
        Sink::start_on(TcpListener::bind(addr).unwrap())
    }

    fn start_on(listener: TcpListener) -> Sink {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        std::thread::spawn(move || {
            while !state.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let state = state.clone();
                        std::thread::spawn(move || {
                            let _ = serve(stream, &state);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Sink { addr, shared }
    }

    /// RCPT of `address` gets `reply` once (before the default `250`).
    pub fn answer_once(&self, address: &str, reply: &str) {
        self.shared
            .rcpt_script
            .lock()
            .unwrap()
            .entry(address.to_ascii_lowercase())
            .or_default()
            .push_back(reply.to_owned());
    }

    /// RCPT of `address` always gets `reply`.
    pub fn answer_always(&self, address: &str, reply: &str) {
        self.shared
            .rcpt_always
            .lock()
            .unwrap()
            .insert(address.to_ascii_lowercase(), reply.to_owned());
    }

    /// Everything accepted so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages were accepted (or panics after `secs`).
    pub fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the sink got {} messages, expected {n}: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn path_of(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg[start..].find('>').map_or(arg.len(), |i| start + i);
    arg[start..end].to_owned()
}

fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    out.write_all(b"220 sink.test ESMTP\r\n")?;
    let mut sender = None::<String>;
    let mut recipients = Vec::new();
    loop {
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES".into()
        } else if upper.starts_with("HELO") {
            "250 sink.test".into()
        } else if upper.starts_with("MAIL FROM:") {
            sender = Some(path_of(&line[10..]));
            recipients.clear();
            "250 2.1.0 ok".into()
        } else if upper.starts_with("RCPT TO:") {
            let address = path_of(&line[8..]);
            let key = address.to_ascii_lowercase();
            let scripted = shared
                .rcpt_script
                .lock()
                .unwrap()
                .get_mut(&key)
                .and_then(VecDeque::pop_front);
            let always = shared.rcpt_always.lock().unwrap().get(&key).cloned();
            match scripted.or(always) {
                Some(reply) => reply,
                None => {
                    recipients.push(address);
                    "250 2.1.5 ok".into()
                }
            }
        } else if upper == "DATA" {
            if recipients.is_empty() {
                "554 5.5.1 no valid recipients".into()
            } else {
                out.write_all(b"354 go ahead\r\n")?;
                let mut data = Vec::new();
                loop {
                    let mut raw = Vec::new();
                    if input.read_until(b'\n', &mut raw)? == 0 {
                        return Ok(());
                    }
                    if raw == b".\r\n" {
                        break;
                    }
                    let unstuffed = raw.strip_prefix(b".").unwrap_or(&raw);
                    data.extend_from_slice(unstuffed);
                }
                shared.received.lock().unwrap().push(Received {
                    sender: sender.clone().unwrap_or_default(),
                    recipients: std::mem::take(&mut recipients),
                    data,
                });
                "250 2.0.0 queued in the sink".into()
            }
        } else if upper == "RSET" {
            recipients.clear();
            sender = None;
            "250 2.0.0 ok".into()
        } else if upper == "NOOP" {
            "250 2.0.0 ok".into()
        } else if upper == "QUIT" {
            out.write_all(b"221 2.0.0 bye\r\n")?;
            return Ok(());
        } else {
            "502 5.5.1 not implemented".into()
        };
        out.write_all(format!("{reply}\r\n").as_bytes())?;
    }
}
