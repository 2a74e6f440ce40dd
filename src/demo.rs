//! `tidegate demo`: a ready-to-use server on loopback with demo users and mail.
//!
//! The first run creates `<dir>/config.toml`, a users file with two users and a few
//! messages; later runs reuse them (mail deleted over POP3 stays deleted).

use std::collections::BTreeMap;
use std::path::Path;

use tidegate_core::Account;
use tidegate_store::maildir::MaildirStore;
use tidegate_store::{password, users};

use crate::config::Config;
use crate::wiring;

const PASSWORD: &str = "tidegate-demo";
const USERS: [&str; 2] = ["alice@demo.test", "bob@demo.test"];

/// Creates (first run) and serves the demo until Ctrl-C.
pub fn run(dir: &Path, port: u16) -> Result<(), String> {
    let last = port.checked_add(3).ok_or("--port must be below 65533")?;
    let (tls_port, smtp_port, submission_port) = (port + 1, port + 2, last);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config_path = dir.join("config.toml");
    let text = format!(
        "# Written by `tidegate demo`.\nhostname = \"demo.tidegate.test\"\n\n[storage]\nmailbox_path = \"mail\"\nworkarea = \"work\"\n\n[users]\nfile = \"users\"\n\n[pop3]\nlisten = [\"127.0.0.1:{port}\"]\nlisten_tls = [\"127.0.0.1:{tls_port}\"]\nauth_failure_delay_ms = 500\n\n[smtp]\nlisten = [\"127.0.0.1:{smtp_port}\"]\nsubmission = [\"127.0.0.1:{submission_port}\"]\nauth_failure_delay_ms = 500\n\n[server]\nthreads = 0\n"
    );
    std::fs::write(&config_path, text).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let config = Config::load(&config_path)?;
    if !config.users.file.exists() {
        populate(&config)?;
    }
    let prepared = wiring::prepare(&config, Some(&config_path)).map_err(|e| {
        format!("{e}\n(another program may use the port: try `tidegate demo --port 21110`)")
    })?;
    print_banner(dir, &prepared.bound);
    let shutdown = tidegate_store::Shutdown::new();
    crate::signals::install(shutdown.clone())?;
    wiring::run(prepared, shutdown)?;
    println!("demo stopped; its data stays in {}", dir.display());
    Ok(())
}

fn populate(config: &Config) -> Result<(), String> {
    let hash = password::hash_argon2id(PASSWORD.as_bytes());
    for user in USERS {
        users::add_user(&config.users.file, user, &hash, &BTreeMap::new())
            .map_err(|e| e.to_string())?;
    }
    let store = MaildirStore::new(
        &config.storage.mailbox_path,
        config.storage.fsync,
        &config.hostname,
    );
    let messages = [
        (
            "alice@demo.test",
            "Welcome to tidegate",
            "This message was delivered by `tidegate demo`.\n\nRead it with curl or Python's poplib.\n",
        ),
        (
            "alice@demo.test",
            "Dot-stuffing check",
            "The next line starts with a dot:\n.like this one\n..and this one\n",
        ),
        ("alice@demo.test", "Lunch?", "Noon at the usual place?\n"),
        ("bob@demo.test", "Hello Bob", "Bob's own mailbox.\n"),
    ];
    for (to, subject, body) in messages {
        let message = format!(
            "From: tidegate demo <demo@demo.test>\nTo: <{to}>\nSubject: {subject}\nDate: Sun, 29 Nov 2026 08:00:00 +0000\nMessage-ID: <{}.{subject_len}@demo.test>\n\n{body}",
            to.replace('@', "."),
            subject_len = subject.len()
        );
        store
            .deliver(&[Account(to.to_owned())], message.as_bytes())
            .map_err(|e| format!("demo delivery: {e}"))?;
    }
    Ok(())
}

fn print_banner(dir: &Path, bound: &[wiring::Bound]) {
    let plain = bound.iter().find(|b| b.scheme == "pop3").map(|b| b.addr);
    let tls = bound.iter().find(|b| b.scheme == "pop3s").map(|b| b.addr);
    let user = USERS[0];
    println!(
        "tidegate demo is running ({} runtime); data in {}",
        crate::runtime::NAME,
        dir.display()
    );
    for b in bound {
        println!("  {:<6} {}", b.scheme, b.addr);
    }
    println!("users: {} - password: {PASSWORD}\n", USERS.join(", "));
    println!("Try, in another terminal:");
    if let Some(addr) = plain {
        println!("  curl pop3://{addr}/ -u {user}:{PASSWORD}                  # list messages");
        println!("  curl pop3://{addr}/1 -u {user}:{PASSWORD}                 # read message 1");
        println!("  curl -k --ssl-reqd pop3://{addr}/2 -u {user}:{PASSWORD}   # STLS first");
        println!(
            "  python3 -c 'import poplib,ssl; p=poplib.POP3(\"{}\",{}); p.stls(ssl._create_unverified_context()); p.user(\"{user}\"); p.pass_(\"{PASSWORD}\"); print(p.stat()); print(b\"\\n\".join(p.retr(1)[1]).decode()); p.quit()'",
            addr.ip(),
            addr.port()
        );
    }
    if let Some(addr) = tls {
        println!("  curl -k pop3s://{addr}/1 -u {user}:{PASSWORD}             # implicit TLS");
    }
    if let Some(addr) = bound.iter().find(|b| b.scheme == "smtp").map(|b| b.addr) {
        println!("\nSend mail to a demo user, then read it back with the POP3 commands above:");
        println!(
            "  python3 -c 'import smtplib; s=smtplib.SMTP(\"{}\",{}); s.sendmail(\"friend@example.org\",[\"{user}\"],\"Subject: hello\\r\\n\\r\\nSent over SMTP.\\r\\n\"); s.quit()'",
            addr.ip(),
            addr.port()
        );
        println!("  swaks --server {addr} --from friend@example.org --to {user}");
    }
    if let Some(addr) = bound
        .iter()
        .find(|b| b.scheme == "submission")
        .map(|b| b.addr)
    {
        println!(
            "  swaks --server {addr} -tls --auth PLAIN --auth-user {user} --auth-password {PASSWORD} --from {user} --to bob@demo.test   # submission"
        );
    }
    println!("\nThe certificate is self-signed (hence -k). Ctrl-C stops the server.");
}
