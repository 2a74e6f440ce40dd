//! The script format and its parser.
//!
//! One line per step; blank lines and lines starting with `#` are ignored.
//!
//! | Line | Meaning |
//! |---|---|
//! | `C: text` | the client sends `text` and CRLF (escapes: see [`crate::pattern`]) |
//! | `C<: text` | the client sends `text` without CRLF |
//! | `S: pattern` | the server's next line matches `pattern` (`*` is a wildcard; `S: .` is the end of a multi-line reply) |
//! | `@user NAME PASSWORD [nologin]` | an account in the store |
//! | `@message USER TEXT` | a message (escaped text) appended to USER's inbox |
//! | `@big-message USER SIZE` | a generated message of about SIZE bytes (`200KiB`), with dot-led lines |
//! | `@expect-message USER N` | the next lines are USER's N-th scripted message, dot-stuffed, then `.` |
//! | `@config key=value` | listener settings, before the first exchange (see [`ScriptConfig`]) |
//! | `@connect [raw]` | close the current connection and open a new one (`raw`: no implicit TLS handshake) |
//! | `@starttls` | the client starts its TLS handshake now (after `+OK` to STLS) |
//! | `@eof` | the client closes its sending side (no QUIT) |
//! | `@tick 601s` | advance virtual time (core driver only; needs `@skip-shell`) |
//! | `@expect close` | the server closes the connection with nothing more; `@expect close any` allows non-line bytes first (a TLS alert) |
//! | `@send-bytes N BYTE` | the client sends N copies of BYTE (a character or `\xHH`) |
//! | `@vanish [USER] N` | message N of USER's inbox (default: the last user who logged in) disappears from the store |
//! | `@skip-shell` | shell drivers do not run this script |
//! | `@no-split` | the core driver delivers each write whole only (the split itself would change the meaning, e.g. plaintext pipelined behind STLS) |
//!
//! The first exchange opens a connection if none is open.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::parse_config;
pub use crate::config::{PlaintextSetting, ScriptConfig};
use crate::pattern::{Pattern, unescape};

/// What one script line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// Client bytes to send.
    Send(Vec<u8>),
    /// `len` copies of `byte`.
    SendBulk {
        /// How many bytes.
        len: usize,
        /// The byte repeated.
        byte: u8,
    },
    /// One server line.
    Expect(Pattern),
    /// A scripted message, dot-stuffed, then the `.` line.
    ExpectMessage {
        /// Whose message.
        user: String,
        /// 1-based, in the order the script added that user's messages.
        number: usize,
    },
    /// The server closes; `any` tolerates bytes that are not a line first.
    ExpectClose {
        /// Accept leftover non-line bytes (a TLS alert) before the close.
        any: bool,
    },
    /// Start client TLS.
    StartTls,
    /// Half-close from the client.
    Eof,
    /// New connection.
    Connect {
        /// Skip the implicit-TLS handshake.
        raw: bool,
    },
    /// Advance virtual time.
    Tick(Duration),
    /// Remove a message file from the store.
    Vanish {
        /// Whose inbox; `None` is the last user who logged in.
        user: Option<String>,
        /// 1-based position in the inbox.
        number: usize,
    },
    /// Create an account.
    AddUser {
        /// Login name.
        name: String,
        /// Password.
        password: String,
        /// The account exists but may not log in.
        nologin: bool,
    },
    /// Append a message to an inbox.
    AddMessage {
        /// Owner.
        user: String,
        /// Message bytes as stored.
        bytes: Vec<u8>,
    },
}

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

    /// Parses script text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Script, ParseError> {
        let mut script = Script {
            name: path
                .file_stem()
                .map_or_else(|| "script".into(), |s| s.to_string_lossy().into_owned()),
            path: path.to_owned(),
            config: ScriptConfig::default(),
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
            if let Some(rest) = trimmed.strip_prefix("@config") {
                if exchanged {
                    return Err(err("@config must come before the first exchange".into()));
                }
                parse_config(&mut script.config, rest.trim()).map_err(err)?;
                continue;
            }
            match trimmed {
                "@skip-shell" => script.skip_shell = true,
                "@no-split" => script.no_split = true,
                _ => {
                    let kind = parse_step(trimmed).map_err(err)?;
                    exchanged |=
                        !matches!(kind, StepKind::AddUser { .. } | StepKind::AddMessage { .. });
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

fn parse_step(line: &str) -> Result<StepKind, String> {
    if let Some(text) = strip_tag(line, "C:") {
        let mut bytes = unescape(text)?;
        bytes.extend_from_slice(b"\r\n");
        return Ok(StepKind::Send(bytes));
    }
    if let Some(text) = strip_tag(line, "C<:") {
        return Ok(StepKind::Send(unescape(text)?));
    }
    if let Some(text) = strip_tag(line, "S:") {
        return Ok(StepKind::Expect(Pattern::parse(text)?));
    }
    let mut words = line.split_whitespace();
    let directive = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    let want = |n: usize, usage: &str| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("usage: {directive} {usage}"))
        }
    };
    let kind = match directive {
        "@user" => {
            let nologin = args.get(2) == Some(&"nologin");
            if !(args.len() == 2 || (args.len() == 3 && nologin)) {
                return Err("usage: @user NAME PASSWORD [nologin]".into());
            }
            StepKind::AddUser {
                name: args[0].into(),
                password: args[1].into(),
                nologin,
            }
        }
        "@message" => {
            let rest = line["@message".len()..].trim_start();
            let (user, text) = rest
                .split_once(' ')
                .ok_or("usage: @message USER TEXT-WITH-ESCAPES")?;
            StepKind::AddMessage {
                user: user.into(),
                bytes: unescape(text)?,
            }
        }
        "@big-message" => {
            want(2, "USER SIZE")?;
            StepKind::AddMessage {
                user: args[0].into(),
                bytes: big_message(parse_size(args[1])?),
            }
        }
        "@expect-message" => {
            want(2, "USER N")?;
            StepKind::ExpectMessage {
                user: args[0].into(),
                number: parse_number(args[1])?,
            }
        }
        "@connect" => match args.as_slice() {
            [] => StepKind::Connect { raw: false },
            ["raw"] => StepKind::Connect { raw: true },
            _ => return Err("usage: @connect [raw]".into()),
        },
        "@starttls" => want(0, "").map(|_| StepKind::StartTls)?,
        "@eof" => want(0, "").map(|_| StepKind::Eof)?,
        "@tick" => {
            want(1, "DURATION (e.g. 601s, 500ms, 10m)")?;
            StepKind::Tick(parse_duration(args[0])?)
        }
        "@expect" => match args.as_slice() {
            ["close"] => StepKind::ExpectClose { any: false },
            ["close", "any"] => StepKind::ExpectClose { any: true },
            _ => return Err("usage: @expect close [any]".into()),
        },
        "@send-bytes" => {
            want(2, "N BYTE")?;
            let byte = match unescape(args[1])?.as_slice() {
                [b] => *b,
                _ => return Err("BYTE must be one character or \\xHH".into()),
            };
            StepKind::SendBulk {
                len: parse_size(args[0])?,
                byte,
            }
        }
        "@vanish" => match args.as_slice() {
            [n] => StepKind::Vanish {
                user: None,
                number: parse_number(n)?,
            },
            [user, n] => StepKind::Vanish {
                user: Some((*user).into()),
                number: parse_number(n)?,
            },
            _ => return Err("usage: @vanish [USER] N".into()),
        },
        _ => {
            return Err(format!(
                "unknown line {line:?} (C:, C<:, S:, or a known @directive)"
            ));
        }
    };
    Ok(kind)
}

/// `C: text` → `text`: the tag, then one optional space, then the text verbatim.
fn strip_tag<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(tag)?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

fn parse_number(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("expected a positive number, got {s:?}"))
}

/// `3000`, `100KiB`, `10MiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let mult = match unit {
        "" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => return Err(format!("size unit is KiB or MiB, got {s:?}")),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("expected a size like 3000 or 100KiB, got {s:?}"))
}

/// `601s`, `500ms`, `10m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration like 601s, 500ms or 10m, got {s:?}");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(bad()),
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
