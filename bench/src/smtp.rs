//! `smtp`: messages per second over SMTP (or LMTP with `--lmtp`).
//!
//! Each worker connects, reads the 220 greeting, says EHLO (LHLO), then runs
//! `--per-connection` transactions on that connection (MAIL FROM, RCPT TO, DATA, the
//! dot-stuffed message, `.`), says QUIT, waits for the 221 and the server's close, and
//! connects again. With `--pipelining`, and when the server offers PIPELINING, MAIL, RCPT
//! and DATA go out in one write. A message counts when its end of data got a 2xx reply;
//! anything else is an error, and the worker drops that connection and opens a new one.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;

use crate::net::{self, Conn, Errors, Summary, positive};

#[derive(Args)]
pub struct SmtpArgs {
    /// Server address, HOST:PORT.
    #[arg(long)]
    target: String,
    /// Concurrent clients (threads), each with one connection at a time.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds to run; transactions in progress at the end are finished and counted.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Size of each message in bytes as the client composes it (headers, body, CRLF line
    /// ends), before dot-stuffing.
    #[arg(long, default_value_t = 4096)]
    message_size: usize,
    /// Recipient pattern, `{}` replaced by 1..=--user-count; messages go round-robin.
    #[arg(long, default_value = "user{}@bench.test")]
    rcpt_pattern: String,
    /// How many recipients --rcpt-pattern spreads over.
    #[arg(long, default_value_t = 1)]
    user_count: usize,
    /// Loopback source addresses to spread over: 127.0.0.1 ..= 127.0.0.N (loopback
    /// targets only).
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Speak LMTP (RFC 2033): LHLO, and one reply per accepted recipient after the data.
    #[arg(long)]
    lmtp: bool,
    /// Send MAIL, RCPT and DATA in one write when the server offers PIPELINING.
    #[arg(long)]
    pipelining: bool,
    /// Messages per connection before QUIT and a new connection.
    #[arg(long, default_value_t = 10)]
    per_connection: u32,
    /// The envelope sender (MAIL FROM) and the From: address.
    #[arg(long, default_value = "bench@bench.test")]
    from: String,
    /// The name given in EHLO/LHLO.
    #[arg(long, default_value = "client.bench.test")]
    helo: String,
    /// Seconds to wait for any one reply before calling it an error.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Log in with AUTH PLAIN after EHLO (submission), as `USER:PASSWORD`.
    #[arg(long)]
    auth: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------

/// One SMTP reply, all its lines.
pub struct Reply {
    pub code: u16,
    /// The text of each line after the code and the separator.
    pub lines: Vec<String>,
}

impl Reply {
    fn positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

impl Conn {
    /// Reads one reply, following `NNN-` continuation lines to the `NNN ` line.
    pub fn reply(&mut self, what: &str) -> Result<Reply, String> {
        let mut lines = Vec::new();
        let mut code = 0u16;
        loop {
            self.read_line(what)?;
            let l = &self.line[..];
            if l.len() < 4 || !l[..3].iter().all(u8::is_ascii_digit) {
                return Err(format!("{what}: malformed reply {:?}", self.line_text()));
            }
            let c = (u16::from(l[0] - b'0') * 100)
                + u16::from(l[1] - b'0') * 10
                + u16::from(l[2] - b'0');
            if !lines.is_empty() && c != code {
                return Err(format!(
                    "{what}: reply code changes from {code} to {c} inside one reply"
                ));
            }
            code = c;
            let more = l[3] == b'-';
            let text = String::from_utf8_lossy(l.get(4..).unwrap_or_default());
            lines.push(text.trim_end().to_string());
            if !more {
                return Ok(Reply { code, lines });
            }
        }
    }

    /// Reads a reply and insists on the given class (2 = 2xx, 3 = 3xx).
    pub fn expect(&mut self, what: &str, class: u16) -> Result<Reply, String> {
        let r = self.reply(what)?;
        if r.code / 100 == class {
            Ok(r)
        } else {
            Err(format!("{what}: {r}"))
        }
    }
}

// ---------------------------------------------------------------------------------------
// The message
// ---------------------------------------------------------------------------------------

const MSGID_DIGITS: usize = 5 + 1 + 12;

/// A message of exactly `size` bytes: headers (with a Message-ID whose
/// `WWWWW.SSSSSSSSSSSS` part is patched per message), a body of lines up to 78 octets
/// with CRLF ends, some of them starting with `.` (one is a lone `.`, one is `..`).
/// Returns the message and the offset of the Message-ID digits.
pub fn compose(size: usize, from: &str, stamp: u64) -> Result<(Vec<u8>, usize), String> {
    let headers = |subject_pad: &str| {
        let head = format!(
            "From: tidegate-bench <{from}>\r\n\
             To: undisclosed-recipients:;\r\n\
             Subject: tidegate benchmark message{subject_pad}\r\n\
             Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\
             Message-ID: <"
        );
        let at = head.len();
        let head = format!(
            "{head}00000.000000000000.{stamp:010}.tidegate-bench@bench.test>\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\
             Content-Transfer-Encoding: 7bit\r\n\
             \r\n"
        );
        (head, at)
    };
    let (mut head, mut at) = headers("");
    if size < head.len() {
        return Err(format!(
            "--message-size must be at least {} bytes",
            head.len()
        ));
    }
    if size - head.len() == 1 {
        // A body of one byte cannot end in CRLF; lengthen the subject instead.
        (head, at) = headers(".");
    }
    let mut msg = head.into_bytes();
    msg.reserve(size - msg.len());
    const TEXT: &[u8] = b"The quick brown fox jumps over the lazy dog; 0123456789. \
        Pack my box with five dozen liquor jugs! ";
    let filler = |n: usize, i: usize| -> Vec<u8> {
        (0..n).map(|k| TEXT[(k + i * 7) % TEXT.len()]).collect()
    };
    let mut i = 0usize;
    loop {
        let left = size - msg.len();
        if left == 0 {
            break;
        }
        let line: Vec<u8> = match i % 16 {
            3 => b".".to_vec(),
            7 => b"..".to_vec(),
            11 => {
                let mut l = b". a line that starts with a dot: ".to_vec();
                l.extend(filler(76 - l.len(), i));
                l
            }
            _ => filler(76, i),
        };
        if line.len() + 2 <= left && left - (line.len() + 2) != 1 {
            msg.extend_from_slice(&line);
        } else {
            // The last line takes what is left (left >= 2: never leave 1 byte).
            let mut l = filler(left - 2, i);
            if l.first() == Some(&b'.') {
                l[0] = b'x';
            }
            msg.extend_from_slice(&l);
        }
        msg.extend_from_slice(b"\r\n");
        i += 1;
    }
    debug_assert_eq!(msg.len(), size);
    Ok((msg, at))
}

/// The message as DATA sends it: every line starting with `.` gets one more `.`
/// (RFC 5321 §4.5.2), then the `.` line that ends the data.
pub fn dot_stuff(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 64 + 3);
    let mut line_start = true;
    for &b in msg {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// One worker's copy of the wire form, with the Message-ID patched per message.
struct Wire {
    bytes: Vec<u8>,
    id_at: usize,
}

impl Wire {
    fn set_id(&mut self, worker: usize, seq: u64) {
        let id = format!("{:05}.{:012}", worker % 100_000, seq % 1_000_000_000_000);
        self.bytes[self.id_at..self.id_at + MSGID_DIGITS].copy_from_slice(id.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// Sessions and transactions
// ---------------------------------------------------------------------------------------

struct Plan {
    target: SocketAddr,
    sources: Vec<Option<Ipv4Addr>>,
    rcpts: Vec<String>,
    from: String,
    helo: String,
    lmtp: bool,
    pipelining: bool,
    timeout: Duration,
    raw_size: usize,
    concurrency: usize,
    per_connection: u32,
    /// The AUTH PLAIN command line, when logging in.
    auth: Option<String>,
}

/// The `AUTH PLAIN` line for `user:password` (RFC 4616: NUL user NUL password, base64).
fn auth_plain(credentials: &str) -> Result<String, String> {
    let (user, password) = credentials
        .split_once(':')
        .ok_or("--auth must be USER:PASSWORD")?;
    let raw = format!("\0{user}\0{password}").into_bytes();
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::from("AUTH PLAIN ");
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out.push_str("\r\n");
    Ok(out)
}

/// What the server offered in its EHLO/LHLO reply.
struct Offer {
    pipelining: bool,
    size: bool,
}

fn hello(plan: &Plan, c: &mut Conn) -> Result<Offer, String> {
    let g = c.reply("greeting")?;
    if g.code != 220 {
        return Err(format!("greeting: {g}"));
    }
    let verb = if plan.lmtp { "LHLO" } else { "EHLO" };
    c.send(verb, format!("{verb} {}\r\n", plan.helo).as_bytes())?;
    let r = c.expect(verb, 2)?;
    if let Some(auth) = &plan.auth {
        c.send("AUTH", auth.as_bytes())?;
        c.expect("AUTH", 2)?;
    }
    let has = |kw: &str| {
        r.lines.iter().skip(1).any(|l| {
            l.split_ascii_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(kw))
        })
    };
    Ok(Offer {
        pipelining: has("PIPELINING"),
        size: has("SIZE"),
    })
}

/// One mail transaction; Ok when the end of data got a 2xx.
fn transaction(
    plan: &Plan,
    c: &mut Conn,
    offer: &Offer,
    wire: &[u8],
    rcpt: &str,
) -> Result<(), String> {
    let size = if offer.size {
        format!(" SIZE={}", plan.raw_size)
    } else {
        String::new()
    };
    let mail = format!("MAIL FROM:<{}>{size}\r\n", plan.from);
    let rcpt_cmd = format!("RCPT TO:<{rcpt}>\r\n");
    if plan.pipelining && offer.pipelining {
        c.send(
            "MAIL+RCPT+DATA",
            format!("{mail}{rcpt_cmd}DATA\r\n").as_bytes(),
        )?;
        // A server that refuses MAIL may close the connection (421): report the refusal
        // rather than the missing replies after it.
        let m = c.reply("MAIL")?;
        let first_refusal = |e: String, earlier: &[(&str, &Reply)]| {
            earlier
                .iter()
                .find(|(_, r)| !r.positive())
                .map(|(what, r)| format!("{what}: {r}"))
                .unwrap_or(e)
        };
        let r = c
            .reply("RCPT")
            .map_err(|e| first_refusal(e, &[("MAIL", &m)]))?;
        let d = c
            .reply("DATA")
            .map_err(|e| first_refusal(e, &[("MAIL", &m), ("RCPT", &r)]))?;
        let failed = if !m.positive() {
            Some(format!("MAIL: {m}"))
        } else if !r.positive() {
            Some(format!("RCPT {rcpt}: {r}"))
        } else if d.code != 354 {
            Some(format!("DATA: {d}"))
        } else {
            None
        };
        if let Some(e) = failed {
            if d.code == 354 {
                // The server wants data although the transaction failed: end it empty.
                c.send("end of data", b".\r\n")?;
                let _ = c.reply("end of data");
            }
            return Err(e);
        }
    } else {
        c.send("MAIL", mail.as_bytes())?;
        c.expect("MAIL", 2)?;
        c.send("RCPT", rcpt_cmd.as_bytes())?;
        c.expect("RCPT", 2).map_err(|e| format!("{rcpt}: {e}"))?;
        c.send("DATA", b"DATA\r\n")?;
        c.expect("DATA", 3)?;
    }
    c.send("message", wire)?;
    // SMTP: one reply. LMTP: one per accepted recipient, and there is one.
    c.expect("end of data", 2)
        .map(drop)
        .map_err(|e| format!("{rcpt}: {e}"))
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    offered_pipelining: AtomicU64,
    pipelined: AtomicU64,
}

/// One client: connections one after another until the deadline. Returns the latencies
/// (MAIL to the reply after the data) of the acknowledged messages.
fn worker(
    plan: &Plan,
    w: usize,
    deadline: Instant,
    errors: &Errors,
    counters: &Counters,
    mut wire: Wire,
) -> Vec<u32> {
    let mut latencies: Vec<u32> = Vec::with_capacity(1 << 14);
    let n = plan.concurrency;
    let mut i = w; // message number across all workers: w, w + n, w + 2n, ...
    let mut conn_no = w;
    while Instant::now() < deadline {
        let src = plan.sources[conn_no % plan.sources.len()];
        conn_no += n;
        let opened = Conn::open(plan.target, src, plan.timeout, 4096)
            .and_then(|mut c| hello(plan, &mut c).map(|o| (c, o)));
        let (mut c, offer) = match opened {
            Ok(x) => x,
            Err(e) => {
                errors.add(e);
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        if offer.pipelining {
            counters.offered_pipelining.fetch_add(1, Ordering::Relaxed);
        }
        let mut failed = false;
        for _ in 0..plan.per_connection {
            if Instant::now() >= deadline {
                break;
            }
            let rcpt = &plan.rcpts[i % plan.rcpts.len()];
            wire.set_id(w, (i / n) as u64);
            i += n;
            let t0 = Instant::now();
            match transaction(plan, &mut c, &offer, &wire.bytes, rcpt) {
                Ok(()) => {
                    latencies.push(net::micros_since(t0));
                    if plan.pipelining && offer.pipelining {
                        counters.pipelined.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    errors.add(e);
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            // The session's state is unknown: leave without waiting and start afresh.
            let _ = c.send("QUIT", b"QUIT\r\n");
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        let quit = c
            .send("QUIT", b"QUIT\r\n")
            .and_then(|()| c.expect("QUIT", 2))
            .and_then(|_| c.expect_close("QUIT"));
        if let Err(e) = quit {
            errors.add(e);
        }
    }
    latencies
}

pub fn smtp(args: SmtpArgs) -> Result<(), String> {
    let target = net::resolve(&args.target)?;
    if args.concurrency == 0 || !positive(args.duration) || args.per_connection == 0 {
        return Err("--concurrency, --duration and --per-connection must be positive".into());
    }
    if !positive(args.timeout) {
        return Err("--timeout must be positive".into());
    }
    if !args.rcpt_pattern.contains("{}") && args.user_count > 1 {
        return Err("--rcpt-pattern must contain {} when --user-count is above 1".into());
    }
    let rcpts = (1..=args.user_count.max(1))
        .map(|i| args.rcpt_pattern.replace("{}", &i.to_string()))
        .collect();
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (msg, id_at) = compose(args.message_size, &args.from, stamp)?;
    let wire = dot_stuff(&msg);
    let plan = Arc::new(Plan {
        target,
        sources: net::sources(target, args.sources),
        rcpts,
        from: args.from.clone(),
        helo: args.helo.clone(),
        lmtp: args.lmtp,
        pipelining: args.pipelining,
        timeout: Duration::from_secs_f64(args.timeout),
        raw_size: msg.len(),
        concurrency: args.concurrency,
        per_connection: args.per_connection,
        auth: args.auth.as_deref().map(auth_plain).transpose()?,
    });
    let errors = Arc::new(Errors::new());
    let counters = Arc::new(Counters::default());
    let cpu0 = net::own_cpu_secs();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let (plan, errors, counters) = (plan.clone(), errors.clone(), counters.clone());
            let wire = Wire {
                bytes: wire.clone(),
                id_at,
            };
            thread::spawn(move || worker(&plan, w, deadline, &errors, &counters, wire))
        })
        .collect();
    let mut lat: Vec<u32> = Vec::new();
    for w in workers {
        lat.extend(w.join().map_err(|_| "a worker panicked".to_string())?);
    }
    let secs = start.elapsed().as_secs_f64();
    let client_cpu = net::own_cpu_secs() - cpu0;
    let s = Summary::of(&mut lat);
    let messages = s.count;
    let errs = errors.get();
    let rate = messages as f64 / secs;
    let connections = counters.connections.load(Ordering::Relaxed);
    let offered = counters.offered_pipelining.load(Ordering::Relaxed);
    let pipelining = match (args.pipelining, offered) {
        (false, _) => "off",
        (true, 0) => "not-offered",
        (true, o) if o < connections => "partly-offered",
        (true, _) => "used",
    };
    let proto = if args.lmtp { "lmtp" } else { "smtp" };
    println!(
        "RESULT mode={proto} target={target} concurrency={} message_size={} wire_bytes={} \
         messages={messages} secs={secs:.3} rate={rate:.1} mean_ms={:.3} p50_ms={:.3} \
         p99_ms={:.3} max_ms={:.3} errors={errs} connections={connections} \
         per_connection={} pipelining={pipelining} client_cpu_secs={client_cpu:.2}",
        args.concurrency,
        msg.len(),
        wire.len(),
        s.mean,
        s.p50,
        s.p99,
        s.max,
        args.per_connection,
    );
    println!(
        "{proto} {target}: {messages} messages of {} bytes acknowledged in {secs:.1} s = \
         {rate:.0} messages/s with {} clients over {connections} connections; latency mean \
         {:.2} ms, p50 {:.2} ms, p99 {:.2} ms; {errs} errors",
        msg.len(),
        args.concurrency,
        s.mean,
        s.p50,
        s.p99,
    );
    errors.report();
    if messages == 0 {
        return Err("no message was acknowledged".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let body = wire.strip_suffix(b".\r\n").expect("terminator");
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    #[test]
    fn exact_size_crlf_and_dot_lines() {
        let min = compose(0, "a@b", 1).unwrap_err();
        assert!(min.contains("at least"));
        for size in (300..2000).chain([4096, 65536, 1 << 20]) {
            let Ok((msg, at)) = compose(size, "bench@bench.test", 1_767_225_600) else {
                continue;
            };
            assert_eq!(msg.len(), size, "size {size}");
            assert!(msg.ends_with(b"\r\n"));
            assert_eq!(&msg[at - 1..at], b"<");
            for line in msg.split_inclusive(|&b| b == b'\n') {
                assert!(line.ends_with(b"\r\n"), "size {size}: {line:?}");
                assert!(line.len() <= 1000);
                assert!(!line[..line.len() - 2].contains(&b'\r'));
            }
            let wire = dot_stuff(&msg);
            assert_eq!(unstuff(&wire), msg, "size {size}");
            if size >= 4096 {
                assert!(wire.windows(5).any(|w| w == b"\r\n..\r"), "a lone dot line");
                assert!(wire.windows(6).any(|w| w == b"\r\n...\r"), "a .. line");
            }
        }
    }

    #[test]
    fn auth_plain_matches_rfc4616() {
        // RFC 4616 §4's example credentials, without an authorization identity.
        assert_eq!(
            super::auth_plain("tim:tanstaaftanstaaf").unwrap(),
            "AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n"
        );
        assert_eq!(super::auth_plain("a:b").unwrap(), "AUTH PLAIN AGEAYg==\r\n");
        assert!(super::auth_plain("nocolon").is_err());
    }

    #[test]
    fn message_id_patch() {
        let (msg, at) = compose(4096, "bench@bench.test", 42).unwrap();
        let mut w = Wire {
            bytes: dot_stuff(&msg),
            id_at: at,
        };
        w.set_id(3, 17);
        let text = String::from_utf8(w.bytes).unwrap();
        assert!(
            text.contains(
                "Message-ID: <00003.000000000017.0000000042.tidegate-bench@bench.test>\r\n"
            )
        );
    }
}
