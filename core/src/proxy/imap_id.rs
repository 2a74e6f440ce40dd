//! The IMAP ID command (RFC 2971) as proxies use it: the front-end tells the back-end the
//! real client before LOGIN with Dovecot's `x-originating-ip`, `x-originating-port` and
//! `x-proxy-ttl` fields, and a back-end reads them from trusted peers.
//!
//! `id_params_list ::= "(" #(string SP nstring) ")" / nil` (RFC 2971 §4), at most 30
//! pairs, field names at most 30 octets and values at most 1024 (§3.3). Strings here
//! are quoted strings; literals are not accepted in an ID from a proxy.

use std::net::{IpAddr, SocketAddr};

/// Most field/value pairs (RFC 2971 §3.3).
pub const MAX_PAIRS: usize = 30;
/// Longest field name (RFC 2971 §3.3).
pub const MAX_KEY: usize = 30;
/// Longest value (RFC 2971 §3.3).
pub const MAX_VALUE: usize = 1024;

/// Why an ID parameter list was refused (IMAP `BAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// Not `NIL` or a parenthesised list of quoted strings.
    Syntax,
    /// More pairs, or longer names or values, than RFC 2971 §3.3 allows.
    TooLarge,
}

/// One field and its value (`NIL` is `None`).
pub type IdPair = (String, Option<String>);

/// What a proxy said about its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdClient {
    /// `x-originating-ip`.
    pub ip: Option<IpAddr>,
    /// `x-originating-port`.
    pub port: Option<u16>,
    /// `x-proxy-ttl`: proxy hops still allowed.
    pub ttl: Option<u8>,
}

/// The ID command's parameters for a proxied client (without tag and CRLF):
/// `ID ("x-originating-ip" "192.0.2.1" "x-originating-port" "40000" "x-proxy-ttl" "4")`.
pub fn encode_client(client: SocketAddr, ttl: u8) -> String {
    encode(&[
        ("x-originating-ip", &client.ip().to_string()),
        ("x-originating-port", &client.port().to_string()),
        ("x-proxy-ttl", &ttl.to_string()),
    ])
}

/// `ID (` quoted pairs `)`.
pub fn encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("ID (");
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        quote(&mut out, key);
        out.push(' ');
        quote(&mut out, value);
    }
    out.push(')');
    out
}

/// An IMAP quoted string (RFC 3501 §9 `quoted`): `\` and `"` escaped. Callers pass
/// text without CR, LF or NUL, which a quoted string cannot carry.
pub fn quote(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Parses the arguments of an ID command (what follows `ID `).
pub fn parse_params(input: &[u8]) -> Result<Vec<IdPair>, IdError> {
    if input.eq_ignore_ascii_case(b"NIL") {
        return Ok(Vec::new());
    }
    let inner = input
        .strip_prefix(b"(")
        .and_then(|rest| rest.strip_suffix(b")"))
        .ok_or(IdError::Syntax)?;
    let mut rest = inner;
    let mut pairs = Vec::new();
    while !rest.is_empty() {
        if !pairs.is_empty() {
            rest = rest.strip_prefix(b" ").ok_or(IdError::Syntax)?;
        }
        let (key, after) = quoted(rest)?;
        let key = key.ok_or(IdError::Syntax)?;
        rest = after.strip_prefix(b" ").ok_or(IdError::Syntax)?;
        let (value, after) = quoted(rest)?;
        rest = after;
        if pairs.len() == MAX_PAIRS
            || key.len() > MAX_KEY
            || value.as_ref().is_some_and(|v| v.len() > MAX_VALUE)
        {
            return Err(IdError::TooLarge);
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// One quoted string or `NIL` at the start of `input`, and what follows it.
fn quoted(input: &[u8]) -> Result<(Option<String>, &[u8]), IdError> {
    if input.len() >= 3 && input[..3].eq_ignore_ascii_case(b"NIL") {
        return Ok((None, &input[3..]));
    }
    let body = input.strip_prefix(b"\"").ok_or(IdError::Syntax)?;
    let mut text = Vec::new();
    let mut i = 0;
    loop {
        match body.get(i) {
            None | Some(b'\r' | b'\n' | 0) => return Err(IdError::Syntax),
            Some(b'"') => break,
            Some(b'\\') => match body.get(i + 1) {
                Some(&c @ (b'"' | b'\\')) => {
                    text.push(c);
                    i += 2;
                }
                _ => return Err(IdError::Syntax),
            },
            Some(&c) => {
                text.push(c);
                i += 1;
            }
        }
        if text.len() > MAX_VALUE {
            return Err(IdError::TooLarge);
        }
    }
    let text = String::from_utf8(text).map_err(|_| IdError::Syntax)?;
    Ok((Some(text), &body[i + 1..]))
}

/// The proxy fields of a parsed ID list; unknown fields and unparsable values are
/// ignored (ID is informational, RFC 2971 §3.1).
pub fn client_of(pairs: &[IdPair]) -> IdClient {
    let mut client = IdClient::default();
    for (key, value) in pairs {
        let Some(value) = value.as_deref() else {
            continue;
        };
        match key.to_ascii_lowercase().as_str() {
            "x-originating-ip" => client.ip = value.parse().ok(),
            "x-originating-port" => client.port = value.parse().ok(),
            "x-proxy-ttl" => client.ttl = value.parse().ok(),
            _ => {}
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_fields_round_trip() {
        let line = encode_client("[2001:db8::1]:993".parse().unwrap(), 3);
        assert_eq!(
            line,
            r#"ID ("x-originating-ip" "2001:db8::1" "x-originating-port" "993" "x-proxy-ttl" "3")"#
        );
        let pairs = parse_params(&line.as_bytes()[3..]).unwrap();
        assert_eq!(
            client_of(&pairs),
            IdClient {
                ip: Some("2001:db8::1".parse().unwrap()),
                port: Some(993),
                ttl: Some(3)
            }
        );
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!(parse_params(b"NIL"), Ok(vec![]));
        assert_eq!(
            parse_params(br#"("name" "a \"b\" \\" "version" NIL)"#),
            Ok(vec![
                ("name".into(), Some(r#"a "b" \"#.into())),
                ("version".into(), None)
            ])
        );
        for bad in [
            &br#"("name")"#[..],
            br#"("name" "x""#,
            br#"(NIL "x")"#,
            br#"("a"  "b")"#,
            br#"("a" "b\x")"#,
            b"{3}",
        ] {
            assert_eq!(parse_params(bad), Err(IdError::Syntax), "{bad:?}");
        }
        let long_key = format!("(\"{}\" NIL)", "k".repeat(31));
        assert_eq!(parse_params(long_key.as_bytes()), Err(IdError::TooLarge));
        let many = format!("({})", vec![r#""k" "v""#; 31].join(" "));
        assert_eq!(parse_params(many.as_bytes()), Err(IdError::TooLarge));
    }
}
