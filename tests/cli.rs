//! The `tidegate` binary as users run it: real processes, real files, real sockets.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Node, free_port, local, tidegate};

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

fn write_config(dir: &Path, port: u16, extra: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "hostname = \"test.example\"\n[storage]\nmailbox_path = \"mail\"\nworkarea = \"work\"\n[users]\nfile = \"users\"\n[pop3]\nlisten = [\"127.0.0.1:{port}\"]\nauth_failure_delay_ms = 10\n[server]\nallow_root = true\nshutdown_grace_secs = 2\n{extra}"
        ),
    )
    .unwrap();
    path
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

    let mut server = Node::start(&config, local(port));
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
    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "must stop accepting"
    );
    assert!(client.command("DELE 1").starts_with("+OK"));
    assert!(client.command("QUIT").starts_with("+OK"));
    let (status, stderr) = server.wait();
    assert!(status.success(), "graceful stop exits 0, got {status:?}");
    assert!(stderr.contains("signal"), "{stderr}");
    let new_dir = dir.path().join("mail/test.example/bob/new");
    let cur_dir = dir.path().join("mail/test.example/bob/cur");
    let remaining =
        std::fs::read_dir(new_dir).unwrap().count() + std::fs::read_dir(cur_dir).unwrap().count();
    assert_eq!(remaining, 0, "DELE + QUIT removed the message");
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn user_set_and_passwd_change_one_user_and_keep_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "# keep me\nother@x.example {PLAIN}o # note\n").unwrap();
    let mut add = tidegate();
    add.args(["user", "add", "--users"]).arg(&users).args([
        "carol@x.example",
        "--quota",
        "5000",
        "--nologin",
        "--field",
        "plan=gold",
    ]);
    ok(&run_with_stdin(add, "first\n"));
    let line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("carol@"))
            .unwrap()
            .to_owned()
    };
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(
        line(&text).ends_with(" nologin plan=gold quota=5000"),
        "{text}"
    );
    let hash_before = line(&text).split(' ').nth(1).unwrap().to_owned();

    let set = tidegate()
        .args(["user", "set", "--users"])
        .arg(&users)
        .args(["CAROL@x.example", "--login", "--tohost", "10.0.0.9"])
        .args(["--unset", "plan", "--quota", "7000"])
        .output()
        .unwrap();
    ok(&set);
    let text = std::fs::read_to_string(&users).unwrap();
    assert_eq!(
        line(&text),
        format!("carol@x.example {hash_before} quota=7000 tohost=10.0.0.9")
    );
    assert!(text.starts_with("# keep me\nother@x.example {PLAIN}o # note\n"));

    let mut passwd = tidegate();
    passwd
        .args(["user", "passwd", "--users"])
        .arg(&users)
        .arg("carol@x.example");
    ok(&run_with_stdin(passwd, "second\n"));
    let text = std::fs::read_to_string(&users).unwrap();
    let new_hash = line(&text).split(' ').nth(1).unwrap().to_owned();
    assert_ne!(new_hash, hash_before);
    assert_eq!(
        tidegate_store::password::verify(&new_hash, b"second"),
        tidegate_store::password::Verification::Match
    );
    assert!(
        line(&text).ends_with(" quota=7000 tohost=10.0.0.9"),
        "fields kept"
    );

    let nothing = tidegate()
        .args(["user", "set", "--users"])
        .arg(&users)
        .arg("carol@x.example")
        .output()
        .unwrap();
    assert!(!nothing.status.success());
    let missing = tidegate()
        .args(["user", "set", "--users"])
        .arg(&users)
        .args(["nobody@x.example", "--nologin"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no user nobody@x.example"));
}

#[test]
fn import_a_dovecot_passwd_file_then_log_in_with_the_old_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    let users = dir.path().join("users");
    std::fs::write(&users, "kept@test.example {PLAIN}mine\n").unwrap();
    // Hashes of `Tr0ub4dor&3` made by `doveadm pw -s SHA512-CRYPT`, `htpasswd -nbB`
    // and `doveadm pw -s SSHA`.
    let passwd = dir.path().join("dovecot.passwd");
    std::fs::write(
        &passwd,
        "# exported from dovecot\n\
         ann@test.example:{SHA512-CRYPT}$6$CcQf.8l/6DPKv2xE$CYe2GIkXQXQFCVAO3C8/xCq3pd7yjcaynbTa25qCXiyF0xCzCSqd.g2nwcd3s13jjx8WIs.2kQTAhmUURh3fS/:1000:1000::/home/ann::userdb_quota_rule=*:bytes=1000000\n\
         ben:$2y$05$/AlNH9Cq43mBUlpVOgZImu8cY.7rV3LPCIYAPumf4lYat7.MjEPQe::::::proxy host=10.1.1.1\n\
         cy@test.example:{SSHA}plmn6UMApu7E0Wve+5OLm6r2GXfyHERm::::::nologin\n\
         kept@test.example:{PLAIN}theirs\n\
         bad@test.example:{MD5}x\n",
    )
    .unwrap();
    let out = tidegate()
        .args(["user", "import", "--users"])
        .arg(&users)
        .args(["--domain", "test.example"])
        .arg(&passwd)
        .output()
        .unwrap();
    let report = ok(&out);
    assert!(
        report.contains("line 6: skipped: bad@test.example"),
        "{report}"
    );
    assert!(report.contains("kept@test.example: already in"), "{report}");
    assert!(
        report.contains("imported 3 users, 1 already present, 1 lines not imported"),
        "{report}"
    );
    let text = std::fs::read_to_string(&users).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], "kept@test.example {PLAIN}mine");
    assert!(
        lines[1].starts_with("ann@test.example {SHA512-CRYPT}$6$")
            && lines[1].ends_with(" quota=1000000")
    );
    assert!(
        lines[2].starts_with("ben@test.example {CRYPT}$2y$05$")
            && lines[2].ends_with(" tohost=10.1.1.1")
    );
    assert!(lines[3].starts_with("cy@test.example {SSHA}") && lines[3].ends_with(" nologin"));
    assert!(!dir.path().join(".users.tmp").exists());

    let _server = Node::start(&config, local(port));
    for (user, password, answer) in [
        ("ann@test.example", "Tr0ub4dor&3", "+OK Logged in"),
        ("ben@test.example", "Tr0ub4dor&3", "+OK Logged in"),
        ("kept@test.example", "mine", "+OK Logged in"),
        ("cy@test.example", "Tr0ub4dor&3", "-ERR"),
        ("ann@test.example", "wrong", "-ERR"),
    ] {
        let mut client = Client::connect(port);
        assert!(client.line().starts_with("+OK"));
        assert_eq!(client.command(&format!("USER {user}")), "+OK\r\n");
        let reply = client.command(&format!("PASS {password}"));
        assert!(reply.starts_with(answer), "{user}: {reply}");
    }
}
