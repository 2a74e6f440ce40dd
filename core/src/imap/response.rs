//! Response encoding (RFC 3501 §7, §9): strings as atoms, quoted strings or literals,
//! flag lists, response codes, and status lines.

use std::fmt::{self, Write as _};

use bytes::BytesMut;

/// True for an RFC 3501 `ATOM-CHAR`: printable ASCII except `(){ %*"\]`.
pub fn is_atom_char(b: u8) -> bool {
    b.is_ascii_graphic()
        && !matches!(
            b,
            b'(' | b')' | b'{' | b' ' | b'%' | b'*' | b'"' | b'\\' | b']'
        )
}

/// Writes a `string` (RFC 3501 §4.3): quoted when every byte may appear in a quoted
/// string, otherwise a literal (8-bit bytes, CR, LF and NUL cannot be quoted).
pub fn string(out: &mut BytesMut, value: &[u8]) {
    let quotable = value
        .iter()
        .all(|&b| b.is_ascii() && b != 0 && b != b'\r' && b != b'\n');
    if quotable && value.len() <= 1024 {
        out.extend_from_slice(b"\"");
        for &b in value {
            if b == b'"' || b == b'\\' {
                out.extend_from_slice(b"\\");
            }
            out.extend_from_slice(&[b]);
        }
        out.extend_from_slice(b"\"");
    } else {
        literal(out, value);
    }
}

/// Writes a literal: `{n}` CRLF and the bytes.
pub fn literal(out: &mut BytesMut, value: &[u8]) {
    let _ = write!(out, "{{{}}}\r\n", value.len());
    out.extend_from_slice(value);
}

/// Writes an `nstring`: `NIL` or a string.
pub fn nstring(out: &mut BytesMut, value: Option<&[u8]>) {
    match value {
        Some(v) => string(out, v),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// Writes an `astring`: a bare atom when it is one (and not `NIL`, which would read as
/// the nil value), otherwise a string.
pub fn astring(out: &mut BytesMut, value: &[u8]) {
    if !value.is_empty()
        && value.iter().all(|&b| is_atom_char(b))
        && !value.eq_ignore_ascii_case(b"NIL")
    {
        out.extend_from_slice(value);
    } else {
        string(out, value);
    }
}

/// Writes a parenthesised flag list: `(\Seen \Answered)`.
pub fn flag_list<S: AsRef<str>>(out: &mut BytesMut, flags: &[S]) {
    out.extend_from_slice(b"(");
    for (i, flag) in flags.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b" ");
        }
        out.extend_from_slice(flag.as_ref().as_bytes());
    }
    out.extend_from_slice(b")");
}

/// A response code, the bracketed part of a status response (RFC 3501 §7.1, RFC 4315,
/// RFC 5530, RFC 7889).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// `[ALERT]`: the text must be shown to the user.
    Alert,
    /// `[CAPABILITY …]`: the capability list, saving a CAPABILITY round trip.
    Capability(String),
    /// `[PERMANENTFLAGS (…)]`: flags the client can change permanently.
    PermanentFlags(Vec<String>),
    /// `[UIDVALIDITY n]`.
    UidValidity(u32),
    /// `[UIDNEXT n]`.
    UidNext(u32),
    /// `[UNSEEN n]`: the first unseen message's sequence number.
    Unseen(u32),
    /// `[READ-ONLY]`.
    ReadOnly,
    /// `[READ-WRITE]`.
    ReadWrite,
    /// `[TRYCREATE]`: the target mailbox does not exist (RFC 3501 §6.3.11).
    TryCreate,
    /// `[APPENDUID validity uid]` (RFC 4315 §3).
    AppendUid(u32, u32),
    /// `[COPYUID validity source-set dest-set]` (RFC 4315 §3).
    CopyUid(u32, String, String),
    /// `[NONEXISTENT]` (RFC 5530).
    Nonexistent,
    /// `[ALREADYEXISTS]` (RFC 5530).
    AlreadyExists,
    /// `[UNAVAILABLE]`: a temporary failure (RFC 5530).
    Unavailable,
    /// `[AUTHENTICATIONFAILED]` (RFC 5530).
    AuthenticationFailed,
    /// `[AUTHORIZATIONFAILED]`: the account may not log in (RFC 5530).
    AuthorizationFailed,
    /// `[PRIVACYREQUIRED]`: no login before TLS (RFC 5530).
    PrivacyRequired,
    /// `[TOOBIG]`: a literal or message over the limit (RFC 7889).
    TooBig,
    /// `[CLIENTBUG]`: the client did something pointless (RFC 5530).
    ClientBug,
    /// `[SERVERBUG]` (RFC 5530).
    ServerBug,
    /// `[LIMIT]`: a server limit was hit (RFC 5530).
    Limit,
    /// `[CANNOT]`: the operation cannot be done (RFC 5530).
    Cannot,
    /// `[INUSE]` (RFC 5530).
    InUse,
    /// `[BADCHARSET (US-ASCII UTF-8)]`: SEARCH with another charset (RFC 3501 §6.4.4).
    BadCharset,
    /// `[CLOSED]`: the selected mailbox was closed (RFC 7162 §3.2.11, sent on re-SELECT).
    Closed,
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Code::Alert => f.write_str("ALERT"),
            Code::Capability(caps) => write!(f, "CAPABILITY {caps}"),
            Code::PermanentFlags(flags) => write!(f, "PERMANENTFLAGS ({})", flags.join(" ")),
            Code::UidValidity(n) => write!(f, "UIDVALIDITY {n}"),
            Code::UidNext(n) => write!(f, "UIDNEXT {n}"),
            Code::Unseen(n) => write!(f, "UNSEEN {n}"),
            Code::ReadOnly => f.write_str("READ-ONLY"),
            Code::ReadWrite => f.write_str("READ-WRITE"),
            Code::TryCreate => f.write_str("TRYCREATE"),
            Code::AppendUid(v, u) => write!(f, "APPENDUID {v} {u}"),
            Code::CopyUid(v, src, dst) => write!(f, "COPYUID {v} {src} {dst}"),
            Code::Nonexistent => f.write_str("NONEXISTENT"),
            Code::AlreadyExists => f.write_str("ALREADYEXISTS"),
            Code::Unavailable => f.write_str("UNAVAILABLE"),
            Code::AuthenticationFailed => f.write_str("AUTHENTICATIONFAILED"),
            Code::AuthorizationFailed => f.write_str("AUTHORIZATIONFAILED"),
            Code::PrivacyRequired => f.write_str("PRIVACYREQUIRED"),
            Code::TooBig => f.write_str("TOOBIG"),
            Code::ClientBug => f.write_str("CLIENTBUG"),
            Code::ServerBug => f.write_str("SERVERBUG"),
            Code::Limit => f.write_str("LIMIT"),
            Code::Cannot => f.write_str("CANNOT"),
            Code::InUse => f.write_str("INUSE"),
            Code::Closed => f.write_str("CLOSED"),
            Code::BadCharset => f.write_str("BADCHARSET (US-ASCII UTF-8)"),
        }
    }
}

/// The condition of a status response (RFC 3501 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `OK`: success.
    Ok,
    /// `NO`: the command failed.
    No,
    /// `BAD`: a protocol error.
    Bad,
    /// `BYE`: the server is closing the connection.
    Bye,
    /// `PREAUTH`: the connection is already authenticated (greeting only).
    PreAuth,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Condition::Ok => "OK",
            Condition::No => "NO",
            Condition::Bad => "BAD",
            Condition::Bye => "BYE",
            Condition::PreAuth => "PREAUTH",
        }
    }
}

/// Writes a status response line: `tag` (or `*` when `None`), condition, optional
/// `[code]`, text, CRLF. The text never contains CR or LF (they would end the line
/// early and let the remainder be read as another response), so they become spaces.
pub fn status(
    out: &mut BytesMut,
    tag: Option<&str>,
    condition: Condition,
    code: Option<&Code>,
    text: &str,
) {
    out.extend_from_slice(tag.unwrap_or("*").as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(condition.as_str().as_bytes());
    out.extend_from_slice(b" ");
    if let Some(code) = code {
        let _ = write!(out, "[{code}] ");
    }
    for b in text.bytes() {
        out.extend_from_slice(&[if b == b'\r' || b == b'\n' { b' ' } else { b }]);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a continuation request (RFC 3501 §7.5): `+ text` CRLF.
pub fn continuation(out: &mut BytesMut, text: &str) {
    out.extend_from_slice(b"+ ");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Formats a time as an RFC 3501 `date-time` (`"17-Jul-1996 02:44:25 -0700"`), from
/// seconds since the Unix epoch and the zone offset in minutes east of UTC.
pub fn date_time(unix: i64, offset_minutes: i32) -> String {
    let local = unix.saturating_add(i64::from(offset_minutes) * 60);
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (y, m, d) = crate::imap::date::civil_from_days(days);
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let off = offset_minutes.unsigned_abs();
    format!(
        "\"{d:2}-{}-{y:04} {:02}:{:02}:{:02} {sign}{:02}{:02}\"",
        crate::imap::date::MONTHS[usize::from(m - 1)],
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        off / 60,
        off % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::new();
        f(&mut out);
        out.to_vec()
    }

    #[test]
    fn strings_choose_their_form() {
        assert_eq!(enc(|o| astring(o, b"INBOX")), b"INBOX");
        assert_eq!(enc(|o| astring(o, b"nil")), b"\"nil\"");
        assert_eq!(enc(|o| astring(o, b"")), b"\"\"");
        assert_eq!(enc(|o| astring(o, b"a b")), b"\"a b\"");
        assert_eq!(
            enc(|o| string(o, b"say \"hi\\\"")),
            b"\"say \\\"hi\\\\\\\"\""
        );
        assert_eq!(enc(|o| string(o, b"a\r\nb")), b"{4}\r\na\r\nb");
        assert_eq!(enc(|o| string(o, "é".as_bytes())), b"{2}\r\n\xc3\xa9");
        assert_eq!(enc(|o| nstring(o, None)), b"NIL");
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            enc(|o| status(
                o,
                Some("a1"),
                Condition::Ok,
                Some(&Code::ReadWrite),
                "SELECT completed"
            )),
            b"a1 OK [READ-WRITE] SELECT completed\r\n"
        );
        assert_eq!(
            enc(|o| status(
                o,
                None,
                Condition::Ok,
                Some(&Code::PermanentFlags(vec!["\\Seen".into(), "\\*".into()])),
                "x\r\ny"
            )),
            b"* OK [PERMANENTFLAGS (\\Seen \\*)] x  y\r\n"
        );
        assert_eq!(
            enc(|o| status(
                o,
                Some("A3"),
                Condition::Ok,
                Some(&Code::CopyUid(
                    38505,
                    "304,319:320".into(),
                    "3956:3958".into()
                )),
                "Done"
            )),
            b"A3 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n"
        );
    }

    #[test]
    fn date_time_rendering() {
        // 1996-07-17 09:44:25 UTC shown at -0700 (RFC 3501's example).
        assert_eq!(
            date_time(837_596_665, -420),
            "\"17-Jul-1996 02:44:25 -0700\""
        );
        assert_eq!(date_time(0, 0), "\" 1-Jan-1970 00:00:00 +0000\"");
    }
}
