//! Postfix's XCLIENT command: a trusted front-end tells an SMTP (or POP3) server the
//! real client's address before the client's session starts.
//!
//! Grammar (Postfix `XCLIENT_README`): `XCLIENT 1*( SP attribute-name "=" attribute-value )`,
//! values in xtext (RFC 3461 §4: printable ASCII except `+` and `=` as themselves,
//! everything else as `+XX`). IPv6 addresses carry an `IPV6:` prefix; `[UNAVAILABLE]`
//! and `[TEMPUNAVAIL]` say the value is not known. tidegate adds `TTL=` (the proxy
//! hops still allowed), as Dovecot does. A command line stays within 512 octets
//! (RFC 5321 §4.5.3.1.4); `LOGIN=` is never sent, because the front-end replays the
//! user's own AUTH and must not pre-authenticate the back-end.

use std::net::{IpAddr, Ipv6Addr};

/// The longest XCLIENT command line, CRLF excluded (RFC 5321 §4.5.3.1.4).
pub const MAX_LINE: usize = 510;
/// The longest `HELO=` or `NAME=` value kept (a domain name, RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;

/// The attributes tidegate sends and reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Xclient {
    /// `ADDR=`: the client's IP address; `None` when absent or `[UNAVAILABLE]`.
    pub addr: Option<IpAddr>,
    /// `PORT=`: the client's TCP port.
    pub port: Option<u16>,
    /// `HELO=`: the name the client gave in HELO/EHLO.
    pub helo: Option<String>,
    /// `NAME=`: the client's host name from reverse DNS.
    pub name: Option<String>,
    /// `PROTO=`: `SMTP` or `ESMTP`.
    pub proto: Option<String>,
    /// `TTL=`: proxy hops still allowed (a Dovecot extension tidegate shares).
    pub ttl: Option<u8>,
}

/// Why an XCLIENT line was refused (SMTP `501 5.5.4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XclientError {
    /// Not an `XCLIENT` command or no attributes.
    Syntax,
    /// An attribute name outside the Postfix set.
    UnknownAttribute,
    /// A value that is not valid xtext or not valid for its attribute.
    BadValue,
    /// Longer than [`MAX_LINE`].
    TooLong,
}

/// Encodes the XCLIENT command (without CRLF), attributes in a fixed order.
pub fn encode(x: &Xclient) -> String {
    let mut line = String::from("XCLIENT");
    if let Some(name) = &x.name {
        push(&mut line, "NAME", name);
    }
    if let Some(helo) = &x.helo {
        push(&mut line, "HELO", helo);
    }
    if let Some(proto) = &x.proto {
        push(&mut line, "PROTO", proto);
    }
    if let Some(addr) = x.addr {
        let text = match addr {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("IPV6:{v6}"),
        };
        push(&mut line, "ADDR", &text);
    }
    if let Some(port) = x.port {
        push(&mut line, "PORT", &port.to_string());
    }
    if let Some(ttl) = x.ttl {
        push(&mut line, "TTL", &ttl.to_string());
    }
    line
}

fn push(line: &mut String, name: &str, value: &str) {
    line.push(' ');
    line.push_str(name);
    line.push('=');
    line.push_str(&xtext_encode(value.as_bytes()));
}

/// RFC 3461 §4 xtext: `!`..`~` except `+` and `=` stand for themselves.
pub fn xtext_encode(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Decodes xtext; `None` when it is not valid (a bare `+`, lowercase or non-hex digits,
/// characters outside `!`..`~`).
pub fn xtext_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'+' => {
                let hex = text.get(i + 1..i + 3)?;
                let digit = |d: u8| match d {
                    b'0'..=b'9' => Some(d - b'0'),
                    b'A'..=b'F' => Some(d - b'A' + 10),
                    _ => None,
                };
                out.push(digit(hex[0])? << 4 | digit(hex[1])?);
                i += 3;
            }
            b'!'..=b'~' if b != b'=' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Parses an XCLIENT command line (CRLF removed); the keyword is case-insensitive.
pub fn parse(line: &[u8]) -> Result<Xclient, XclientError> {
    if line.len() > MAX_LINE {
        return Err(XclientError::TooLong);
    }
    let mut words = line.split(|&b| b == b' ');
    if !words
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case(b"XCLIENT"))
    {
        return Err(XclientError::Syntax);
    }
    let mut x = Xclient::default();
    let mut any = false;
    for word in words {
        let eq = word
            .iter()
            .position(|&b| b == b'=')
            .ok_or(XclientError::Syntax)?;
        let (name, value) = (&word[..eq], &word[eq + 1..]);
        let value = xtext_decode(value).ok_or(XclientError::BadValue)?;
        let value = String::from_utf8(value).map_err(|_| XclientError::BadValue)?;
        let unavailable = value == "[UNAVAILABLE]" || value == "[TEMPUNAVAIL]";
        any = true;
        match name.to_ascii_uppercase().as_slice() {
            b"ADDR" => {
                x.addr = if unavailable {
                    None
                } else {
                    Some(parse_addr(&value)?)
                }
            }
            b"PORT" => {
                x.port = if unavailable {
                    None
                } else {
                    Some(value.parse().map_err(|_| XclientError::BadValue)?)
                }
            }
            b"TTL" => x.ttl = Some(value.parse().map_err(|_| XclientError::BadValue)?),
            b"HELO" => x.helo = name_value(value, unavailable)?,
            b"NAME" => x.name = name_value(value, unavailable)?,
            b"PROTO" => x.proto = name_value(value, unavailable)?,
            // Known to Postfix or Dovecot, not used by tidegate.
            b"LOGIN" | b"DESTADDR" | b"DESTPORT" | b"SESSION" | b"DESTNAME" | b"FORWARD" => {}
            _ => return Err(XclientError::UnknownAttribute),
        }
    }
    if !any {
        return Err(XclientError::Syntax);
    }
    Ok(x)
}

fn parse_addr(value: &str) -> Result<IpAddr, XclientError> {
    let prefix = value.get(..5).filter(|p| p.eq_ignore_ascii_case("IPV6:"));
    match prefix {
        Some(_) => value[5..]
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| XclientError::BadValue),
        // Dovecot sends IPv6 without the prefix; accept both.
        None => value.parse().map_err(|_| XclientError::BadValue),
    }
}

fn name_value(value: String, unavailable: bool) -> Result<Option<String>, XclientError> {
    if unavailable {
        return Ok(None);
    }
    // xtext can encode any byte; a name with a control character (CR, LF) could end a
    // line wherever the name is written (a Received: header, a log line).
    if value.is_empty() || value.len() > MAX_NAME || value.chars().any(char::is_control) {
        return Err(XclientError::BadValue);
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_control_characters_are_refused() {
        for line in [
            "XCLIENT HELO=evil+0D+0AX-Injected:+20yes",
            "XCLIENT NAME=a+0Ab",
            "XCLIENT PROTO=ESMTP+00",
        ] {
            assert_eq!(
                parse(line.as_bytes()),
                Err(XclientError::BadValue),
                "{line}"
            );
        }
        let ok = parse(b"XCLIENT HELO=client.example").unwrap();
        assert_eq!(ok.helo.as_deref(), Some("client.example"));
    }

    #[test]
    fn encodes_what_postfix_expects() {
        let x = Xclient {
            addr: Some("2001:db8::7".parse().unwrap()),
            port: Some(4000),
            helo: Some("client name+x".into()),
            ttl: Some(3),
            ..Xclient::default()
        };
        let line = encode(&x);
        assert_eq!(
            line,
            "XCLIENT HELO=client+20name+2Bx ADDR=IPV6:2001:db8::7 PORT=4000 TTL=3"
        );
        assert_eq!(parse(line.as_bytes()), Ok(x));
    }

    #[test]
    fn parses_and_refuses() {
        let x = parse(b"xclient ADDR=192.0.2.1 PORT=[UNAVAILABLE] NAME=[TEMPUNAVAIL]").unwrap();
        assert_eq!(x.addr, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(x.port, None);
        assert_eq!(x.name, None);
        assert_eq!(parse(b"XCLIENT"), Err(XclientError::Syntax));
        assert_eq!(parse(b"XCLIENT ADDR"), Err(XclientError::Syntax));
        assert_eq!(parse(b"XCLIENT FOO=1"), Err(XclientError::UnknownAttribute));
        assert_eq!(
            parse(b"XCLIENT ADDR=300.1.1.1"),
            Err(XclientError::BadValue)
        );
        assert_eq!(parse(b"XCLIENT TTL=256"), Err(XclientError::BadValue));
        assert_eq!(parse(b"XCLIENT HELO=a+2"), Err(XclientError::BadValue));
        assert_eq!(parse(b"XCLIENT HELO=a+2g"), Err(XclientError::BadValue));
        assert_eq!(parse(&[b'X'; 600]), Err(XclientError::TooLong));
    }

    #[test]
    fn xtext_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(xtext_decode(xtext_encode(&all).as_bytes()), Some(all));
    }
}
