//! `tidegate-bench`: a load generator for mail servers (tidegate, Dovecot, Postfix, any
//! RFC 1939 POP3 or RFC 5321/2033 SMTP/LMTP server) and a few helpers that
//! `bench/run.sh` and `bench/smtp.sh` use.
//!
//! * `pop3`: `--concurrency` workers, each looping over whole sessions for `--duration`
//!   seconds: connect, greeting, USER, PASS, STAT, RETR (the body is read to the
//!   terminating `.` line, un-dot-stuffed and its byte count checked against the
//!   `+OK n octets` reply), QUIT, `+OK`, and the server's close. Prints one
//!   machine-readable `RESULT ...` line and one line for people.
//! * `smtp`: `--concurrency` workers, each sending messages for `--duration` seconds,
//!   `--per-connection` transactions per connection (EHLO or LHLO, MAIL, RCPT, DATA, a
//!   dot-stuffed message of `--message-size` bytes); counts the messages whose end of
//!   data got a 2xx. Prints a `RESULT ...` line like `pop3`.
//! * `imap`: like `pop3` for IMAP: LOGIN, SELECT INBOX, FETCH 1:* (FLAGS RFC822.SIZE),
//!   FETCH of one whole message, LOGOUT (`bench/imap.sh`).
//! * `authd`: `--concurrency` connections sending `--depth` pipelined LOOKUPs at a time to
//!   an authd (one started in this process unless `--target` is given); prints lookups/s.
//! * `mixed`: POP3, IMAP and submission sessions through proxy front-ends, for
//!   `bench/cluster.sh`.
//! * `message`: prints the message `smtp` sends.
//! * `idle`: opens `--connections` authenticated sessions, prints `READY ...` when all are
//!   up, holds them for `--hold` seconds, then QUITs them all.
//! * `hold`: like `idle` for POP3 or IMAP (`SELECT INBOX`, then `IDLE`), plain or
//!   implicit TLS; holds the connections until stopped (`bench/idle_memory.sh`).
//! * `registry`: the session registry's cost per connection (register, note the
//!   account, drop) from several threads, and of one `ctl who` snapshot.
//! * `wait`: waits until a POP3, SMTP or LMTP server answers with its greeting.
//! * `procstat`: CPU ticks and resident memory of a process and all its descendants.
//!
//! Client sockets are bound to several loopback source addresses (127.0.0.1 ..
//! 127.0.0.N, `--sources`) with `IP_BIND_ADDRESS_NO_PORT`, so the ephemeral ports of one
//! source address are not the limit.
//!
//! Plain std threads and blocking sockets: the client has to be simple enough that its
//! own behaviour is never the question when a figure looks odd.

mod authd;
mod hold;
mod imap;
mod mixed;
mod net;
mod pop3;
mod procstat;
mod registry;
mod smtp;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tidegate-bench",
    about = "POP3 and SMTP/LMTP load generator for tidegate benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Whole POP3 sessions in a loop; prints sessions/s and session latency.
    Pop3(pop3::Pop3Args),
    /// SMTP (or LMTP) mail transactions in a loop; prints acknowledged messages/s and
    /// per-message latency.
    Smtp(smtp::SmtpArgs),
    /// Prints the message `smtp` sends (before dot-stuffing; the Message-ID digits are
    /// zeros here and differ per message there).
    Message {
        /// Size in bytes.
        #[arg(long, default_value_t = 4096)]
        message_size: usize,
        /// The From: address.
        #[arg(long, default_value = "bench@bench.test")]
        from: String,
    },
    /// Opens many authenticated POP3 sessions and holds them idle.
    Idle(pop3::IdleArgs),
    /// Opens many authenticated POP3 or IMAP (IDLE) connections, plain or TLS, prints
    /// `READY n=…` and holds them (bench/idle_memory.sh).
    Hold(hold::HoldArgs),
    /// Waits until the server at --target greets with `+OK` or `220` (exit 0) or
    /// --timeout passes (exit 1).
    Wait {
        /// Server address, HOST:PORT.
        #[arg(long)]
        target: String,
        /// Seconds to keep trying.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
    /// Whole IMAP sessions in a loop; prints sessions/s and session latency.
    Imap(imap::ImapArgs),
    /// Mixed POP3, IMAP and submission sessions through front-ends (bench/cluster.sh).
    Mixed(mixed::MixedArgs),
    /// authd LOOKUPs per second (an in-process authd unless --target is given).
    Authd(authd::AuthdArgs),
    /// The session registry's cost per connection (register, note the account, drop)
    /// and of one `ctl who` snapshot; in-process, no server.
    Registry(registry::RegistryArgs),
    /// Prints `ticks=… clk_tck=… rss_kb=… hwm_kb=… procs=…` for a process and its
    /// descendants (ticks: utime+stime+cutime+cstime; rss/hwm: sums of VmRSS/VmHWM).
    Procstat {
        /// The root process.
        #[arg(long)]
        pid: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_nofile();
    let result = match cli.command {
        Command::Pop3(args) => pop3::pop3(args),
        Command::Smtp(args) => smtp::smtp(args),
        Command::Message { message_size, from } => {
            smtp::compose(message_size, &from, 0).and_then(|(msg, _)| {
                std::io::Write::write_all(&mut std::io::stdout(), &msg)
                    .map_err(|e| format!("stdout: {e}"))
            })
        }
        Command::Idle(args) => pop3::idle(args),
        Command::Hold(args) => hold::hold(args),
        Command::Wait { target, timeout } => procstat::wait(&target, timeout),
        Command::Procstat { pid } => procstat::procstat(pid),
        Command::Authd(args) => authd::authd(args),
        Command::Imap(args) => imap::imap(args),
        Command::Mixed(args) => mixed::mixed(args),
        Command::Registry(args) => registry::registry(args),
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
