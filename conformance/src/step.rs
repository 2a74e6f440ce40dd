//! One script line: what it asks for ([`StepKind`]) and its parser.

use std::time::Duration;

use crate::config::Protocol;
use crate::pattern::{Pattern, unescape};

/// Store requests a script can make fail once (`@store-fail KIND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// The next `CheckRecipient`.
    Recipient,
    /// The next `BeginDelivery`.
    Begin,
    /// The next `AppendDelivery`.
    Append,
    /// The next `CommitDelivery` (every recipient).
    Commit,
}

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
    /// A generated message of about this size ([`crate::script::big_message`]),
    /// dot-stuffed for DATA, without the terminating `.` line.
    SendData(usize),
    /// One server line.
    Expect(Pattern),
    /// The server sends nothing now (core: without letting time pass; shells: for
    /// 100 ms).
    ExpectQuiet,
    /// A scripted message, dot-stuffed, then the `.` line.
    ExpectMessage {
        /// Whose message.
        user: String,
        /// 1-based, in the order the script added that user's messages.
        number: usize,
    },
    /// The store's current N-th message of a user, dot-stuffed, then `.` (a POP3 RETR
    /// of a message the script delivered over SMTP).
    ExpectRetr {
        /// Whose message.
        user: String,
        /// 1-based position in the inbox now.
        number: usize,
    },
    /// The store holds this message as the user's N-th.
    ExpectStored {
        /// Whose message.
        user: String,
        /// 1-based position in the inbox now.
        number: usize,
        /// The stored bytes, trace fields included (`*` wildcards).
        pattern: Pattern,
    },
    /// The user's N-th stored message is trace fields followed by exactly
    /// `big_message(size)`.
    ExpectStoredBig {
        /// Whose message.
        user: String,
        /// 1-based position in the inbox now.
        number: usize,
        /// The generated size the script sent with `@send-data`.
        size: usize,
    },
    /// The user's inbox holds exactly this many messages.
    ExpectMailbox {
        /// Whose inbox.
        user: String,
        /// How many messages.
        count: usize,
    },
    /// Exactly this many deliveries were aborted so far and none is still open.
    ExpectAborted(u64),
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
        /// The listener; `None` is the script's protocol.
        protocol: Option<Protocol>,
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
        /// Login name (an address, for SMTP recipients).
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
    /// A mailbox size limit in octets.
    Quota {
        /// Whose mailbox.
        user: String,
        /// The limit.
        bytes: u64,
    },
    /// The next store request of this kind fails with a temporary error.
    StoreFail(FailKind),
}

impl StepKind {
    /// Store set-up that may come before `@config` lines (no connection involved).
    pub fn is_setup(&self) -> bool {
        matches!(
            self,
            StepKind::AddUser { .. } | StepKind::AddMessage { .. } | StepKind::Quota { .. }
        )
    }
}

/// Parses one non-blank, non-comment line other than `@config`, `@protocol`,
/// `@skip-shell` and `@no-split`.
pub(crate) fn parse_step(line: &str) -> Result<StepKind, String> {
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
    let user_n = |usage: &str| -> Result<(String, usize), String> {
        want(2, usage)?;
        Ok((args[0].to_owned(), parse_number(args[1])?))
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
            let (user, text) = rest_after(line, "@message")
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
                bytes: crate::script::big_message(parse_size(args[1])?),
            }
        }
        "@quota" => {
            want(2, "USER BYTES")?;
            StepKind::Quota {
                user: args[0].into(),
                bytes: parse_size(args[1])? as u64,
            }
        }
        "@expect-message" => {
            let (user, number) = user_n("USER N")?;
            StepKind::ExpectMessage { user, number }
        }
        "@expect-retr" => {
            let (user, number) = user_n("USER N")?;
            StepKind::ExpectRetr { user, number }
        }
        "@expect-stored" => {
            let mut parts = rest_after(line, "@expect-stored").splitn(3, ' ');
            let (Some(user), Some(n), Some(text)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err("usage: @expect-stored USER N PATTERN".into());
            };
            StepKind::ExpectStored {
                user: user.into(),
                number: parse_number(n)?,
                pattern: Pattern::parse(text)?,
            }
        }
        "@expect-stored-big" => {
            want(3, "USER N SIZE")?;
            StepKind::ExpectStoredBig {
                user: args[0].into(),
                number: parse_number(args[1])?,
                size: parse_size(args[2])?,
            }
        }
        "@expect-mailbox" => {
            want(2, "USER COUNT")?;
            StepKind::ExpectMailbox {
                user: args[0].into(),
                count: args[1]
                    .parse()
                    .map_err(|_| format!("expected a count, got {:?}", args[1]))?,
            }
        }
        "@expect-aborted" => {
            want(1, "COUNT")?;
            StepKind::ExpectAborted(
                args[0]
                    .parse()
                    .map_err(|_| format!("expected a count, got {:?}", args[0]))?,
            )
        }
        "@store-fail" => StepKind::StoreFail(match args.as_slice() {
            ["recipient"] => FailKind::Recipient,
            ["begin"] => FailKind::Begin,
            ["append"] => FailKind::Append,
            ["commit"] => FailKind::Commit,
            _ => return Err("usage: @store-fail recipient|begin|append|commit".into()),
        }),
        "@connect" => {
            let (mut raw, mut protocol) = (false, None);
            for word in &args {
                match (*word, Protocol::from_name(word)) {
                    ("raw", _) if !raw => raw = true,
                    (_, Some(p)) if protocol.is_none() => protocol = Some(p),
                    _ => return Err("usage: @connect [raw] [pop3|smtp|submission|lmtp]".into()),
                }
            }
            StepKind::Connect { raw, protocol }
        }
        "@starttls" => want(0, "").map(|_| StepKind::StartTls)?,
        "@eof" => want(0, "").map(|_| StepKind::Eof)?,
        "@tick" => {
            want(1, "DURATION (e.g. 601s, 500ms, 10m)")?;
            StepKind::Tick(parse_duration(args[0])?)
        }
        "@expect" => match args.as_slice() {
            ["close"] => StepKind::ExpectClose { any: false },
            ["close", "any"] => StepKind::ExpectClose { any: true },
            ["quiet"] => StepKind::ExpectQuiet,
            _ => return Err("usage: @expect close [any] | @expect quiet".into()),
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
        "@send-data" => {
            want(1, "SIZE")?;
            StepKind::SendData(parse_size(args[0])?)
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

/// The text after a directive and its spaces, verbatim (escapes may hold spaces).
fn rest_after<'a>(line: &'a str, directive: &str) -> &'a str {
    line[directive.len()..].trim_start()
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
