//! `pop3` (whole sessions per second) and `idle` (memory per idle authenticated
//! connection).

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;

use crate::net::{self, Conn, Errors, positive};

#[derive(Args, Clone)]
pub struct Common {
    /// Server address, HOST:PORT.
    #[arg(long)]
    target: String,
    /// The one user to log in as (or use --users-pattern).
    #[arg(long)]
    user: Option<String>,
    /// User name pattern, `{}` replaced by 1..=--user-count, e.g. `user{}@bench.test`.
    #[arg(long)]
    users_pattern: Option<String>,
    /// How many users --users-pattern spreads over.
    #[arg(long, default_value_t = 1)]
    user_count: usize,
    /// The password of every user.
    #[arg(long)]
    password: String,
    /// Loopback source addresses to spread over: 127.0.0.1 ..= 127.0.0.N (loopback
    /// targets only).
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Seconds to wait for any one reply before calling it an error.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

#[derive(Args)]
pub struct Pop3Args {
    #[command(flatten)]
    common: Common,
    /// Concurrent clients (threads), each running one session after another.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds to run; sessions in progress at the end are finished and counted.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// The message number to RETR.
    #[arg(long, default_value_t = 1)]
    retr: u64,
}

#[derive(Args)]
pub struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Idle authenticated connections to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Threads opening (and later closing) the connections.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Seconds to hold the connections after all are up.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
}

/// What every connection needs to know, shared by all threads.
pub(crate) struct Plan {
    target: SocketAddr,
    sources: Vec<Option<Ipv4Addr>>,
    users: Vec<String>,
    pub(crate) password: String,
    timeout: Duration,
}

impl Plan {
    pub(crate) fn new(c: &Common) -> Result<Plan, String> {
        let target = net::resolve(&c.target)?;
        let users = match (&c.users_pattern, &c.user) {
            (Some(p), _) => {
                if !p.contains("{}") {
                    return Err("--users-pattern must contain {}".into());
                }
                (1..=c.user_count.max(1))
                    .map(|i| p.replace("{}", &i.to_string()))
                    .collect()
            }
            (None, Some(u)) => vec![u.clone()],
            (None, None) => return Err("give --user or --users-pattern".into()),
        };
        if !positive(c.timeout) {
            return Err("--timeout must be positive".into());
        }
        Ok(Plan {
            target,
            sources: net::sources(target, c.sources),
            users,
            password: c.password.clone(),
            timeout: Duration::from_secs_f64(c.timeout),
        })
    }

    /// The server's address.
    pub(crate) fn target(&self) -> SocketAddr {
        self.target
    }

    pub(crate) fn source(&self, i: usize) -> Option<Ipv4Addr> {
        self.sources[i % self.sources.len()]
    }

    pub(crate) fn user(&self, i: usize) -> &str {
        &self.users[i % self.users.len()]
    }

    pub(crate) fn open(&self, src: Option<Ipv4Addr>, buf: usize) -> Result<Conn, String> {
        Conn::open(self.target, src, self.timeout, buf)
    }
}

// ---------------------------------------------------------------------------------------
// One POP3 connection
// ---------------------------------------------------------------------------------------

impl Conn {
    /// Reads a status line and insists on `+OK`.
    pub fn ok(&mut self, what: &str) -> Result<(), String> {
        self.read_line(what)?;
        if self.line.starts_with(b"+OK") {
            Ok(())
        } else {
            Err(format!("{what}: {}", self.line_text()))
        }
    }

    /// The `n`th whitespace-separated number after `+OK` in the last status line.
    pub fn number(&self, n: usize) -> Option<u64> {
        let text = std::str::from_utf8(&self.line).ok()?;
        text.split_ascii_whitespace().nth(n + 1)?.parse().ok()
    }

    /// Reads a multi-line body up to the `.` line; returns its un-dot-stuffed length.
    pub fn body(&mut self, what: &str) -> Result<u64, String> {
        let mut bytes = 0u64;
        loop {
            self.read_line(what)?;
            let l = &self.line[..];
            if l == b".\r\n" {
                return Ok(bytes);
            }
            if !l.ends_with(b"\r\n") {
                return Err(format!("{what}: line without CRLF in the body"));
            }
            bytes += l.len() as u64 - u64::from(l[0] == b'.');
        }
    }

    pub fn login(&mut self, user: &str, password: &str) -> Result<(), String> {
        self.ok("greeting")?;
        self.send("USER", format!("USER {user}\r\n").as_bytes())?;
        self.ok("USER")?;
        self.send("PASS", format!("PASS {password}\r\n").as_bytes())?;
        self.ok("PASS")
    }
}

/// One whole session as a typical POP3 client runs it.
fn session(plan: &Plan, src: Option<Ipv4Addr>, user: &str, retr: u64) -> Result<(), String> {
    let mut c = plan.open(src, 16 * 1024)?;
    c.login(user, &plan.password)?;
    c.send("STAT", b"STAT\r\n")?;
    c.ok("STAT")?;
    let count = c
        .number(0)
        .ok_or_else(|| format!("STAT: no message count in {:?}", c.line_text()))?;
    if count < retr {
        return Err(format!(
            "STAT: {user} has {count} messages, RETR {retr} needs more"
        ));
    }
    c.send("RETR", format!("RETR {retr}\r\n").as_bytes())?;
    c.ok("RETR")?;
    let octets = c.number(0);
    let got = c.body("RETR body")?;
    if let Some(octets) = octets
        && octets != got
    {
        return Err(format!(
            "RETR: the reply says {octets} octets, the body has {got}"
        ));
    }
    c.send("QUIT", b"QUIT\r\n")?;
    c.ok("QUIT")?;
    c.expect_close("QUIT")
}

// ---------------------------------------------------------------------------------------
// pop3: sessions per second
// ---------------------------------------------------------------------------------------

pub fn pop3(args: Pop3Args) -> Result<(), String> {
    let plan = Arc::new(Plan::new(&args.common)?);
    if args.concurrency == 0 || !positive(args.duration) || args.retr == 0 {
        return Err("--concurrency, --duration and --retr must be positive".into());
    }
    let retr = args.retr;
    let load = {
        let plan = plan.clone();
        net::run_sessions(
            args.concurrency,
            Duration::from_secs_f64(args.duration),
            move |i| session(&plan, plan.source(i), plan.user(i), retr),
        )?
    };
    net::report_sessions("pop3", plan.target, args.concurrency, &load)
}

// ---------------------------------------------------------------------------------------
// idle: memory per idle authenticated connection
// ---------------------------------------------------------------------------------------

pub fn idle(args: IdleArgs) -> Result<(), String> {
    let plan = Arc::new(Plan::new(&args.common)?);
    let threads = args.threads.clamp(1, args.connections.max(1));
    if !(positive(args.hold) || args.hold == 0.0) {
        return Err("--hold must not be negative".into());
    }
    let errors = Arc::new(Errors::new());
    let up = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(Barrier::new(threads + 1));
    let release = Arc::new(Barrier::new(threads + 1));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (plan, errors, up) = (plan.clone(), errors.clone(), up.clone());
            let (ready, release) = (ready.clone(), release.clone());
            let total = args.connections;
            thread::spawn(move || {
                let mut conns = Vec::with_capacity(total / threads + 1);
                for i in (t..total).step_by(threads) {
                    let r = plan
                        .open(plan.source(i), 512)
                        .and_then(|mut c| c.login(plan.user(i), &plan.password).map(|()| c));
                    match r {
                        Ok(c) => {
                            conns.push(c);
                            up.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors.add(format!("connection {i}: {e}")),
                    }
                }
                ready.wait();
                release.wait();
                let mut quit_errors = 0u64;
                for mut c in conns {
                    if c.send("QUIT", b"QUIT\r\n")
                        .and_then(|()| c.ok("QUIT"))
                        .is_err()
                    {
                        quit_errors += 1;
                    }
                }
                quit_errors
            })
        })
        .collect();
    // Progress on stderr while the connections open.
    let progress = {
        let up = up.clone();
        let total = args.connections as u64;
        let errors = errors.clone();
        thread::spawn(move || {
            let mut last = 0;
            loop {
                thread::sleep(Duration::from_secs(1));
                let n = up.load(Ordering::Relaxed);
                let e = errors.get();
                if n + e >= total {
                    break;
                }
                if n != last {
                    eprintln!("idle: {n} of {total} connections up");
                    last = n;
                }
            }
        })
    };
    ready.wait();
    let open_secs = start.elapsed().as_secs_f64();
    let n = up.load(Ordering::Relaxed);
    let errs = errors.get();
    println!("READY n={n} errors={errs} open_secs={open_secs:.2}");
    let _ = io::stdout().flush();
    let _ = progress.join();
    thread::sleep(Duration::from_secs_f64(args.hold));
    release.wait();
    let mut quit_errors = 0;
    for h in handles {
        quit_errors += h
            .join()
            .map_err(|_| "an idle thread panicked".to_string())?;
    }
    println!(
        "RESULT mode=idle target={} connections={} up={n} errors={errs} quit_errors={quit_errors} \
         open_secs={open_secs:.2} hold_secs={:.1}",
        plan.target, args.connections, args.hold
    );
    errors.report();
    if n == 0 {
        return Err("no connection came up".into());
    }
    Ok(())
}
