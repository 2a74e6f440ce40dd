//! `tidegate demo`: a whole proxied cluster on loopback, with demo users and mail.
//!
//! Four nodes run in this one process, each from its own config file in the demo
//! directory (so each can also be started alone with `tidegate serve --config`):
//!
//! * `authd.toml`: the user database on 127.0.0.1, served to the other nodes over the
//!   authd protocol with a shared secret (`authd.secret`);
//! * `front.toml`: the front-end on 127.0.0.1 (POP3, POP3S, submission, IMAP) that
//!   routes every user to a back-end, connecting from 127.0.0.5 and passing the client
//!   address in a PROXY v2 header;
//! * `back1.toml` on 127.0.0.2 and `back2.toml` on 127.0.0.3: complete mail servers
//!   (POP3, IMAP, SMTP, submission) that trust only 127.0.0.5 to send PROXY headers.
//!
//! alice lives on back-end 1 (`tohost=127.0.0.2`), bob on back-end 2, and carol has no
//! `tohost`, so the front-end's `default_host` (back-end 1) serves her. The back-ends
//! share one maildir root, the shared-drive model (design.md §1), so mail delivered by
//! any node is where its owner's back-end reads it. The first run creates the users
//! file and a few messages; later runs reuse them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tidegate_core::Account;
use tidegate_store::maildir::MaildirStore;
use tidegate_store::{password, users};

use crate::config::Config;
use crate::wiring::{self, Bound, Prepared};

const PASSWORD: &str = "tidegate-demo";
const FRONT: &str = "127.0.0.1";
const BACK1: &str = "127.0.0.2";
const BACK2: &str = "127.0.0.3";
/// The front-end's source address towards the back-ends: the one peer they trust.
const SOURCE: &str = "127.0.0.5";
/// Demo users and their `tohost` (`None`: served by the default back-end).
const USERS: [(&str, Option<&str>); 3] = [
    ("alice@demo.test", Some(BACK1)),
    ("bob@demo.test", Some(BACK2)),
    ("carol@demo.test", None),
];

/// The ports every node uses, on its own address.
struct Ports {
    pop3: u16,
    pop3s: u16,
    smtp: u16,
    submission: u16,
    imap: u16,
    authd: u16,
    /// The back-ends' LMTP port: inbound mail the front-end relays to them.
    lmtp: u16,
}

impl Ports {
    fn from(first: u16) -> Result<Ports, String> {
        first.checked_add(6).ok_or("--port must be below 65530")?;
        Ok(Ports {
            pop3: first,
            pop3s: first + 1,
            smtp: first + 2,
            submission: first + 3,
            imap: first + 4,
            authd: first + 5,
            lmtp: first + 6,
        })
    }
}

/// Creates (first run) and serves the demo cluster until Ctrl-C.
pub fn run(dir: &Path, port: u16) -> Result<(), String> {
    let ports = Ports::from(port)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    ensure_secret(&dir.join("authd.secret"))?;
    let configs = [
        ("authd", write(dir, "authd.toml", &authd_config(&ports))?),
        (
            "back1",
            write(dir, "back1.toml", &backend_config("back1", BACK1, &ports))?,
        ),
        (
            "back2",
            write(dir, "back2.toml", &backend_config("back2", BACK2, &ports))?,
        ),
        ("front", write(dir, "front.toml", &frontend_config(&ports))?),
    ];
    let mut nodes = Vec::new();
    for (name, path) in &configs {
        let config = Config::load(path)?;
        if *name == "authd" && !config.users.file.exists() {
            populate(&config)?;
        }
        let prepared = wiring::prepare(&config, Some(path)).map_err(|e| {
            format!(
                "{name}: {e}\n(another program may use the port: try `tidegate demo --port 21110`)"
            )
        })?;
        nodes.push((*name, prepared));
    }
    print_banner(dir, &nodes);
    let shutdown = tidegate_store::Shutdown::new();
    crate::signals::install(shutdown.clone())?;
    let mut threads = Vec::new();
    for (name, prepared) in nodes {
        let shutdown = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name(format!("demo-{name}"))
            .spawn(move || (name, wiring::run(prepared, shutdown)))
            .map_err(|e| e.to_string())?;
        threads.push(thread);
    }
    let mut failed = None;
    for thread in threads {
        match thread.join() {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(e))) => {
                // One node failing stops the demo: the others would be half a cluster.
                shutdown.trigger();
                failed = Some(format!("{name}: {e}"));
            }
            Err(_) => failed = Some("a node thread panicked".into()),
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    println!("demo stopped; its data stays in {}", dir.display());
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// A random shared secret for the demo's authd, made on the first run (mode 0600).
fn ensure_secret(path: &Path) -> Result<(), String> {
    if path.exists() {
        return Ok(());
    }
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("random secret: {e}"))?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(file, "{secret}").map_err(|e| format!("{}: {e}", path.display()))
}

/// The `[users]` section of a node that looks users up in the demo's authd.
fn authd_users(p: &Ports) -> String {
    format!(
        "[users]
backend = \"authd\"
authd = \"{FRONT}:{authd}\"
authd_secret_file = \"authd.secret\"
",
        authd = p.authd
    )
}

fn authd_config(p: &Ports) -> String {
    format!(
        "# Written by `tidegate demo`: the user database, served to the other nodes.\n\
         # Run alone with `tidegate serve --config authd.toml`.\n\
         hostname = \"authd.demo.test\"\n\n\
         [storage]\nmailbox_path = \"mail\"\nworkarea = \"authd-work\"\n\n\
         [users]\nfile = \"users\"          # edit with `tidegate user ... --users users`\n\n\
         [authd]\nlisten = \"{FRONT}:{authd}\"\nsecret_file = \"authd.secret\"\n\n\
         [server]\nallow_root = true       # a demo runs as whoever starts it; a real server sets user\nthreads = 1\nshutdown_grace_secs = 2\n",
        authd = p.authd
    )
}

fn backend_config(name: &str, ip: &str, p: &Ports) -> String {
    format!(
        "# Written by `tidegate demo`: back-end {name}. Run alone with\n\
         # `tidegate serve --config {name}.toml`.\n\
         hostname = \"{name}.demo.test\"\n\n\
         [storage]\nmailbox_path = \"mail\"      # shared by both back-ends\nworkarea = \"{name}-work\"\n\n\
         {users}\n\
         [pop3]\nlisten = [\"{ip}:{pop3}\"]\nauth_failure_delay_ms = 500\n\n\
         [smtp]\nlisten = [\"{ip}:{smtp}\"]\nsubmission = [\"{ip}:{submission}\"]\nauth_failure_delay_ms = 500\n\n\
         [imap]\nlisten = [\"{ip}:{imap}\"]\nauth_failure_delay_ms = 500\n\n\
         # Inbound mail the front-end relays here (from its trusted source address).\n\
         [lmtp]\nlisten = [\"{ip}:{lmtp}\"]\n\n\
         # Only the front-end's source address may send PROXY headers; everyone else is\n\
         # served directly.\n\
         [trust]\nnetworks = [\"{SOURCE}/32\"]\nproxy_protocol = true\n\n\
         [server]\nallow_root = true       # a demo runs as whoever starts it; a real server sets user\nthreads = 1\nshutdown_grace_secs = 2\n",
        pop3 = p.pop3,
        smtp = p.smtp,
        submission = p.submission,
        imap = p.imap,
        lmtp = p.lmtp,
        users = authd_users(p),
    )
}

fn frontend_config(p: &Ports) -> String {
    format!(
        "# Written by `tidegate demo`: the front-end. Run alone with\n\
         # `tidegate serve --config front.toml`.\n\
         hostname = \"front.demo.test\"\n\n\
         [storage]\nmailbox_path = \"mail\"\nworkarea = \"front-work\"\n\n\
         {users}\n\
         [pop3]\nlisten = [\"{FRONT}:{pop3}\"]\nlisten_tls = [\"{FRONT}:{pop3s}\"]\nauth_failure_delay_ms = 500\n\n\
         [smtp]\nlisten = [\"{FRONT}:{smtp}\"]\nsubmission = [\"{FRONT}:{submission}\"]\nauth_failure_delay_ms = 500\n\n\
         [imap]\nlisten = [\"{FRONT}:{imap}\"]\n\n\
         [proxy]\ndefault_host = \"{BACK1}\"        # users without tohost\n\
         backend_ports = {{ pop3 = {pop3}, submission = {submission}, imap = {imap}, lmtp = {lmtp} }}\n\
         client_address = \"proxy-v2\"\nsource_addresses = [\"{SOURCE}\"]\n\n\
         [server]\nallow_root = true       # a demo runs as whoever starts it; a real server sets user\nthreads = 1\nshutdown_grace_secs = 2\n",
        pop3 = p.pop3,
        pop3s = p.pop3s,
        smtp = p.smtp,
        submission = p.submission,
        imap = p.imap,
        lmtp = p.lmtp,
        users = authd_users(p),
    )
}

fn populate(config: &Config) -> Result<(), String> {
    let hash = password::hash_argon2id(PASSWORD.as_bytes());
    for (user, tohost) in USERS {
        let mut fields = BTreeMap::new();
        if let Some(host) = tohost {
            fields.insert("tohost".to_owned(), host.to_owned());
        }
        users::add_user(&config.users.file, user, &hash, &fields).map_err(|e| e.to_string())?;
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
            "You read this through the front-end, which sent you to back-end 1.\n",
        ),
        (
            "alice@demo.test",
            "Dot-stuffing check",
            "The next line starts with a dot:\n.like this one\n..and this one\n",
        ),
        (
            "bob@demo.test",
            "Hello Bob",
            "Your account has tohost=127.0.0.3: back-end 2 keeps your mail.\n",
        ),
        (
            "carol@demo.test",
            "Hello Carol",
            "You have no tohost: the front-end's default_host (back-end 1) serves you.\n",
        ),
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

fn find<'a>(nodes: &'a [(&str, Prepared)], node: &str, scheme: &str) -> Option<&'a Bound> {
    nodes
        .iter()
        .filter(|(name, _)| *name == node)
        .flat_map(|(_, p)| p.bound.iter())
        .find(|b| b.scheme == scheme)
}

fn print_banner(dir: &Path, nodes: &[(&str, Prepared)]) {
    println!(
        "tidegate demo: a proxied cluster ({} runtime); data and configs in {}",
        crate::runtime::NAME,
        dir.display()
    );
    for (name, prepared) in nodes {
        let listeners: Vec<String> = prepared
            .bound
            .iter()
            .map(|b| format!("{}://{}", b.scheme, b.addr))
            .collect();
        println!("  {name:<6} {}", listeners.join("  "));
    }
    println!("\nusers (password {PASSWORD}):");
    for (user, tohost) in USERS {
        match tohost {
            Some(host) => println!("  {user:<16} tohost={host}"),
            None => println!("  {user:<16} no tohost: served by default_host {BACK1}"),
        }
    }
    let user = USERS[0].0;
    println!("\nTry, in another terminal (everything goes through the front-end):");
    if let Some(b) = find(nodes, "front", "pop3") {
        let addr = b.addr;
        for (who, _) in USERS {
            println!("  curl pop3://{addr}/1 -u {who}:{PASSWORD}");
        }
        println!("  curl -k --ssl-reqd pop3://{addr}/ -u {user}:{PASSWORD}   # STLS first");
        println!(
            "  python3 -c 'import poplib; p=poplib.POP3(\"{}\",{}); p.user(\"bob@demo.test\"); p.pass_(\"{PASSWORD}\"); print(p.stat()); p.quit()'",
            addr.ip(),
            addr.port()
        );
    }
    if let Some(b) = find(nodes, "front", "pop3s") {
        println!(
            "  curl -k pop3s://{}/1 -u {user}:{PASSWORD}                # implicit TLS",
            b.addr
        );
    }
    if let Some(b) = find(nodes, "front", "imap") {
        println!(
            "  python3 -c 'import imaplib; c=imaplib.IMAP4(\"{}\",{}); c.login(\"carol@demo.test\",\"{PASSWORD}\"); print(c.select()); print(c.fetch(\"1\",\"(ENVELOPE)\")); print(c.list()); c.logout()'",
            b.addr.ip(),
            b.addr.port()
        );
    }
    if let Some(b) = find(nodes, "front", "submission") {
        println!(
            "  swaks --server {} -tls --auth PLAIN --auth-user {user} --auth-password {PASSWORD} --from {user} --to bob@demo.test",
            b.addr
        );
    }
    if let Some(b) = find(nodes, "front", "smtp") {
        println!(
            "  python3 -c 'import smtplib; s=smtplib.SMTP(\"{}\",{}); s.sendmail(\"friend@example.org\",[\"carol@demo.test\"],\"Subject: hi\\r\\n\\r\\nhello\\r\\n\"); s.quit()'",
            b.addr.ip(),
            b.addr.port()
        );
    }
    println!(
        "\nEvery node looks users up in the authd (edit users with `tidegate user ... --users\n\
         users` in the demo directory; the authd notices). The front-end logs each route;\n\
         the back-ends log each login with the real client address from the PROXY header.\n\
         The certificate is self-signed (hence -k). Ctrl-C stops the cluster.",
    );
}
