//! Connection reuse from the queue: the real runners and the real relay transport
//! deliver to a small receiving server on loopback that counts its connections and
//! records every message with the connection it came over. Many messages to one
//! smarthost go over few connections and arrive once each; a server that drops idle
//! connections, or loses the reply to a message on a reused connection, costs a new
//! connection or a retry, never a message.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidegate_store::outbound::{ConnectionPool, ReuseLimits, SendOptions, TlsPolicy};
use tidegate_store::queue::bounce::Bouncer;
use tidegate_store::queue::relay::{RelayTransport, Route};
use tidegate_store::queue::{Queue, RetryPolicy, Runner, RunnerConfig, unix_now};

/// How the receiving server behaves.
#[derive(Clone, Copy, Default)]
struct Behaviour {
    /// Close a connection idle this long, with a `421` first.
    idle_close: Option<Duration>,
    /// Record the n-th message (1-based) of every connection, then hang up without
    /// replying to its end of data: the reply is lost.
    lose_reply_of: Option<usize>,
}

/// One received message: the connection it came over and its Subject.
#[derive(Debug, Clone)]
struct Got {
    connection: usize,
    subject: String,
}

struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
    got: Arc<Mutex<Vec<Got>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Server {
    fn start(behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let server = Server {
            port: listener.local_addr().unwrap().port(),
            connections: Arc::default(),
            got: Arc::default(),
            stop: Arc::default(),
        };
        let (connections, got, stop) = (
            server.connections.clone(),
            server.got.clone(),
            server.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let n = connections.fetch_add(1, Ordering::SeqCst) + 1;
                        let got = got.clone();
                        std::thread::spawn(move || {
                            let _ = serve(stream, n, behaviour, &got);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        server
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn wait_for(&self, n: usize, secs: u64) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "got {} of {n} messages: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(
    stream: TcpStream,
    connection: usize,
    behaviour: Behaviour,
    got: &Mutex<Vec<Got>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(
        behaviour.idle_close.unwrap_or(Duration::from_secs(30)),
    ))?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    out.write_all(b"220 counting.test ESMTP\r\n")?;
    let mut messages = 0;
    loop {
        let mut line = String::new();
        match input.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(_) => {
                // Idle too long (RFC 5321 §3.8: say 421, then close).
                let _ = out.write_all(b"421 4.4.2 idle too long\r\n");
                return Ok(());
            }
        }
        let upper = line.trim_end().to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") {
            "250-counting.test\r\n250-PIPELINING\r\n250 8BITMIME"
        } else if upper.starts_with("MAIL") || upper.starts_with("RCPT") || upper == "RSET" {
            "250 2.0.0 ok"
        } else if upper == "DATA" {
            out.write_all(b"354 go ahead\r\n")?;
            let mut subject = String::new();
            loop {
                let mut raw = String::new();
                if input.read_line(&mut raw)? == 0 {
                    return Ok(());
                }
                if raw == ".\r\n" {
                    break;
                }
                if let Some(s) = raw.strip_prefix("Subject: ") {
                    subject = s.trim_end().to_owned();
                }
            }
            messages += 1;
            got.lock().unwrap().push(Got {
                connection,
                subject,
            });
            if behaviour.lose_reply_of == Some(messages) {
                return Ok(());
            }
            "250 2.0.0 taken"
        } else if upper == "QUIT" {
            out.write_all(b"221 2.0.0 bye\r\n")?;
            return Ok(());
        } else {
            "502 5.5.1 not implemented"
        };
        out.write_all(format!("{reply}\r\n").as_bytes())?;
    }
}

/// A queue delivering to `server` through the relay transport with these limits.
fn start(
    dir: &tempfile::TempDir,
    server: &Server,
    runners: usize,
    limits: ReuseLimits,
    retry: Duration,
) -> (Arc<Queue>, Runner) {
    let queue = Arc::new(Queue::open(&dir.path().join("queue"), false, "reuse.test").unwrap());
    let mut options = SendOptions::new("reuse.test");
    options.tls = TlsPolicy::Disabled;
    options.command_timeout = Duration::from_secs(10);
    let transport = RelayTransport {
        route: Route::Smarthost {
            host: "127.0.0.1".into(),
            port: server.port,
        },
        options,
        require_tls_domains: Vec::new(),
        signers: Vec::new(),
        pool: ConnectionPool::new(limits),
    };
    let runner = Runner::start(
        queue.clone(),
        Arc::new(transport),
        Bouncer {
            hostname: "reuse.test".into(),
            local: None,
            router: None,
        },
        RunnerConfig {
            runners,
            policy: RetryPolicy {
                retry_min: retry,
                retry_max: retry,
                ..RetryPolicy::default()
            },
            idle_poll: Duration::from_millis(200),
            stop_grace: Duration::from_secs(5),
        },
    )
    .unwrap();
    (queue, runner)
}

fn enqueue(queue: &Queue, n: usize) {
    let id = queue
        .enqueue(
            tidegate_store::queue::NewEntry {
                sender: "alice@local.test".into(),
                recipients: vec![format!("user{n}@remote.test")],
                eight_bit: false,
                smtputf8: false,
                client: None,
                backends: Vec::new(),
            },
            format!("Subject: message {n}\r\n\r\nhello\r\n").as_bytes(),
            unix_now(),
        )
        .unwrap();
    queue.release(&id);
}

fn wait_empty(queue: &Queue, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !queue.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the queue still holds {}",
            queue.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The subjects received, sorted.
fn subjects(got: &[Got]) -> Vec<String> {
    let mut subjects: Vec<String> = got.iter().map(|g| g.subject.clone()).collect();
    subjects.sort();
    subjects
}

/// The subjects of messages `0..n`, sorted.
fn expected(n: usize) -> Vec<String> {
    let mut all: Vec<String> = (0..n).map(|i| format!("message {i}")).collect();
    all.sort();
    all
}

#[test]
fn many_messages_to_one_smarthost_share_few_connections_and_arrive_once() {
    let server = Server::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let (queue, runner) = start(
        &dir,
        &server,
        2,
        ReuseLimits::default(),
        Duration::from_secs(300),
    );
    for n in 0..30 {
        enqueue(&queue, n);
    }
    let got = server.wait_for(30, 30);
    wait_empty(&queue, 10);
    assert_eq!(subjects(&got), expected(30), "each message once");
    // Two runners: at most one connection each while they stay within the idle time.
    let connections = server.connections.load(Ordering::SeqCst);
    assert!((1..=2).contains(&connections), "{connections} connections");
    runner.stop();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.got().len(), 30, "nothing sent twice");
}

#[test]
fn a_connection_carries_at_most_the_message_limit() {
    let server = Server::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let limits = ReuseLimits {
        max_messages: 3,
        ..ReuseLimits::default()
    };
    let (queue, runner) = start(&dir, &server, 1, limits, Duration::from_secs(300));
    for n in 0..10 {
        enqueue(&queue, n);
    }
    let got = server.wait_for(10, 30);
    wait_empty(&queue, 10);
    assert_eq!(subjects(&got), expected(10));
    // One runner: 3 + 3 + 3 + 1.
    assert_eq!(server.connections.load(Ordering::SeqCst), 4);
    for connection in 1..=4 {
        let on = got.iter().filter(|g| g.connection == connection).count();
        assert!(on <= 3, "connection {connection} carried {on}");
    }
    runner.stop();
}

#[test]
fn a_connection_the_server_closed_while_idle_is_replaced_without_a_retry() {
    let server = Server::start(Behaviour {
        idle_close: Some(Duration::from_millis(100)),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    // Retries an hour away: a message deferred by the dead connection would not arrive.
    let (queue, runner) = start(
        &dir,
        &server,
        1,
        ReuseLimits::default(),
        Duration::from_secs(3600),
    );
    for n in 0..3 {
        enqueue(&queue, n);
        server.wait_for(n + 1, 10);
        // Longer than the server keeps an idle connection.
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_empty(&queue, 10);
    assert_eq!(subjects(&server.got()), expected(3));
    assert_eq!(server.connections.load(Ordering::SeqCst), 3);
    runner.stop();
}

#[test]
fn a_reply_lost_on_a_reused_connection_means_a_retry_never_a_delivery() {
    // Every connection loses the reply to its second message.
    let server = Server::start(Behaviour {
        lose_reply_of: Some(2),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (queue, runner) = start(
        &dir,
        &server,
        1,
        ReuseLimits::default(),
        Duration::from_secs(1),
    );
    for n in 0..2 {
        enqueue(&queue, n);
    }
    // The first message over connection 1, the second too (reply lost), then the second
    // again on a later attempt over a new connection.
    let got = server.wait_for(3, 30);
    wait_empty(&queue, 30);
    let mut all = subjects(&got);
    all.dedup();
    assert_eq!(all, expected(2), "{got:?}");
    let second: Vec<&Got> = got.iter().filter(|g| g.subject == "message 1").collect();
    assert_eq!(second.len(), 2, "sent again after the lost reply: {got:?}");
    assert_ne!(second[0].connection, second[1].connection);
    let first = got.iter().filter(|g| g.subject == "message 0").count();
    assert_eq!(first, 1, "a delivered message is not sent again");
    runner.stop();
}
