//! Two `tidegate serve` processes on one maildir root, as two back-ends on one NFS
//! export: SMTP deliveries into both at once, an IMAP client on one flagging messages
//! (renaming their files) while a POP3 client on the other retrieves and deletes them.
//! Every message must be retrieved exactly once: none lost, none duplicated.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Node, free_port, local, wait_listening};

const PER_NODE: usize = 30;

#[derive(Clone, Copy)]
struct Ports {
    smtp: u16,
    pop3: u16,
    imap: u16,
}

fn node_config(dir: &Path, name: &str, p: Ports) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "hostname = \"{name}.test\"\n\
             [server]\nallow_root = true\n[storage]\nmailbox_path = \"shared-mail\"\nworkarea = \"{name}-work\"\n\
             [users]\nfile = \"users\"\n\
             [smtp]\nlisten = [\"127.0.0.1:{}\"]\n\
             [pop3]\nlisten = [\"127.0.0.1:{}\"]\nlock = true\n\
             [imap]\nlisten = [\"127.0.0.1:{}\"]\n",
            p.smtp, p.pop3, p.imap
        ),
    )
    .unwrap();
    path
}

struct Conn(BufReader<TcpStream>);

impl Conn {
    fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Conn(BufReader::new(stream))
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "connection closed");
        line
    }

    fn send(&mut self, text: &str) {
        self.0.get_mut().write_all(text.as_bytes()).unwrap();
    }

    fn ask(&mut self, text: &str) -> String {
        self.send(text);
        self.line()
    }

    /// IMAP: lines up to the tagged answer of `tag`, which is returned last.
    fn until_tagged(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let done = line.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}

fn deliver(port: u16, id: &str) {
    let mut c = Conn::open(port);
    assert!(c.line().starts_with("220"));
    c.send("EHLO load.example\r\n");
    while !c.line().starts_with("250 ") {}
    assert!(c.ask("MAIL FROM:<load@example.org>\r\n").starts_with("250"));
    assert!(c.ask("RCPT TO:<alice@example.com>\r\n").starts_with("250"));
    assert!(c.ask("DATA\r\n").starts_with("354"));
    let answer = c.ask(&format!("Subject: {id}\r\n\r\nbody of {id}\r\n.\r\n"));
    assert!(answer.starts_with("250"), "{answer}");
    assert!(c.ask("QUIT\r\n").starts_with("221"));
}

/// One POP3 pass: retrieves and deletes every message; the subjects seen. `None` when
/// the mailbox was in use by another POP3 session.
fn pop3_drain(port: u16) -> Option<Vec<String>> {
    let mut c = Conn::open(port);
    assert!(c.line().starts_with("+OK"));
    assert!(c.ask("USER alice@example.com\r\n").starts_with("+OK"));
    let answer = c.ask("PASS pw\r\n");
    if answer.starts_with("-ERR [IN-USE]") {
        return None;
    }
    assert!(answer.starts_with("+OK Logged in, "), "{answer}");
    let count: usize = answer["+OK Logged in, ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut subjects = Vec::new();
    for n in 1..=count {
        let answer = c.ask(&format!("RETR {n}\r\n"));
        assert!(answer.starts_with("+OK"), "RETR {n}: {answer}");
        loop {
            let line = c.line();
            if line == ".\r\n" {
                break;
            }
            if let Some(subject) = line.strip_prefix("Subject: ") {
                subjects.push(subject.trim_end().to_owned());
            }
        }
        assert!(c.ask(&format!("DELE {n}\r\n")).starts_with("+OK"));
    }
    let answer = c.ask("QUIT\r\n");
    assert!(answer.starts_with("+OK"), "{answer}");
    Some(subjects)
}

/// One IMAP pass: select INBOX and flag every message \Seen (renaming their files).
fn imap_flag_all(port: u16) {
    let mut c = Conn::open(port);
    assert!(c.line().starts_with("* OK"));
    c.send("a LOGIN alice@example.com pw\r\n");
    assert!(c.until_tagged("a").last().unwrap().starts_with("a OK"));
    c.send("b SELECT INBOX\r\n");
    let select = c.until_tagged("b");
    assert!(select.last().unwrap().starts_with("b OK"), "{select:?}");
    let exists = select
        .iter()
        .find_map(|l| {
            l.strip_prefix("* ")
                .and_then(|l| l.strip_suffix(" EXISTS\r\n"))
        })
        .map_or(0, |n| n.parse::<u32>().unwrap());
    if exists > 0 {
        c.send(&format!("c STORE 1:{exists} +FLAGS.SILENT (\\Seen)\r\n"));
        let answer = c.until_tagged("c");
        // A message POP3 deleted meanwhile may be gone: NO is allowed, BAD is not.
        assert!(!answer.last().unwrap().starts_with("c BAD"), "{answer:?}");
    }
    c.send("d LOGOUT\r\n");
    c.until_tagged("d");
}

#[test]
fn two_nodes_on_one_maildir_root_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), "alice@example.com {PLAIN}pw\n").unwrap();
    let ports = |_| Ports {
        smtp: free_port(),
        pop3: free_port(),
        imap: free_port(),
    };
    let (pa, pb): (Ports, Ports) = (ports(0), ports(1));
    let _a = Node::start(&node_config(dir.path(), "a", pa), local(pa.pop3));
    let _b = Node::start(&node_config(dir.path(), "b", pb), local(pb.pop3));
    for port in [pa.smtp, pa.imap, pb.smtp, pb.imap] {
        wait_listening(local(port), &String::new);
    }

    let delivering = Arc::new(AtomicBool::new(true));
    let senders: Vec<_> = [("a", pa.smtp), ("b", pb.smtp)]
        .into_iter()
        .map(|(name, port)| {
            std::thread::spawn(move || {
                for i in 0..PER_NODE {
                    deliver(port, &format!("{name}-{i}"));
                }
            })
        })
        .collect();
    let flagger = {
        let delivering = delivering.clone();
        std::thread::spawn(move || {
            while delivering.load(Ordering::SeqCst) {
                imap_flag_all(pb.imap);
            }
        })
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let record = |seen: &mut BTreeMap<String, usize>, subjects: Vec<String>| {
        for s in subjects {
            *seen.entry(s).or_default() += 1;
        }
    };
    // POP3 on node A while mail arrives through both and IMAP on B renames files.
    while senders.iter().any(|s| !s.is_finished()) {
        if let Some(subjects) = pop3_drain(pa.pop3) {
            record(&mut seen, subjects);
        }
    }
    for sender in senders {
        sender.join().unwrap();
    }
    delivering.store(false, Ordering::SeqCst);
    flagger.join().unwrap();
    // What is left, through the other node.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.values().sum::<usize>() < 2 * PER_NODE && Instant::now() < deadline {
        if let Some(subjects) = pop3_drain(pb.pop3) {
            record(&mut seen, subjects);
        }
    }

    let expected: BTreeMap<String, usize> = ["a", "b"]
        .iter()
        .flat_map(|n| (0..PER_NODE).map(move |i| (format!("{n}-{i}"), 1)))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(
        pop3_drain(pa.pop3),
        Some(Vec::new()),
        "the mailbox is empty"
    );
}
