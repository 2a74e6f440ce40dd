//! Back-end connections and splicing over real loopback sockets, driven by the
//! test-only proxy session of the `proxy` harness. The tests check bytes, order,
//! half-closes, failures, timeouts and backpressure from the outside, with blocking std
//! sockets.
//!
//! Shared by both runtime shells: each shell's `tests/splice.rs` includes this module
//! and defines, at its root, the `serve` function the harness runs (see [`proxy`]).

#[path = "proxy.rs"]
mod proxy;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use proxy::{
    Backend, CONNECT_TIMEOUT, MIB, RESIDUAL_TO_BACKEND, RESIDUAL_TO_CLIENT, Server, connect,
    connect_through, expect_bytes, expect_pattern, idle_spliced, pattern, read_line, read_n,
    read_to_end, send_pattern,
};

// ---- tests ---------------------------------------------------------------------------

#[test]
fn residuals_come_first_then_bytes_flow_both_ways() {
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 back-end ready\r\nEARLY-FROM-BACKEND")
            .unwrap();
        let expected = [RESIDUAL_TO_BACKEND, b"EARLY-FROM-CLIENT".as_slice()].concat();
        assert_eq!(read_n(&mut s, expected.len()), expected);
        // Echo from now on, until the client half-closes.
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).expect("back-end read");
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).unwrap();
        }
        s.write_all(b"BYE").unwrap();
    });
    let server = Server::default();
    let mut client = connect(&server);
    client
        .write_all(format!("CONNECT {}\r\nEARLY-FROM-CLIENT", backend.port).as_bytes())
        .unwrap();
    assert_eq!(read_line(&mut client), "+OK relayed: 220 back-end ready");
    let expected = [RESIDUAL_TO_CLIENT, b"EARLY-FROM-BACKEND".as_slice()].concat();
    assert_eq!(read_n(&mut client, expected.len()), expected);
    for round in 0..50 {
        let message = format!("round {round}: {}\r\n", "x".repeat(round * 100));
        client.write_all(message.as_bytes()).unwrap();
        assert_eq!(read_n(&mut client, message.len()), message.as_bytes());
    }
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut client), b"BYE");
    backend.join();
}

#[test]
fn ten_mib_each_way_arrive_byte_exact_with_a_slow_reader() {
    const TOTAL: usize = 10 * MIB;
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 hi\r\n").unwrap();
        expect_bytes(&mut s, RESIDUAL_TO_BACKEND);
        let mut writer = s.try_clone().unwrap();
        let sending = thread::spawn(move || {
            send_pattern(&mut writer, 0xB0, TOTAL);
            writer.shutdown(Shutdown::Write).unwrap();
        });
        expect_pattern(&mut s, 0xC0, TOTAL, Duration::ZERO);
        assert_eq!(read_to_end(&mut s), b"", "client's EOF after its bytes");
        sending.join().expect("back-end sender");
    });
    let server = Server::default();
    let mut client = connect_through(&server, backend.port, "", "220 hi");
    expect_bytes(&mut client, RESIDUAL_TO_CLIENT);
    let mut writer = client.try_clone().unwrap();
    let sending = thread::spawn(move || {
        send_pattern(&mut writer, 0xC0, TOTAL);
        writer.shutdown(Shutdown::Write).unwrap();
    });
    // Slow at first (40 × 64 KiB reads, 10 ms apart), then at full speed.
    let slow = 40 * 64 * 1024;
    expect_pattern(&mut client, 0xB0, slow, Duration::from_millis(10));
    let mut rest = client.try_clone().unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while got < TOTAL - slow {
        let n = rest.read(&mut buf).expect("read");
        assert!(n > 0, "EOF early");
        assert!(
            buf[..n] == pattern(0xB0, slow + got, n)[..],
            "bytes differ at {}",
            slow + got
        );
        got += n;
    }
    assert_eq!(
        read_to_end(&mut client),
        b"",
        "back-end's EOF after its bytes"
    );
    sending.join().expect("client sender");
    backend.join();
}

#[test]
fn a_reader_that_stops_reading_stalls_the_sender() {
    // The back-end pushes as fast as it can into a client that does not read. Socket
    // buffers fill (a few MiB on loopback), then the splice must stop taking bytes from
    // the back-end: its writes time out long before 64 MiB went out.
    const LIMIT: usize = 64 * MIB;
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 hi\r\n").unwrap();
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let block = vec![b'z'; 64 * 1024];
        let mut written = 0;
        while written < LIMIT {
            match s.write(&block) {
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        assert!(
            written < LIMIT / 2,
            "the splice took {written} bytes for a client that never reads"
        );
    });
    let server = Server::default();
    // Kept open (and never read) until the back-end gave up.
    let _client = connect_through(&server, backend.port, "", "220 hi");
    backend.join();
}

#[test]
fn client_half_close_reaches_the_backend_which_still_answers() {
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 hi\r\n").unwrap();
        let got = read_to_end(&mut s);
        assert_eq!(got, [RESIDUAL_TO_BACKEND, b"question".as_slice()].concat());
        s.write_all(b"answer after your EOF").unwrap();
    });
    let server = Server::default();
    let mut client = connect_through(&server, backend.port, "", "220 hi");
    client.write_all(b"question").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let rest = read_to_end(&mut client);
    assert_eq!(
        rest,
        [RESIDUAL_TO_CLIENT, b"answer after your EOF".as_slice()].concat()
    );
    backend.join();
}

#[test]
fn backend_half_close_reaches_the_client_which_still_sends() {
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 hi\r\nlast words").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let got = read_to_end(&mut s);
        assert_eq!(
            got,
            [RESIDUAL_TO_BACKEND, b"more from the client".as_slice()].concat()
        );
    });
    let server = Server::default();
    let mut client = connect_through(&server, backend.port, "", "220 hi");
    let expected = [RESIDUAL_TO_CLIENT, b"last words".as_slice()].concat();
    assert_eq!(
        read_to_end(&mut client),
        expected,
        "EOF passed on after the bytes"
    );
    client.write_all(b"more from the client").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    backend.join();
}

/// A short reply with the back-end's EOF right behind it, many times over: the
/// shells take a read shorter than their buffer as "drained" and skip the read that
/// would say `WouldBlock`, which must not lose an EOF that arrived with the data
/// (the poller reports it with that data and never again). A lost EOF leaves the
/// client waiting for the idle timeout (30 s), so the read timeout below fails it.
#[test]
fn a_reply_and_the_eof_right_behind_it_both_arrive() {
    let server = Server::default();
    for round in 0..40 {
        let backend = Backend::start(|mut s| {
            s.write_all(b"220 hi\r\n").unwrap();
            expect_bytes(&mut s, RESIDUAL_TO_BACKEND);
            expect_bytes(&mut s, b"QUIT\r\n");
            s.write_all(b"221 bye\r\n").unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            assert_eq!(read_to_end(&mut s), b"");
        });
        let mut client = connect_through(&server, backend.port, "", "220 hi");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        expect_bytes(&mut client, RESIDUAL_TO_CLIENT);
        client.write_all(b"QUIT\r\n").unwrap();
        let mut got = Vec::new();
        let read = client.read_to_end(&mut got);
        assert!(
            read.is_ok(),
            "round {round}: no EOF after {got:?}: {read:?}"
        );
        assert_eq!(got, b"221 bye\r\n", "round {round}");
        client.shutdown(Shutdown::Write).unwrap();
        backend.join();
    }
}

#[test]
fn backend_closing_mid_stream_closes_the_client_cleanly() {
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 hi\r\n").unwrap();
        // Read what was sent, so the close below is a FIN: closing a socket with unread
        // input is an abortive close (RST), which discards bytes still in flight.
        expect_bytes(&mut s, RESIDUAL_TO_BACKEND);
        send_pattern(&mut s, 0x11, MIB);
        // Dropped: closed while the client may still send.
    });
    let server = Server::default();
    let mut client = connect_through(&server, backend.port, "", "220 hi");
    expect_bytes(&mut client, RESIDUAL_TO_CLIENT);
    expect_pattern(&mut client, 0x11, MIB, Duration::ZERO);
    assert_eq!(
        read_to_end(&mut client),
        b"",
        "clean EOF after the back-end's bytes"
    );
    backend.join();
}

#[test]
fn connection_refused_is_reported_to_the_session() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // nothing listens there any more
    let server = Server::default();
    let mut client = connect(&server);
    client
        .write_all(format!("CONNECT {port}\r\n").as_bytes())
        .unwrap();
    let reply = String::from_utf8(read_to_end(&mut client)).unwrap();
    assert!(
        reply.starts_with("-ERR connect failed: ") && reply.ends_with("\r\n"),
        "{reply:?}"
    );
    assert!(reply.to_lowercase().contains("refused"), "{reply:?}");
}

#[test]
fn a_connect_the_session_gives_up_on_is_cancelled() {
    // A listener that never accepts, its queue full: Linux drops further SYNs, so a
    // connect to it stays in progress until the session's deadline closes it.
    use rustix::net::{AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&fd, &SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    rustix::net::listen(&fd, 0).unwrap();
    let listener = TcpListener::from(fd);
    let addr = listener.local_addr().unwrap();
    let fillers: Vec<TcpStream> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();
    let mut server = Server::default();
    let mut client = connect(&server);
    let asked = Instant::now();
    client
        .write_all(format!("CONNECT {}\r\n", addr.port()).as_bytes())
        .unwrap();
    assert_eq!(read_to_end(&mut client), b"-ERR connect timed out\r\n");
    assert!(
        asked.elapsed() >= CONNECT_TIMEOUT,
        "answered before the deadline"
    );
    // Nothing of the cancelled connect is left for shutdown to wait for (the client
    // closes first: a shell may linger for the client's FIN after its last reply).
    drop(client);
    assert!(server.stop() < Duration::from_secs(2), "shutdown waited");
    drop((fillers, listener));
}

#[test]
fn a_source_address_is_bound_before_connecting() {
    let backend = Backend::start(|mut s| {
        let from = s.peer_addr().unwrap();
        s.write_all(format!("220 you are {}\r\n", from.ip()).as_bytes())
            .unwrap();
        assert_eq!(read_to_end(&mut s), RESIDUAL_TO_BACKEND);
    });
    let server = Server::default();
    let mut client = connect_through(
        &server,
        backend.port,
        " src=127.0.0.2",
        "220 you are 127.0.0.2",
    );
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut client), RESIDUAL_TO_CLIENT);
    backend.join();
}

#[test]
fn idle_spliced_connections_are_closed_on_both_sides() {
    let idle = Duration::from_millis(400);
    let backend = Backend::start(move |mut s| {
        s.write_all(b"220 hi\r\n").unwrap();
        expect_bytes(&mut s, RESIDUAL_TO_BACKEND);
        s.write_all(b"ping").unwrap();
        let quiet = Instant::now();
        assert_eq!(read_to_end(&mut s), b"", "closed without more bytes");
        assert!(
            quiet.elapsed() >= idle / 2,
            "closed too early: {:?}",
            quiet.elapsed()
        );
    });
    let server = Server::start(idle, Duration::from_secs(5));
    let mut client = connect_through(&server, backend.port, "", "220 hi");
    let started = Instant::now();
    let rest = read_to_end(&mut client);
    assert_eq!(rest, [RESIDUAL_TO_CLIENT, b"ping".as_slice()].concat());
    assert!(started.elapsed() >= idle, "closed before the idle timeout");
    assert!(started.elapsed() < idle * 10, "idle timeout not enforced");
    backend.join();
}

#[test]
fn a_session_can_relay_without_splicing() {
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 relay me\r\nextra").unwrap();
        // Echo in upper case until the session closes us.
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).expect("back-end read");
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n].to_ascii_uppercase()).unwrap();
        }
    });
    let server = Server::default();
    let mut client = connect_through(&server, backend.port, " relay", "220 relay me");
    assert_eq!(read_n(&mut client, 5), b"extra");
    // Large enough to pass the session's relay high-water mark many times.
    let big: Vec<u8> = pattern(0x20, 0, 2 * MIB)
        .into_iter()
        .map(|b| b'a' + b % 26)
        .collect();
    let mut writer = client.try_clone().unwrap();
    let payload = big.clone();
    let sending = thread::spawn(move || writer.write_all(&payload).expect("send"));
    assert!(
        read_n(&mut client, big.len()) == big.to_ascii_uppercase(),
        "relayed bytes differ"
    );
    sending.join().unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    // The session closes both on the client's EOF; the back-end sees its EOF too.
    assert_eq!(read_to_end(&mut client), b"");
    backend.join();
}

#[test]
fn shutdown_waits_for_spliced_connections_then_cuts_them() {
    let backend = Backend::start(|mut s| {
        s.write_all(b"220 hi\r\n").unwrap();
        expect_bytes(&mut s, RESIDUAL_TO_BACKEND);
        let mut rest = Vec::new();
        // Cut: EOF or a reset, either way the connection ends.
        let _ = s.read_to_end(&mut rest);
    });
    let grace = Duration::from_millis(300);
    let mut server = Server::start(Duration::from_secs(30), grace);
    let mut client = connect_through(&server, backend.port, "", "220 hi");
    expect_bytes(&mut client, RESIDUAL_TO_CLIENT);
    let took = server.stop();
    assert!(
        took >= grace,
        "a spliced connection was cut before the grace: {took:?}"
    );
    backend.join();
}

/// Throughput of one large transfer, direct and through the splice, alternating
/// over several rounds (best and median of each). A measurement, not a test: run it on
/// purpose, in release mode, on a quiet machine, and read the figures. Every leg is
/// loopback, so the sender, the shell and the receiver compete for the same cores and
/// the figure says as much about the core count as about the splice; see
/// [`measure_splice_throughput_over_a_paced_link`] for links of a known rate.
///
/// `cargo test -p tidegate-shell-{mio,smol} --release --test splice -- --ignored --nocapture`
#[test]
#[ignore = "a measurement; run explicitly"]
fn measure_splice_throughput() {
    let server = Server::default();
    let figures = throughput::compare(&server, 256 * MIB, 5, None);
    println!("RESULT unconstrained loopback: {figures}");
}

/// The same transfer over a link of known rate: the sender writes at a fixed pace (a
/// stand-in for the network link a deployed front-end sits on, which needs no
/// privileges, unlike a `tc` rate limit), directly and through the splice. The splice
/// keeps up when the spliced rate matches the direct one; the shell's CPU per MiB is
/// then what it costs at that rate. Rates in Mbit/s from `SPLICE_LINK_MBIT`
/// (comma-separated; default 1000 and 4000).
///
/// `cargo test -p tidegate-shell-{mio,smol} --release --test splice -- --ignored --nocapture`
#[test]
#[ignore = "a measurement; run explicitly"]
fn measure_splice_throughput_over_a_paced_link() {
    let rates = std::env::var("SPLICE_LINK_MBIT").unwrap_or_else(|_| "1000,4000".into());
    let server = Server::default();
    for mbit in rates
        .split(',')
        .filter_map(|r| r.trim().parse::<f64>().ok())
    {
        let bytes_per_sec = mbit * 1e6 / 8.0;
        // About two seconds of transfer per run.
        let total = ((bytes_per_sec * 2.0) as usize / MIB).clamp(16, 512) * MIB;
        let figures = throughput::compare(&server, total, 3, Some(bytes_per_sec));
        println!("RESULT link paced at {mbit} Mbit/s: {figures}");
    }
}

/// The transfer measurements' machinery.
mod throughput {
    use std::fmt;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::thread;
    use std::time::{Duration, Instant};

    use super::proxy::{MIB, RESIDUAL_TO_BACKEND, Server, connect_through};

    /// Medians and bests of the direct and spliced runs.
    pub(super) struct Figures {
        total: usize,
        rounds: usize,
        direct_rate: f64,
        spliced_rate: f64,
        direct_cpu: f64,
        spliced_cpu: f64,
        /// The shell threads' own CPU per MiB in the spliced runs.
        shell_cpu: f64,
        direct_best: f64,
        spliced_best: f64,
    }

    impl fmt::Display for Figures {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "{} MiB x {} rounds, medians: direct {:.0} MiB/s ({:.2} CPU ms/MiB), spliced \
                 {:.0} MiB/s ({:.2} CPU ms/MiB); throughput ratio {:.2} (best runs {:.0} vs \
                 {:.0} MiB/s: {:.2}); shell CPU {:.2} ms/MiB (its threads: {:.2} ms/MiB)",
                self.total / MIB,
                self.rounds,
                self.direct_rate,
                self.direct_cpu,
                self.spliced_rate,
                self.spliced_cpu,
                self.spliced_rate / self.direct_rate,
                self.spliced_best,
                self.direct_best,
                self.spliced_best / self.direct_best,
                self.spliced_cpu - self.direct_cpu,
                self.shell_cpu,
            )
        }
    }

    /// Runs `rounds` direct and spliced transfers of `total` bytes, alternating; the
    /// sender writes at `pace` bytes per second when given, else as fast as it can.
    pub(super) fn compare(
        server: &Server,
        total: usize,
        rounds: usize,
        pace: Option<f64>,
    ) -> Figures {
        let (mut direct_runs, mut spliced_runs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            direct_runs.push(direct(total, pace));
            spliced_runs.push(spliced(server, total, pace));
        }
        let median = |runs: &[Run], pick: fn(&Run) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(pick).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let best = |runs: &[Run]| runs.iter().map(|r| r.rate).fold(0.0, f64::max);
        Figures {
            total,
            rounds,
            direct_rate: median(&direct_runs, |r| r.rate),
            spliced_rate: median(&spliced_runs, |r| r.rate),
            direct_cpu: median(&direct_runs, |r| r.cpu),
            spliced_cpu: median(&spliced_runs, |r| r.cpu),
            shell_cpu: median(&spliced_runs, |r| r.shell),
            direct_best: best(&direct_runs),
            spliced_best: best(&spliced_runs),
        }
    }

    fn sink(mut s: TcpStream) -> usize {
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return got,
                Ok(n) => got += n,
            }
        }
    }

    /// Sends `total` bytes, paced to `pace` bytes per second when given, then EOF.
    fn blast(s: &mut TcpStream, total: usize, pace: Option<f64>) {
        // Small blocks when paced, so the link's rate holds at a fine grain.
        let block = vec![
            b'q';
            if pace.is_some() {
                64 * 1024
            } else {
                256 * 1024
            }
        ];
        let started = Instant::now();
        let mut sent = 0;
        while sent < total {
            if let Some(rate) = pace {
                let due = started + Duration::from_secs_f64(sent as f64 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
            }
            s.write_all(&block).expect("blast");
            sent += block.len();
        }
        s.shutdown(Shutdown::Write).unwrap();
    }

    /// CPU seconds (user + system) this process has used: clients, back-end and shell
    /// alike, so the difference between the two modes is the shell's cost. Linux only;
    /// USER_HZ is 100 on every Linux architecture.
    fn cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after_name = stat.rsplit(')').next().unwrap_or_default();
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / 100.0
    }

    /// CPU seconds the shell's own threads (named `tidegate-*`: the thread running
    /// `serve`, event loops, executor threads) have used, read per thread from
    /// `/proc/self/task`.
    fn shell_cpu_seconds() -> f64 {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return 0.0;
        };
        let mut ticks = 0.0;
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with("tidegate-") {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let after_name = stat.rsplit(')').next().unwrap_or_default();
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            for i in [11, 12] {
                ticks += fields
                    .get(i)
                    .and_then(|f| f.parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
        }
        ticks / 100.0
    }

    /// One run of `total` bytes: MiB/s, CPU ms per MiB of the whole process, and of
    /// the shell's threads alone.
    fn timed(total: usize, run: impl FnOnce()) -> Run {
        let (cpu, shell, started) = (cpu_seconds(), shell_cpu_seconds(), Instant::now());
        run();
        let secs = started.elapsed().as_secs_f64();
        let mib = (total / MIB) as f64;
        Run {
            rate: mib / secs,
            cpu: (cpu_seconds() - cpu) * 1000.0 / mib,
            shell: (shell_cpu_seconds() - shell) * 1000.0 / mib,
        }
    }

    /// What one run measured.
    #[derive(Clone, Copy)]
    struct Run {
        /// MiB/s.
        rate: f64,
        /// CPU ms per MiB of the whole process (senders, receivers and shell).
        cpu: f64,
        /// CPU ms per MiB of the shell's threads.
        shell: f64,
    }

    fn direct(total: usize, pace: Option<f64>) -> Run {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = thread::spawn(move || sink(listener.accept().unwrap().0));
        let mut client = TcpStream::connect(addr).unwrap();
        timed(total, || {
            blast(&mut client, total, pace);
            assert_eq!(receiver.join().unwrap(), total);
        })
    }

    fn spliced(server: &Server, total: usize, pace: Option<f64>) -> Run {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let receiver = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"220 sink\r\n").unwrap();
            sink(s)
        });
        let mut client = connect_through(server, port, "", "220 sink");
        timed(total, || {
            blast(&mut client, total, pace);
            assert_eq!(receiver.join().unwrap(), total + RESIDUAL_TO_BACKEND.len());
        })
    }
}

/// Memory of idle spliced connections: resident set growth of this process per
/// connection (shell, clients and back-end together; the test side holds only socket
/// descriptors). A measurement: run explicitly.
///
/// `cargo test -p tidegate-shell-{mio,smol} --release --test splice -- --ignored --nocapture`
#[test]
#[ignore = "a measurement; run explicitly"]
fn measure_idle_spliced_memory() {
    const CONNECTIONS: usize = 2000;
    fn rss_kib() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
    // Each spliced connection counts twice (client and back-end socket).
    let server = Server::start_with(
        Duration::from_secs(300),
        Duration::from_secs(5),
        3 * CONNECTIONS,
    );
    // Warm up the shell's threads and allocator before the baseline.
    drop(idle_spliced(&server, 10));
    let before = rss_kib();
    let held = idle_spliced(&server, CONNECTIONS);
    let after = rss_kib();
    println!(
        "RESULT {CONNECTIONS} idle spliced connections: {} bytes of RSS each",
        (after.saturating_sub(before)) * 1024 / CONNECTIONS
    );
    drop(held);
}
