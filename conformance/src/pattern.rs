//! Escaped text in scripts and the `S:` line patterns built from it.
//!
//! Escapes (in `C:`, `S:` and `@message` text): `\r`, `\n`, `\t`, `\s` (a space, for
//! trailing spaces editors would strip), `\\`, `\xHH` (any byte) and, in `S:` patterns,
//! `\*` (a literal asterisk). In patterns a bare `*` matches any run of bytes, including
//! none.

use std::fmt;

/// One unit of escaped text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Byte(u8),
    Star,
}

/// Decodes escapes; `wildcards` makes a bare `*` a [`Piece::Star`].
fn decode(text: &str, wildcards: bool) -> Result<Vec<Piece>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if b == b'*' && wildcards {
            out.push(Piece::Star);
            continue;
        }
        if b != b'\\' {
            out.push(Piece::Byte(b));
            continue;
        }
        let Some(&e) = bytes.get(i) else {
            return Err("a backslash at the end of the text (write \\\\ for one)".into());
        };
        i += 1;
        let byte = match e {
            b'r' => b'\r',
            b'n' => b'\n',
            b't' => b'\t',
            b's' => b' ',
            b'\\' => b'\\',
            b'*' => b'*',
            b'x' => {
                let hex = bytes
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("\\x needs two hex digits")?;
                i += 2;
                hex
            }
            other => return Err(format!("unknown escape \\{}", other as char)),
        };
        out.push(Piece::Byte(byte));
    }
    Ok(out)
}

/// Decodes escaped text into bytes (a `*` is just an asterisk here).
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    Ok(decode(text, false)?
        .into_iter()
        .map(|p| match p {
            Piece::Byte(b) => b,
            Piece::Star => b'*',
        })
        .collect())
}

/// Shows bytes as script text: printable ASCII as is, everything else escaped.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// An `S:` line pattern: bytes with `*` wildcards, matched against one whole server
/// line without its CRLF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    pieces: Vec<Piece>,
}

impl Pattern {
    /// Parses pattern text as written after `S: `.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(Pattern {
            source: text.to_owned(),
            pieces: decode(text, true)?,
        })
    }

    /// A pattern that matches exactly `bytes` (no wildcards).
    pub fn literal(bytes: &[u8]) -> Self {
        Pattern {
            source: escape(bytes).replace('*', "\\*"),
            pieces: bytes.iter().map(|&b| Piece::Byte(b)).collect(),
        }
    }

    /// Whether `line` (CRLF removed) matches the whole pattern.
    pub fn matches(&self, line: &[u8]) -> bool {
        // Greedy glob matching with backtracking to the last star: O(len * pieces).
        let (p, mut pi, mut li) = (&self.pieces, 0, 0);
        let mut retry: Option<(usize, usize)> = None;
        while li < line.len() {
            match p.get(pi) {
                Some(Piece::Star) => {
                    retry = Some((pi, li));
                    pi += 1;
                }
                Some(Piece::Byte(b)) if *b == line[li] => {
                    pi += 1;
                    li += 1;
                }
                _ => match retry {
                    Some((star, at)) => {
                        pi = star + 1;
                        li = at + 1;
                        retry = Some((star, at + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|piece| *piece == Piece::Star)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, line: &[u8]) -> bool {
        Pattern::parse(pattern).unwrap().matches(line)
    }

    #[test]
    fn wildcards_and_literals() {
        assert!(m("+OK *", b"+OK pop.test POP3 ready"));
        assert!(m("+OK *", b"+OK "));
        assert!(!m("+OK *", b"+OK"));
        assert!(m("*", b""));
        assert!(m("a*b*c", b"axxbyyc"));
        assert!(!m("a*b*c", b"axxbyy"));
        assert!(m("*ab", b"aab"));
        assert!(m("-ERR \\*", b"-ERR *"));
        assert!(!m("-ERR \\*", b"-ERR x"));
        assert!(!m(".", b".."));
        assert!(m("+\\s", b"+ "));
        assert!(m("\\x00\\xff", b"\x00\xff"));
        assert!(!m("abc", b"abcd"));
    }

    #[test]
    fn escapes_round_trip() {
        let raw = b"a\r\n\t\\\x00\xff*";
        assert_eq!(unescape(&escape(raw)).unwrap(), raw);
        assert!(Pattern::literal(raw).matches(raw));
        assert!(unescape("bad\\q").is_err());
        assert!(unescape("bad\\x4").is_err());
        assert!(unescape("trailing\\").is_err());
    }
}
