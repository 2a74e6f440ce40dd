//! Interoperability with a real client: Python's `imaplib` talks to the IMAP session over
//! a socket on 127.0.0.1 (the test drives the session the way a shell does). Skipped,
//! with a note, where no `python3` is installed.

// Test code opens sockets, starts a process and reads the clock; the core never does.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod imap_common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use imap_common::{Harness, MESSAGE_1};
use tidegate_core::{Action, Peer, Session};

const CLIENT: &str = r#"
import imaplib, sys
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
print("caps", " ".join(sorted(c for c in m.capabilities if c in ("IMAP4REV1", "IDLE", "UIDPLUS", "MOVE"))))
print("login", m.login("alice", "secret")[0])
typ, data = m.select("INBOX")
print("select", typ, data[0].decode())
typ, data = m.fetch("1", "(FLAGS BODY.PEEK[])")
print("fetch", typ, data[0][1].decode().splitlines()[1])
typ, data = m.uid("SEARCH", None, "UNSEEN")
print("search", typ, data[0].decode())
typ, data = m.store("2", "+FLAGS", "(\\Flagged)")
print("store", typ, data[0].decode())
typ, data = m.append("Sent", "(\\Seen)", None, b"Subject: from python\r\n\r\nhello\r\n")
print("append", typ, data[0].decode())
typ, data = m.list()
print("list", typ, len(data))
typ, data = m.copy("1:2", "Sent")
print("copy", typ, data[0].decode())
print("logout", m.logout()[0])
"#;

#[test]
fn python_imaplib_session() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 is not installed; skipping the imaplib interoperability test");
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = std::thread::spawn(move || {
        Command::new("python3")
            .args(["-c", CLIENT, &port.to_string()])
            .output()
            .unwrap()
    });
    let (mut socket, _) = listener.accept().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut h = Harness::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; tidegate_core::MAX_READ];
    while !h.closed && Instant::now() < deadline {
        socket.write_all(&h.out).unwrap();
        h.out.clear();
        match socket.read(&mut buf) {
            Ok(0) => {
                h.session.handle_eof(h.now, Peer::Client);
                h.pump();
            }
            Ok(n) => h.send_bytes(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    socket.write_all(&h.out).unwrap();
    assert!(h.closed, "the session ended");
    assert!(
        h.session
            .poll_action()
            .is_none_or(|a| matches!(a, Action::Close { .. }))
    );
    drop(socket);
    let output = client.join().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let first_line =
        String::from_utf8_lossy(MESSAGE_1.split(|&b| b == b'\n').nth(1).unwrap_or(b""));
    assert_eq!(
        stdout,
        format!(
            "caps IDLE IMAP4REV1 MOVE UIDPLUS\n\
             login OK\n\
             select OK 2\n\
             fetch OK {}\n\
             search OK 2\n\
             store OK 2 (FLAGS (\\Flagged \\Recent))\n\
             append OK [APPENDUID 42 1] APPEND completed\n\
             list OK 2\n\
             copy OK [COPYUID 42 1:2 2:3] COPY completed\n\
             logout BYE\n",
            first_line.trim_end()
        )
    );
}
