//! `tidegate`: one binary for every role of the mail server (see docs/cli.md).

mod config;
mod demo;
mod logger;
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
    let prepared = wiring::prepare(&config)?;
    if let Some(user) = &config.server.user {
        wiring::drop_privileges(user)?;
    }
    let shutdown = tidegate_store::Shutdown::new();
    signals::install(shutdown.clone())?;
    wiring::run(prepared, shutdown)
}
