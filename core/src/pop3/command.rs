//! POP3 command grammar (RFC 1939 §3-§7, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH).
//!
//! POP3 commands are a keyword of 3-4 letters and at most two simple arguments, so a
//! direct split is clearer than a combinator grammar. The input is one complete line
//! from [`crate::wire::LineBuffer`], CRLF removed.

use crate::proxy::xclient::{self, Xclient, XclientError};
use crate::secret::Secret;

/// A message number as the client wrote it. Numbers too large for `u64` saturate, which
/// is then simply "no such message".
pub type MessageNumber = u64;

/// One parsed POP3 command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `USER name` (RFC 1939 §7).
    User(String),
    /// `PASS secret` (RFC 1939 §7); the rest of the line, spaces included.
    Pass(Secret),
    /// `AUTH [mechanism [initial-response]]` (RFC 5034 §4).
    Auth {
        /// Mechanism name, upper-cased; `None` asks for the mechanism list.
        mechanism: Option<String>,
        /// The base64 initial response, still encoded.
        initial_response: Option<Secret>,
    },
    /// `CAPA` (RFC 2449 §5).
    Capa,
    /// `STLS` (RFC 2595 §4).
    Stls,
    /// `STAT` (RFC 1939 §5).
    Stat,
    /// `LIST [msg]` (RFC 1939 §5).
    List(Option<MessageNumber>),
    /// `UIDL [msg]` (RFC 1939 §7).
    Uidl(Option<MessageNumber>),
    /// `RETR msg` (RFC 1939 §5).
    Retr(MessageNumber),
    /// `TOP msg n` (RFC 1939 §7).
    Top(MessageNumber, u64),
    /// `DELE msg` (RFC 1939 §5).
    Dele(MessageNumber),
    /// `RSET` (RFC 1939 §5).
    Rset,
    /// `NOOP` (RFC 1939 §5).
    Noop,
    /// `QUIT` (RFC 1939 §4, §6).
    Quit,
    /// `XCLIENT name=value…`: a trusted proxy names its client (Postfix `XCLIENT_README`,
    /// as Dovecot's POP3 server accepts it). The attributes are parsed here; whether the
    /// peer may send it is the session's decision, so a malformed line is kept as the
    /// error.
    Xclient(Result<Xclient, XclientError>),
}

/// Why a line is not a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The keyword is not a POP3 command we implement.
    Unknown,
    /// The keyword is known but its arguments are wrong; the text says how.
    Syntax(&'static str),
}

/// The longest user name accepted; longer names cannot be valid addresses (RFC 5321 §4.5.3.1).
pub const MAX_USER_LEN: usize = 320;

/// Parses one command line.
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let (keyword, rest) = match line.iter().position(|&b| b == b' ') {
        Some(sp) => (&line[..sp], Some(&line[sp + 1..])),
        None => (line, None),
    };
    if keyword.eq_ignore_ascii_case(b"XCLIENT") {
        return Ok(Command::Xclient(xclient::parse(line)));
    }
    if keyword.is_empty() || keyword.len() > 4 || !keyword.iter().all(u8::is_ascii_alphabetic) {
        return Err(ParseError::Unknown);
    }
    let mut upper = [0u8; 4];
    upper[..keyword.len()].copy_from_slice(keyword);
    upper.make_ascii_uppercase();
    let args = Args::new(rest.unwrap_or(b""));
    let command = match &upper[..keyword.len()] {
        b"USER" => Command::User(user_name(rest)?),
        b"PASS" => match rest {
            Some(secret) if !secret.is_empty() => Command::Pass(Secret::new(secret)),
            _ => return Err(ParseError::Syntax("PASS needs a password")),
        },
        b"AUTH" => auth(args)?,
        b"CAPA" => args.none(Command::Capa)?,
        b"STLS" => args.none(Command::Stls)?,
        b"STAT" => args.none(Command::Stat)?,
        b"RSET" => args.none(Command::Rset)?,
        b"NOOP" => args.none(Command::Noop)?,
        b"QUIT" => args.none(Command::Quit)?,
        b"LIST" => Command::List(args.optional_number()?),
        b"UIDL" => Command::Uidl(args.optional_number()?),
        b"RETR" => Command::Retr(args.one_number()?),
        b"DELE" => Command::Dele(args.one_number()?),
        b"TOP" => {
            let (msg, lines) = args.two_numbers()?;
            Command::Top(msg, lines)
        }
        _ => return Err(ParseError::Unknown),
    };
    Ok(command)
}

fn user_name(rest: Option<&[u8]>) -> Result<String, ParseError> {
    let name = rest.ok_or(ParseError::Syntax("USER needs a name"))?;
    if name.is_empty() || name.len() > MAX_USER_LEN {
        return Err(ParseError::Syntax(
            "USER needs a name of at most 320 octets",
        ));
    }
    let name =
        std::str::from_utf8(name).map_err(|_| ParseError::Syntax("user name is not UTF-8"))?;
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ParseError::Syntax(
            "user name contains spaces or control characters",
        ));
    }
    Ok(name.to_owned())
}

fn auth(args: Args<'_>) -> Result<Command, ParseError> {
    let mut words = args.words();
    let mechanism = match words.next() {
        None => None,
        Some(m)
            if m.len() <= 20
                && m.iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_') =>
        {
            Some(String::from_utf8_lossy(m).to_ascii_uppercase())
        }
        Some(_) => return Err(ParseError::Syntax("invalid mechanism name")),
    };
    let initial_response = words.next().map(|r| Secret::new(r.to_vec()));
    if words.next().is_some() {
        return Err(ParseError::Syntax("too many arguments"));
    }
    Ok(Command::Auth {
        mechanism,
        initial_response,
    })
}

/// Space-separated arguments of a command.
#[derive(Clone, Copy)]
struct Args<'a>(&'a [u8]);

impl<'a> Args<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Args(rest)
    }
    fn words(self) -> impl Iterator<Item = &'a [u8]> {
        self.0.split(|&b| b == b' ').filter(|w| !w.is_empty())
    }
    fn none(self, command: Command) -> Result<Command, ParseError> {
        match self.words().next() {
            None => Ok(command),
            Some(_) => Err(ParseError::Syntax("this command takes no arguments")),
        }
    }
    fn optional_number(self) -> Result<Option<MessageNumber>, ParseError> {
        let mut words = self.words();
        let first = words.next().map(number).transpose()?;
        if words.next().is_some() {
            return Err(ParseError::Syntax("too many arguments"));
        }
        Ok(first)
    }
    fn one_number(self) -> Result<MessageNumber, ParseError> {
        self.optional_number()?
            .ok_or(ParseError::Syntax("a message number is required"))
    }
    fn two_numbers(self) -> Result<(MessageNumber, u64), ParseError> {
        let mut words = self.words();
        let (Some(a), Some(b), None) = (words.next(), words.next(), words.next()) else {
            return Err(ParseError::Syntax(
                "a message number and a line count are required",
            ));
        };
        Ok((number(a)?, number(b)?))
    }
}

/// A decimal number; digits only, saturating at `u64::MAX`.
fn number(word: &[u8]) -> Result<u64, ParseError> {
    if word.is_empty() || !word.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::Syntax("invalid number"));
    }
    Ok(word.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_case_insensitive_and_arguments_checked() {
        assert_eq!(parse(b"quit"), Ok(Command::Quit));
        assert_eq!(parse(b"LiSt 3"), Ok(Command::List(Some(3))));
        assert_eq!(parse(b"LIST"), Ok(Command::List(None)));
        assert_eq!(parse(b"TOP 1 10"), Ok(Command::Top(1, 10)));
        assert_eq!(
            parse(b"TOP 1"),
            Err(ParseError::Syntax(
                "a message number and a line count are required"
            ))
        );
        assert_eq!(parse(b"RETR x"), Err(ParseError::Syntax("invalid number")));
        assert_eq!(
            parse(b"NOOP now"),
            Err(ParseError::Syntax("this command takes no arguments"))
        );
        assert_eq!(parse(b"XYZZY"), Err(ParseError::Unknown));
        assert_eq!(parse(b""), Err(ParseError::Unknown));
        assert_eq!(parse(b"\0\xff"), Err(ParseError::Unknown));
    }

    #[test]
    fn xclient_keeps_its_parse_result() {
        let Ok(Command::Xclient(Ok(x))) = parse(b"xclient ADDR=192.0.2.9 PORT=4711 TTL=3") else {
            panic!("XCLIENT not recognised");
        };
        assert_eq!(x.addr, Some("192.0.2.9".parse().unwrap()));
        assert_eq!((x.port, x.ttl), (Some(4711), Some(3)));
        assert_eq!(
            parse(b"XCLIENT ADDR=nonsense"),
            Ok(Command::Xclient(Err(XclientError::BadValue)))
        );
        assert_eq!(parse(b"XCLIENTS"), Err(ParseError::Unknown));
    }

    #[test]
    fn huge_message_numbers_saturate() {
        assert_eq!(
            parse(b"RETR 99999999999999999999999999"),
            Ok(Command::Retr(u64::MAX))
        );
    }

    #[test]
    fn pass_keeps_spaces_and_user_refuses_them() {
        assert_eq!(
            parse(b"PASS a b "),
            Ok(Command::Pass(Secret::new(b"a b ".to_vec())))
        );
        assert_eq!(
            parse(b"USER alice@example.com"),
            Ok(Command::User("alice@example.com".into()))
        );
        assert!(matches!(parse(b"USER a b"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"USER \xc3"), Err(ParseError::Syntax(_))));
    }

    #[test]
    fn auth_forms() {
        assert_eq!(
            parse(b"AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial_response: None
            })
        );
        assert_eq!(
            parse(b"auth plain AGEAYg=="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial_response: Some(Secret::new(b"AGEAYg==".to_vec()))
            })
        );
        // The initial response carries the password: Debug must not show it.
        assert!(!format!("{:?}", parse(b"AUTH PLAIN AGEAYg==")).contains("AGEAYg"));
    }
}
