//! The `tidegate` binary as users run it: real processes, real files, real sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tidegate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tidegate"))
}

fn run_with_stdin(mut cmd: Command, stdin: &str) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command may exit before reading its input (an unknown recipient is refused
    // first), so a broken pipe here is not an error.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, port: u16, extra: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "hostname = \"test.example\"\n[storage]\nmailbox_path = \"mail\"\nworkarea = \"work\"\n[users]\nfile = \"users\"\n[pop3]\nlisten = [\"127.0.0.1:{port}\"]\nauth_failure_delay_ms = 10\n[server]\nshutdown_grace_secs = 2\n{extra}"
        ),
    )
    .unwrap();
    path
}

/// Runs `tidegate serve` and kills it when dropped.
struct Server(Child);

impl Server {
    fn start(config: &Path, port: u16) -> Server {
        let child = tidegate()
            .args(["serve", "--config"])
            .arg(config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "server did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }
    fn send(&mut self, text: &str) {
        self.reader
            .get_mut()
            .write_all(format!("{text}\r\n").as_bytes())
            .unwrap();
    }
    fn command(&mut self, text: &str) -> String {
        self.send(text);
        self.line()
    }
    fn multiline(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let mut line = Vec::new();
            self.reader.read_until(b'\n', &mut line).unwrap();
            assert!(
                !line.is_empty(),
                "connection closed inside a multi-line reply"
            );
            if line == b".\r\n" {
                return body;
            }
            body.extend_from_slice(&line);
        }
    }
}

#[test]
fn user_commands_edit_the_users_file_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let mut add = tidegate();
    add.args(["user", "add", "--users"]).arg(&users).args([
        "Alice@Example.COM",
        "--tohost",
        "10.0.0.2",
        "--field",
        "quota=1000",
    ]);
    let out = run_with_stdin(add, "s3cret\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(text.contains("{ARGON2ID}$argon2id$"), "{text}");
    assert!(
        text.contains("tohost=10.0.0.2") && text.contains("quota=1000"),
        "{text}"
    );
    assert!(!text.contains("s3cret"));

    let mut again = tidegate();
    again
        .args(["user", "add", "--users"])
        .arg(&users)
        .arg("alice@example.com");
    assert!(
        !run_with_stdin(again, "x\n").status.success(),
        "duplicate add must fail"
    );

    let list = tidegate()
        .args(["user", "list", "--users"])
        .arg(&users)
        .output()
        .unwrap();
    let listed = String::from_utf8(list.stdout).unwrap();
    assert!(
        listed.contains("@example.com") && listed.contains("tohost=10.0.0.2"),
        "{listed}"
    );
    assert!(!listed.contains("ARGON2ID"), "list must not print hashes");

    let del = tidegate()
        .args(["user", "del", "--users"])
        .arg(&users)
        .arg("alice@example.com")
        .output()
        .unwrap();
    assert!(del.status.success());
    let list = tidegate()
        .args(["user", "list", "--users"])
        .arg(&users)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(list.stdout).unwrap().trim(), "");
}

#[test]
fn check_config_prints_defaults_and_names_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, "");
    let out = tidegate()
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("max_connections = 10000"), "{printed}");
    assert!(
        printed.contains("plaintext_auth") || printed.contains("[pop3]"),
        "{printed}"
    );

    std::fs::write(&config, "[pop3]\nlisten = []\nlisen = 1\n").unwrap();
    let out = tidegate()
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));
}

#[test]
fn deliver_then_retrieve_over_pop3_then_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    std::fs::write(dir.path().join("users"), "bob@test.example {PLAIN}pw\n").unwrap();

    let mut deliver = tidegate();
    deliver
        .args(["deliver", "--config"])
        .arg(&config)
        .arg("bob@test.example");
    let out = run_with_stdin(deliver, "Subject: hi\n\n.leading dot\nbody\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut nobody = tidegate();
    nobody
        .args(["deliver", "--config"])
        .arg(&config)
        .arg("nobody@test.example");
    let out = run_with_stdin(nobody, "x\n");
    assert_eq!(
        out.status.code(),
        Some(67),
        "EX_NOUSER for an unknown recipient"
    );

    let mut server = Server::start(&config, port);
    let mut client = Client::connect(port);
    assert!(client.line().starts_with("+OK test.example POP3 ready"));
    assert_eq!(client.command("USER bob@test.example"), "+OK\r\n");
    assert!(
        client
            .command("PASS pw")
            .starts_with("+OK Logged in, 1 messages")
    );
    assert!(client.command("RETR 1").starts_with("+OK 35 octets"));
    assert_eq!(
        client.multiline(),
        b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n"
    );

    // SIGTERM: the open session may finish; the server exits once it is done.
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "must stop accepting"
    );
    assert!(client.command("DELE 1").starts_with("+OK"));
    assert!(client.command("QUIT").starts_with("+OK"));
    let status = server.0.wait().unwrap();
    assert!(status.success(), "graceful stop exits 0, got {status:?}");
    let mut stderr = String::new();
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("signal"), "{stderr}");
    let new_dir = dir.path().join("mail/test.example/bob/new");
    let cur_dir = dir.path().join("mail/test.example/bob/cur");
    let remaining =
        std::fs::read_dir(new_dir).unwrap().count() + std::fs::read_dir(cur_dir).unwrap().count();
    assert_eq!(remaining, 0, "DELE + QUIT removed the message");
}
