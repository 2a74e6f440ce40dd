//! Search filters: the string form of RFC 4515 parsed into the BER form of RFC 4511
//! §4.5.1.7, and the `%u` template of the `filter` setting.
//!
//! The address put into a template is escaped first ([`escape_value`], RFC 4515 §3), so
//! whatever a client types as its user name ends up as one assertion value and never
//! as filter syntax.

use super::ber;

/// Deepest nesting of `&`, `|` and `!` accepted in a filter.
const MAX_DEPTH: usize = 16;
/// Longest filter string accepted (after `%u` expansion), in bytes.
pub(crate) const MAX_FILTER_LEN: usize = 4096;

/// A search filter (RFC 4511 §4.5.1.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter {
    /// `(&...)`: every sub-filter matches.
    And(Vec<Filter>),
    /// `(|...)`: some sub-filter matches.
    Or(Vec<Filter>),
    /// `(!...)`: the sub-filter does not match.
    Not(Box<Filter>),
    /// `(attr=value)`.
    Equality(String, Vec<u8>),
    /// `(attr=in*ter*fin)`: initial, any parts, final.
    Substrings(String, Option<Vec<u8>>, Vec<Vec<u8>>, Option<Vec<u8>>),
    /// `(attr>=value)`.
    GreaterOrEqual(String, Vec<u8>),
    /// `(attr<=value)`.
    LessOrEqual(String, Vec<u8>),
    /// `(attr=*)`.
    Present(String),
    /// `(attr~=value)`.
    Approx(String, Vec<u8>),
    /// `(attr:dn:rule:=value)`: matching rule, attribute, value, dnAttributes.
    Extensible(Option<String>, Option<String>, Vec<u8>, bool),
}

/// Escapes `value` for use as an assertion value in a filter string (RFC 4515 §3):
/// `*`, `(`, `)`, `\` and NUL become `\2a`, `\28`, `\29`, `\5c` and `\00`.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            other => out.push(other),
        }
    }
    out
}

/// Expands a `filter` template for `address` (normalised): `%u` is the address, `%n`
/// its local part, `%d` its domain (empty without `@`), `%%` a percent sign; each value
/// escaped with [`escape_value`]. Any other `%` sequence is an error.
pub fn expand_template(template: &str, address: &str) -> Result<String, String> {
    let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
    let mut out = String::with_capacity(template.len() + address.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(&escape_value(address)),
            Some('n') => out.push_str(&escape_value(local)),
            Some('d') => out.push_str(&escape_value(domain)),
            Some('%') => out.push('%'),
            Some(other) => return Err(format!("unknown filter placeholder %{other}")),
            None => return Err("filter ends with a lone %".into()),
        }
    }
    Ok(out)
}

/// Parses a filter string (RFC 4515 §3).
pub(crate) fn parse(text: &str) -> Result<Filter, String> {
    if text.len() > MAX_FILTER_LEN {
        return Err(format!("filter longer than {MAX_FILTER_LEN} bytes"));
    }
    let mut parser = Parser {
        input: text.trim().as_bytes(),
        pos: 0,
    };
    let filter = parser.filter(0)?;
    if parser.pos != parser.input.len() {
        return Err(format!("text after the filter at byte {}", parser.pos));
    }
    Ok(filter)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", byte as char, self.pos))
        }
    }

    fn filter(&mut self, depth: usize) -> Result<Filter, String> {
        if depth > MAX_DEPTH {
            return Err(format!("filter nested deeper than {MAX_DEPTH}"));
        }
        self.eat(b'(')?;
        let filter = match self.peek() {
            Some(b'&') => {
                self.pos += 1;
                Filter::And(self.list(depth)?)
            }
            Some(b'|') => {
                self.pos += 1;
                Filter::Or(self.list(depth)?)
            }
            Some(b'!') => {
                self.pos += 1;
                Filter::Not(Box::new(self.filter(depth + 1)?))
            }
            _ => self.item()?,
        };
        self.eat(b')')?;
        Ok(filter)
    }

    fn list(&mut self, depth: usize) -> Result<Vec<Filter>, String> {
        let mut filters = Vec::new();
        while self.peek() == Some(b'(') {
            filters.push(self.filter(depth + 1)?);
        }
        if filters.is_empty() {
            return Err(format!("empty filter list at byte {}", self.pos));
        }
        Ok(filters)
    }

    /// `attr op value` up to (not including) the closing parenthesis.
    fn item(&mut self) -> Result<Filter, String> {
        let start = self.pos;
        let end = self.input[start..]
            .iter()
            .position(|&b| b == b')' || b == b'(')
            .map(|offset| start + offset)
            .ok_or("unterminated filter item")?;
        let item = &self.input[start..end];
        self.pos = end;
        let eq = item
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| format!("filter item without '=' at byte {start}"))?;
        let (left, raw_value) = (&item[..eq], &item[eq + 1..]);
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        if let Some(attr) = left.strip_suffix(b">") {
            return Ok(Filter::GreaterOrEqual(
                attribute(attr)?,
                unescape(raw_value)?,
            ));
        }
        if let Some(attr) = left.strip_suffix(b"<") {
            return Ok(Filter::LessOrEqual(attribute(attr)?, unescape(raw_value)?));
        }
        if let Some(attr) = left.strip_suffix(b"~") {
            return Ok(Filter::Approx(attribute(attr)?, unescape(raw_value)?));
        }
        if let Some(spec) = left.strip_suffix(b":") {
            return extensible(&text(spec), unescape(raw_value)?);
        }
        let attr = attribute(left)?;
        if raw_value == b"*" {
            return Ok(Filter::Present(attr));
        }
        if !raw_value.contains(&b'*') {
            return Ok(Filter::Equality(attr, unescape(raw_value)?));
        }
        let parts: Vec<&[u8]> = raw_value.split(|&b| b == b'*').collect();
        let last = parts.len() - 1;
        let mut initial = None;
        let mut any = Vec::new();
        let mut last_part = None;
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() {
                if i != 0 && i != last {
                    return Err("empty substring between two '*'".into());
                }
                continue;
            }
            let value = unescape(part)?;
            match i {
                0 => initial = Some(value),
                i if i == last => last_part = Some(value),
                _ => any.push(value),
            }
        }
        Ok(Filter::Substrings(attr, initial, any, last_part))
    }
}

/// An attribute description (RFC 4512 §2.5): a name or OID with `;options`.
fn attribute(bytes: &[u8]) -> Result<String, String> {
    let valid = !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b';');
    if valid {
        Ok(String::from_utf8_lossy(bytes).into_owned())
    } else {
        Err(format!(
            "bad attribute description {:?}",
            String::from_utf8_lossy(bytes)
        ))
    }
}

/// `[attr][:dn][:rule]` before `:=` (RFC 4515 §3 `extensible`).
fn extensible(spec: &str, value: Vec<u8>) -> Result<Filter, String> {
    let mut pieces = spec.split(':');
    let attr = pieces.next().filter(|a| !a.is_empty());
    let mut dn = false;
    let mut rule = None;
    for piece in pieces {
        if piece.eq_ignore_ascii_case("dn") && !dn && rule.is_none() {
            dn = true;
        } else if rule.is_none() && !piece.is_empty() {
            rule = Some(attribute(piece.as_bytes())?);
        } else {
            return Err(format!("bad extensible match {spec:?}"));
        }
    }
    if attr.is_none() && rule.is_none() {
        return Err("extensible match needs an attribute or a matching rule".into());
    }
    let attr = attr.map(|a| attribute(a.as_bytes())).transpose()?;
    Ok(Filter::Extensible(rule, attr, value, dn))
}

/// Decodes `\XX` escapes; a raw `*`, `(`, `)` or NUL here is an error.
fn unescape(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\\' => {
                let hex = raw
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("bad \\XX escape in filter value")?;
                out.push(hex);
                i += 3;
            }
            b'*' | b'(' | b')' | 0 => return Err("unescaped special character in value".into()),
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    Ok(out)
}

impl Filter {
    /// Appends the BER encoding (RFC 4511 §4.5.1 `Filter`).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Filter::And(list) | Filter::Or(list) => {
                let tag = if matches!(self, Filter::And(_)) {
                    0xa0
                } else {
                    0xa1
                };
                ber::put_constructed(out, tag, |inner| {
                    for filter in list {
                        filter.encode(inner);
                    }
                });
            }
            Filter::Not(filter) => ber::put_constructed(out, 0xa2, |inner| filter.encode(inner)),
            Filter::Equality(attr, value) => assertion(out, 0xa3, attr, value),
            Filter::Substrings(attr, initial, any, last) => {
                ber::put_constructed(out, 0xa4, |inner| {
                    ber::put(inner, ber::OCTET_STRING, attr.as_bytes());
                    ber::put_constructed(inner, ber::SEQUENCE, |parts| {
                        if let Some(initial) = initial {
                            ber::put(parts, 0x80, initial);
                        }
                        for middle in any {
                            ber::put(parts, 0x81, middle);
                        }
                        if let Some(last) = last {
                            ber::put(parts, 0x82, last);
                        }
                    });
                });
            }
            Filter::GreaterOrEqual(attr, value) => assertion(out, 0xa5, attr, value),
            Filter::LessOrEqual(attr, value) => assertion(out, 0xa6, attr, value),
            Filter::Present(attr) => ber::put(out, 0x87, attr.as_bytes()),
            Filter::Approx(attr, value) => assertion(out, 0xa8, attr, value),
            Filter::Extensible(rule, attr, value, dn) => {
                ber::put_constructed(out, 0xa9, |inner| {
                    if let Some(rule) = rule {
                        ber::put(inner, 0x81, rule.as_bytes());
                    }
                    if let Some(attr) = attr {
                        ber::put(inner, 0x82, attr.as_bytes());
                    }
                    ber::put(inner, 0x83, value);
                    if *dn {
                        ber::put_bool(inner, 0x84, true);
                    }
                });
            }
        }
    }
}

fn assertion(out: &mut Vec<u8>, tag: u8, attr: &str, value: &[u8]) {
    ber::put_constructed(out, tag, |inner| {
        ber::put(inner, ber::OCTET_STRING, attr.as_bytes());
        ber::put(inner, ber::OCTET_STRING, value);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq(attr: &str, value: &str) -> Filter {
        Filter::Equality(attr.into(), value.as_bytes().to_vec())
    }

    #[test]
    fn injection_attempts_stay_one_value() {
        let text = expand_template("(mail=%u)", "*)(uid=*").unwrap();
        assert_eq!(text, "(mail=\\2a\\29\\28uid=\\2a)");
        assert_eq!(parse(&text), Ok(eq("mail", "*)(uid=*")));
        let text = expand_template("(&(mail=%u)(objectClass=person))", "x)(|(a=*").unwrap();
        assert_eq!(
            parse(&text),
            Ok(Filter::And(vec![
                eq("mail", "x)(|(a=*"),
                eq("objectClass", "person")
            ]))
        );
        let text = expand_template("(mail=%u)", "a\\2a\0b").unwrap();
        assert_eq!(text, "(mail=a\\5c2a\\00b)");
        assert_eq!(parse(&text), Ok(eq("mail", "a\\2a\0b")));
    }

    #[test]
    fn placeholders() {
        let text = expand_template("(&(uid=%n)(dc=%d)(x=100%%))", "bob@example.com").unwrap();
        assert_eq!(text, "(&(uid=bob)(dc=example.com)(x=100%))");
        assert!(expand_template("(mail=%x)", "a@b").is_err());
        assert!(expand_template("(mail=%", "a@b").is_err());
    }

    #[test]
    fn rfc4515_examples_parse() {
        assert_eq!(parse("(cn=Babs Jensen)"), Ok(eq("cn", "Babs Jensen")));
        assert_eq!(
            parse("(!(cn=Tim Howes))"),
            Ok(Filter::Not(Box::new(eq("cn", "Tim Howes"))))
        );
        assert_eq!(
            parse("(&(objectClass=Person)(|(sn=Jensen)(cn=Babs J*)))"),
            Ok(Filter::And(vec![
                eq("objectClass", "Person"),
                Filter::Or(vec![
                    eq("sn", "Jensen"),
                    Filter::Substrings("cn".into(), Some(b"Babs J".to_vec()), vec![], None),
                ]),
            ]))
        );
        assert_eq!(
            parse("(o=univ*of*mich*)"),
            Ok(Filter::Substrings(
                "o".into(),
                Some(b"univ".to_vec()),
                vec![b"of".to_vec(), b"mich".to_vec()],
                None
            ))
        );
        assert_eq!(
            parse("(seeAlso=)"),
            Ok(Filter::Equality("seeAlso".into(), vec![]))
        );
        assert_eq!(
            parse("(cn:caseExactMatch:=Fred Flintstone)"),
            Ok(Filter::Extensible(
                Some("caseExactMatch".into()),
                Some("cn".into()),
                b"Fred Flintstone".to_vec(),
                false
            ))
        );
        assert_eq!(
            parse("(o:dn:=Ace Industry)"),
            Ok(Filter::Extensible(
                None,
                Some("o".into()),
                b"Ace Industry".to_vec(),
                true
            ))
        );
        assert_eq!(
            parse("(filename=C:\\5cMyFile)"),
            Ok(eq("filename", "C:\\MyFile"))
        );
        assert_eq!(parse("(cn=*)"), Ok(Filter::Present("cn".into())));
        assert!(matches!(parse("(age>=21)"), Ok(Filter::GreaterOrEqual(..))));
        assert!(matches!(parse("(age<=21)"), Ok(Filter::LessOrEqual(..))));
        assert!(matches!(parse("(sn~=jensn)"), Ok(Filter::Approx(..))));
    }

    #[test]
    fn malformed_filters_are_errors() {
        for bad in [
            "",
            "(",
            "()",
            "(cn)",
            "(&)",
            "(cn=a",
            "cn=a",
            "(cn=a))",
            "(cn=a\\2)",
            "(cn=a\\zz)",
            "(=a)",
            "(c n=a)",
            "(cn=a**b)",
            "(:=x)",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = format!("{}(a=b){}", "(!".repeat(40), ")".repeat(40));
        assert!(parse(&deep).is_err());
        assert!(parse(&format!("(a={})", "x".repeat(MAX_FILTER_LEN))).is_err());
    }

    #[test]
    fn encoding_matches_rfc4511() {
        let mut out = Vec::new();
        eq("mail", "a").encode(&mut out);
        assert_eq!(out, b"\xa3\x09\x04\x04mail\x04\x01a");
        out.clear();
        Filter::Present("cn".into()).encode(&mut out);
        assert_eq!(out, b"\x87\x02cn");
        out.clear();
        parse("(&(!(a=*))(cn=x*y))").unwrap().encode(&mut out);
        assert_eq!(
            out,
            b"\xa0\x13\xa2\x03\x87\x01a\xa4\x0c\x04\x02cn\x30\x06\x80\x01x\x82\x01y"
        );
    }
}
