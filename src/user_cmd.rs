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

/// `tidegate user` sub-commands.
#[derive(Subcommand)]
pub enum UserAction {
    /// Add a user; the password is read from stdin.
    Add {
        /// The users file.
        #[arg(long)]
        users: PathBuf,
        /// The user's address (`local@domain`).
        address: String,
        /// The back-end that holds this user's mailbox (proxy mode).
        #[arg(long)]
        tohost: Option<String>,
        /// Any other field, `KEY=VALUE` (repeatable).
        #[arg(long = "field", value_name = "KEY=VALUE")]
        fields: Vec<String>,
    },
    /// Change a user's password (read from stdin).
    Passwd {
        /// The users file.
        #[arg(long)]
        users: PathBuf,
        /// The user's address.
        address: String,
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
}

/// Runs one `tidegate user` action.
pub fn run(action: UserAction) -> Result<(), String> {
    match action {
        UserAction::Add {
            users: path,
            address,
            tohost,
            fields,
        } => {
            let mut map = parse_fields(&fields)?;
            if let Some(host) = tohost {
                map.insert("tohost".into(), host);
            }
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
