//! `authd`: lookups per second through an authd server, with `--concurrency` client
//! connections each sending `--depth` pipelined LOOKUPs at a time and checking every
//! answer (tag and `FOUND <address>`).
//!
//! Without `--target` it starts an authd in this process first (the smol shell, the
//! real server session, `--users` users in an in-memory table, `--server-threads`
//! executor threads), so the figure is "cached" lookups: the database never touches
//! disk. With `--target HOST:PORT --secret S` it measures a running server, whose users
//! must be `user<N>@bench.test` for N below `--users`.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use tidegate_core::authd::AuthdConfig;
use tidegate_core::secret::Secret;
use tidegate_core::user::{AuthOutcome, Lookup};
use tidegate_store::authd_server::{AuthdService, DirectoryExecutor};
use tidegate_store::users::{UserDirectory, UserTable};
use tidegate_store::{ServerSpec, Shutdown};

/// Options of `tidegate-bench authd`.
#[derive(Args)]
pub struct AuthdArgs {
    /// A running authd, HOST:PORT; omitted: start one in this process.
    #[arg(long)]
    target: Option<String>,
    /// The shared secret.
    #[arg(long, default_value = "bench-secret")]
    secret: String,
    /// Client connections, each in its own thread.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Pipelined requests each connection keeps in flight.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Users in the table (`user0@bench.test` ...); lookups cycle through them.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Executor threads of the in-process server (0: one per core).
    #[arg(long, default_value_t = 0)]
    server_threads: usize,
}

/// The in-process server's database: a users table in memory.
#[derive(Debug)]
struct TableDirectory(UserTable);

impl UserDirectory for TableDirectory {
    fn lookup(&self, address: &str) -> Lookup {
        match self.0.lookup(address) {
            Some(record) => Lookup::Found(record.clone()),
            None => Lookup::NotFound,
        }
    }

    fn verify(&self, _user: &str, _password: &[u8], _client: IpAddr) -> AuthOutcome {
        AuthOutcome::Denied
    }
}

/// Runs the benchmark and prints a `RESULT` line.
pub fn authd(args: AuthdArgs) -> Result<(), String> {
    if args.concurrency == 0
        || args.depth == 0
        || args.users == 0
        || !crate::net::positive(args.duration)
    {
        return Err("concurrency, depth, users and duration must be positive".into());
    }
    let shutdown = Shutdown::new();
    let (target, server) = match &args.target {
        Some(target) => (crate::net::resolve(target)?, None),
        None => {
            let (addr, handle) = start_server(&args, shutdown.clone())?;
            (addr, Some(handle))
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|n| {
            let (stop, answers) = (stop.clone(), answers.clone());
            let (secret, depth, users) = (args.secret.clone(), args.depth, args.users);
            thread::spawn(move || client(target, &secret, n, depth, users, &stop, &answers))
        })
        .collect();
    // Let every client connect and say HELLO before the clock starts.
    thread::sleep(Duration::from_millis(300));
    let start_count = answers.load(Ordering::Relaxed);
    let started = Instant::now();
    thread::sleep(Duration::from_secs_f64(args.duration));
    let count = answers.load(Ordering::Relaxed) - start_count;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for worker in workers {
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("client thread panicked".into()),
        }
    }
    shutdown.trigger();
    if let Some(server) = server {
        let _ = server.join();
    }
    if let Some(first) = errors.first() {
        return Err(format!("{} clients failed; first: {first}", errors.len()));
    }
    let rate = count as f64 / elapsed;
    println!(
        "RESULT authd lookups={count} seconds={elapsed:.2} lookups_per_s={rate:.0} concurrency={} depth={}",
        args.concurrency, args.depth
    );
    println!(
        "{rate:.0} lookups/s ({count} in {elapsed:.1} s, {} connections x {} in flight)",
        args.concurrency, args.depth
    );
    Ok(())
}

fn start_server(
    args: &AuthdArgs,
    shutdown: Shutdown,
) -> Result<(SocketAddr, thread::JoinHandle<()>), String> {
    let text: String = (0..args.users)
        .map(|n| format!("user{n}@bench.test {{PLAIN}}x tohost=backend{}\n", n % 4))
        .collect();
    let table = UserTable::parse(&text).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let config = AuthdConfig::new(Secret::new(args.secret.as_bytes().to_vec()));
    let spec = ServerSpec {
        listeners: vec![listener],
        factory: Arc::new(AuthdService::new(config, None)),
        executor: Arc::new(DirectoryExecutor::new(Arc::new(TableDirectory(table)))),
        max_connections: args.concurrency + 16,
        shutdown_grace: Duration::ZERO,
        threads: args.server_threads,
        workers: 0,
    };
    let handle = thread::spawn(move || {
        if let Err(e) = tidegate_shell_smol::serve(spec, shutdown) {
            eprintln!("tidegate-bench: authd server: {e}");
        }
    });
    Ok((addr, handle))
}

/// One client connection: HELLO, then LOOKUPs `depth` at a time until `stop`.
fn client(
    target: SocketAddr,
    secret: &str,
    n: usize,
    depth: usize,
    users: usize,
    stop: &AtomicBool,
    answers: &AtomicU64,
) -> Result<(), String> {
    let stream = TcpStream::connect(target).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut read_line = |line: &mut String| -> Result<(), String> {
        line.clear();
        match reader.read_line(line) {
            Ok(0) => Err("server closed the connection".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read: {e}")),
        }
    };
    read_line(&mut line)?;
    if !line.starts_with("* TIDEGATE-AUTHD 1") {
        return Err(format!("unexpected greeting {line:?}"));
    }
    let mut encoded = String::new();
    tidegate_core::authd::wire::push_encoded(&mut encoded, secret.as_bytes());
    writer
        .write_all(format!("HELLO 1 {encoded}\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    read_line(&mut line)?;
    if line.trim_end() != "* OK 1" {
        return Err(format!("HELLO refused: {line:?}"));
    }
    let mut tag: u64 = 0;
    let mut batch = String::new();
    while !stop.load(Ordering::Relaxed) {
        batch.clear();
        let first = tag;
        for _ in 0..depth {
            let user = (n * 7919 + tag as usize) % users;
            batch.push_str(&format!("{tag} LOOKUP user{user}@bench.test\r\n"));
            tag += 1;
        }
        writer
            .write_all(batch.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        for expected in first..tag {
            read_line(&mut line)?;
            let user = (n * 7919 + expected as usize) % users;
            let want = format!("{expected} FOUND user{user}@bench.test ");
            if !line.starts_with(&want) {
                return Err(format!("expected {want:?}..., got {line:?}"));
            }
        }
        answers.fetch_add(depth as u64, Ordering::Relaxed);
    }
    Ok(())
}
