//! `tidegate serve` with `[users] backend = "ldap"` against a real slapd: POP3, IMAP and
//! submission logins are checked by LDAP, and a front-end routes by the LDAP `tohost`
//! attribute. Without slapd installed the test says it was skipped and passes.

mod support;

#[path = "../store/tests/ldap/slapd.rs"]
mod slapd;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use slapd::{BASE, READER, Slapd};
use support::{Node, free_port, local, write};

struct Conn(BufReader<TcpStream>);

impl Conn {
    fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(local(port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut c = Conn(BufReader::new(stream));
        c.line();
        c
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        line
    }

    fn ask(&mut self, text: &str) -> String {
        self.0.get_mut().write_all(text.as_bytes()).unwrap();
        loop {
            let line = self.line();
            // Skip SMTP continuation lines and IMAP untagged data.
            if line.as_bytes().get(3) == Some(&b'-') || line.starts_with("* ") {
                continue;
            }
            return line;
        }
    }
}

fn pop3_login(port: u16, user: &str, password: &str) -> String {
    let mut c = Conn::open(port);
    assert!(c.ask(&format!("USER {user}\r\n")).starts_with("+OK"));
    c.ask(&format!("PASS {password}\r\n"))
}

#[test]
fn pop3_imap_and_submission_users_come_from_ldap_and_tohost_routes() {
    let Some(ldap) = Slapd::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let users = format!(
        "[users]\nbackend = \"ldap\"\n[users.ldap]\nurl = \"{}\"\nbase = \"{BASE}\"\n\
         bind_dn = \"{READER}\"\nbind_password = \"readerpw\"\ntohost_attribute = \"mailHost\"\n\
         fields = {{ nologin = \"tidegateNologin\" }}\n",
        ldap.url()
    );
    let (pop3, imap, submission, front_pop3) = (free_port(), free_port(), free_port(), free_port());
    let server = write(
        dir.path(),
        "server.toml",
        &format!(
            "hostname = \"ldap.test\"\n[server]\nallow_root = true\n[storage]\nmailbox_path = \"mail\"\nworkarea = \"work\"\n\
             [pop3]\nlisten = [\"127.0.0.1:{pop3}\"]\nauth_failure_delay_ms = 10\n\
             [imap]\nlisten = [\"127.0.0.1:{imap}\"]\nauth_failure_delay_ms = 10\n\
             [smtp]\nsubmission = [\"127.0.0.1:{submission}\"]\nauth_failure_delay_ms = 10\n{users}"
        ),
    );
    let _server = Node::start(&server, local(pop3));

    // POP3: {SSHA} (alice) and {CRYPT} SHA-512 (bob) hashes from LDAP.
    assert!(pop3_login(pop3, "alice@example.com", "alicepw").starts_with("+OK Logged in"));
    assert!(pop3_login(pop3, "bob@example.com", "bobpw").starts_with("+OK Logged in"));
    assert!(pop3_login(pop3, "alice@example.com", "wrong").starts_with("-ERR [AUTH]"));
    assert!(pop3_login(pop3, "nobody@example.com", "x").starts_with("-ERR [AUTH]"));
    // carol's entry has the nologin attribute.
    let answer = pop3_login(pop3, "carol@example.com", "carolpw");
    assert!(answer.starts_with("-ERR [AUTH]"), "{answer}");

    // IMAP.
    let mut c = Conn::open(imap);
    assert!(
        c.ask("a LOGIN bob@example.com bobpw\r\n")
            .starts_with("a OK")
    );
    let mut c = Conn::open(imap);
    assert!(
        c.ask("a LOGIN bob@example.com nope\r\n")
            .starts_with("a NO")
    );

    // Submission: AUTH PLAIN for alice.
    let mut c = Conn::open(submission);
    assert!(c.ask("EHLO client.example\r\n").starts_with("250 "));
    let answer = c.ask("AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAGFsaWNlcHc=\r\n");
    assert!(answer.starts_with("235"), "{answer}");

    // A front-end on the same directory routes alice by her LDAP mailHost (10.0.0.2,
    // unreachable here, so the login is a temporary failure after the route).
    let front = write(
        dir.path(),
        "front.toml",
        &format!(
            "hostname = \"front.test\"\n[server]\nallow_root = true\n[storage]\nmailbox_path = \"mail\"\nworkarea = \"front-work\"\n\
             [pop3]\nlisten = [\"127.0.0.1:{front_pop3}\"]\nauth_failure_delay_ms = 10\n\
             [proxy]\ndefault_host = \"127.0.0.1\"\nbackend_ports = {{ pop3 = {pop3} }}\n\
             client_address = \"none\"\nconnect_timeout_secs = 2\n{users}"
        ),
    );
    let front = Node::start(&front, local(front_pop3));
    let answer = pop3_login(front_pop3, "alice@example.com", "alicepw");
    assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
    assert!(front.log_contains("route alice@example.com from 127.0.0.1: Pop3 -> 10.0.0.2"));
}
