//! The login log line: one line per login attempt, the same for every protocol and
//! for front-ends and back-ends alike, so one pattern finds them all:
//!
//! ```text
//! login alice@example.com from 192.0.2.7:50123 to 10.0.0.1:110 protocol=pop3 method=USER/PASS result=success tls=no session=42
//! ```
//!
//! `from` is the client (when a trusted proxy named the client with XCLIENT or IMAP
//! `ID`, its address followed by `via` and the proxy's connection); `to` is the
//! listener; `session` is a per-process counter. The user is the canonical account on
//! success and the name the client gave otherwise, quoted and escaped when it holds
//! anything but plain characters. The password is never part of it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use tidegate_store::metrics::{LoginResult, Protocol};

/// The longest user name logged; longer names are cut (they cannot be real accounts).
const MAX_LOGGED_USER: usize = 256;

/// The longest SASL mechanism name kept (RFC 4422 §3.1 allows 20 characters).
const MAX_MECHANISM: usize = 20;

/// How the client logged in, as recognised from its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// POP3 `USER` then `PASS` (RFC 1939 §7).
    UserPass,
    /// POP3 `APOP` (RFC 1939 §7).
    Apop,
    /// IMAP `LOGIN` (RFC 3501 §6.2.3).
    Login,
    /// POP3 (RFC 5034) or SMTP (RFC 4954) `AUTH` with this SASL mechanism.
    Auth(String),
    /// IMAP `AUTHENTICATE` (RFC 3501 §6.2.2) with this SASL mechanism.
    Authenticate(String),
    /// Not recognised (the command line was longer than the observer keeps).
    Unknown,
}

impl Method {
    /// The method a command line starts, for `protocol`; `None` for other commands.
    pub fn recognise(protocol: Protocol, line: &[u8]) -> Option<Method> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut words = line
            .split(|b| *b == b' ')
            .filter(|w| !w.is_empty())
            .map(|w| w.to_ascii_uppercase());
        let first = words.next()?;
        match protocol {
            Protocol::Pop3 => match first.as_slice() {
                b"USER" | b"PASS" => Some(Method::UserPass),
                b"APOP" => Some(Method::Apop),
                b"AUTH" => words.next().map(|m| Method::Auth(mechanism(&m))),
                _ => None,
            },
            Protocol::Submission => match first.as_slice() {
                b"AUTH" => words.next().map(|m| Method::Auth(mechanism(&m))),
                _ => None,
            },
            Protocol::Imap => match words.next()?.as_slice() {
                b"LOGIN" => Some(Method::Login),
                b"AUTHENTICATE" => words.next().map(|m| Method::Authenticate(mechanism(&m))),
                _ => None,
            },
            Protocol::Smtp | Protocol::Lmtp => None,
        }
    }
}

/// A mechanism name as logged: its SASL characters only, at most [`MAX_MECHANISM`].
fn mechanism(word: &[u8]) -> String {
    let name: String = word
        .iter()
        .take(MAX_MECHANISM)
        .filter(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b'_')
        .map(|b| char::from(*b))
        .collect();
    if name.is_empty() { "?".into() } else { name }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::UserPass => f.write_str("USER/PASS"),
            Method::Apop => f.write_str("APOP"),
            Method::Login => f.write_str("LOGIN"),
            Method::Auth(mech) => write!(f, "AUTH-{mech}"),
            Method::Authenticate(mech) => write!(f, "AUTHENTICATE-{mech}"),
            Method::Unknown => f.write_str("unknown"),
        }
    }
}

/// One login attempt, formatted as the module documentation shows.
#[derive(Debug)]
pub struct LoginLine<'a> {
    /// The account (success) or the name given (failure).
    pub user: &'a str,
    /// How the client logged in.
    pub method: &'a Method,
    /// How it ended.
    pub result: LoginResult,
    /// The listener's protocol.
    pub protocol: Protocol,
    /// The connection's peer.
    pub client: SocketAddr,
    /// The client address the session used (differs from `client` when a trusted
    /// proxy named the real client).
    pub client_ip: IpAddr,
    /// The listener's address.
    pub local: SocketAddr,
    /// TLS was active when the password was sent.
    pub tls: bool,
    /// The per-process session id.
    pub session: u64,
}

impl fmt::Display for LoginLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("login ")?;
        write_user(f, self.user)?;
        if self.client_ip == self.client.ip() {
            write!(f, " from {}", self.client)?;
        } else {
            write!(f, " from {} via {}", self.client_ip, self.client)?;
        }
        write!(
            f,
            " to {} protocol={} method={} result={} tls={} session={}",
            self.local,
            self.protocol.name(),
            self.method,
            self.result.name(),
            if self.tls { "yes" } else { "no" },
            self.session
        )
    }
}

/// The user as is when it is plain (no space, quote, backslash or control character),
/// else quoted with Rust's escapes, so a hostile name cannot forge log fields or lines.
fn write_user(f: &mut fmt::Formatter<'_>, user: &str) -> fmt::Result {
    let cut = match user.char_indices().nth(MAX_LOGGED_USER) {
        Some((at, _)) => &user[..at],
        None => user,
    };
    let plain = !cut.is_empty()
        && cut
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '\\');
    if plain {
        f.write_str(cut)
    } else {
        write!(f, "{cut:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(user: &str, client_ip: &str) -> String {
        LoginLine {
            user,
            method: &Method::UserPass,
            result: LoginResult::Failure,
            protocol: Protocol::Pop3,
            client: "192.0.2.7:50123".parse().unwrap(),
            client_ip: client_ip.parse().unwrap(),
            local: "10.0.0.1:110".parse().unwrap(),
            tls: false,
            session: 42,
        }
        .to_string()
    }

    #[test]
    fn the_line_carries_every_field() {
        assert_eq!(
            line("alice@example.com", "192.0.2.7"),
            "login alice@example.com from 192.0.2.7:50123 to 10.0.0.1:110 protocol=pop3 \
             method=USER/PASS result=failure tls=no session=42"
        );
        assert!(
            line("alice@example.com", "198.51.100.1")
                .contains(" from 198.51.100.1 via 192.0.2.7:50123 ")
        );
    }

    #[test]
    fn hostile_user_names_are_quoted_and_cut() {
        assert!(line("a b\nlogin x", "192.0.2.7").starts_with("login \"a b\\nlogin x\" from"));
        assert!(line("", "192.0.2.7").starts_with("login \"\" from"));
        let long = "x".repeat(1000);
        let text = line(&long, "192.0.2.7");
        assert!(text.starts_with(&format!("login {} from", "x".repeat(MAX_LOGGED_USER))));
    }

    #[test]
    fn methods_are_recognised_per_protocol() {
        let r = Method::recognise;
        assert_eq!(r(Protocol::Pop3, b"user alice\r"), Some(Method::UserPass));
        assert_eq!(
            r(Protocol::Pop3, b"AUTH plain dGVzdA==\r"),
            Some(Method::Auth("PLAIN".into()))
        );
        assert_eq!(r(Protocol::Pop3, b"STAT\r"), None);
        assert_eq!(
            r(Protocol::Imap, b"a1 login alice pw\r"),
            Some(Method::Login)
        );
        assert_eq!(
            r(Protocol::Imap, b"a2 AUTHENTICATE PLAIN\r"),
            Some(Method::Authenticate("PLAIN".into()))
        );
        assert_eq!(r(Protocol::Imap, b"USER alice"), None);
        assert_eq!(
            r(Protocol::Submission, b"AUTH LOGIN"),
            Some(Method::Auth("LOGIN".into()))
        );
        assert_eq!(r(Protocol::Submission, b"USER x"), None);
        assert_eq!(r(Protocol::Smtp, b"AUTH PLAIN"), None);
        assert_eq!(
            r(Protocol::Submission, b"AUTH \x1b[31m"),
            Some(Method::Auth("31M".into()))
        );
    }
}
