//! Header fields of one header block (RFC 5322 §2.2): field boundaries, names and
//! folded values, without copying. Lines without a colon are skipped as garbage.

use std::ops::Range;

/// One header field as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name (before the colon, trailing blanks removed).
    pub name: &'a [u8],
    /// The value after the colon, still folded, with its final line end.
    pub value: &'a [u8],
    /// The whole field with its continuation lines and final line end, as offsets into
    /// the header block given to [`fields`].
    pub raw: Range<usize>,
}

impl Field<'_> {
    /// Whether the field is called `name` (ASCII case-insensitive, RFC 5322 §1.2.2).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// Iterator over the fields of a header block; see [`fields`].
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    header: &'a [u8],
    pos: usize,
}

/// The fields of `header` (a header block, optionally with its closing blank line), in
/// order. Iteration stops at the first blank line.
pub fn fields(header: &[u8]) -> Fields<'_> {
    Fields { header, pos: 0 }
}

/// The end of the line starting at `pos` (after its LF, or the end of `bytes`).
pub(crate) fn line_end(bytes: &[u8], pos: usize) -> usize {
    bytes
        .get(pos..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        .map_or(bytes.len(), |lf| pos + lf + 1)
}

/// Whether `line` is empty apart from its line end.
pub(crate) fn is_blank(line: &[u8]) -> bool {
    matches!(line, b"\r\n" | b"\n")
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        let bytes = self.header;
        while self.pos < bytes.len() {
            let start = self.pos;
            let first_end = line_end(bytes, start);
            let first = &bytes[start..first_end];
            if is_blank(first) {
                self.pos = bytes.len();
                return None;
            }
            let mut end = first_end;
            while matches!(bytes.get(end), Some(b' ' | b'\t')) {
                end = line_end(bytes, end);
            }
            self.pos = end;
            if matches!(first.first(), Some(b' ' | b'\t')) {
                continue; // a continuation with nothing to continue
            }
            let Some(colon) = first.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = trim_end(&first[..colon]);
            if name.is_empty() {
                continue;
            }
            return Some(Field {
                name,
                value: &bytes[start + colon + 1..end],
                raw: start..end,
            });
        }
        None
    }
}

fn trim_end(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// A folded value unfolded (RFC 5322 §2.2.3: line ends removed, the blanks after them
/// kept) and trimmed of surrounding white space.
pub fn unfold(value: &[u8]) -> Vec<u8> {
    let kept: Vec<u8> = value
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    let start = kept
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(kept.len());
    let end = kept
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    kept[start..end.max(start)].to_vec()
}

/// The first field called `name` in `header`, unfolded.
pub(crate) fn first_value(header: &[u8], name: &str) -> Option<Vec<u8>> {
    fields(header).find(|f| f.is(name)).map(|f| unfold(f.value))
}

/// A structured MIME header value (Content-Type, Content-Disposition): the leading
/// token(s) and the `; attribute=value` parameters (RFC 2045 §5.1), comments removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Structured {
    /// The value before the first `;`, without comments and blanks.
    pub head: Vec<u8>,
    /// The parameters in order, attribute names as written.
    pub params: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Parses `value` (unfolded) as `head *(";" attribute "=" value)`, where a value is a
/// token or a quoted string. Malformed parameters are skipped.
pub(crate) fn structured(value: &[u8]) -> Structured {
    let mut lexer = Lexer {
        bytes: value,
        pos: 0,
        spaced: false,
    };
    let mut out = Structured::default();
    // The head (`type/subtype`, a disposition type): adjacent tokens up to the first
    // ';' (comments and the blanks around `/` allowed); a word after white space is
    // junk up to the ';'.
    let mut after_slash = true;
    while let Some(token) = lexer.next() {
        if token == Token::Special(b';') {
            break;
        }
        if lexer.spaced && !after_slash && token != Token::Special(b'/') {
            lexer.skip_to_semicolon();
            break;
        }
        after_slash = token == Token::Special(b'/');
        match token {
            Token::Word(w) | Token::Quoted(w) => out.head.extend_from_slice(&w),
            Token::Special(c) => out.head.push(c),
        }
    }
    // Parameters.
    loop {
        let attribute = match lexer.next() {
            None => break,
            Some(Token::Special(b';')) => continue,
            Some(Token::Word(attribute)) => attribute,
            Some(_) => {
                if lexer.skip_to_semicolon() {
                    continue;
                }
                break;
            }
        };
        match lexer.next() {
            Some(Token::Special(b'=')) => {}
            Some(Token::Special(b';')) => continue,
            None => break,
            Some(_) => {
                if lexer.skip_to_semicolon() {
                    continue;
                }
                break;
            }
        }
        // The value: a token or quoted string. Senders that leave specials such as '='
        // unquoted (`boundary==_x=`) get the adjacent pieces joined; anything after white
        // space is junk up to the next ';'.
        let mut value = Vec::new();
        let mut ended = true;
        let mut first = true;
        while let Some(token) = lexer.next() {
            if token == Token::Special(b';') {
                ended = false;
                break;
            }
            if !first && lexer.spaced {
                ended = !lexer.skip_to_semicolon();
                break;
            }
            first = false;
            match token {
                Token::Word(w) | Token::Quoted(w) => value.extend_from_slice(&w),
                Token::Special(c) => value.push(c),
            }
        }
        out.params.push((attribute, value));
        if ended {
            break;
        }
    }
    out
}

/// A token of a MIME structured header (RFC 2045 §5.1 tspecials, RFC 5322 §3.2.2
/// comments).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(Vec<u8>),
    Quoted(Vec<u8>),
    Special(u8),
}

struct Lexer<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Whether white space or a comment came before the last token.
    spaced: bool,
}

impl Lexer<'_> {
    fn next(&mut self) -> Option<Token> {
        self.spaced = false;
        loop {
            let &b = self.bytes.get(self.pos)?;
            match b {
                b if b.is_ascii_whitespace() => {
                    self.pos += 1;
                    self.spaced = true;
                }
                b'(' => {
                    self.skip_comment();
                    self.spaced = true;
                }
                b'"' => return Some(Token::Quoted(self.quoted())),
                b';' | b'=' | b'/' | b',' | b'<' | b'>' | b'@' | b'[' | b']' | b'?' | b':'
                | b'\\' | b')' => {
                    self.pos += 1;
                    return Some(Token::Special(b));
                }
                _ => {
                    let start = self.pos;
                    while let Some(&c) = self.bytes.get(self.pos) {
                        if c.is_ascii_whitespace() || b"()<>@,;:\\\"/[]?=".contains(&c) {
                            break;
                        }
                        self.pos += 1;
                    }
                    // Never an empty word: a byte no arm takes is a word of its own.
                    self.pos = self.pos.max(start + 1);
                    return Some(Token::Word(self.bytes[start..self.pos].to_vec()));
                }
            }
        }
    }

    /// Skips a comment, nested or not; an unterminated one runs to the end.
    fn skip_comment(&mut self) {
        let mut depth = 0usize;
        while let Some(&b) = self.bytes.get(self.pos) {
            self.pos += 1;
            match b {
                b'\\' => self.pos += 1,
                b'(' => depth += 1,
                b')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    /// Reads a quoted string (the opening quote is at `pos`), unescaping quoted pairs.
    fn quoted(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.pos += 1;
        while let Some(&b) = self.bytes.get(self.pos) {
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(&escaped) = self.bytes.get(self.pos) {
                        out.push(escaped);
                        self.pos += 1;
                    }
                }
                b'\r' | b'\n' => {}
                _ => out.push(b),
            }
        }
        out
    }

    /// Skips to just after the next ';'; false at the end.
    fn skip_to_semicolon(&mut self) -> bool {
        while let Some(token) = self.next() {
            if token == Token::Special(b';') {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_folding_and_skip_garbage() {
        let header = b"Subject: a\r\n b\r\ngarbage\r\n\tcont\r\nTo : x\r\n\r\nBody: no\r\n";
        let got: Vec<_> = fields(header).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, b"Subject");
        assert_eq!(got[0].value, b" a\r\n b\r\n");
        assert_eq!(unfold(got[0].value), b"a b");
        assert_eq!(got[1].name, b"To");
        assert_eq!(&header[got[1].raw.clone()], b"To : x\r\n");
    }

    #[test]
    fn odd_white_space_ends_words() {
        // A form feed is white space to the lexer; no byte ever makes an empty token.
        let s = structured(b"text/plain;\x0ccharset=\x0cx\x0b\x0c; a=\x7f");
        assert_eq!(s.head, b"text/plain");
        assert_eq!(s.params[0], (b"charset".to_vec(), b"x\x0b".to_vec()));
        assert_eq!(s.params[1], (b"a".to_vec(), b"\x7f".to_vec()));
    }

    #[test]
    fn content_type_parameters() {
        let s = structured(
            b"multipart/mixed (c) ; boundary=\"a \\\"b\"; charset=UTF-8 junk;;bad; b==_x=",
        );
        assert_eq!(s.head, b"multipart/mixed");
        assert_eq!(
            s.params,
            vec![
                (b"boundary".to_vec(), b"a \"b".to_vec()),
                (b"charset".to_vec(), b"UTF-8".to_vec()),
                (b"b".to_vec(), b"=_x=".to_vec())
            ]
        );
    }
}
