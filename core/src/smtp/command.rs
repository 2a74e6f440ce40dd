//! SMTP and LMTP command grammar: RFC 5321 §4.1.1 and §4.1.2, RFC 2033 §4.1 (LHLO),
//! RFC 3030 §2 (BDAT), RFC 3207 §4 (STARTTLS), RFC 4954 §4 (AUTH).
//!
//! Hand-written rather than a combinator grammar: the core depends on no parser crate,
//! and SMTP commands are a keyword plus at most one path and a few `keyword=value`
//! parameters, so a direct split reads as the RFC does. The input is one complete line
//! from [`crate::wire::LineBuffer`], CRLF removed, already checked against the line
//! length limit.

use super::address::{self, AddressError, Param, Path, PathKind};
use crate::proxy::xclient::{self, Xclient, XclientError};
use crate::secret::Secret;

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELO domain` (RFC 5321 §4.1.1.1).
    Helo(String),
    /// `EHLO domain` (RFC 5321 §4.1.1.1).
    Ehlo(String),
    /// `LHLO domain` (RFC 2033 §4.1).
    Lhlo(String),
    /// `MAIL FROM:<reverse-path> [parameters]` (RFC 5321 §4.1.1.2).
    Mail {
        /// The sender; empty for `<>`.
        path: Path,
        /// ESMTP parameters (SIZE, BODY, SMTPUTF8, AUTH, …).
        params: Vec<Param>,
    },
    /// `RCPT TO:<forward-path> [parameters]` (RFC 5321 §4.1.1.3).
    Rcpt {
        /// The recipient.
        path: Path,
        /// ESMTP parameters (none are supported).
        params: Vec<Param>,
    },
    /// `DATA` (RFC 5321 §4.1.1.4).
    Data,
    /// `BDAT size [LAST]` (RFC 3030 §2): `size` raw octets follow the line.
    Bdat {
        /// Octets in this chunk.
        size: u64,
        /// The last chunk of the message.
        last: bool,
    },
    /// `RSET` (RFC 5321 §4.1.1.5).
    Rset,
    /// `NOOP [string]` (RFC 5321 §4.1.1.9).
    Noop,
    /// `QUIT` (RFC 5321 §4.1.1.10).
    Quit,
    /// `VRFY string` (RFC 5321 §4.1.1.6); the argument is not kept, it is never looked up.
    Vrfy,
    /// `EXPN string` (RFC 5321 §4.1.1.7): not supported.
    Expn,
    /// `HELP [string]` (RFC 5321 §4.1.1.8).
    Help,
    /// `STARTTLS` (RFC 3207 §4).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4).
    Auth {
        /// Mechanism name, upper-cased.
        mechanism: String,
        /// The base64 initial response, still encoded (`=` for an empty one); it holds the
        /// password, so it is a [`Secret`] (never in `Debug` output).
        initial_response: Option<Secret>,
    },
    /// `XCLIENT name=value…` (Postfix `XCLIENT_README`): a trusted proxy names its
    /// client. The attributes are parsed here; whether the peer may send it is the
    /// session's decision (`550 5.7.0` otherwise), so a malformed line is kept as the
    /// error.
    Xclient(Result<Xclient, XclientError>),
}

/// Why a line is not a command; each variant names the reply it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not a command we know: `500 5.5.2`.
    Unknown,
    /// A known command with malformed arguments: `501 5.5.4` and this text.
    Syntax(&'static str),
    /// A malformed path: `501 5.1.3`.
    Address(AddressError),
}

impl From<AddressError> for ParseError {
    fn from(e: AddressError) -> Self {
        ParseError::Address(e)
    }
}

/// Parses one command line.
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let (keyword, rest) = match line.iter().position(|&b| b == b' ') {
        Some(sp) => (&line[..sp], &line[sp..]),
        None => (line, &b""[..]),
    };
    if keyword.is_empty() || keyword.len() > 8 || !keyword.iter().all(u8::is_ascii_alphabetic) {
        return Err(ParseError::Unknown);
    }
    let mut buf = [0u8; 8];
    let upper = match buf.get_mut(..keyword.len()) {
        Some(slot) => {
            slot.copy_from_slice(keyword);
            slot.make_ascii_uppercase();
            &*slot
        }
        None => return Err(ParseError::Unknown),
    };
    // `rest` is empty or starts with the space after the keyword.
    let args = rest.get(1..).unwrap_or_default();
    let command = match upper {
        b"HELO" => Command::Helo(helo_name(args, "Syntax: HELO hostname")?),
        b"EHLO" => Command::Ehlo(helo_name(args, "Syntax: EHLO hostname")?),
        b"LHLO" => Command::Lhlo(helo_name(args, "Syntax: LHLO hostname")?),
        b"MAIL" => {
            let (path, params) = path_command(args, b"FROM:", PathKind::Reverse, MAIL_SYNTAX)?;
            Command::Mail { path, params }
        }
        b"RCPT" => {
            let (path, params) = path_command(args, b"TO:", PathKind::Forward, RCPT_SYNTAX)?;
            Command::Rcpt { path, params }
        }
        b"DATA" => no_args(rest, Command::Data)?,
        b"BDAT" => bdat(args)?,
        b"RSET" => no_args(rest, Command::Rset)?,
        b"QUIT" => no_args(rest, Command::Quit)?,
        b"STARTTLS" => no_args(rest, Command::StartTls)?,
        b"NOOP" => Command::Noop,
        b"HELP" => Command::Help,
        b"EXPN" => Command::Expn,
        b"VRFY" => match words(args).next() {
            Some(_) => Command::Vrfy,
            None => return Err(ParseError::Syntax("Syntax: VRFY address")),
        },
        b"AUTH" => auth(args)?,
        b"XCLIENT" => Command::Xclient(xclient::parse(line)),
        _ => return Err(ParseError::Unknown),
    };
    Ok(command)
}

const MAIL_SYNTAX: &str = "Syntax: MAIL FROM:<address> [parameters]";
const RCPT_SYNTAX: &str = "Syntax: RCPT TO:<address>";

fn words(args: &[u8]) -> impl Iterator<Item = &[u8]> {
    args.split(|&b| b == b' ').filter(|w| !w.is_empty())
}

fn no_args(rest: &[u8], command: Command) -> Result<Command, ParseError> {
    if rest.iter().all(|&b| b == b' ') {
        Ok(command)
    } else {
        Err(ParseError::Syntax(
            "Syntax: this command takes no arguments",
        ))
    }
}

fn helo_name(args: &[u8], usage: &'static str) -> Result<String, ParseError> {
    let mut w = words(args);
    match (w.next(), w.next()) {
        (Some(name), None) if address::is_helo_name(name) => {
            Ok(String::from_utf8_lossy(name).into_owned())
        }
        (Some(_), None) => Err(ParseError::Syntax("Invalid domain name")),
        _ => Err(ParseError::Syntax(usage)),
    }
}

/// `FROM:<path> params` / `TO:<path> params`. Spaces between the colon and the path are
/// tolerated: RFC 5321 has none, but common clients send them.
fn path_command(
    args: &[u8],
    tag: &[u8],
    kind: PathKind,
    usage: &'static str,
) -> Result<(Path, Vec<Param>), ParseError> {
    let after_tag = match args.get(..tag.len()) {
        Some(head) if head.eq_ignore_ascii_case(tag) => args.get(tag.len()..).unwrap_or_default(),
        _ => return Err(ParseError::Syntax(usage)),
    };
    let spaces = after_tag.iter().take_while(|&&b| b == b' ').count();
    let at_path = after_tag.get(spaces..).unwrap_or_default();
    if at_path.is_empty() {
        return Err(ParseError::Syntax(usage));
    }
    let (path, used) = address::parse_path(at_path, kind)?;
    let params = address::parse_params(at_path.get(used..).unwrap_or_default())
        .map_err(ParseError::Syntax)?;
    Ok((path, params))
}

fn bdat(args: &[u8]) -> Result<Command, ParseError> {
    const USAGE: ParseError = ParseError::Syntax("Syntax: BDAT size [LAST]");
    let mut w = words(args);
    let size = w.next().and_then(number).ok_or(USAGE)?;
    let last = match w.next() {
        None => false,
        Some(word) if word.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return Err(USAGE),
    };
    if w.next().is_some() {
        return Err(USAGE);
    }
    Ok(Command::Bdat { size, last })
}

/// A decimal number that fits in `u64` (checked: a count that does not fit is refused,
/// never wrapped).
fn number(word: &[u8]) -> Option<u64> {
    if word.is_empty() || word.len() > 20 {
        return None;
    }
    word.iter().try_fold(0u64, |acc, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn auth(args: &[u8]) -> Result<Command, ParseError> {
    const USAGE: ParseError = ParseError::Syntax("Syntax: AUTH mechanism [initial-response]");
    let mut w = words(args);
    let mechanism = match w.next() {
        Some(m)
            if m.len() <= 20
                && m.iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_') =>
        {
            String::from_utf8_lossy(m).to_ascii_uppercase()
        }
        _ => return Err(USAGE),
    };
    let initial_response = w.next().map(Secret::new);
    if w.next().is_some() {
        return Err(USAGE);
    }
    Ok(Command::Auth {
        mechanism,
        initial_response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(address: &str) -> Path {
        Path {
            address: address.into(),
            utf8: !address.is_ascii(),
        }
    }

    #[test]
    fn command_table() {
        let cases: Vec<(&[u8], Result<Command, ParseError>)> = vec![
            (
                b"EHLO client.example",
                Ok(Command::Ehlo("client.example".into())),
            ),
            (b"ehlo [192.0.2.1]", Ok(Command::Ehlo("[192.0.2.1]".into()))),
            (b"HELO x", Ok(Command::Helo("x".into()))),
            (
                b"LHLO front.example ",
                Ok(Command::Lhlo("front.example".into())),
            ),
            (
                b"MAIL FROM:<a@b.example>",
                Ok(Command::Mail {
                    path: path("a@b.example"),
                    params: vec![],
                }),
            ),
            (
                b"mail from: <> size=10",
                Ok(Command::Mail {
                    path: path(""),
                    params: vec![Param {
                        keyword: "SIZE".into(),
                        value: Some("10".into()),
                    }],
                }),
            ),
            (
                b"RCPT TO:<u@d>",
                Ok(Command::Rcpt {
                    path: path("u@d"),
                    params: vec![],
                }),
            ),
            (b"DATA", Ok(Command::Data)),
            (b"data ", Ok(Command::Data)),
            (
                b"BDAT 0 LAST",
                Ok(Command::Bdat {
                    size: 0,
                    last: true,
                }),
            ),
            (
                b"BDAT 1000",
                Ok(Command::Bdat {
                    size: 1000,
                    last: false,
                }),
            ),
            (b"RSET", Ok(Command::Rset)),
            (b"NOOP anything at all", Ok(Command::Noop)),
            (b"HELP MAIL", Ok(Command::Help)),
            (b"VRFY root", Ok(Command::Vrfy)),
            (b"EXPN list", Ok(Command::Expn)),
            (b"QUIT", Ok(Command::Quit)),
            (b"StartTLS", Ok(Command::StartTls)),
            (
                b"AUTH plain AGEAYg==",
                Ok(Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial_response: Some(Secret::new(&b"AGEAYg=="[..])),
                }),
            ),
            (
                b"AUTH LOGIN",
                Ok(Command::Auth {
                    mechanism: "LOGIN".into(),
                    initial_response: None,
                }),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), want, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn error_table() {
        use ParseError::{Address, Syntax, Unknown};
        let cases: Vec<(&[u8], ParseError)> = vec![
            (b"", Unknown),
            (b"XYZZY", Unknown),
            (b"MAILFROM:<a@b>", Unknown),
            (b"\xff\xfe", Unknown),
            (b"EHLO", Syntax("Syntax: EHLO hostname")),
            (b"EHLO a b", Syntax("Syntax: EHLO hostname")),
            (b"EHLO bad(name)", Syntax("Invalid domain name")),
            (b"MAIL TO:<a@b>", Syntax(MAIL_SYNTAX)),
            (b"MAIL FROM:", Syntax(MAIL_SYNTAX)),
            (b"MAIL FROM:a@b", Address(AddressError::Syntax)),
            (b"RCPT TO:<>", Address(AddressError::Syntax)),
            (
                b"RCPT TO:<a@b>x",
                Syntax("Syntax: a space must separate the address and parameters"),
            ),
            (
                b"DATA now",
                Syntax("Syntax: this command takes no arguments"),
            ),
            (
                b"QUIT please",
                Syntax("Syntax: this command takes no arguments"),
            ),
            (b"BDAT", Syntax("Syntax: BDAT size [LAST]")),
            (b"BDAT x", Syntax("Syntax: BDAT size [LAST]")),
            (b"BDAT -1", Syntax("Syntax: BDAT size [LAST]")),
            (
                b"BDAT 18446744073709551616",
                Syntax("Syntax: BDAT size [LAST]"),
            ),
            (b"BDAT 1 FIRST", Syntax("Syntax: BDAT size [LAST]")),
            (b"BDAT 1 LAST x", Syntax("Syntax: BDAT size [LAST]")),
            (b"VRFY", Syntax("Syntax: VRFY address")),
            (b"AUTH", Syntax("Syntax: AUTH mechanism [initial-response]")),
            (
                b"AUTH PL@IN",
                Syntax("Syntax: AUTH mechanism [initial-response]"),
            ),
            (
                b"AUTH PLAIN a b",
                Syntax("Syntax: AUTH mechanism [initial-response]"),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), Err(want), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn largest_bdat_count_fits() {
        assert_eq!(
            parse(b"BDAT 18446744073709551615"),
            Ok(Command::Bdat {
                size: u64::MAX,
                last: false
            })
        );
    }
}
