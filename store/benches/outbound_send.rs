//! Messages per second through `outbound::send` into Postfix's `smtp-sink` on loopback:
//! one connection per message (connect, EHLO, MAIL, RCPT, DATA, QUIT), like the queue
//! runner's attempts. Reports wall-clock rate and this process's CPU time per message.
//!
//! `cargo bench -p tidegate-store --bench outbound_send [-- MESSAGES [THREADS [SIZE]]]`
//! (defaults: 2000 messages, 1 and 4 threads, 4096-byte messages). Needs `smtp-sink`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tidegate_store::outbound::{
    Destination, OutboundMessage, Outcome, SendOptions, TlsPolicy, send,
};

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Starts smtp-sink on a free loopback port and waits until it listens.
fn start_sink() -> (Child, SocketAddr) {
    let sink = ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("smtp-sink (Postfix) is needed for this benchmark");
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let child = Command::new(sink)
        .args(["-u", "nobody", &addr.to_string(), "256"])
        .spawn()
        .expect("smtp-sink starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "smtp-sink did not listen");
        thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let messages = args.first().copied().unwrap_or(2000);
    let size = args.get(2).copied().unwrap_or(4096);
    let thread_counts: Vec<usize> = match args.get(1) {
        Some(&n) => vec![n],
        None => vec![1, 4],
    };
    let (mut sink, addr) = start_sink();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("message");
    let mut body = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: bench\r\n\r\n".to_vec();
    while body.len() < size {
        body.extend_from_slice(
            b"The quick brown fox jumps over the lazy dog, again and again.\r\n",
        );
    }
    std::fs::write(&path, &body).expect("message written");
    let dest = Arc::new(Destination {
        addrs: vec![addr],
        tls_name: "localhost".into(),
    });
    let mut options = SendOptions::new("bench.example");
    options.tls = TlsPolicy::Disabled;
    let options = Arc::new(options);
    let recipients = Arc::new(vec!["b@example.net".to_string()]);

    println!(
        "outbound::send into smtp-sink, {} byte messages",
        body.len()
    );
    for threads in thread_counts {
        let per_thread = messages / threads;
        let cpu_before = cpu_time();
        let started = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (dest, options, recipients, path) = (
                    dest.clone(),
                    options.clone(),
                    recipients.clone(),
                    path.clone(),
                );
                thread::spawn(move || {
                    for _ in 0..per_thread {
                        let message = OutboundMessage {
                            mail_from: "a@example.com",
                            recipients: &recipients,
                            prefix: b"",
                            path: &path,
                            eight_bit: false,
                            smtputf8: false,
                            xclient: None,
                        };
                        let outcomes = send(&dest, &options, &message).expect("sent");
                        assert!(matches!(outcomes[0].outcome, Outcome::Delivered(_)));
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("worker");
        }
        let elapsed = started.elapsed();
        let cpu = cpu_time() - cpu_before;
        let sent = per_thread * threads;
        println!(
            "  {threads} thread(s): {sent} messages in {:.2} s = {:.0} messages/s; client CPU {:.1} µs/message",
            elapsed.as_secs_f64(),
            sent as f64 / elapsed.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / sent as f64
        );
    }
    let _ = sink.kill();
    let _ = sink.wait();
}
