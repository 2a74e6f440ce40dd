//! `tidegate`: one binary for every role of the mail server (see docs/cli.md).

mod config;
mod control;
mod demo;
mod dkim_cmd;
mod logger;
mod metrics;
mod privilege;
mod runtime;
mod signals;
mod user_cmd;
mod wiring;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// A scalable SMTP/POP3 (and soon IMAP) mail server on maildir.
#[derive(Parser)]
#[command(name = "tidegate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the listeners the config names, until SIGINT/SIGTERM.
    Serve {
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file and print the effective config.
    CheckConfig {
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Edit a users file (add, passwd, set, del, list, import a Dovecot passwd-file);
    /// passwords are read from stdin and stored as argon2id.
    User {
        #[command(subcommand)]
        action: user_cmd::UserAction,
    },
    /// Deliver a message from stdin into a local user's maildir (like an LDA).
    Deliver {
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Recipient addresses.
        #[arg(required = true)]
        recipients: Vec<String>,
    },
    /// Start a ready-to-use server with demo users and mail, and print client commands.
    Demo {
        /// Directory for the demo's config, users and mail (default: ./demo-data).
        #[arg(long, default_value = "demo-data")]
        dir: PathBuf,
        /// First port to use: POP3 on PORT, POP3S on PORT+1, SMTP on PORT+2,
        /// submission on PORT+3.
        #[arg(long, default_value_t = 11110)]
        port: u16,
    },
    /// DKIM signing keys for outbound mail (`dkim generate`).
    Dkim {
        #[command(subcommand)]
        action: dkim_cmd::DkimAction,
    },
    /// Talk to a running server through its control socket.
    Ctl {
        /// What to do.
        #[command(subcommand)]
        action: CtlAction,
        /// The running server's config file (it names the control socket).
        #[arg(long, global = true, default_value = "tidegate.toml")]
        config: PathBuf,
    },
}

/// `tidegate ctl` commands.
#[derive(Subcommand)]
enum CtlAction {
    /// Re-read the config file and the user database without dropping connections
    /// (like SIGHUP). A config that fails validation is refused and the old one stays.
    Reload,
    /// Print the version, uptime, listeners, outbound queue size, config generation
    /// and open sessions per protocol and per listener.
    Status,
    /// List open sessions, one a line: account (`-` before login), protocol, listener
    /// address, client address, seconds since login (or connect).
    Who {
        /// Only this account's sessions.
        user: Option<String>,
    },
    /// Close every session of this account on this server at once (after changing
    /// its `tohost`, this moves a user to another back-end).
    Kick {
        /// The account (as `ctl who` shows it).
        user: String,
    },
    /// The outbound queue (`[relay]`).
    Queue {
        /// What to do with it.
        #[command(subcommand)]
        action: QueueAction,
    },
}

/// `tidegate ctl queue` commands.
#[derive(Subcommand)]
enum QueueAction {
    /// Every queued message: id, age, sender, next attempt, each recipient's state.
    List,
    /// Make every queued message due now.
    Flush,
    /// Remove one message from the queue without delivering it.
    Delete {
        /// The queue id (from `ctl queue list`).
        id: String,
    },
}

fn main() -> ExitCode {
    logger::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { config } => Config::load(&config).map(|c| print!("{}", c.to_toml())),
        Command::User { action } => user_cmd::run(action),
        Command::Deliver { config, recipients } => return user_cmd::deliver(&config, &recipients),
        Command::Demo { dir, port } => demo::run(&dir, port),
        Command::Ctl { action, config } => ctl(&config, action),
        Command::Dkim { action } => dkim_cmd::run(action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tidegate: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &std::path::Path) -> Result<(), String> {
    let config = Config::load(path)?;
    // Decided before anything is bound, so a misspelt account fails early.
    let plan = privilege::plan(
        privilege::effective_uid(),
        config.server.user.as_deref(),
        config.server.group.as_deref(),
        config.server.allow_root,
    )?;
    privilege::restrict_umask();
    let identity = match &plan {
        privilege::Plan::DropTo(identity) => {
            prepare_dirs_for(identity, &config)?;
            Some(identity)
        }
        privilege::Plan::StayRoot => {
            log::warn!("serving as root ([server] allow_root = true): set [server] user instead");
            None
        }
        privilege::Plan::Unprivileged => None,
    };
    let prepared = wiring::prepare(&config, Some(path))?;
    tidegate_store::metrics::global().start(std::time::Instant::now());
    if let Some(section) = &config.metrics {
        metrics::serve(section.listen)?;
    }
    let socket = config.control_socket();
    control::serve(
        &socket,
        prepared.reloader.clone(),
        control::StatusInfo {
            started: std::time::Instant::now(),
            queue: prepared.queue(),
            sessions: prepared.sessions.clone(),
        },
    )?;
    if let Some(identity) = identity {
        identity.give(&socket)?;
        // A certificate generated while root must stay readable for reloads.
        let generated = tidegate_store::tls::self_signed_cert_path(&config.storage.workarea);
        if let Some(dir) = generated.parent().filter(|d| d.is_dir()) {
            for path in [dir.to_path_buf(), dir.join("cert.pem"), dir.join("key.pem")] {
                if path.exists() {
                    identity.give(&path)?;
                }
            }
        }
        identity.drop_to()?;
        log::info!(
            "dropped root: running as user {:?} (uid {}, gid {})",
            identity.user,
            identity.uid,
            identity.gid
        );
        privilege::check_writable(&config.storage.mailbox_path, "mailbox_path", &identity.user)?;
        privilege::check_writable(&config.storage.workarea, "workarea", &identity.user)?;
        if config.users.backend == "file" && std::fs::File::open(&config.users.file).is_err() {
            log::warn!(
                "users file {} is not readable by user {:?}: the running server keeps the \
                 copy it read as root, but reloads will fail",
                config.users.file.display(),
                identity.user
            );
        }
    }
    if config.control.watch {
        let files = vec![path.to_path_buf(), config.users.file.clone()];
        control::watch(
            files,
            prepared.reloader.clone(),
            std::time::Duration::from_secs(2),
        );
    }
    let shutdown = tidegate_store::Shutdown::new();
    signals::install(shutdown.clone())?;
    signals::install_reload(prepared.reloader.clone())?;
    let result = wiring::run(prepared, shutdown);
    let _ = std::fs::remove_file(&socket);
    result
}

/// Creates the mailbox root and the workarea when missing and hands the new ones to the
/// account root is dropped to; existing directories keep their owner (a wrong one is
/// reported once the drop is done).
fn prepare_dirs_for(identity: &privilege::Identity, config: &Config) -> Result<(), String> {
    for dir in [&config.storage.mailbox_path, &config.storage.workarea] {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            identity.give(dir)?;
        }
    }
    Ok(())
}

/// An account name fit for one word of a control command.
fn checked_account(user: &str) -> Result<&str, String> {
    if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("not an account name: {user:?}"));
    }
    Ok(user)
}

fn ctl(config: &std::path::Path, action: CtlAction) -> Result<(), String> {
    let config = Config::load(config)?;
    let command = match action {
        CtlAction::Reload => "reload".to_owned(),
        CtlAction::Status => "status".to_owned(),
        CtlAction::Who { user: None } => "who".to_owned(),
        CtlAction::Who { user: Some(user) } => format!("who {}", checked_account(&user)?),
        CtlAction::Kick { user } => format!("kick {}", checked_account(&user)?),
        CtlAction::Queue {
            action: QueueAction::List,
        } => "queue list".to_owned(),
        CtlAction::Queue {
            action: QueueAction::Flush,
        } => "queue flush".to_owned(),
        CtlAction::Queue {
            action: QueueAction::Delete { id },
        } => {
            if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("not a queue id: {id:?}"));
            }
            format!("queue delete {id}")
        }
    };
    let answer = control::send(&config.control_socket(), &command)?;
    print!("{answer}");
    Ok(())
}
