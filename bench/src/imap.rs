//! `imap`: whole IMAP sessions per second, the session an IMAP client runs to check a
//! mailbox: greeting, `LOGIN`, `SELECT INBOX`, `FETCH 1:* (FLAGS RFC822.SIZE)` (every
//! message answered), `FETCH n (BODY.PEEK[])` (the literal read whole), `LOGOUT`, and the
//! server's close.

use std::io::Read;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::net::{self, Conn, positive};
use crate::pop3::{Common, Plan};

#[derive(Args)]
pub struct ImapArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent clients (threads), each running one session after another.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds to run; sessions in progress at the end are finished and counted.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Messages every INBOX must hold (SELECT's EXISTS is checked; 0: any).
    #[arg(long, default_value_t = 0)]
    messages: u64,
    /// The message to fetch whole.
    #[arg(long, default_value_t = 1)]
    fetch: u64,
}

/// What the untagged responses before a tagged OK said.
#[derive(Default)]
pub struct Untagged {
    /// The last `* n EXISTS`.
    pub exists: Option<u64>,
    /// `* n FETCH` responses.
    pub fetches: u64,
    /// Bytes of literals (`{n}` at a line's end), read and dropped.
    pub literal_bytes: u64,
}

impl Conn {
    /// Reads IMAP lines until the tagged reply of `tag`, which must be OK.
    pub fn imap_until(&mut self, what: &str, tag: &str) -> Result<Untagged, String> {
        let mut seen = Untagged::default();
        loop {
            self.read_line(what)?;
            let text = self.line_text();
            if let Some(rest) = text.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
                return if rest.starts_with("OK") {
                    Ok(seen)
                } else {
                    Err(format!("{what}: {text}"))
                };
            }
            if let Some(untagged) = text.strip_prefix("* ") {
                let mut words = untagged.split_ascii_whitespace();
                if let (Some(n), Some(kind)) = (words.next(), words.next()) {
                    match kind {
                        "EXISTS" => seen.exists = n.parse().ok(),
                        "FETCH" => seen.fetches += 1,
                        _ => {}
                    }
                }
            }
            if let Some(n) = text
                .strip_suffix('}')
                .and_then(|t| t.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<u64>().ok())
            {
                let mut literal = (&mut self.io).take(n);
                let got = std::io::copy(&mut literal, &mut std::io::sink())
                    .map_err(|e| format!("{what}: literal: {e}"))?;
                if got != n {
                    return Err(format!("{what}: literal cut short at {got} of {n} bytes"));
                }
                seen.literal_bytes += n;
            }
        }
    }

    /// Reads the greeting, which must be an untagged OK.
    pub fn imap_greeting(&mut self) -> Result<(), String> {
        self.read_line("greeting")?;
        if self.line.starts_with(b"* OK") {
            Ok(())
        } else {
            Err(format!("greeting: {}", self.line_text()))
        }
    }

    /// `LOGIN` with atoms (the benchmark's user names and passwords need no quoting).
    pub fn imap_login(&mut self, tag: &str, user: &str, password: &str) -> Result<(), String> {
        self.send(
            "LOGIN",
            format!("{tag} LOGIN {user} {password}\r\n").as_bytes(),
        )?;
        self.imap_until("LOGIN", tag).map(drop)
    }
}

fn session(plan: &Plan, src: Option<Ipv4Addr>, user: &str, args: (u64, u64)) -> Result<(), String> {
    let (messages, fetch) = args;
    let mut c = plan.open(src, 16 * 1024)?;
    c.imap_greeting()?;
    c.imap_login("a1", user, &plan.password)?;
    c.send("SELECT", b"a2 SELECT INBOX\r\n")?;
    let exists = c.imap_until("SELECT", "a2")?.exists.unwrap_or(0);
    if exists < messages.max(fetch) {
        return Err(format!("SELECT: {user} has {exists} messages"));
    }
    c.send("FETCH", b"a3 FETCH 1:* (FLAGS RFC822.SIZE)\r\n")?;
    let listed = c.imap_until("FETCH 1:*", "a3")?.fetches;
    if listed != exists {
        return Err(format!("FETCH 1:*: {listed} answers for {exists} messages"));
    }
    c.send(
        "FETCH",
        format!("a4 FETCH {fetch} (BODY.PEEK[])\r\n").as_bytes(),
    )?;
    if c.imap_until("FETCH BODY[]", "a4")?.literal_bytes == 0 {
        return Err("FETCH BODY[]: no message body".into());
    }
    c.send("LOGOUT", b"a5 LOGOUT\r\n")?;
    c.imap_until("LOGOUT", "a5")?;
    c.expect_close("LOGOUT")
}

pub fn imap(args: ImapArgs) -> Result<(), String> {
    let plan = Arc::new(Plan::new(&args.common)?);
    if args.concurrency == 0 || !positive(args.duration) || args.fetch == 0 {
        return Err("--concurrency, --duration and --fetch must be positive".into());
    }
    let shape = (args.messages, args.fetch);
    let load = {
        let plan = plan.clone();
        net::run_sessions(
            args.concurrency,
            Duration::from_secs_f64(args.duration),
            move |i| session(&plan, plan.source(i), plan.user(i), shape),
        )?
    };
    net::report_sessions("imap", plan.target(), args.concurrency, &load)
}
