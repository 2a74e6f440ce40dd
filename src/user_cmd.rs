//! `tidegate user …` (edit a users file) and `tidegate deliver` (local delivery).

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use tidegate_core::Account;
use tidegate_store::maildir::MaildirStore;
use tidegate_store::{password, users};

use crate::config::Config;

/// Fields every user command that writes a user accepts.
#[derive(clap::Args)]
pub struct FieldArgs {
    /// The back-end that holds this user's mailbox (proxy mode): `tohost=HOST`.
    #[arg(long)]
    tohost: Option<String>,
    /// The mailbox size limit in bytes: `quota=BYTES`.
    #[arg(long, value_name = "BYTES")]
    quota: Option<u64>,
    /// The account exists and receives mail but may not log in: `nologin`.
    #[arg(long)]
    nologin: bool,
    /// Any other field, `KEY=VALUE` or a bare `KEY` (repeatable).
    #[arg(long = "field", value_name = "KEY=VALUE")]
    fields: Vec<String>,
}

impl FieldArgs {
    /// The fields to write.
    fn to_map(&self) -> Result<BTreeMap<String, String>, String> {
        let mut map = parse_fields(&self.fields)?;
        if let Some(host) = &self.tohost {
            map.insert("tohost".into(), host.clone());
        }
        if let Some(quota) = self.quota {
            map.insert("quota".into(), quota.to_string());
        }
        if self.nologin {
            map.insert("nologin".into(), String::new());
        }
        Ok(map)
    }
}

/// `tidegate user` sub-commands.
#[derive(Subcommand)]
pub enum UserAction {
    /// Add a user; the password is read from stdin and stored as argon2id.
    Add {
        /// The users file.
        #[arg(long)]
        users: PathBuf,
        /// The user's address (`local@domain`).
        address: String,
        #[command(flatten)]
        fields: FieldArgs,
    },
    /// Change a user's password (read from stdin, stored as argon2id).
    Passwd {
        /// The users file.
        #[arg(long)]
        users: PathBuf,
        /// The user's address.
        address: String,
    },
    /// Change a user's fields, keeping the password and the other fields.
    Set {
        /// The users file.
        #[arg(long)]
        users: PathBuf,
        /// The user's address.
        address: String,
        #[command(flatten)]
        fields: FieldArgs,
        /// Allow logins again (removes `nologin`).
        #[arg(long, conflicts_with = "nologin")]
        login: bool,
        /// Remove a field (repeatable).
        #[arg(long, value_name = "KEY")]
        unset: Vec<String>,
    },
    /// Remove a user (the mailbox is left on disk).
    Del {
        /// The users file.
        #[arg(long)]
        users: PathBuf,
        /// The user's address.
        address: String,
    },
    /// List the users, with their fields but not their passwords.
    List {
        /// The users file.
        #[arg(long)]
        users: PathBuf,
    },
    /// Import a Dovecot passwd-file (`user:{SCHEME}hash:uid:gid:gecos:home:shell:extra`),
    /// keeping the hashes; users already in the file are skipped. One atomic write.
    Import {
        /// The users file to add to (created if missing).
        #[arg(long)]
        users: PathBuf,
        /// The domain of names without `@`.
        #[arg(long)]
        domain: Option<String>,
        /// The passwd-file to read.
        passwd_file: PathBuf,
    },
}

/// Runs one `tidegate user` action.
pub fn run(action: UserAction) -> Result<(), String> {
    match action {
        UserAction::Add {
            users: path,
            address,
            fields,
        } => {
            let map = fields.to_map()?;
            let hash = password::hash_argon2id(&read_password()?);
            users::add_user(&path, &address, &hash, &map).map_err(|e| e.to_string())?;
            eprintln!("added {address}");
        }
        UserAction::Passwd {
            users: path,
            address,
        } => {
            let hash = password::hash_argon2id(&read_password()?);
            users::set_password(&path, &address, &hash).map_err(|e| e.to_string())?;
            eprintln!("password changed for {address}");
        }
        UserAction::Set {
            users: path,
            address,
            fields,
            login,
            mut unset,
        } => {
            let map = fields.to_map()?;
            if login {
                unset.push("nologin".into());
            }
            if map.is_empty() && unset.is_empty() {
                return Err("nothing to change: give --field, --tohost, --quota, --nologin, --login or --unset".into());
            }
            users::set_fields(&path, &address, &map, &unset).map_err(|e| e.to_string())?;
            eprintln!("changed {address}");
        }
        UserAction::Del {
            users: path,
            address,
        } => {
            users::delete_user(&path, &address).map_err(|e| e.to_string())?;
            eprintln!("deleted {address}");
        }
        UserAction::List { users: path } => {
            for user in users::list_users(&path).map_err(|e| e.to_string())? {
                let fields: Vec<String> = user
                    .fields
                    .iter()
                    .map(|(k, v)| {
                        if v.is_empty() {
                            k.clone()
                        } else {
                            format!("{k}={v}")
                        }
                    })
                    .collect();
                println!("{} {}", user.address, fields.join(" "));
            }
        }
        UserAction::Import {
            users: path,
            domain,
            passwd_file,
        } => {
            let text = std::fs::read_to_string(&passwd_file)
                .map_err(|e| format!("{}: {e}", passwd_file.display()))?;
            let imported = users::parse_passwd_file(&text, domain.as_deref());
            for line in &imported.report {
                eprintln!("{}: {line}", passwd_file.display());
            }
            let existing = users::add_users(&path, &imported.users).map_err(|e| e.to_string())?;
            for address in &existing {
                eprintln!("{address}: already in {}, skipped", path.display());
            }
            eprintln!(
                "imported {} users, {} already present, {} lines not imported",
                imported.users.len() - existing.len(),
                existing.len(),
                imported
                    .report
                    .iter()
                    .filter(|line| line.contains("skipped"))
                    .count()
            );
        }
    }
    Ok(())
}

fn parse_fields(fields: &[String]) -> Result<BTreeMap<String, String>, String> {
    fields
        .iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            None if !f.is_empty() => Ok((f.clone(), String::new())),
            _ => Err(format!("--field {f:?}: expected KEY=VALUE or KEY")),
        })
        .collect()
}

/// Reads one line from stdin without echo when stdin is a terminal.
fn read_password() -> Result<Vec<u8>, String> {
    let echo_guard = EchoOff::new();
    if echo_guard.is_some() {
        eprint!("password: ");
    }
    let mut line = Vec::new();
    std::io::stdin()
        .lock()
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("reading the password: {e}"))?;
    drop(echo_guard);
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    if line.is_empty() {
        return Err("empty password (give it on stdin)".into());
    }
    Ok(line)
}

/// Turns terminal echo off while alive.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: termios calls on stdin with a zeroed struct they fill in.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let mut term: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut term) != 0 {
                return None;
            }
            let saved = term;
            term.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &term);
            Some(EchoOff(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in new().
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
        eprintln!();
    }
}

/// sysexits(3) codes an MTA understands from a local delivery agent.
const EX_USAGE: u8 = 64;
const EX_NOUSER: u8 = 67;
const EX_TEMPFAIL: u8 = 75;
const EX_CONFIG: u8 = 78;

/// `tidegate deliver`: stdin into every recipient's inbox, all or nothing.
pub fn deliver(config_path: &Path, recipients: &[String]) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => return fail(EX_CONFIG, &e),
    };
    let table = match users::UsersFile::open(&config.users.file) {
        Ok(file) => file.current(),
        Err(e) => return fail(EX_TEMPFAIL, &e.to_string()),
    };
    let mut accounts = Vec::new();
    for rcpt in recipients {
        match table.lookup(rcpt) {
            Some(user) => accounts.push(Account(user.address.clone())),
            None => return fail(EX_NOUSER, &format!("{rcpt}: no such local user")),
        }
    }
    if accounts.is_empty() {
        return fail(EX_USAGE, "no recipients");
    }
    let store = MaildirStore::new(
        &config.storage.mailbox_path,
        config.storage.fsync,
        &config.hostname,
    );
    match store.deliver(&accounts, std::io::stdin().lock()) {
        Ok(name) => {
            log::info!("delivered {name} to {}", recipients.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => fail(EX_TEMPFAIL, &format!("delivery failed: {e}")),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("tidegate deliver: {message}");
    ExitCode::from(code)
}
