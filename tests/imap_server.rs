//! The IMAP server as users run it: `tidegate serve` with real clients (Python's imaplib,
//! curl) over plain TCP, STARTTLS and implicit TLS; IDLE seeing a delivery made on
//! another connection; UIDs and UIDVALIDITY surviving a restart.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{Node, free_port, local, write};

struct Server {
    /// Holds the server's files for the test's lifetime.
    _dir: tempfile::TempDir,
    config: PathBuf,
    imap: u16,
    imaps: u16,
    smtp: u16,
}

impl Server {
    fn new() -> Server {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "users", "alice@example.com {PLAIN}alice-pw\n");
        let (imap, imaps, smtp) = (free_port(), free_port(), free_port());
        let config = write(
            dir.path(),
            "config.toml",
            &format!(
                "hostname = \"imap.test\"\n[server]\nallow_root = true\n[storage]\nmailbox_path = \"mail\"\nworkarea = \"work\"\n\
                 [users]\nfile = \"users\"\n\
                 [imap]\nlisten = [\"127.0.0.1:{imap}\"]\nlisten_tls = [\"127.0.0.1:{imaps}\"]\n\
                 idle_poll_secs = 1\nauth_failure_delay_ms = 10\n\
                 [smtp]\nlisten = [\"127.0.0.1:{smtp}\"]\n"
            ),
        );
        Server {
            _dir: dir,
            config,
            imap,
            imaps,
            smtp,
        }
    }

    fn start(&self) -> Node {
        let node = Node::start(&self.config, local(self.imap));
        support::wait_listening(local(self.smtp), &String::new);
        node
    }

    fn deliver(&self, subject: &str) {
        let stream = TcpStream::connect(local(self.smtp)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut c = BufReader::new(stream);
        let mut line = String::new();
        let mut ask = |c: &mut BufReader<TcpStream>, text: &str| {
            c.get_mut().write_all(text.as_bytes()).unwrap();
            loop {
                line.clear();
                c.read_line(&mut line).unwrap();
                if line.as_bytes().get(3) != Some(&b'-') {
                    return line.clone();
                }
            }
        };
        assert!(ask(&mut c, "").starts_with("220"));
        assert!(ask(&mut c, "EHLO t\r\n").starts_with("250"));
        assert!(ask(&mut c, "MAIL FROM:<x@example.org>\r\n").starts_with("250"));
        assert!(ask(&mut c, "RCPT TO:<alice@example.com>\r\n").starts_with("250"));
        assert!(ask(&mut c, "DATA\r\n").starts_with("354"));
        let body = format!("Subject: {subject}\r\n\r\nabout {subject}\r\n.\r\n");
        assert!(ask(&mut c, &body).starts_with("250"));
    }
}

fn python(script: &str) -> String {
    let out: Output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    printed
}

#[test]
fn imaplib_reads_searches_flags_moves_and_appends_over_plain_starttls_and_tls() {
    let server = Server::new();
    let _node = server.start();
    server.deliver("first");
    server.deliver("second lunch");
    for (label, connect) in [
        (
            "plain",
            format!("imaplib.IMAP4('127.0.0.1', {})", server.imap),
        ),
        (
            "starttls",
            format!(
                "imaplib.IMAP4('127.0.0.1', {}); c.starttls(ssl._create_unverified_context())",
                server.imap
            ),
        ),
        (
            "tls",
            format!(
                "imaplib.IMAP4_SSL('127.0.0.1', {}, ssl_context=ssl._create_unverified_context())",
                server.imaps
            ),
        ),
    ] {
        let printed = python(&format!(
            "import imaplib, ssl\n\
             c = {connect}\n\
             print(c.login('alice@example.com', 'alice-pw')[0])\n\
             typ, data = c.select('INBOX')\n\
             print('select', typ, int(data[0]) >= 2)\n\
             typ, data = c.search(None, 'SUBJECT', 'lunch')\n\
             print('search', typ, data[0].decode())\n\
             typ, data = c.store(data[0], '+FLAGS', '(\\\\Flagged)')\n\
             print('store', typ, b'Flagged' in data[0])\n\
             print('create', c.create('Saved-{label}')[0])\n\
             typ, data = c.copy('1', 'Saved-{label}')\n\
             print('copy', typ)\n\
             typ, data = c.append('Sent', '(\\\\Seen)', None, b'Subject: sent-{label}\\r\\n\\r\\nhi\\r\\n')\n\
             print('append', typ, data[0].decode().startswith('[APPENDUID'))\n\
             typ, data = c.select('Saved-{label}', readonly=True)\n\
             print('saved', typ, data[0].decode())\n\
             typ, data = c.fetch('1', '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')\n\
             print('fetch', data[0][1].decode().strip())\n\
             print(c.logout()[0])\n"
        ));
        let lines: Vec<&str> = printed.lines().collect();
        assert_eq!(
            lines,
            [
                "OK",
                "select OK True",
                "search OK 2",
                "store OK True",
                "create OK",
                "copy OK",
                "append OK True",
                "saved OK 1",
                "fetch Subject: first",
                "BYE",
            ],
            "{label}"
        );
    }
}

#[test]
fn imaplib_keywords_are_stored_announced_and_searchable() {
    let server = Server::new();
    let _node = server.start();
    server.deliver("tagged");
    server.deliver("plain");
    let connect = format!("imaplib.IMAP4('127.0.0.1', {})", server.imap);
    let printed = python(&format!(
        "import imaplib\n\
         c = {connect}\n\
         c.login('alice@example.com', 'alice-pw')\n\
         c.select('INBOX')\n\
         print('permanent', c.response('PERMANENTFLAGS')[1][0].decode())\n\
         typ, data = c.store('1', '+FLAGS', '($Label1 Work)')\n\
         print('store', typ, [d.decode() for d in data if d])\n\
         c.logout()\n\
         c = {connect}\n\
         c.login('alice@example.com', 'alice-pw')\n\
         c.select('INBOX', readonly=True)\n\
         print('flags', c.response('FLAGS')[1][0].decode())\n\
         typ, data = c.fetch('1:*', '(FLAGS)')\n\
         print('fetch', [d.decode() for d in data])\n\
         typ, data = c.search(None, 'KEYWORD', 'work')\n\
         print('search', data[0].decode())\n\
         typ, data = c.search(None, 'UNKEYWORD', '$Label1')\n\
         print('unkeyword', data[0].decode())\n\
         c.logout()\n"
    ));
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(
        lines,
        [
            "permanent (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)",
            "store OK ['1 (FLAGS ($Label1 Work \\\\Recent))']",
            "flags (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 Work)",
            "fetch ['1 (FLAGS ($Label1 Work))', '2 (FLAGS ())']",
            "search 1",
            "unkeyword 2",
        ]
    );
}

#[test]
fn curl_reads_mail_over_imap_and_imaps() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let server = Server::new();
    let _node = server.start();
    server.deliver("for curl");
    for url in [
        format!("imap://127.0.0.1:{}/INBOX;UID=1", server.imap),
        format!("imaps://127.0.0.1:{}/INBOX;UID=1", server.imaps),
    ] {
        let out = Command::new("curl")
            .args(["-s", "-k", "-u", "alice@example.com:alice-pw", &url])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{url}: {out:?}");
        assert!(body.contains("Subject: for curl"), "{url}: {body}");
        assert!(body.contains("about for curl"), "{url}: {body}");
    }
}

/// A raw IMAP connection.
struct Raw(BufReader<TcpStream>);

impl Raw {
    fn login(port: u16) -> Raw {
        let stream = TcpStream::connect(local(port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut raw = Raw(BufReader::new(stream));
        assert!(raw.line().starts_with("* OK"));
        raw.command("a", "LOGIN alice@example.com alice-pw");
        raw
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        line
    }

    /// Sends `tag command`, returns the untagged lines; asserts a tagged OK.
    fn command(&mut self, tag: &str, command: &str) -> Vec<String> {
        write!(self.0.get_mut(), "{tag} {command}\r\n").unwrap();
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "closed during {command}");
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                assert!(rest.starts_with("OK"), "{command}: {line}");
                return lines;
            }
            lines.push(line);
        }
    }
}

fn value_after<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.split_once(key).map(|(_, rest)| rest))
        .and_then(|rest| rest.split([']', ' ']).next())
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
}

#[test]
fn idle_sees_a_delivery_and_uids_survive_a_restart() {
    let server = Server::new();
    let node = server.start();
    server.deliver("one");

    let mut idler = Raw::login(server.imap);
    let select = idler.command("s", "SELECT INBOX");
    assert!(select.contains(&"* 1 EXISTS\r\n".to_owned()), "{select:?}");
    let validity = value_after(&select, "UIDVALIDITY ").to_owned();
    write!(idler.0.get_mut(), "i IDLE\r\n").unwrap();
    assert!(idler.line().starts_with("+ "));

    // Another connection delivers; the idler hears of it without asking.
    let sent = Instant::now();
    server.deliver("two");
    loop {
        let line = idler.line();
        assert!(!line.is_empty(), "IDLE connection closed");
        if line == "* 2 EXISTS\r\n" {
            break;
        }
    }
    assert!(sent.elapsed() < Duration::from_secs(10));
    write!(idler.0.get_mut(), "DONE\r\n").unwrap();
    loop {
        let line = idler.line();
        if line.starts_with("i ") {
            assert!(line.starts_with("i OK"), "{line}");
            break;
        }
    }
    let fetched = idler.command("f", "UID FETCH 1:* (UID)");
    assert_eq!(fetched.len(), 2, "{fetched:?}");
    drop(idler);

    // Restart: the same UIDVALIDITY and the same UIDs.
    drop(node);
    let _node = server.start();
    let mut again = Raw::login(server.imap);
    let select = again.command("s", "EXAMINE INBOX");
    assert_eq!(value_after(&select, "UIDVALIDITY "), validity);
    assert_eq!(again.command("f", "UID FETCH 1:* (UID)"), fetched);
}
