//! Smoke tests: whole POP3 sessions over loopback through the mio shell.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{AUTH_FAILURE_DELAY, BODY, BODY_STUFFED, HOSTNAME, Options, Server};
use tidegate_core::pop3::BUSY_REPLY;

#[test]
fn full_session() {
    let server = Server::start(Options::default());
    let mut client = server.connect();
    assert_eq!(client.line(), format!("+OK {HOSTNAME} POP3 ready"));
    assert_eq!(client.command("USER alice"), "+OK");
    assert_eq!(
        client.command("PASS secret"),
        format!("+OK Logged in, 1 messages ({} octets)", BODY.len())
    );
    assert_eq!(client.command("STAT"), format!("+OK 1 {}", BODY.len()));

    client.send(b"RETR 1\r\n");
    let header = format!("+OK {} octets\r\n", BODY.len());
    let mut expected = header.into_bytes();
    expected.extend_from_slice(BODY_STUFFED);
    assert_eq!(
        String::from_utf8_lossy(&client.read_until(b"\r\n.\r\n")),
        String::from_utf8_lossy(&expected)
    );

    assert_eq!(
        client.command("QUIT"),
        format!("+OK {HOSTNAME} POP3 closing (0 messages deleted)")
    );
    assert_eq!(client.read_to_end(), b"", "nothing after the closing reply");
    server.stop(Duration::from_secs(5));
}

#[test]
fn inline_answers_skip_the_worker_pool() {
    let server = Server::start(Options::default());
    let mut client = server.connect();
    client.line();
    assert_eq!(client.command("USER quick"), "+OK");
    assert_eq!(
        client.command("PASS anything"),
        format!("+OK Logged in, 1 messages ({} octets)", BODY.len())
    );
    assert_eq!(client.command("STAT"), format!("+OK 1 {}", BODY.len()));
    client.command("QUIT");
    assert_eq!(client.read_to_end(), b"", "nothing after the closing reply");
    server.stop(Duration::from_secs(5));
}

#[test]
fn pipelined_commands_in_one_write() {
    let server = Server::start(Options::default());
    let mut client = server.connect();
    client.send(b"USER alice\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nNOOP\r\nQUIT\r\n");

    let mut expected = format!(
        "+OK {HOSTNAME} POP3 ready\r\n+OK\r\n+OK Logged in, 1 messages ({n} octets)\r\n\
         +OK 1 {n}\r\n+OK {n} octets\r\n",
        n = BODY.len()
    )
    .into_bytes();
    expected.extend_from_slice(BODY_STUFFED);
    expected.extend_from_slice(
        format!("+OK\r\n+OK {HOSTNAME} POP3 closing (0 messages deleted)\r\n").as_bytes(),
    );
    assert_eq!(
        String::from_utf8_lossy(&client.read_to_end()),
        String::from_utf8_lossy(&expected)
    );
    server.stop(Duration::from_secs(5));
}

#[test]
fn failed_login_is_answered_when_the_session_timer_fires() {
    let server = Server::start(Options::default());
    let mut client = server.connect();
    assert!(client.line().starts_with("+OK"));
    assert_eq!(client.command("USER alice"), "+OK");
    let asked = Instant::now();
    assert_eq!(
        client.command("PASS wrong"),
        "-ERR [AUTH] Authentication failed"
    );
    assert!(
        asked.elapsed() >= AUTH_FAILURE_DELAY,
        "answered before the delay"
    );
    // The session is usable again afterwards.
    assert_eq!(client.command("USER alice"), "+OK");
    assert!(client.command("PASS secret").starts_with("+OK Logged in"));
    assert!(client.command("QUIT").starts_with("+OK"));
    server.stop(Duration::from_secs(5));
}

/// Each command pushes the idle deadline later; the session closes one idle timeout
/// after the last command, not after the first one nor never.
#[test]
fn idle_timeout_counts_from_the_last_command() {
    let idle = Duration::from_millis(700);
    let server = Server::start(Options {
        idle_timeout: idle,
        ..Options::default()
    });
    let mut client = server.connect();
    client.login();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(client.command("NOOP"), "+OK");
    }
    let last = Instant::now();
    assert_eq!(client.line(), "-ERR Autologout: idle for too long");
    let waited = last.elapsed();
    assert!(client.read_to_end().is_empty());
    assert!(
        waited >= idle && waited < idle + Duration::from_secs(3),
        "closed {waited:?} after the last command, idle timeout {idle:?}"
    );
}

#[test]
fn connection_cap_sends_the_busy_reply() {
    let server = Server::start(Options {
        max_connections: 1,
        ..Options::default()
    });
    let mut first = server.connect();
    first.login();

    let mut refused = server.connect();
    assert_eq!(refused.read_to_end(), BUSY_REPLY);

    // The first session is unaffected.
    assert_eq!(first.command("STAT"), format!("+OK 1 {}", BODY.len()));
    assert!(first.command("QUIT").starts_with("+OK"));
    assert_eq!(first.read_to_end(), b"");
    drop((first, refused));

    // Once both are gone the slot is free again (the server notices asynchronously).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let greeting = server.connect().try_line();
        if greeting.as_deref().is_some_and(|g| g.starts_with("+OK")) {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed: {greeting:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop(Duration::from_secs(5));
}

#[test]
fn shutdown_stops_accepting_and_lets_sessions_finish() {
    let mut server = Server::start(Options {
        shutdown_grace: Duration::from_secs(30),
        ..Options::default()
    });
    let mut client = server.connect();
    client.login();
    server.shutdown.trigger();

    // The listener closes: connections are soon refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(server.addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        std::thread::sleep(Duration::from_millis(10));
    }

    // The open session keeps working until it quits, and then serve returns at once,
    // long before the grace period ends.
    assert_eq!(client.command("STAT"), format!("+OK 1 {}", BODY.len()));
    assert!(client.command("QUIT").starts_with("+OK"));
    assert_eq!(client.read_to_end(), b"");
    drop(client);
    server.wait(Duration::from_secs(5)).expect("serve failed");
}

#[test]
fn shutdown_cuts_sessions_after_the_grace_period() {
    let mut server = Server::start(Options {
        shutdown_grace: Duration::from_millis(300),
        ..Options::default()
    });
    let mut idle = server.connect();
    idle.login();
    let started = Instant::now();
    server.shutdown.trigger();
    server.wait(Duration::from_secs(5)).expect("serve failed");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "cut before the grace period"
    );
    // The session was dropped: the client sees the connection end.
    let mut rest = [0u8; 64];
    let n = std::io::Read::read(&mut idle.stream, &mut rest).unwrap_or(0);
    assert_eq!(n, 0, "connection still open after serve returned");
}
