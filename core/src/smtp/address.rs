//! Envelope paths and ESMTP parameters: RFC 5321 §4.1.2 (grammar), §4.5.3.1 (length
//! limits), RFC 6531 §3.3 (UTF-8 in addresses).
//!
//! The grammar is small and byte-oriented, so it is a hand-written cursor: every step
//! looks at one byte through `Option`, so no input can make it index out of bounds.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest local part: RFC 5321 §4.5.3.1.1.
pub const MAX_LOCAL_PART: usize = 64;
/// Longest domain: RFC 5321 §4.5.3.1.2.
pub const MAX_DOMAIN: usize = 255;
/// Longest reverse- or forward-path, angle brackets and source route included:
/// RFC 5321 §4.5.3.1.3.
pub const MAX_PATH: usize = 256;

/// A parsed `<…>` path, source route removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// `local@domain` exactly as written (a quoted local part keeps its quotes); empty
    /// for the null reverse-path `<>`; `Postmaster` (as written) for the special
    /// recipient of RFC 5321 §4.1.1.3.
    pub address: String,
    /// The address contains non-ASCII characters, which needs `SMTPUTF8` on MAIL
    /// (RFC 6531 §3.4).
    pub utf8: bool,
}

impl Path {
    /// True for the null reverse-path `<>` (bounces, RFC 5321 §4.5.5).
    pub fn is_null(&self) -> bool {
        self.address.is_empty()
    }
}

/// Which path a command carries: MAIL may give `<>`, RCPT may give `<Postmaster>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// `MAIL FROM:` (RFC 5321 `Reverse-path`).
    Reverse,
    /// `RCPT TO:` (RFC 5321 `Forward-path`).
    Forward,
}

/// Why a path was refused; both are answered `501 5.1.3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    /// Not RFC 5321 (or RFC 6531) path syntax, or invalid UTF-8.
    Syntax,
    /// Longer than a limit of RFC 5321 §4.5.3.1.
    TooLong,
}

/// Parses the path at the start of `input`; returns it and the number of bytes it used.
pub fn parse_path(input: &[u8], kind: PathKind) -> Result<(Path, usize), AddressError> {
    let mut c = Cursor { s: input, pos: 0 };
    c.expect(b'<')?;
    if kind == PathKind::Reverse && c.eat(b'>') {
        let null = Path {
            address: String::new(),
            utf8: false,
        };
        return Ok((null, c.pos));
    }
    let routed = c.peek() == Some(b'@');
    if routed {
        // A-d-l ":" — accepted and ignored (RFC 5321 §4.1.2, Appendix C).
        loop {
            c.expect(b'@')?;
            domain(&mut c)?;
            if !c.eat(b',') {
                break;
            }
        }
        c.expect(b':')?;
    }
    let start = c.pos;
    local_part(&mut c)?;
    let local_end = c.pos;
    let local = c.slice(start, local_end);
    if kind == PathKind::Forward
        && !routed
        && local.eq_ignore_ascii_case(b"postmaster")
        && c.eat(b'>')
    {
        return Ok((text_path(local)?, c.pos));
    }
    c.expect(b'@')?;
    let domain_start = c.pos;
    if c.peek() == Some(b'[') {
        address_literal(&mut c)?;
    } else {
        domain(&mut c)?;
    }
    let end = c.pos;
    c.expect(b'>')?;
    if local_end - start > MAX_LOCAL_PART || end - domain_start > MAX_DOMAIN || c.pos > MAX_PATH {
        return Err(AddressError::TooLong);
    }
    Ok((text_path(c.slice(start, end))?, c.pos))
}

fn text_path(bytes: &[u8]) -> Result<Path, AddressError> {
    let address = std::str::from_utf8(bytes).map_err(|_| AddressError::Syntax)?;
    Ok(Path {
        utf8: !address.is_ascii(),
        address: address.to_owned(),
    })
}

/// Whether `name` may stand in `HELO`/`EHLO`/`LHLO` and hence in our `Received:` field:
/// a domain or an address literal (RFC 5321 §4.1.1.1). Real clients send names with
/// underscores too, so letters, digits, `.`, `-` and `_` are accepted; nothing that could
/// change the meaning of a header field (spaces, parentheses, `;`, non-ASCII) is.
pub fn is_helo_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > MAX_DOMAIN {
        return false;
    }
    if name.first() == Some(&b'[') {
        let mut c = Cursor { s: name, pos: 0 };
        return address_literal(&mut c).is_ok() && c.pos == name.len();
    }
    name.iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// One `esmtp-param` of MAIL or RCPT (RFC 5321 §4.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The keyword, upper-cased (keywords are case-insensitive).
    pub keyword: String,
    /// The value after `=`, as written.
    pub value: Option<String>,
}

/// Parses the parameters after a path: empty, or a space followed by space-separated
/// `keyword[=value]` items. The error text completes a `501 5.5.4` reply.
pub fn parse_params(input: &[u8]) -> Result<Vec<Param>, &'static str> {
    if input.is_empty() {
        return Ok(Vec::new());
    }
    if input.first() != Some(&b' ') {
        return Err("Syntax: a space must separate the address and parameters");
    }
    input
        .split(|&b| b == b' ')
        .filter(|item| !item.is_empty())
        .map(param)
        .collect()
}

fn param(item: &[u8]) -> Result<Param, &'static str> {
    const BAD: &str = "Invalid parameter syntax";
    let (keyword, value) = match item.iter().position(|&b| b == b'=') {
        Some(eq) => (&item[..eq], Some(&item[eq + 1..])),
        None => (item, None),
    };
    let keyword_ok = keyword.first().is_some_and(u8::is_ascii_alphanumeric)
        && keyword
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-');
    if !keyword_ok {
        return Err(BAD);
    }
    let value = match value {
        None => None,
        // esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 (RFC 6531 §3.3).
        Some(v) if !v.is_empty() && v.iter().all(|&b| matches!(b, 33..=60 | 62..=126 | 128..)) => {
            Some(std::str::from_utf8(v).map_err(|_| BAD)?.to_owned())
        }
        Some(_) => return Err(BAD),
    };
    Ok(Param {
        keyword: String::from_utf8_lossy(keyword).to_ascii_uppercase(),
        value,
    })
}

/// A position in a path being parsed.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }
    fn expect(&mut self, b: u8) -> Result<(), AddressError> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(AddressError::Syntax)
        }
    }
    /// Advances over bytes matching `class`; returns how many.
    fn take_while(&mut self, class: impl Fn(u8) -> bool) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(&class) {
            self.pos += 1;
        }
        self.pos - start
    }
    fn slice(&self, from: usize, to: usize) -> &'a [u8] {
        self.s.get(from..to).unwrap_or_default()
    }
}

/// `Local-part = Dot-string / Quoted-string`.
fn local_part(c: &mut Cursor<'_>) -> Result<(), AddressError> {
    if c.eat(b'"') {
        loop {
            match c.peek() {
                Some(b'"') => {
                    c.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    c.pos += 1;
                    // quoted-pairSMTP = "\" %d32-126
                    if !c.peek().is_some_and(|b| (32..=126).contains(&b)) {
                        return Err(AddressError::Syntax);
                    }
                    c.pos += 1;
                }
                Some(b) if is_qtext(b) => c.pos += 1,
                _ => return Err(AddressError::Syntax),
            }
        }
    }
    loop {
        if c.take_while(is_atext) == 0 {
            return Err(AddressError::Syntax);
        }
        if !c.eat(b'.') {
            return Ok(());
        }
    }
}

/// `Domain = sub-domain *("." sub-domain)`; a sub-domain starts and ends with a letter
/// or digit (non-ASCII bytes count as letters: RFC 6531 U-labels).
fn domain(c: &mut Cursor<'_>) -> Result<(), AddressError> {
    loop {
        let start = c.pos;
        if !c.peek().is_some_and(is_let_dig) {
            return Err(AddressError::Syntax);
        }
        c.take_while(|b| is_let_dig(b) || b == b'-');
        if c.slice(start, c.pos).last() == Some(&b'-') {
            return Err(AddressError::Syntax);
        }
        if !c.eat(b'.') {
            return Ok(());
        }
    }
}

/// `address-literal = "[" ( IPv4-address-literal / IPv6-address-literal ) "]"`; the
/// general form (a standardised tag) has no registered tags, so it is refused.
fn address_literal(c: &mut Cursor<'_>) -> Result<(), AddressError> {
    c.expect(b'[')?;
    let start = c.pos;
    // dcontent = %d33-90 / %d94-126
    c.take_while(|b| matches!(b, 33..=90 | 94..=126));
    let inner = c.slice(start, c.pos);
    c.expect(b']')?;
    let text = std::str::from_utf8(inner).map_err(|_| AddressError::Syntax)?;
    let valid = match text.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => text
            .get(5..)
            .is_some_and(|v6| v6.parse::<Ipv6Addr>().is_ok()),
        _ => text.parse::<Ipv4Addr>().is_ok(),
    };
    if valid {
        Ok(())
    } else {
        Err(AddressError::Syntax)
    }
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// `qtextSMTP = %d32-33 / %d35-91 / %d93-126`, plus UTF-8 (RFC 6531).
fn is_qtext(b: u8) -> bool {
    matches!(b, 32 | 33 | 35..=91 | 93..=126) || b >= 0x80
}

fn is_let_dig(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(input: &str, kind: PathKind) -> Result<(String, bool, usize), AddressError> {
        parse_path(input.as_bytes(), kind).map(|(p, n)| (p.address, p.utf8, n))
    }

    #[test]
    fn path_table() {
        use PathKind::{Forward, Reverse};
        let ok = |s: &str, kind, want: &str| {
            let (address, _, used) = path(s, kind).unwrap_or_else(|e| panic!("{s}: {e:?}"));
            assert_eq!(address, want, "{s}");
            assert_eq!(used, s.rfind('>').map_or(0, |i| i + 1), "{s}");
        };
        ok("<>", Reverse, "");
        ok("<a@b.example>", Forward, "a@b.example");
        ok(
            "<first.last+tag@sub.example.com> SIZE=1",
            Forward,
            "first.last+tag@sub.example.com",
        );
        ok(
            "<\"john doe\"@example.com>",
            Forward,
            "\"john doe\"@example.com",
        );
        ok(
            "<\"a\\\"b>c\"@example.com>",
            Forward,
            "\"a\\\"b>c\"@example.com",
        );
        ok("<user@[192.0.2.1]>", Forward, "user@[192.0.2.1]");
        ok(
            "<user@[IPv6:2001:db8::1]>",
            Forward,
            "user@[IPv6:2001:db8::1]",
        );
        ok(
            "<@relay.example,@b.example:u@d.example>",
            Forward,
            "u@d.example",
        );
        ok("<Postmaster>", Forward, "Postmaster");
        ok(
            "<x@xn--bcher-kva.example>",
            Forward,
            "x@xn--bcher-kva.example",
        );

        let bad = |s: &str, kind, want| assert_eq!(path(s, kind).map(|_| ()), Err(want), "{s}");
        use AddressError::{Syntax, TooLong};
        bad("<>", Forward, Syntax);
        bad("a@b", Forward, Syntax);
        bad("<a@b", Forward, Syntax);
        bad("<a@>", Forward, Syntax);
        bad("<@b>", Forward, Syntax);
        bad("<a..b@c>", Forward, Syntax);
        bad("<.a@c>", Forward, Syntax);
        bad("<a@-c>", Forward, Syntax);
        bad("<a@c->", Forward, Syntax);
        bad("<a@c..d>", Forward, Syntax);
        bad("<a b@c>", Forward, Syntax);
        bad("<a@[300.1.1.1]>", Forward, Syntax);
        bad("<a@[IPv6:zz]>", Forward, Syntax);
        bad("<a@[tag:stuff]>", Forward, Syntax);
        bad("<Postmaster>", Reverse, Syntax);
        bad("<\"unterminated@c>", Forward, Syntax);
        bad("<\"bad\\\x01\"@c>", Forward, Syntax);
        bad("<@a:@b:u@c>", Forward, Syntax);
        let long_local = format!("<{}@example.com>", "l".repeat(65));
        bad(&long_local, Forward, TooLong);
        let ok_local = format!("<{}@example.com>", "l".repeat(64));
        assert!(path(&ok_local, Forward).is_ok());
        let long_domain = format!("<a@{}example>", "d.".repeat(125));
        bad(&long_domain, Forward, TooLong);
        let long_path = format!("<{}@{}>", "l".repeat(60), vec!["d".repeat(60); 4].join("."));
        bad(&long_path, Forward, TooLong);
    }

    #[test]
    fn utf8_addresses_are_marked_and_must_be_valid() {
        assert_eq!(
            path("<jösé@bücher.example>", PathKind::Forward),
            Ok(("jösé@bücher.example".into(), true, 24))
        );
        assert_eq!(
            path("<a@b>", PathKind::Forward),
            Ok(("a@b".into(), false, 5))
        );
        assert_eq!(
            parse_path(b"<\xff@b>", PathKind::Forward).map(|_| ()),
            Err(AddressError::Syntax)
        );
    }

    #[test]
    fn params_table() {
        let p = |k: &str, v: Option<&str>| Param {
            keyword: k.into(),
            value: v.map(Into::into),
        };
        assert_eq!(parse_params(b""), Ok(vec![]));
        assert_eq!(
            parse_params(b" size=100  BODY=8BITMIME smtputf8 "),
            Ok(vec![
                p("SIZE", Some("100")),
                p("BODY", Some("8BITMIME")),
                p("SMTPUTF8", None)
            ])
        );
        assert_eq!(parse_params(b" AUTH=<>"), Ok(vec![p("AUTH", Some("<>"))]));
        assert!(parse_params(b"SIZE=1").is_err());
        assert!(parse_params(b" SIZE=").is_err());
        assert!(parse_params(b" =1").is_err());
        assert!(parse_params(b" -X=1").is_err());
        assert!(parse_params(b" X=a=b").is_err());
        assert!(parse_params(b" X=\x01").is_err());
        assert!(parse_params(b" X=\xff").is_err());
    }

    #[test]
    fn helo_names() {
        for ok in [
            "mail.example.com",
            "localhost",
            "my_host",
            "[192.0.2.1]",
            "[IPv6:::1]",
        ] {
            assert!(is_helo_name(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "a b", "host(x)", "a;b", "[1.2.3]", "bücher", "x\r"] {
            assert!(!is_helo_name(bad.as_bytes()), "{bad}");
        }
        assert!(!is_helo_name("h".repeat(256).as_bytes()));
    }
}
