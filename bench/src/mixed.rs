//! `mixed`: the cluster load, whole sessions of three kinds through one or more
//! front-ends, as mail clients run them:
//!
//! * POP3: greeting, `USER`, `PASS`, `STAT`, `RETR 1` (when the mailbox has mail), `QUIT`,
//!   the server's close;
//! * IMAP: greeting, `LOGIN`, `SELECT INBOX`, `FETCH 1 (BODY.PEEK[])` (when it has mail;
//!   the literal is read and its length checked), `LOGOUT`, the close;
//! * submission: greeting, `EHLO`, `AUTH PLAIN`, `MAIL`, `RCPT` (another user of the
//!   active set, so the message is delivered locally), `DATA`, the message, `QUIT`.
//!
//! Each worker thread runs one session after another, cycling through the kinds in the
//! proportions of `--mix`, over users picked pseudo-randomly from `--active-users`,
//! and over the front-ends round-robin. Prints one `RESULT_MIXED …` line.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Args;

use crate::net::{self, Conn, Errors, Summary, positive};

#[derive(Args)]
pub struct MixedArgs {
    /// Front-end addresses, comma-separated (sessions go to them round-robin).
    #[arg(long)]
    fronts: String,
    /// The POP3 port of every front-end.
    #[arg(long)]
    pop3_port: u16,
    /// The IMAP port of every front-end.
    #[arg(long)]
    imap_port: u16,
    /// The submission port of every front-end.
    #[arg(long)]
    submission_port: u16,
    /// User name pattern, `{}` replaced by a number in 1..=--active-users.
    #[arg(long, default_value = "user{}@bench.test")]
    users_pattern: String,
    /// How many users the sessions spread over (they should have mail).
    #[arg(long, default_value_t = 1000)]
    active_users: u64,
    /// The password of every user.
    #[arg(long)]
    password: String,
    /// Sessions of each kind per cycle: POP3, IMAP, submission.
    #[arg(long, default_value = "1,1,1")]
    mix: String,
    /// Concurrent clients (threads).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds to run; sessions in progress at the end are finished and counted.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Size of each submitted message.
    #[arg(long, default_value_t = 4096)]
    message_size: usize,
    /// Loopback source addresses 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Seconds to wait for any one reply.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Pop3,
    Imap,
    Submission,
}

struct Plan {
    fronts: Vec<Ipv4Addr>,
    ports: [u16; 3],
    pattern: String,
    active: u64,
    password: String,
    cycle: Vec<Kind>,
    sources: Vec<Option<Ipv4Addr>>,
    timeout: Duration,
    message: Vec<u8>,
}

impl Plan {
    fn user(&self, n: u64) -> String {
        self.pattern
            .replace("{}", &(n % self.active + 1).to_string())
    }

    fn open(&self, kind: Kind, i: usize) -> Result<Conn, String> {
        let front = self.fronts[i % self.fronts.len()];
        let port = self.ports[kind as usize];
        let src = self.sources[(i / self.fronts.len()) % self.sources.len()];
        Conn::open(
            SocketAddr::from((front, port)),
            src,
            self.timeout,
            16 * 1024,
        )
    }
}

/// A small pseudo-random generator (xorshift64*): users spread evenly, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn pop3(plan: &Plan, c: &mut Conn, user: &str) -> Result<(), String> {
    c.login(user, &plan.password)?;
    c.send("STAT", b"STAT\r\n")?;
    c.ok("STAT")?;
    if c.number(0).unwrap_or(0) > 0 {
        c.send("RETR", b"RETR 1\r\n")?;
        c.ok("RETR")?;
        let octets = c.number(0);
        let got = c.body("RETR body")?;
        if octets.is_some_and(|o| o != got) {
            return Err(format!("RETR: {octets:?} octets announced, {got} read"));
        }
    }
    c.send("QUIT", b"QUIT\r\n")?;
    c.ok("QUIT")?;
    c.expect_close("QUIT")
}

fn imap(plan: &Plan, c: &mut Conn, user: &str) -> Result<(), String> {
    c.imap_greeting()?;
    c.imap_login("a1", user, &plan.password)?;
    c.send("SELECT", b"a2 SELECT INBOX\r\n")?;
    if c.imap_until("SELECT", "a2")?.exists.unwrap_or(0) > 0 {
        c.send("FETCH", b"a3 FETCH 1 (BODY.PEEK[])\r\n")?;
        if c.imap_until("FETCH", "a3")?.literal_bytes == 0 {
            return Err("FETCH: no message body".into());
        }
    }
    c.send("LOGOUT", b"a4 LOGOUT\r\n")?;
    c.imap_until("LOGOUT", "a4")?;
    c.expect_close("LOGOUT")
}

fn submission(plan: &Plan, c: &mut Conn, user: &str, rcpt: &str) -> Result<(), String> {
    c.expect("greeting", 2)?;
    c.send("EHLO", b"EHLO bench.test\r\n")?;
    c.expect("EHLO", 2)?;
    let plain =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{}", plan.password));
    c.send("AUTH", format!("AUTH PLAIN {plain}\r\n").as_bytes())?;
    c.expect("AUTH", 2)?;
    c.send("MAIL", format!("MAIL FROM:<{user}>\r\n").as_bytes())?;
    c.expect("MAIL", 2)?;
    c.send("RCPT", format!("RCPT TO:<{rcpt}>\r\n").as_bytes())?;
    c.expect("RCPT", 2)?;
    c.send("DATA", b"DATA\r\n")?;
    c.expect("DATA", 3)?;
    c.send("message", &plan.message)?;
    c.expect("end of data", 2)?;
    c.send("QUIT", b"QUIT\r\n")?;
    c.expect("QUIT", 2)?;
    c.expect_close("QUIT")
}

fn session(plan: &Plan, kind: Kind, i: usize, rng: &mut Rng) -> Result<(), String> {
    let user = plan.user(rng.next());
    let mut c = plan.open(kind, i)?;
    match kind {
        Kind::Pop3 => pop3(plan, &mut c, &user),
        Kind::Imap => imap(plan, &mut c, &user),
        Kind::Submission => submission(plan, &mut c, &user, &plan.user(rng.next())),
    }
    .map_err(|e| format!("{kind:?} {user}: {e}"))
}

pub fn mixed(args: MixedArgs) -> Result<(), String> {
    let fronts = args
        .fronts
        .split(',')
        .map(|f| {
            f.trim()
                .parse::<Ipv4Addr>()
                .map_err(|e| format!("--fronts {f}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let weights = args
        .mix
        .split(',')
        .map(|w| {
            w.trim()
                .parse::<usize>()
                .map_err(|e| format!("--mix {w}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let [p, i, s] = weights[..] else {
        return Err("--mix takes three weights: POP3,IMAP,submission".into());
    };
    let cycle: Vec<Kind> = std::iter::repeat_n(Kind::Pop3, p)
        .chain(std::iter::repeat_n(Kind::Imap, i))
        .chain(std::iter::repeat_n(Kind::Submission, s))
        .collect();
    if fronts.is_empty() || cycle.is_empty() || args.concurrency == 0 || args.active_users == 0 {
        return Err("--fronts, --mix, --concurrency and --active-users must not be empty".into());
    }
    if !positive(args.duration) || !positive(args.timeout) || !args.users_pattern.contains("{}") {
        return Err("--duration and --timeout must be positive, --users-pattern needs {}".into());
    }
    let (message, _) = crate::smtp::compose(args.message_size, "bench@bench.test", 0)?;
    // Dot-stuffed, with the `.` line that ends the data.
    let message = crate::smtp::dot_stuff(&message);
    let plan = Arc::new(Plan {
        sources: net::sources(SocketAddr::from((fronts[0], args.pop3_port)), args.sources),
        fronts,
        ports: [args.pop3_port, args.imap_port, args.submission_port],
        pattern: args.users_pattern.clone(),
        active: args.active_users,
        password: args.password.clone(),
        cycle,
        timeout: Duration::from_secs_f64(args.timeout),
        message,
    });
    let errors = Arc::new(Errors::new());
    let cpu0 = net::own_cpu_secs();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let plan = plan.clone();
            let errors = errors.clone();
            let n = args.concurrency;
            thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1).wrapping_mul(0x1000_0001));
                let mut done = [Vec::<u32>::new(), Vec::new(), Vec::new()];
                let mut i = w;
                while Instant::now() < deadline {
                    let kind = plan.cycle[i % plan.cycle.len()];
                    let t0 = Instant::now();
                    match session(&plan, kind, i / plan.cycle.len(), &mut rng) {
                        Ok(()) => done[kind as usize].push(net::micros_since(t0)),
                        Err(e) => {
                            errors.add(e);
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                    i += n;
                }
                done
            })
        })
        .collect();
    let mut per_kind = [Vec::<u32>::new(), Vec::new(), Vec::new()];
    for w in workers {
        let done = w.join().map_err(|_| "a worker panicked".to_string())?;
        for (all, mine) in per_kind.iter_mut().zip(done) {
            all.extend(mine);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let client_cpu = net::own_cpu_secs() - cpu0;
    let counts: Vec<usize> = per_kind.iter().map(Vec::len).collect();
    let mut all: Vec<u32> = per_kind.concat();
    let s = Summary::of(&mut all);
    let errs = errors.get();
    let rate = s.count as f64 / secs;
    println!(
        "RESULT_MIXED fronts={} concurrency={} sessions={} pop3={} imap={} submission={} \
         secs={secs:.3} rate={rate:.1} p50_ms={:.3} p99_ms={:.3} errors={errs} client_cpu_secs={client_cpu:.2}",
        plan.fronts.len(),
        args.concurrency,
        s.count,
        counts[0],
        counts[1],
        counts[2],
        s.p50,
        s.p99,
    );
    errors.report();
    if s.count == 0 {
        return Err("no session completed".into());
    }
    Ok(())
}
