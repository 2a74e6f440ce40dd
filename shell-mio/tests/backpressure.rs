//! Smoke tests for flow control: big pipelines, clients that never read.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{HOSTNAME, Options, Server};

const MIB: usize = 1024 * 1024;

/// A message of about `kib` KiB (no line starts with a dot, so RETR sends it as is).
fn big_body(kib: usize) -> Bytes {
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n";
    Bytes::from(line.repeat(kib * 1024 / line.len()))
}

#[test]
fn a_client_that_never_reads_is_bounded_and_others_are_still_served() {
    // One loop, so the flooding client and the well-behaved one share it.
    let server = Server::start(Options {
        threads: 1,
        body: big_body(16),
        ..Options::default()
    });
    let mut flood = server.connect();
    flood.login();
    let pipeline_len = 64 * MIB;
    let mut stream = flood.stream.try_clone().expect("clone");
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("write timeout");
    let writer = std::thread::spawn(move || {
        let chunk = b"RETR 1\r\n".repeat(8 * 1024);
        let mut written = 0;
        while written < pipeline_len {
            match stream.write(&chunk) {
                Ok(n) => written += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("flood write failed: {e}"),
            }
        }
        written
    });

    // Meanwhile another client gets full service on the same loop.
    let started = Instant::now();
    let mut other = server.connect();
    other.login();
    other.send(b"RETR 1\r\n");
    let retr = other.read_until(b"\r\n.\r\n");
    assert!(retr.starts_with(b"+OK 16") && retr.len() > 16 * 1024);
    assert!(other.command("QUIT").starts_with("+OK"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "other client starved"
    );

    // The server stopped reading the flood once its session's output backed up: the
    // client's writes blocked long before the whole pipeline was sent.
    let written = writer.join().expect("writer panicked");
    assert!(
        written < pipeline_len / 2,
        "server took {written} bytes of a client that never reads"
    );

    // The flood client disappears without reading; the server cleans up and serves on.
    drop(flood);
    let mut after = server.connect();
    after.login();
    assert!(after.command("QUIT").starts_with("+OK"));
    server.stop(Duration::from_secs(5));
}

#[test]
fn sending_a_large_pipeline_while_reading_does_not_deadlock() {
    let server = Server::start(Options::default());
    let mut client = server.connect();
    client.login();
    let commands = MIB / 6;
    let mut stream = client.stream.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let mut pipeline = b"NOOP\r\n".repeat(commands);
        pipeline.extend_from_slice(b"QUIT\r\n");
        stream.write_all(&pipeline).expect("pipeline write");
    });

    let mut replies = Vec::new();
    client
        .stream
        .read_to_end(&mut replies)
        .expect("read replies");
    writer.join().expect("writer panicked");
    let closing = format!("+OK {HOSTNAME} POP3 closing (0 messages deleted)\r\n");
    assert_eq!(replies.len(), commands * b"+OK\r\n".len() + closing.len());
    assert!(replies.ends_with(closing.as_bytes()));
    assert!(replies.chunks(5).take(commands).all(|r| r == b"+OK\r\n"));
    server.stop(Duration::from_secs(5));
}

#[test]
fn input_left_in_the_socket_is_read_when_the_session_wants_it_again() {
    // PASS waits for a slow store while 160 KiB of pipelined commands follow: the
    // session's 64 KiB input buffer fills, it stops wanting input, and the rest has
    // arrived in the socket before the reply does. The client then only reads, so no
    // new readable event will come: the shell must go back to the socket by itself.
    let server = Server::start(Options {
        auth_delay: Duration::from_millis(300),
        ..Options::default()
    });
    let mut client = server.connect();
    let commands = 160 * 1024 / 6;
    let mut pipeline = b"USER alice\r\nPASS secret\r\n".to_vec();
    pipeline.extend_from_slice(&b"NOOP\r\n".repeat(commands));
    pipeline.extend_from_slice(b"QUIT\r\n");
    client.send(&pipeline);

    let replies = client.read_to_end();
    let text = String::from_utf8_lossy(&replies);
    // USER's reply is a bare "+OK" too.
    let bare_oks = text.split("\r\n").filter(|line| *line == "+OK").count();
    assert_eq!(bare_oks, commands + 1, "every pipelined NOOP answered");
    assert!(text.ends_with(&format!(
        "+OK {HOSTNAME} POP3 closing (0 messages deleted)\r\n"
    )));
    server.stop(Duration::from_secs(5));
}

#[test]
fn a_slow_reader_gets_every_byte_of_large_retrievals() {
    // 32 × 256 KiB (each read from the store in several chunks) is more than the socket
    // buffers hold while the client is not reading (loopback autotunes the sender's to
    // 4 MiB): the server's writes hit WouldBlock, and only a writable event gets the
    // rest out once the client reads.
    let body = big_body(256);
    let server = Server::start(Options {
        body: body.clone(),
        ..Options::default()
    });
    let mut client = server.connect();
    client.login();
    let retrievals = 32;
    let mut pipeline = b"RETR 1\r\n".repeat(retrievals);
    pipeline.extend_from_slice(b"QUIT\r\n");
    client.send(&pipeline);
    std::thread::sleep(Duration::from_millis(300));

    let mut expected = Vec::new();
    for _ in 0..retrievals {
        expected.extend_from_slice(format!("+OK {} octets\r\n", body.len()).as_bytes());
        expected.extend_from_slice(&body);
        expected.extend_from_slice(b".\r\n");
    }
    expected.extend_from_slice(
        format!("+OK {HOSTNAME} POP3 closing (0 messages deleted)\r\n").as_bytes(),
    );
    let got = client.read_to_end();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "retrieved bytes differ");
    server.stop(Duration::from_secs(5));
}
