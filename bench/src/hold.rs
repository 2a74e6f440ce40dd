//! `hold`: opens many authenticated POP3 or IMAP connections, plain or implicit TLS,
//! and keeps them idle so the server's memory per idle connection can be read
//! (`bench/idle_memory.sh`). POP3 connections stop after `PASS`; IMAP connections
//! `SELECT INBOX` and then `IDLE` (RFC 2177) until the process is stopped.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rustls::pki_types::ServerName;

use crate::net::{self, Errors, positive};

/// The protocol each held connection speaks.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// RFC 1939: greeting, USER, PASS.
    Pop3,
    /// RFC 9051/3501: greeting, LOGIN, SELECT INBOX, IDLE (RFC 2177).
    Imap,
}

#[derive(Args)]
pub struct HoldArgs {
    /// Server address, HOST:PORT.
    #[arg(long)]
    target: String,
    /// What the connections speak.
    #[arg(long, value_enum)]
    protocol: Protocol,
    /// Implicit TLS from the first byte, trusting the PEM certificate(s) in this file.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// User name pattern, `{}` replaced by 1..=--user-count.
    #[arg(long)]
    users_pattern: String,
    /// How many users the connections spread over.
    #[arg(long, default_value_t = 1)]
    user_count: usize,
    /// The password of every user.
    #[arg(long)]
    password: String,
    /// Idle authenticated connections to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Loopback source addresses to spread over: 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Threads opening the connections.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Seconds to hold the connections after `READY` is printed.
    #[arg(long, default_value_t = 3600.0)]
    hold: f64,
    /// Seconds to wait for any one reply.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One held connection, read line by line.
struct Held {
    io: BufReader<Box<dyn Stream>>,
    line: Vec<u8>,
}

impl Held {
    fn send(&mut self, what: &str, text: &str) -> Result<(), String> {
        let io = self.io.get_mut();
        io.write_all(text.as_bytes())
            .and_then(|()| io.flush())
            .map_err(|e| format!("{what}: send: {e}"))
    }

    fn read_line(&mut self, what: &str) -> Result<&str, String> {
        self.line.clear();
        let n = (&mut self.io)
            .take(net::MAX_LINE as u64)
            .read_until(b'\n', &mut self.line)
            .map_err(|e| format!("{what}: read: {e}"))?;
        if n == 0 {
            return Err(format!("{what}: connection closed by the server"));
        }
        Ok(std::str::from_utf8(&self.line).unwrap_or("").trim_end())
    }

    /// Reads lines until one starts with `prefix`; it must then continue with `ok`.
    fn until(&mut self, what: &str, prefix: &str, ok: &str) -> Result<(), String> {
        loop {
            let line = self.read_line(what)?;
            if let Some(rest) = line.strip_prefix(prefix) {
                if rest.starts_with(ok) {
                    return Ok(());
                }
                return Err(format!("{what}: {line}"));
            }
        }
    }

    fn login(&mut self, protocol: Protocol, user: &str, password: &str) -> Result<(), String> {
        match protocol {
            Protocol::Pop3 => {
                self.until("greeting", "", "+OK")?;
                self.send("USER", &format!("USER {user}\r\n"))?;
                self.until("USER", "", "+OK")?;
                self.send("PASS", &format!("PASS {password}\r\n"))?;
                self.until("PASS", "", "+OK")
            }
            Protocol::Imap => {
                self.until("greeting", "* ", "OK")?;
                self.send("LOGIN", &format!("a1 LOGIN \"{user}\" \"{password}\"\r\n"))?;
                self.until("LOGIN", "a1 ", "OK")?;
                self.send("SELECT", "a2 SELECT INBOX\r\n")?;
                self.until("SELECT", "a2 ", "OK")?;
                self.send("IDLE", "a3 IDLE\r\n")?;
                self.until("IDLE", "+", "")
            }
        }
    }
}

struct Plan {
    target: SocketAddr,
    protocol: Protocol,
    tls: Option<Arc<rustls::ClientConfig>>,
    sources: Vec<Option<Ipv4Addr>>,
    users: Vec<String>,
    password: String,
    timeout: Duration,
}

impl Plan {
    fn open(&self, i: usize) -> Result<Held, String> {
        let src = self.sources[i % self.sources.len()];
        let tcp = net::connect_from(src, self.target, self.timeout)
            .map_err(|e| format!("connect to {} from {src:?}: {e}", self.target))?;
        tcp.set_read_timeout(Some(self.timeout))
            .and_then(|()| tcp.set_write_timeout(Some(self.timeout)))
            .map_err(|e| format!("timeouts: {e}"))?;
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => Box::new(tls_stream(config.clone(), tcp)?),
        };
        let mut held = Held {
            io: BufReader::with_capacity(1024, stream),
            line: Vec::new(),
        };
        let user = &self.users[i % self.users.len()];
        held.login(self.protocol, user, &self.password)?;
        Ok(held)
    }
}

fn tls_stream(
    config: Arc<rustls::ClientConfig>,
    tcp: TcpStream,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

pub fn hold(args: HoldArgs) -> Result<(), String> {
    let target = net::resolve(&args.target)?;
    if !args.users_pattern.contains("{}") {
        return Err("--users-pattern must contain {}".into());
    }
    if !positive(args.timeout) || !(positive(args.hold) || args.hold == 0.0) {
        return Err("--timeout must be positive and --hold not negative".into());
    }
    let tls = match &args.tls_ca {
        Some(ca) => Some(tidegate_store::tls::client_config(ca)?),
        None => None,
    };
    let plan = Arc::new(Plan {
        target,
        protocol: args.protocol,
        tls,
        sources: net::sources(target, args.sources),
        users: (1..=args.user_count.max(1))
            .map(|i| args.users_pattern.replace("{}", &i.to_string()))
            .collect(),
        password: args.password.clone(),
        timeout: Duration::from_secs_f64(args.timeout),
    });
    let threads = args.threads.clamp(1, args.connections.max(1));
    let errors = Arc::new(Errors::new());
    let up = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let total = args.connections;
    let openers: Vec<_> = (0..threads)
        .map(|t| {
            let (plan, errors, up) = (plan.clone(), errors.clone(), up.clone());
            thread::spawn(move || {
                let mut held = Vec::with_capacity(total / threads + 1);
                for i in (t..total).step_by(threads) {
                    match plan.open(i) {
                        Ok(c) => {
                            held.push(c);
                            up.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors.add(format!("connection {i}: {e}")),
                    }
                }
                held
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for opener in openers {
        all.extend(
            opener
                .join()
                .map_err(|_| "an opening thread panicked".to_string())?,
        );
    }
    let n = up.load(Ordering::Relaxed);
    println!(
        "READY n={n} errors={} open_secs={:.2}",
        errors.get(),
        start.elapsed().as_secs_f64()
    );
    let _ = io::stdout().flush();
    errors.report();
    if n == 0 {
        return Err("no connection came up".into());
    }
    thread::sleep(Duration::from_secs_f64(args.hold));
    drop(all);
    Ok(())
}
