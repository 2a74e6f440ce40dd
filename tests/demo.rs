//! `tidegate demo`, the README's main command: the printed cluster answers as printed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A first port whose next six are free on the three demo addresses.
fn free_base() -> u16 {
    let mut candidate = 20_000 + (std::process::id() % 20_000) as u16;
    loop {
        let free = (candidate..candidate + 7).all(|port| {
            ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
                .iter()
                .all(|ip| TcpListener::bind((*ip, port)).is_ok())
        });
        if free {
            return candidate;
        }
        candidate += 8;
    }
}

fn pop3_first_subject(port: u16, user: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let next = |reader: &mut BufReader<TcpStream>, line: &mut String| {
        line.clear();
        reader.read_line(line).unwrap();
        line.clone()
    };
    assert!(next(&mut reader, &mut line).starts_with("+OK front.demo.test"));
    reader
        .get_mut()
        .write_all(format!("USER {user}\r\nPASS tidegate-demo\r\nRETR 1\r\nQUIT\r\n").as_bytes())
        .unwrap();
    assert!(next(&mut reader, &mut line).starts_with("+OK"));
    let login = next(&mut reader, &mut line);
    assert!(login.starts_with("+OK Logged in"), "{user}: {login}");
    assert!(next(&mut reader, &mut line).starts_with("+OK"));
    loop {
        let l = next(&mut reader, &mut line);
        assert!(!l.is_empty() && l != ".\r\n", "no Subject for {user}");
        if let Some(subject) = l.strip_prefix("Subject: ") {
            return subject.trim_end().to_owned();
        }
    }
}

#[test]
fn the_demo_cluster_routes_each_user_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["demo", "--port", &base.to_string(), "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", base)).is_err() {
        assert!(Instant::now() < deadline, "the demo did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    assert_eq!(
        pop3_first_subject(base, "alice@demo.test"),
        "Welcome to tidegate"
    );
    assert_eq!(pop3_first_subject(base, "bob@demo.test"), "Hello Bob");
    assert_eq!(pop3_first_subject(base, "carol@demo.test"), "Hello Carol");
    // Inbound mail to the front-end reaches carol's back-end over LMTP (the demo's
    // back-ends share one maildir root, so her inbox is in `mail/`).
    let mut smtp = BufReader::new(TcpStream::connect(("127.0.0.1", base + 2)).unwrap());
    smtp.get_mut()
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    smtp.get_mut()
        .write_all(
            b"EHLO friend.example\r\nMAIL FROM:<friend@example.org>\r\n\
              RCPT TO:<carol@demo.test>\r\nDATA\r\n",
        )
        .unwrap();
    let mut replies = String::new();
    while !replies.contains("354 ") {
        let mut line = String::new();
        assert!(smtp.read_line(&mut line).unwrap() > 0, "{replies}");
        replies.push_str(&line);
    }
    smtp.get_mut()
        .write_all(b"Subject: via LMTP\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        .unwrap();
    let mut line = String::new();
    smtp.read_line(&mut line).unwrap();
    assert!(line.starts_with("250 2.0.0"), "{replies}{line}");
    let inbox = dir.path().join("mail/demo.test/carol/new");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let texts: Vec<String> = std::fs::read_dir(&inbox)
            .unwrap()
            .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
            .collect();
        if texts
            .iter()
            .any(|t| t.contains("Subject: via LMTP") && t.contains("with LMTP"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered over LMTP: {texts:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Each node's config is on disk for running the nodes as separate processes.
    for node in ["authd.toml", "front.toml", "back1.toml", "back2.toml"] {
        assert!(dir.path().join(node).is_file(), "{node}");
    }

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    let mut printed = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    assert!(
        printed.contains("bob@demo.test    tohost=127.0.0.3"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!(
            "curl pop3://127.0.0.1:{base}/1 -u carol@demo.test:tidegate-demo"
        )),
        "{printed}"
    );
    assert!(printed.contains("demo stopped"), "{printed}");
}
