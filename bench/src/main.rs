//! `tidegate-bench`: a load generator for POP3 servers (tidegate, Dovecot, any RFC 1939
//! server) and a few helpers that `bench/run.sh` uses.
//!
//! * `pop3`: `--concurrency` workers, each looping over whole sessions for `--duration`
//!   seconds: connect, greeting, USER, PASS, STAT, RETR (the body is read to the
//!   terminating `.` line, un-dot-stuffed and its byte count checked against the
//!   `+OK n octets` reply), QUIT, `+OK`, and the server's close. Prints one
//!   machine-readable `RESULT ...` line and one line for people.
//! * `idle`: opens `--connections` authenticated sessions, prints `READY ...` when all are
//!   up, holds them for `--hold` seconds, then QUITs them all.
//! * `wait`: waits until a POP3 server answers with its greeting.
//! * `procstat`: CPU ticks and resident memory of a process and all its descendants.
//!
//! Client sockets are bound to several loopback source addresses (127.0.0.1 ..
//! 127.0.0.N, `--sources`) with `IP_BIND_ADDRESS_NO_PORT`, so the ephemeral ports of one
//! source address are not the limit.
//!
//! Plain std threads and blocking sockets: the client has to be simple enough that its
//! own behaviour is never the question when a figure looks odd.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::FromRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tidegate-bench",
    about = "POP3 load generator for tidegate benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Whole POP3 sessions in a loop; prints sessions/s and session latency.
    Pop3(Pop3Args),
    /// Opens many authenticated sessions and holds them idle.
    Idle(IdleArgs),
    /// Waits until the server at --target greets (exit 0) or --timeout passes (exit 1).
    Wait {
        /// Server address, HOST:PORT.
        #[arg(long)]
        target: String,
        /// Seconds to keep trying.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
    /// Prints `ticks=… clk_tck=… rss_kb=… hwm_kb=… procs=…` for a process and its
    /// descendants (ticks: utime+stime+cutime+cstime; rss/hwm: sums of VmRSS/VmHWM).
    Procstat {
        /// The root process.
        #[arg(long)]
        pid: u32,
    },
}

#[derive(Args, Clone)]
struct Common {
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
struct Pop3Args {
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
struct IdleArgs {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_nofile();
    let result = match cli.command {
        Command::Pop3(args) => pop3(args),
        Command::Idle(args) => idle(args),
        Command::Wait { target, timeout } => wait(&target, timeout),
        Command::Procstat { pid } => procstat(pid),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidegate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft open-files limit to the hard one (10,000 idle connections need it).
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Targets, users, source addresses
// ---------------------------------------------------------------------------------------

/// What every connection needs to know, shared by all threads.
struct Plan {
    target: SocketAddr,
    sources: Vec<Option<Ipv4Addr>>,
    users: Vec<String>,
    password: String,
    timeout: Duration,
}

impl Plan {
    fn new(c: &Common) -> Result<Plan, String> {
        let target = resolve(&c.target)?;
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
        // Binding a source address only makes sense for a loopback IPv4 target.
        let sources = match target.ip() {
            IpAddr::V4(ip) if ip.is_loopback() && c.sources > 0 => (1..=c.sources.min(254))
                .map(|i| Some(Ipv4Addr::new(127, 0, 0, i)))
                .collect(),
            _ => vec![None],
        };
        if !positive(c.timeout) {
            return Err("--timeout must be positive".into());
        }
        Ok(Plan {
            target,
            sources,
            users,
            password: c.password.clone(),
            timeout: Duration::from_secs_f64(c.timeout),
        })
    }

    fn source(&self, i: usize) -> Option<Ipv4Addr> {
        self.sources[i % self.sources.len()]
    }

    fn user(&self, i: usize) -> &str {
        &self.users[i % self.users.len()]
    }
}

fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

fn resolve(target: &str) -> Result<SocketAddr, String> {
    target
        .to_socket_addrs()
        .map_err(|e| format!("{target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target}: no address"))
}

/// Connects to `dst` from `src` (any port), deferring the port choice to connect() with
/// IP_BIND_ADDRESS_NO_PORT so that each (source, destination) pair has the whole
/// ephemeral range.
fn connect_from(
    src: Option<Ipv4Addr>,
    dst: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let (Some(src), SocketAddr::V4(dst4)) = (src, dst) else {
        return TcpStream::connect_timeout(&dst, timeout);
    };
    // SAFETY: plain socket calls on a descriptor this function owns; the TcpStream takes
    // ownership right after socket() so every error path closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let local = sin(src, 0);
        let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sin(*dst4.ip(), dst4.port());
        loop {
            if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
        Ok(stream)
    }
}

// ---------------------------------------------------------------------------------------
// One POP3 connection
// ---------------------------------------------------------------------------------------

const MAX_LINE: usize = 8192;

struct Conn {
    io: BufReader<TcpStream>,
    line: Vec<u8>,
}

impl Conn {
    fn open(plan: &Plan, src: Option<Ipv4Addr>, buf: usize) -> Result<Conn, String> {
        let s = connect_from(src, plan.target, plan.timeout).map_err(|e| {
            let from = src.map(|s| format!(" from {s}")).unwrap_or_default();
            format!("connect to {}{from}: {e}", plan.target)
        })?;
        s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        s.set_read_timeout(Some(plan.timeout))
            .map_err(|e| format!("timeout: {e}"))?;
        s.set_write_timeout(Some(plan.timeout))
            .map_err(|e| format!("timeout: {e}"))?;
        Ok(Conn {
            io: BufReader::with_capacity(buf, s),
            line: Vec::with_capacity(128),
        })
    }

    fn send(&mut self, what: &str, cmd: &[u8]) -> Result<(), String> {
        self.io
            .get_mut()
            .write_all(cmd)
            .map_err(|e| format!("{what}: send: {e}"))
    }

    /// Reads one line (with its line end) into `self.line`.
    fn read_line(&mut self, what: &str) -> Result<(), String> {
        self.line.clear();
        let n = (&mut self.io)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut self.line)
            .map_err(|e| format!("{what}: read: {e}"))?;
        if n == 0 {
            return Err(format!("{what}: connection closed by the server"));
        }
        if self.line.last() != Some(&b'\n') {
            return Err(format!(
                "{what}: line longer than {MAX_LINE} bytes or cut short"
            ));
        }
        Ok(())
    }

    /// Reads a status line and insists on `+OK`.
    fn ok(&mut self, what: &str) -> Result<(), String> {
        self.read_line(what)?;
        if self.line.starts_with(b"+OK") {
            Ok(())
        } else {
            Err(format!(
                "{what}: {}",
                String::from_utf8_lossy(&self.line).trim_end()
            ))
        }
    }

    /// The `n`th whitespace-separated number after `+OK` in the last status line.
    fn number(&self, n: usize) -> Option<u64> {
        let text = std::str::from_utf8(&self.line).ok()?;
        text.split_ascii_whitespace().nth(n + 1)?.parse().ok()
    }

    /// Reads a multi-line body up to the `.` line; returns its un-dot-stuffed length.
    fn body(&mut self, what: &str) -> Result<u64, String> {
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

    /// Waits for the server to close the connection.
    fn expect_close(&mut self, what: &str) -> Result<(), String> {
        let mut buf = [0u8; 256];
        match self.io.read(&mut buf) {
            Ok(0) => Ok(()),
            Ok(_) => Err(format!("{what}: unexpected data after the QUIT reply")),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(format!("{what}: waiting for the server to close: {e}")),
        }
    }

    fn login(&mut self, user: &str, password: &str) -> Result<(), String> {
        self.ok("greeting")?;
        self.send("USER", format!("USER {user}\r\n").as_bytes())?;
        self.ok("USER")?;
        self.send("PASS", format!("PASS {password}\r\n").as_bytes())?;
        self.ok("PASS")
    }
}

/// One whole session as a typical POP3 client runs it.
fn session(plan: &Plan, src: Option<Ipv4Addr>, user: &str, retr: u64) -> Result<(), String> {
    let mut c = Conn::open(plan, src, 16 * 1024)?;
    c.login(user, &plan.password)?;
    c.send("STAT", b"STAT\r\n")?;
    c.ok("STAT")?;
    let count = c.number(0).ok_or_else(|| {
        format!(
            "STAT: no message count in {:?}",
            String::from_utf8_lossy(&c.line).trim_end()
        )
    })?;
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

/// The first few error messages and the total count.
struct Errors {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl Errors {
    fn new() -> Errors {
        Errors {
            count: AtomicU64::new(0),
            first: Mutex::new(Vec::new()),
        }
    }

    fn add(&self, e: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().unwrap();
        if first.len() < 5 {
            first.push(e);
        }
    }

    fn report(&self) {
        for e in self.first.lock().unwrap().iter() {
            eprintln!("error: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// pop3: sessions per second
// ---------------------------------------------------------------------------------------

fn pop3(args: Pop3Args) -> Result<(), String> {
    let plan = Arc::new(Plan::new(&args.common)?);
    if args.concurrency == 0 || !positive(args.duration) || args.retr == 0 {
        return Err("--concurrency, --duration and --retr must be positive".into());
    }
    let errors = Arc::new(Errors::new());
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let plan = plan.clone();
            let errors = errors.clone();
            let (n, retr) = (args.concurrency, args.retr);
            thread::spawn(move || {
                let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
                let mut i = w;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    match session(&plan, plan.source(i), plan.user(i), retr) {
                        Ok(()) => {
                            latencies.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32)
                        }
                        Err(e) => {
                            errors.add(e);
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                    i += n;
                }
                latencies
            })
        })
        .collect();
    let mut lat: Vec<u32> = Vec::new();
    for w in workers {
        lat.extend(w.join().map_err(|_| "a worker panicked".to_string())?);
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let sessions = lat.len();
    let errs = errors.count.load(Ordering::Relaxed);
    let ms = |us: u32| f64::from(us) / 1000.0;
    let pct = |p: usize| {
        if lat.is_empty() {
            0.0
        } else {
            ms(lat[(lat.len() - 1) * p / 100])
        }
    };
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&x| f64::from(x)).sum::<f64>() / lat.len() as f64 / 1000.0
    };
    let max = lat.last().copied().map(ms).unwrap_or(0.0);
    let rate = sessions as f64 / secs;
    println!(
        "RESULT mode=pop3 target={} concurrency={} sessions={sessions} secs={secs:.3} rate={rate:.1} \
         mean_ms={mean:.3} p50_ms={:.3} p99_ms={:.3} max_ms={max:.3} errors={errs}",
        plan.target,
        args.concurrency,
        pct(50),
        pct(99),
    );
    println!(
        "pop3 {}: {sessions} sessions in {secs:.1} s = {rate:.0} sessions/s with {} clients; \
         latency mean {mean:.2} ms, p50 {:.2} ms, p99 {:.2} ms; {errs} errors",
        plan.target,
        args.concurrency,
        pct(50),
        pct(99),
    );
    errors.report();
    if sessions == 0 {
        return Err("no session completed".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// idle: memory per idle authenticated connection
// ---------------------------------------------------------------------------------------

fn idle(args: IdleArgs) -> Result<(), String> {
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
                    let r = Conn::open(&plan, plan.source(i), 512)
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
                let e = errors.count.load(Ordering::Relaxed);
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
    let errs = errors.count.load(Ordering::Relaxed);
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

// ---------------------------------------------------------------------------------------
// wait, procstat
// ---------------------------------------------------------------------------------------

fn wait(target: &str, timeout: f64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
    loop {
        let attempt = resolve(target).and_then(|addr| {
            let plan = Plan {
                target: addr,
                sources: vec![None],
                users: vec![],
                password: String::new(),
                timeout: Duration::from_secs(2),
            };
            let mut c = Conn::open(&plan, None, 512)?;
            c.ok("greeting")?;
            let _ = c.send("QUIT", b"QUIT\r\n").and_then(|()| c.ok("QUIT"));
            Ok(())
        });
        let Err(last) = attempt else { return Ok(()) };
        if Instant::now() >= deadline {
            return Err(format!("{target} did not greet within {timeout} s: {last}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The fields of /proc/PID/stat after the command name (which may hold spaces).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    // rest starts at field 3 (state); keep numeric fields, state becomes 0.
    Some(
        rest.split_ascii_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

fn status_kb(pid: u32, key: &str) -> u64 {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn procstat(root: u32) -> Result<(), String> {
    if stat_fields(root).is_none() {
        return Err(format!("no process {root}"));
    }
    // Parent links of every process, then the descendants of root.
    let mut parent = Vec::new();
    for entry in fs::read_dir("/proc")
        .map_err(|e| format!("/proc: {e}"))?
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(f) = stat_fields(pid) {
            parent.push((pid, f.get(1).copied().unwrap_or(0) as u32));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent.iter().filter(|&&(_, pp)| pp == p).map(|&(c, _)| c));
        i += 1;
    }
    let (mut ticks, mut rss, mut hwm) = (0u64, 0u64, 0u64);
    for &pid in &tree {
        // Fields 14..=17 (utime stime cutime cstime) are at 11..=14 counting from field 3.
        if let Some(f) = stat_fields(pid) {
            ticks += f.get(11..15).map(|s| s.iter().sum()).unwrap_or(0);
        }
        rss += status_kb(pid, "VmRSS:");
        hwm += status_kb(pid, "VmHWM:");
    }
    // SAFETY: sysconf has no preconditions.
    let clk = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    println!(
        "ticks={ticks} clk_tck={clk} rss_kb={rss} hwm_kb={hwm} procs={}",
        tree.len()
    );
    Ok(())
}
