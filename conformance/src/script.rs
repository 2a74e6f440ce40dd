//! The script format and its parser.
//!
//! One line per step; blank lines and lines starting with `#` are ignored. The
//! directory a script is in (`scripts/pop3/`, `scripts/smtp/`, `scripts/submission/`,
//! `scripts/lmtp/`, `scripts/imap/`) chooses the listener its connections go to; `@protocol` overrides it.
//!
//! | Line | Meaning |
//! |---|---|
//! | `C: text` | the client sends `text` and CRLF (escapes: see [`crate::pattern`]) |
//! | `C<: text` | the client sends `text` without CRLF |
//! | `S: pattern` | the server's next line matches `pattern` (`*` is a wildcard; `S: .` is the end of a multi-line reply) |
//! | `@protocol NAME` | `pop3`, `smtp`, `submission`, `lmtp` or `imap`: the default listener (before the first exchange) |
//! | `@config key=value` | listener settings, before the first exchange (see [`ScriptConfig`]) |
//! | `@user NAME PASSWORD [nologin]` | an account in the store; for SMTP a `local@domain` name, whose domain becomes local |
//! | `@quota USER BYTES` | USER's mailbox limit (RCPT answers `552 5.2.2` when full; a commit over it fails) |
//! | `@message USER TEXT` | a message (escaped text) appended to USER's inbox |
//! | `@big-message USER SIZE` | a generated message of about SIZE bytes (`200KiB`), with dot-led lines |
//! | `@expect-message USER N` | the next lines are USER's N-th scripted message, dot-stuffed, then `.` |
//! | `@expect-retr USER N` | the next lines are USER's N-th message as stored now, dot-stuffed, then `.` |
//! | `@expect-stored USER N PATTERN` | USER's N-th stored message matches PATTERN (escapes, `*`) |
//! | `@expect-stored-big USER N SIZE` | USER's N-th stored message is trace fields, then exactly what `@send-data SIZE` sent |
//! | `@expect-mailbox USER COUNT` | USER's inbox holds COUNT messages |
//! | `@expect-aborted COUNT` | COUNT deliveries were aborted so far and none is open (shells: waits for it) |
//! | `@store-fail KIND` | the next `recipient`, `begin`, `append` or `commit` store request fails temporarily |
//! | `@connect [raw] [PROTOCOL]` | close the current connection and open a new one (`raw`: no implicit TLS handshake; PROTOCOL: another listener, e.g. `pop3` to read what SMTP delivered) |
//! | `@starttls` | the client starts its TLS handshake now (after `+OK` to STLS, `220` to STARTTLS) |
//! | `@eof` | the client closes its sending side (no QUIT) |
//! | `@tick 601s` | advance virtual time (core driver only; needs `@skip-shell`) |
//! | `@expect close` | the server closes the connection with nothing more; `@expect close any` allows non-line bytes first (a TLS alert) |
//! | `@expect quiet` | the server sends nothing now (core: no time passes; shells: nothing within 100 ms) |
//! | `@send-bytes N BYTE` | the client sends N copies of BYTE (a character or `\xHH`) |
//! | `@send-data SIZE` | the client sends a generated message of about SIZE bytes, dot-stuffed (then `C: .`) |
//! | `@vanish [USER] N` | message N of USER's inbox (default: the last user who logged in) disappears from the store |
//! | `@skip-shell` | shell drivers do not run this script |
//! | `@no-split` | the core driver delivers each write whole only (the split itself would change the meaning, e.g. plaintext pipelined behind STLS) |
//!
//! The first exchange opens a connection if none is open. After the last step the
//! connection is closed and no delivery may be left open in the store.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::parse_config;
pub use crate::config::{PlaintextSetting, Protocol, ScriptConfig};
pub use crate::step::{FailKind, StepKind, parse_duration, parse_size};

/// A step with the script line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based line number in the script file.
    pub line: usize,
    /// What to do.
    pub kind: StepKind,
}

/// A parsed script file.
#[derive(Debug, Clone)]
pub struct Script {
    /// File stem, e.g. `user-pass`.
    pub name: String,
    /// Where it was read from.
    pub path: PathBuf,
    /// Listener settings.
    pub config: ScriptConfig,
    /// Marked `@skip-shell`.
    pub skip_shell: bool,
    /// Marked `@no-split`.
    pub no_split: bool,
    /// The steps in order.
    pub steps: Vec<Step>,
}

/// A script that does not parse: `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The script file.
    pub path: PathBuf,
    /// 1-based line (0 when the file could not be read).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

impl Script {
    /// Reads and parses a script file.
    pub fn load(path: &Path) -> Result<Script, ParseError> {
        let text = std::fs::read_to_string(path).map_err(|e| ParseError {
            path: path.to_owned(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        Script::parse(path, &text)
    }

    /// Parses script text; `path` names it in errors, and its directory
    /// (`…/smtp/x.txt`) chooses the default protocol (POP3 otherwise).
    pub fn parse(path: &Path, text: &str) -> Result<Script, ParseError> {
        let dir_protocol = path
            .parent()
            .and_then(Path::file_name)
            .and_then(|d| Protocol::from_name(&d.to_string_lossy()))
            .unwrap_or(Protocol::Pop3);
        let mut script = Script {
            name: path
                .file_stem()
                .map_or_else(|| "script".into(), |s| s.to_string_lossy().into_owned()),
            path: path.to_owned(),
            config: ScriptConfig::for_protocol(dir_protocol),
            skip_shell: false,
            no_split: false,
            steps: Vec::new(),
        };
        let mut exchanged = false;
        let mut tick_line = None;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |message: String| ParseError {
                path: path.to_owned(),
                line,
                message,
            };
            let trimmed = raw.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let setting = ["@config", "@protocol"]
                .into_iter()
                .find_map(|d| trimmed.strip_prefix(d).map(|rest| (d, rest.trim())));
            if let Some((directive, rest)) = setting {
                if exchanged {
                    return Err(err(format!(
                        "{directive} must come before the first exchange"
                    )));
                }
                if directive == "@config" {
                    parse_config(&mut script.config, rest).map_err(err)?;
                } else {
                    let protocol = Protocol::from_name(rest)
                        .ok_or_else(|| err("usage: @protocol pop3|smtp|submission|lmtp".into()))?;
                    script.config.set_protocol(protocol);
                }
                continue;
            }
            match trimmed {
                "@skip-shell" => script.skip_shell = true,
                "@no-split" => script.no_split = true,
                _ => {
                    let kind = crate::step::parse_step(trimmed).map_err(err)?;
                    exchanged |= !kind.is_setup();
                    if matches!(kind, StepKind::Tick(_)) {
                        tick_line.get_or_insert(line);
                    }
                    script.steps.push(Step { line, kind });
                }
            }
        }
        let core_only = tick_line.or(script.config.client.map(|_| 1));
        if let (Some(line), false) = (core_only, script.skip_shell) {
            return Err(ParseError {
                path: path.to_owned(),
                line,
                message: "@tick and @config client= need virtual time or a fake address: \
                          mark the script @skip-shell"
                    .into(),
            });
        }
        Ok(script)
    }
}

/// A deterministic message of at least `size` bytes: a header, then numbered CRLF lines,
/// every seventh starting with a dot so dot-stuffing crosses read-chunk boundaries.
pub fn big_message(size: usize) -> Vec<u8> {
    let mut m = b"From: bulk@example.test\r\nSubject: bulk\r\n\r\n".to_vec();
    let mut n = 0u64;
    while m.len() < size {
        n += 1;
        let dot = if n.is_multiple_of(7) { "." } else { "" };
        m.extend_from_slice(
            format!("{dot}line {n:08} abcdefghijklmnopqrstuvwxyz0123456789\r\n").as_bytes(),
        );
    }
    m
}

/// `message` dot-stuffed for DATA (RFC 5321 §4.5.2): a dot is added at the start of
/// every line that starts with one. Lines are CRLF-terminated; no `.` line is added.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 32);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n' && out.ends_with(b"\r\n");
    }
    out
}
