//! Address lists of RFC 5322 §3.4 (mailboxes, groups, obsolete routes) in the shape of
//! the IMAP envelope address structure (RFC 3501 §7.4.2).

/// The mailbox given to an address that has none (`<>`, a bare phrase), as Dovecot
/// does, so the structure stays well formed.
pub const MISSING_MAILBOX: &[u8] = b"MISSING_MAILBOX";

/// The host given to an address that has none, as Dovecot does.
pub const MISSING_DOMAIN: &[u8] = b"MISSING_DOMAIN";

/// Most addresses taken from one header field; the rest are ignored. Bounds the
/// ENVELOPE of a hostile message.
const MAX_ADDRESSES: usize = 1_000;

/// One element of an address list as IMAP renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A mailbox: `(name adl mailbox host)`.
    Mailbox {
        /// The display name, quoted pairs removed, encoded words left as they are.
        name: Option<Vec<u8>>,
        /// The obsolete source route (`@a,@b`), if any.
        route: Option<Vec<u8>>,
        /// The local part, or [`MISSING_MAILBOX`].
        mailbox: Vec<u8>,
        /// The domain, or [`MISSING_DOMAIN`].
        host: Vec<u8>,
    },
    /// The start of a group: `(NIL NIL name NIL)`.
    GroupStart(Vec<u8>),
    /// The end of a group: `(NIL NIL NIL NIL)`.
    GroupEnd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(Vec<u8>),
    Quoted(Vec<u8>),
    Special(u8),
}

/// Splits an unfolded address header value into words, quoted strings (unescaped) and
/// specials; comments are dropped and domain literals stay one word.
fn tokens(value: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(&b) = value.get(pos) {
        match b {
            b if b.is_ascii_whitespace() => pos += 1,
            b'(' => {
                let mut depth = 0usize;
                while let Some(&c) = value.get(pos) {
                    pos += 1;
                    match c {
                        b'\\' => pos += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            b'"' => {
                let mut text = Vec::new();
                pos += 1;
                while let Some(&c) = value.get(pos) {
                    pos += 1;
                    match c {
                        b'"' => break,
                        b'\\' => {
                            if let Some(&escaped) = value.get(pos) {
                                text.push(escaped);
                                pos += 1;
                            }
                        }
                        _ => text.push(c),
                    }
                }
                out.push(Token::Quoted(text));
            }
            b'[' => {
                let start = pos;
                let end = value[pos..]
                    .iter()
                    .position(|&c| c == b']')
                    .map_or(value.len(), |e| pos + e + 1);
                out.push(Token::Word(value[start..end].to_vec()));
                pos = end;
            }
            b'<' | b'>' | b',' | b':' | b';' | b'@' | b'.' | b')' | b']' | b'\\' => {
                out.push(Token::Special(b));
                pos += 1;
            }
            _ => {
                let start = pos;
                while let Some(&c) = value.get(pos) {
                    if c.is_ascii_whitespace() || b"()<>,:;@.\"[]\\".contains(&c) {
                        break;
                    }
                    pos += 1;
                }
                // Never an empty word: a byte no arm takes is a word of its own.
                pos = pos.max(start + 1);
                out.push(Token::Word(value[start..pos].to_vec()));
            }
        }
    }
    out
}

fn is_special(token: Option<&Token>, c: u8) -> bool {
    token == Some(&Token::Special(c))
}

/// A display name: words joined by single spaces, no space before a dot.
fn phrase(tokens: &[Token]) -> Vec<u8> {
    let mut out = Vec::new();
    for token in tokens {
        match token {
            Token::Word(w) | Token::Quoted(w) => {
                if !out.is_empty() {
                    out.push(b' ');
                }
                out.extend_from_slice(w);
            }
            Token::Special(c) => out.push(*c),
        }
    }
    out
}

/// A local part or domain: tokens joined without spaces.
fn joined(tokens: &[Token]) -> Vec<u8> {
    let mut out = Vec::new();
    for token in tokens {
        match token {
            Token::Word(w) | Token::Quoted(w) => out.extend_from_slice(w),
            Token::Special(c) => out.push(*c),
        }
    }
    out
}

/// Reads `word *("." word)` from `i` (a dot-atom, or an obsolete local part with quoted
/// words); white space between words ends it.
fn dotted(tokens: &[Token], i: &mut usize) -> Vec<u8> {
    let start = *i;
    let is_word = |t: Option<&Token>| matches!(t, Some(Token::Word(_) | Token::Quoted(_)));
    if is_word(tokens.get(*i)) {
        *i += 1;
        while is_special(tokens.get(*i), b'.') && is_word(tokens.get(*i + 1)) {
            *i += 2;
        }
    }
    joined(&tokens[start..*i])
}

/// `value`, or `missing` when it is empty.
fn or_missing(value: Vec<u8>, missing: &[u8]) -> Vec<u8> {
    if value.is_empty() {
        missing.to_vec()
    } else {
        value
    }
}

/// Parses an unfolded address list (From, To, Cc, …). Never fails: what cannot be
/// understood after an address is skipped up to the next comma, and a missing local
/// part or domain becomes [`MISSING_MAILBOX`] or [`MISSING_DOMAIN`].
pub fn parse_address_list(value: &[u8]) -> Vec<Address> {
    let tokens = tokens(value);
    let phrase_token =
        |t: &Token| matches!(t, Token::Word(_) | Token::Quoted(_) | Token::Special(b'.'));
    let mut out = Vec::new();
    let mut in_group = false;
    let mut i = 0;
    while i < tokens.len() && out.len() < MAX_ADDRESSES {
        match tokens[i] {
            Token::Special(b',') => {
                i += 1;
                continue;
            }
            Token::Special(b';') => {
                if in_group {
                    out.push(Address::GroupEnd);
                    in_group = false;
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        let start = i;
        while i < tokens.len() && phrase_token(&tokens[i]) {
            i += 1;
        }
        let words = &tokens[start..i];
        let name = (!words.is_empty()).then(|| phrase(words));
        match tokens.get(i) {
            Some(Token::Special(b':')) if !in_group => {
                out.push(Address::GroupStart(phrase(words)));
                in_group = true;
                i += 1;
            }
            Some(Token::Special(b'<')) => {
                i += 1;
                let mut route = None;
                if is_special(tokens.get(i), b'@') {
                    let route_start = i;
                    while i < tokens.len()
                        && !is_special(tokens.get(i), b':')
                        && !is_special(tokens.get(i), b'>')
                    {
                        i += 1;
                    }
                    route = Some(joined(&tokens[route_start..i]));
                    if is_special(tokens.get(i), b':') {
                        i += 1;
                    }
                }
                let mailbox = dotted(&tokens, &mut i);
                let mut host = Vec::new();
                if is_special(tokens.get(i), b'@') {
                    i += 1;
                    host = dotted(&tokens, &mut i);
                }
                while i < tokens.len() && !is_special(tokens.get(i), b'>') {
                    i += 1;
                }
                i += 1; // the '>'
                out.push(Address::Mailbox {
                    name,
                    route,
                    mailbox: or_missing(mailbox, MISSING_MAILBOX),
                    host: or_missing(host, MISSING_DOMAIN),
                });
                skip_junk(&tokens, &mut i);
            }
            Some(Token::Special(b'@')) => {
                i += 1;
                let host = dotted(&tokens, &mut i);
                out.push(Address::Mailbox {
                    name: None,
                    route: None,
                    mailbox: or_missing(joined(words), MISSING_MAILBOX),
                    host: or_missing(host, MISSING_DOMAIN),
                });
                skip_junk(&tokens, &mut i);
            }
            _ => {
                if !words.is_empty() {
                    out.push(Address::Mailbox {
                        name,
                        route: None,
                        mailbox: MISSING_MAILBOX.to_vec(),
                        host: MISSING_DOMAIN.to_vec(),
                    });
                }
                skip_junk(&tokens, &mut i);
            }
        }
    }
    if in_group {
        out.push(Address::GroupEnd);
    }
    out
}

/// Skips to the next `,` or `;` (not consuming it).
fn skip_junk(tokens: &[Token], i: &mut usize) {
    while *i < tokens.len()
        && !is_special(tokens.get(*i), b',')
        && !is_special(tokens.get(*i), b';')
    {
        *i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(name: Option<&str>, mailbox: &str, host: &str) -> Address {
        Address::Mailbox {
            name: name.map(|n| n.as_bytes().to_vec()),
            route: None,
            mailbox: mailbox.as_bytes().to_vec(),
            host: host.as_bytes().to_vec(),
        }
    }

    #[test]
    fn mailboxes_groups_and_routes() {
        let got = parse_address_list(
            b"\"Doe, John\" <john@x.org>, plain@y.org (comment), Team: a@b.c, B <b@b.c>;, <@r1,@r2:z@w>",
        );
        assert_eq!(got[0], mailbox(Some("Doe, John"), "john", "x.org"));
        assert_eq!(got[1], mailbox(None, "plain", "y.org"));
        assert_eq!(got[2], Address::GroupStart(b"Team".to_vec()));
        assert_eq!(got[3], mailbox(None, "a", "b.c"));
        assert_eq!(got[4], mailbox(Some("B"), "b", "b.c"));
        assert_eq!(got[5], Address::GroupEnd);
        assert_eq!(
            got[6],
            Address::Mailbox {
                name: None,
                route: Some(b"@r1,@r2".to_vec()),
                mailbox: b"z".to_vec(),
                host: b"w".to_vec()
            }
        );
        assert_eq!(got.len(), 7);
    }

    #[test]
    fn garbage_does_not_loop() {
        for input in [
            &b">>><<<"[..],
            b":::;;;",
            b"a@",
            b"@",
            b"<",
            b"\"",
            b"(",
            b"x y <",
        ] {
            let _ = parse_address_list(input);
        }
        // Form feed and other odd bytes (once an endless loop).
        assert_eq!(
            parse_address_list(b"M: a@b.ex, B <b@x\x0c\x00>"),
            vec![
                Address::GroupStart(b"M".to_vec()),
                mailbox(None, "a", "b.ex"),
                mailbox(Some("B"), "b", "x"),
                Address::GroupEnd,
            ]
        );
        assert_eq!(
            parse_address_list(b"undisclosed-recipients:;"),
            vec![
                Address::GroupStart(b"undisclosed-recipients".to_vec()),
                Address::GroupEnd
            ]
        );
    }
}
