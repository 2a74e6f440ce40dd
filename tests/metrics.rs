//! The `[metrics]` endpoint and the login log line, end to end: a back-end and a
//! proxy front-end as separate `tidegate serve` processes on 127.0.0.2 and 127.0.0.1,
//! real POP3, IMAP and SMTP sessions, `curl` for the scrape.
//!
//! Every counter asserted here starts at zero in a fresh process, so the values are
//! exact: three POP3 logins and two IMAP logins succeed on the back-end (one POP3 login
//! handed over by the front-end, one over implicit TLS and one IMAP login after
//! STARTTLS, both by curl), one of each fails, one message is delivered.
//! Session totals include the connection with which the test waits for each node's
//! POP3 listener.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::Node;

const FRONT: &str = "127.0.0.1";
const BACK: &str = "127.0.0.2";
/// The front-end's source address towards the back-end: the back-end trusts it to
/// send PROXY headers naming the real client.
const SOURCE: &str = "127.0.0.5";

/// A port free on every address the test uses.
fn free_port() -> u16 {
    support::free_port_on(&[BACK])
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

struct Ports {
    pop3: u16,
    pop3s: u16,
    imap: u16,
    smtp: u16,
    submission: u16,
    metrics: u16,
}

fn write_configs(dir: &Path, p: &Ports) {
    std::fs::write(
        dir.join("users"),
        "alice@example.com {PLAIN}alice-pw\nbob@example.com {PLAIN}bob-pw\n",
    )
    .unwrap();
    let (pop3, imap, smtp, submission, metrics) = (p.pop3, p.imap, p.smtp, p.submission, p.metrics);
    let pop3s = p.pop3s;
    std::fs::write(
        dir.join("back.toml"),
        format!(
            "hostname = \"back.test\"\n\
             [storage]\nmailbox_path = \"back-mail\"\nworkarea = \"back-work\"\nfsync = false\n\
             [users]\nfile = \"users\"\n\
             [pop3]\nlisten = [\"{BACK}:{pop3}\"]\nlisten_tls = [\"{BACK}:{pop3s}\"]\n\
             auth_failure_delay_ms = 10\n\
             [imap]\nlisten = [\"{BACK}:{imap}\"]\nauth_failure_delay_ms = 10\n\
             [smtp]\nlisten = [\"{BACK}:{smtp}\"]\nsubmission = [\"{BACK}:{submission}\"]\n\
             auth_failure_delay_ms = 10\n\
             [trust]\nnetworks = [\"{SOURCE}/32\"]\nproxy_protocol = true\n\
             [metrics]\nlisten = \"{BACK}:{metrics}\"\n\
             [server]\nshutdown_grace_secs = 1\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("front.toml"),
        format!(
            "hostname = \"front.test\"\n\
             [storage]\nmailbox_path = \"front-mail\"\nworkarea = \"front-work\"\n\
             [users]\nfile = \"users\"\n\
             [pop3]\nlisten = [\"{FRONT}:{pop3}\"]\nauth_failure_delay_ms = 10\n\
             [proxy]\ndefault_host = \"{BACK}\"\n\
             backend_ports = {{ pop3 = {pop3}, submission = {submission}, imap = {imap} }}\n\
             source_addresses = [\"{SOURCE}\"]\nconnect_timeout_secs = 3\n\
             [metrics]\nlisten = \"{FRONT}:{metrics}\"\n\
             [server]\nshutdown_grace_secs = 1\n"
        ),
    )
    .unwrap();
}

struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(to: SocketAddr) -> Client {
        let stream = TcpStream::connect(to).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut client = Client {
            reader: BufReader::new(stream),
        };
        client.line();
        client
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    fn ask(&mut self, text: &str) -> String {
        self.reader.get_mut().write_all(text.as_bytes()).unwrap();
        self.line()
    }

    /// Sends an SMTP command and reads the (possibly multi-line) reply's last line.
    fn smtp(&mut self, text: &str) -> String {
        let mut line = self.ask(text);
        while line.as_bytes().get(3) == Some(&b'-') {
            line = self.line();
        }
        line
    }
}

/// `curl -s URL`, the body.
fn curl(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", url])
        .output()
        .expect("curl is installed");
    assert!(out.status.success(), "curl {url}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The HTTP status code curl gets for `url`.
fn curl_status(url: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            url,
        ])
        .output()
        .expect("curl is installed");
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until the scrape of `url` has every line of `want`; fails with the scrape.
fn assert_lines(url: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = curl(url);
        let missing: Vec<_> = want
            .iter()
            .filter(|w| !body.lines().any(|l| l == **w))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "missing {missing:?} in the scrape of {url}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The raw answer to `request` sent to `to`.
fn raw_http(to: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(to).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    // The server may answer (and close) before it read everything of a huge request.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn counters_and_login_lines_of_a_back_end_and_a_front_end() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports {
        pop3: free_port(),
        pop3s: free_port(),
        imap: free_port(),
        smtp: free_port(),
        submission: free_port(),
        metrics: free_port(),
    };
    write_configs(dir.path(), &ports);
    let back = Node::start(&dir.path().join("back.toml"), addr(BACK, ports.pop3));
    let front = Node::start(&dir.path().join("front.toml"), addr(FRONT, ports.pop3));
    let back_url = format!("http://{BACK}:{}/metrics", ports.metrics);
    let front_url = format!("http://{FRONT}:{}/metrics", ports.metrics);
    support::wait_listening(addr(BACK, ports.metrics), &String::new);
    support::wait_listening(addr(FRONT, ports.metrics), &String::new);

    // A delivery over SMTP.
    let message = "From: x@example.org\r\nSubject: metrics\r\n\r\nhello\r\n";
    let mut smtp = Client::connect(addr(BACK, ports.smtp));
    assert!(smtp.smtp("EHLO client.test\r\n").starts_with("250"));
    assert!(
        smtp.smtp("MAIL FROM:<x@example.org>\r\n")
            .starts_with("250")
    );
    assert!(
        smtp.smtp("RCPT TO:<alice@example.com>\r\n")
            .starts_with("250")
    );
    assert!(smtp.smtp("DATA\r\n").starts_with("354"));
    assert!(smtp.smtp(&format!("{message}.\r\n")).starts_with("250"));
    assert!(smtp.smtp("QUIT\r\n").starts_with("221"));
    let new = dir.path().join("back-mail/example.com/alice/new");
    let stored: u64 = std::fs::read_dir(&new)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        stored > message.len() as u64,
        "the stored copy has a Received: line"
    );

    // POP3 directly on the back-end: one success, one failure.
    let mut pop3 = Client::connect(addr(BACK, ports.pop3));
    assert!(pop3.ask("USER alice@example.com\r\n").starts_with("+OK"));
    assert!(pop3.ask("PASS alice-pw\r\n").starts_with("+OK"));
    assert!(pop3.ask("QUIT\r\n").starts_with("+OK"));
    let mut pop3 = Client::connect(addr(BACK, ports.pop3));
    assert!(pop3.ask("USER bob@example.com\r\n").starts_with("+OK"));
    assert!(pop3.ask("PASS guess-Secret-9\r\n").starts_with("-ERR"));
    assert!(pop3.ask("QUIT\r\n").starts_with("+OK"));

    // IMAP directly on the back-end: one success, one failure.
    let mut imap = Client::connect(addr(BACK, ports.imap));
    assert!(
        imap.ask("a1 LOGIN bob@example.com guess-Secret-9\r\n")
            .starts_with("a1 NO")
    );
    let ok = imap.ask("a2 LOGIN alice@example.com alice-pw\r\n");
    assert!(ok.starts_with("a2 OK"), "{ok}");
    imap.ask("a3 LOGOUT\r\n");

    // TLS logins by a real client: implicit TLS on POP3, STARTTLS on IMAP.
    let curl_login = |url: String| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-k",
                "--max-time",
                "10",
                "-u",
                "alice@example.com:alice-pw",
            ])
            .args(["--ssl-reqd", &url])
            .output()
            .expect("curl is installed");
        assert!(out.status.success(), "curl {url}: {out:?}");
    };
    curl_login(format!("pop3s://{BACK}:{}/", ports.pop3s));
    curl_login(format!("imap://{BACK}:{}/INBOX?ALL", ports.imap));

    // POP3 through the front-end, handed over to the back-end.
    let mut proxied = Client::connect(addr(FRONT, ports.pop3));
    assert!(proxied.ask("USER alice@example.com\r\n").starts_with("+OK"));
    assert!(proxied.ask("PASS alice-pw\r\n").starts_with("+OK"));
    assert!(proxied.ask("STAT\r\n").starts_with("+OK 1 "));
    assert!(proxied.ask("QUIT\r\n").starts_with("+OK"));
    drop((smtp, pop3, imap, proxied));

    let bytes = format!("tidegate_delivered_bytes_total {stored}");
    assert_lines(
        &back_url,
        &[
            "# TYPE tidegate_logins_total counter",
            "tidegate_logins_total{protocol=\"pop3\",result=\"success\"} 3",
            "tidegate_logins_total{protocol=\"pop3\",result=\"failure\"} 1",
            "tidegate_logins_total{protocol=\"pop3\",result=\"tempfail\"} 0",
            "tidegate_logins_total{protocol=\"imap\",result=\"success\"} 2",
            "tidegate_logins_total{protocol=\"imap\",result=\"failure\"} 1",
            "tidegate_deliveries_total{result=\"delivered\"} 1",
            "tidegate_deliveries_total{result=\"failed\"} 0",
            &bytes,
            "tidegate_sessions_total{protocol=\"pop3\"} 5",
            "tidegate_sessions_total{protocol=\"imap\"} 2",
            "tidegate_sessions_total{protocol=\"smtp\"} 1",
            "tidegate_sessions{protocol=\"pop3\"} 0",
            "tidegate_sessions{protocol=\"imap\"} 0",
            // Seven password checks, the RCPT check and the quota lookup at delivery.
            "tidegate_user_lookup_seconds_count{backend=\"file\"} 9",
            "tidegate_config_generation 1",
            "tidegate_queue_messages 0",
        ],
    );
    assert_lines(
        &front_url,
        &[
            "tidegate_logins_total{protocol=\"pop3\",result=\"success\"} 1",
            "tidegate_logins_total{protocol=\"pop3\",result=\"failure\"} 0",
            "tidegate_proxy_handovers_total{backend=\"127.0.0.2\"} 1",
            "tidegate_backend_up{backend=\"127.0.0.2\"} 1",
            "tidegate_sessions_total{protocol=\"pop3\"} 2",
            "tidegate_deliveries_total{result=\"delivered\"} 0",
        ],
    );
    let scrape = curl(&back_url);
    assert!(scrape.contains("\ntidegate_uptime_seconds "), "{scrape}");
    assert!(
        scrape.contains("tidegate_user_lookup_seconds_bucket{backend=\"file\",le=\"+Inf\"} 9\n"),
        "{scrape}"
    );

    // The login lines: one formatter for every protocol; the proxied login shows the
    // real client on the back-end (from the PROXY header); never the password.
    let pop3_ok = format!(
        " to {BACK}:{} protocol=pop3 method=USER/PASS result=success tls=no session=",
        ports.pop3
    );
    assert!(back.log_contains("login alice@example.com from 127.0.0.1:"));
    assert!(back.log_contains(&pop3_ok));
    assert!(back.log_contains(&format!(
        " to {BACK}:{} protocol=pop3 method=USER/PASS result=failure tls=no session=",
        ports.pop3
    )));
    assert!(back.log_contains("login bob@example.com from 127.0.0.1:"));
    assert!(back.log_contains(&format!(
        " to {BACK}:{} protocol=imap method=LOGIN result=failure tls=no session=",
        ports.imap
    )));
    assert!(back.log_contains(&format!(
        " to {BACK}:{} protocol=imap method=LOGIN result=success tls=no session=",
        ports.imap
    )));
    assert!(front.log_contains(&format!(
        " to {FRONT}:{} protocol=pop3 method=USER/PASS result=success tls=no session=",
        ports.pop3
    )));
    assert!(back.log_contains(&format!(
        " to {BACK}:{} protocol=pop3 method=AUTH-PLAIN result=success tls=yes session=",
        ports.pop3s
    )));
    assert!(back.log_contains(&format!(
        " to {BACK}:{} protocol=imap method=AUTHENTICATE-PLAIN result=success tls=yes session=",
        ports.imap
    )));

    // Anything but GET /metrics.
    assert_eq!(
        curl_status(&format!("http://{BACK}:{}/", ports.metrics)),
        "404"
    );
    assert_eq!(
        curl_status(&format!("http://{BACK}:{}/metricsx", ports.metrics)),
        "404"
    );
    let metrics_addr = addr(BACK, ports.metrics);
    let bad = raw_http(metrics_addr, b"HELLO\r\n\r\n");
    assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{bad}");
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    let bad = raw_http(metrics_addr, huge.as_bytes());
    assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{bad}");
    let ok = raw_http(metrics_addr, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    assert!(ok.contains("\r\nConnection: close\r\n"));

    // The whole logs, once both nodes stopped: no password anywhere.
    for mut node in [back, front] {
        // SAFETY: kill(2) on the child process this test started.
        unsafe { libc::kill(node.pid() as i32, libc::SIGTERM) };
        let (_, log) = node.wait();
        assert!(log.contains("login "), "{log}");
        assert!(
            !log.contains("alice-pw") && !log.contains("guess-Secret-9"),
            "{log}"
        );
    }
}
