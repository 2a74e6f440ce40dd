//! Mailbox names: modified UTF-7 (RFC 3501 §5.1.3), the INBOX rule (§5.1) and LIST
//! patterns (§6.3.8).

use base64::Engine as _;
use base64::alphabet::Alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// RFC 3501 §5.1.3: base64 with `,` for `/`, no padding.
const MUTF7: GeneralPurpose =
    match Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,") {
        Ok(alphabet) => GeneralPurpose::new(
            &alphabet,
            GeneralPurposeConfig::new()
                .with_encode_padding(false)
                .with_decode_padding_mode(DecodePaddingMode::RequireNone),
        ),
        Err(_) => panic!("the modified UTF-7 alphabet is valid"),
    };

/// The hierarchy delimiter tidegate announces (Maildir++ uses `.` on disk; the store
/// maps between the two).
pub const DELIMITER: char = '/';

/// Decodes a modified UTF-7 mailbox name to UTF-8. Names that are already UTF-8
/// without `&` pass through (some clients send raw UTF-8). `None` for a malformed
/// shift sequence.
pub fn decode(name: &[u8]) -> Option<String> {
    let mut out = String::new();
    let mut rest = name;
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'&' {
            let run = rest.iter().position(|&c| c == b'&').unwrap_or(rest.len());
            out.push_str(std::str::from_utf8(&rest[..run]).ok()?);
            rest = &rest[run..];
            continue;
        }
        let end = tail.iter().position(|&c| c == b'-')?;
        let encoded = &tail[..end];
        rest = &tail[end + 1..];
        if encoded.is_empty() {
            out.push('&');
            continue;
        }
        let bytes = MUTF7.decode(encoded).ok()?;
        if bytes.len() % 2 != 0 {
            return None;
        }
        let units = bytes.chunks(2).map(|p| u16::from_be_bytes([p[0], p[1]]));
        for c in char::decode_utf16(units) {
            let c = c.ok()?;
            // RFC 3501 §5.1.3: printable ASCII must be represented as itself.
            if c.is_ascii() && !c.is_ascii_control() {
                return None;
            }
            out.push(c);
        }
    }
    Some(out)
}

/// Encodes a UTF-8 mailbox name in modified UTF-7.
pub fn encode(name: &str) -> String {
    let mut out = String::new();
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if !pending.is_empty() {
            let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
            out.push('&');
            out.push_str(&MUTF7.encode(bytes));
            out.push('-');
            pending.clear();
        }
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// The canonical form of a decoded name: `INBOX` in any case is `INBOX` (RFC 3501 §5.1).
pub fn canonical(name: String) -> String {
    let is_inbox = |s: &str| s.eq_ignore_ascii_case("INBOX");
    match name.split_once(DELIMITER) {
        _ if is_inbox(&name) => "INBOX".into(),
        Some((head, tail)) if is_inbox(head) => format!("INBOX{DELIMITER}{tail}"),
        _ => name,
    }
}

/// The longest LIST pattern accepted, in characters: matching costs
/// pattern × name length per mailbox.
pub const MAX_PATTERN: usize = 1024;

/// True when `name` matches a LIST pattern (RFC 3501 §6.3.8): `*` matches anything,
/// `%` anything but the hierarchy delimiter. Both are decoded names. Linear in
/// pattern × name length (one row of reachable name positions per pattern character).
pub fn matches(pattern: &str, name: &str) -> bool {
    let n: Vec<char> = name.chars().collect();
    let mut reach = vec![false; n.len() + 1];
    reach[0] = true;
    for pc in pattern.chars() {
        let mut next = vec![false; n.len() + 1];
        match pc {
            '*' => {
                let mut any = false;
                for (j, slot) in next.iter_mut().enumerate() {
                    any |= reach[j];
                    *slot = any;
                }
            }
            '%' => {
                for j in 0..=n.len() {
                    next[j] = reach[j] || (j > 0 && next[j - 1] && n[j - 1] != DELIMITER);
                }
            }
            c => {
                for j in 0..n.len() {
                    next[j + 1] = reach[j] && n[j] == c;
                }
            }
        }
        reach = next;
    }
    reach[n.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3501_example_round_trips() {
        let wire = b"~peter/mail/&U,BTFw-/&ZeVnLIqe-";
        let name = decode(wire).unwrap_or_default();
        assert_eq!(
            name,
            "~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}"
        );
        assert_eq!(encode(&name).as_bytes(), wire);
        assert_eq!(decode(b"a&-b").as_deref(), Some("a&b"));
        assert_eq!(encode("a&b"), "a&-b");
        assert_eq!(encode("Entwürfe"), "Entw&APw-rfe");
    }

    #[test]
    fn malformed_names_are_refused() {
        assert_eq!(decode(b"&U,BTFw"), None, "unterminated");
        assert_eq!(decode(b"&AGE-"), None, "ASCII must not be encoded");
        assert_eq!(decode(b"&Jjo!-"), None, "bad base64");
        assert_eq!(decode(b"\xff"), None);
    }

    #[test]
    fn inbox_and_patterns() {
        assert_eq!(canonical("inBox".into()), "INBOX");
        assert_eq!(canonical("inbox/Sub".into()), "INBOX/Sub");
        assert_eq!(canonical("Inboxes".into()), "Inboxes");
        assert!(matches("*", "a/b/c"));
        assert!(matches("%", "a"));
        assert!(!matches("%", "a/b"));
        assert!(matches("a/%", "a/b"));
        assert!(matches("a*c", "a/b/c"));
        assert!(!matches("a%c", "a/b/c"));
        assert!(matches("INBOX", "INBOX"));
        assert!(!matches("", "x"));
    }
}
