//! What every mode shares: resolving the target, the loopback source addresses, a
//! line-reading connection, the error collector and the latency summary.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

pub fn resolve(target: &str) -> Result<SocketAddr, String> {
    target
        .to_socket_addrs()
        .map_err(|e| format!("{target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target}: no address"))
}

/// The source addresses to spread connections over: 127.0.0.1 ..= 127.0.0.N for a
/// loopback IPv4 target, otherwise the kernel's choice (one `None`).
pub fn sources(target: SocketAddr, n: u8) -> Vec<Option<Ipv4Addr>> {
    match target.ip() {
        IpAddr::V4(ip) if ip.is_loopback() && n > 0 => (1..=n.min(254))
            .map(|i| Some(Ipv4Addr::new(127, 0, 0, i)))
            .collect(),
        _ => vec![None],
    }
}

/// Connects to `dst` from `src` (any port), deferring the port choice to connect() with
/// IP_BIND_ADDRESS_NO_PORT so that each (source, destination) pair has the whole
/// ephemeral range.
pub fn connect_from(
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

pub const MAX_LINE: usize = 8192;

/// A connection read line by line; the protocol modules add their own methods.
pub struct Conn {
    pub io: BufReader<TcpStream>,
    pub line: Vec<u8>,
}

impl Conn {
    pub fn open(
        target: SocketAddr,
        src: Option<Ipv4Addr>,
        timeout: Duration,
        buf: usize,
    ) -> Result<Conn, String> {
        let s = connect_from(src, target, timeout).map_err(|e| {
            let from = src.map(|s| format!(" from {s}")).unwrap_or_default();
            format!("connect to {target}{from}: {e}")
        })?;
        s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| format!("timeout: {e}"))?;
        s.set_write_timeout(Some(timeout))
            .map_err(|e| format!("timeout: {e}"))?;
        Ok(Conn {
            io: BufReader::with_capacity(buf, s),
            line: Vec::with_capacity(128),
        })
    }

    pub fn send(&mut self, what: &str, cmd: &[u8]) -> Result<(), String> {
        self.io
            .get_mut()
            .write_all(cmd)
            .map_err(|e| format!("{what}: send: {e}"))
    }

    /// Reads one line (with its line end) into `self.line`.
    pub fn read_line(&mut self, what: &str) -> Result<(), String> {
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

    /// The last line read, without its line end, for messages.
    pub fn line_text(&self) -> String {
        String::from_utf8_lossy(&self.line).trim_end().to_string()
    }

    /// Waits for the server to close the connection.
    pub fn expect_close(&mut self, what: &str) -> Result<(), String> {
        let mut buf = [0u8; 256];
        match self.io.read(&mut buf) {
            Ok(0) => Ok(()),
            Ok(_) => Err(format!("{what}: unexpected data after the QUIT reply")),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(format!("{what}: waiting for the server to close: {e}")),
        }
    }
}

/// The first few error messages and the total count.
pub struct Errors {
    pub count: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl Errors {
    pub fn new() -> Errors {
        Errors {
            count: AtomicU64::new(0),
            first: Mutex::new(Vec::new()),
        }
    }

    pub fn add(&self, e: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().unwrap();
        if first.len() < 5 {
            first.push(e);
        }
    }

    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn report(&self) {
        for e in self.first.lock().unwrap().iter() {
            eprintln!("error: {e}");
        }
    }
}

/// Mean, median, 99th percentile and maximum of latencies in microseconds, in ms.
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// Sorts `lat` and summarises it.
    pub fn of(lat: &mut [u32]) -> Summary {
        lat.sort_unstable();
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
        Summary {
            count: lat.len(),
            mean,
            p50: pct(50),
            p99: pct(99),
            max: lat.last().copied().map(ms).unwrap_or(0.0),
        }
    }
}

/// Microseconds since `t0`, saturated to u32 (71 minutes).
pub fn micros_since(t0: Instant) -> u32 {
    t0.elapsed().as_micros().min(u32::MAX as u128) as u32
}

/// User + system CPU seconds this process has used so far (all threads).
pub fn own_cpu_secs() -> f64 {
    // SAFETY: getrusage with a valid pointer to a zeroed local struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// What [`run_sessions`] measured.
pub struct LoadResult {
    pub latencies: Summary,
    pub secs: f64,
    pub errors: Arc<Errors>,
}

/// `concurrency` threads, each running `session(i)` back to back for `duration` (session
/// numbers `w, w + concurrency, …` for worker `w`); sessions in progress at the end are
/// finished and counted. A failed session is recorded and its worker pauses 10 ms.
pub fn run_sessions<F>(
    concurrency: usize,
    duration: Duration,
    session: F,
) -> Result<LoadResult, String>
where
    F: Fn(usize) -> Result<(), String> + Send + Sync + 'static,
{
    let session = Arc::new(session);
    let errors = Arc::new(Errors::new());
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (session, errors) = (session.clone(), errors.clone());
            thread::spawn(move || {
                let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
                let mut i = w;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    match session(i) {
                        Ok(()) => latencies.push(micros_since(t0)),
                        Err(e) => {
                            errors.add(e);
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                    i += concurrency;
                }
                latencies
            })
        })
        .collect();
    let mut lat: Vec<u32> = Vec::new();
    for w in workers {
        lat.extend(w.join().map_err(|_| "a worker panicked".to_string())?);
    }
    Ok(LoadResult {
        latencies: Summary::of(&mut lat),
        secs: start.elapsed().as_secs_f64(),
        errors,
    })
}

/// Prints a run's `RESULT mode=…` line (for the scripts) and a line for people, then the
/// first errors; fails when no session completed.
pub fn report_sessions(
    mode: &str,
    target: SocketAddr,
    concurrency: usize,
    load: &LoadResult,
) -> Result<(), String> {
    let (secs, s) = (load.secs, &load.latencies);
    let sessions = s.count;
    let errs = load.errors.get();
    let rate = sessions as f64 / secs;
    println!(
        "RESULT mode={mode} target={target} concurrency={concurrency} sessions={sessions} \
         secs={secs:.3} rate={rate:.1} mean_ms={:.3} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} \
         errors={errs}",
        s.mean, s.p50, s.p99, s.max,
    );
    println!(
        "{mode} {target}: {sessions} sessions in {secs:.1} s = {rate:.0} sessions/s with \
         {concurrency} clients; latency mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms; {errs} errors",
        s.mean, s.p50, s.p99,
    );
    load.errors.report();
    if sessions == 0 {
        return Err("no session completed".into());
    }
    Ok(())
}
