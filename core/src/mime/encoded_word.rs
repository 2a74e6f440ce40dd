//! Decoding of RFC 2047 encoded words (`=?charset?Q?caf=C3=A9?=`) in header values, so
//! that SEARCH SUBJECT/FROM/HEADER match what the user sees (RFC 3501 §6.4.4 compares
//! against the field's text; every mainstream server decodes first).
//!
//! Charsets UTF-8, US-ASCII and ISO-8859-1 are decoded; a word in any other charset, or
//! one that is malformed, is kept exactly as written. Linear white space between two
//! adjacent encoded words is dropped (RFC 2047 §6.2). The output is at most twice the
//! input's length (ISO-8859-1 bytes become two-byte UTF-8 at most), so it is bounded by
//! the header it came from.

use base64::Engine;

/// The header value `raw` with its encoded words decoded, as UTF-8 text (bytes outside
/// encoded words that are not UTF-8 become U+FFFD).
pub fn decode_encoded_words(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    // White space seen after a decoded word, held back in case another word follows.
    let mut pending_space: &[u8] = &[];
    let mut after_word = false;
    while !rest.is_empty() {
        if rest.starts_with(b"=?")
            && let Some((text, used)) = decode_one(rest)
        {
            if !after_word {
                out.push_str(&String::from_utf8_lossy(pending_space));
            }
            out.push_str(&text);
            pending_space = &[];
            after_word = true;
            rest = &rest[used..];
            continue;
        }
        let space = rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            .count();
        if space > 0 {
            out.push_str(&String::from_utf8_lossy(pending_space));
            pending_space = &rest[..space];
            rest = &rest[space..];
            continue;
        }
        out.push_str(&String::from_utf8_lossy(pending_space));
        pending_space = &[];
        after_word = false;
        // Copy up to the next white space or possible encoded word.
        let next = rest[1..]
            .iter()
            .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'='))
            .map_or(rest.len(), |p| p + 1);
        out.push_str(&String::from_utf8_lossy(&rest[..next]));
        rest = &rest[next..];
    }
    out.push_str(&String::from_utf8_lossy(pending_space));
    out
}

/// Decodes the encoded word at the start of `input` (`=?charset?enc?text?=`): its text
/// and the bytes it took, or `None` if it is not a well-formed word we can decode.
fn decode_one(input: &[u8]) -> Option<(String, usize)> {
    // RFC 2047 §2: an encoded word is at most 75 characters.
    let limit = input.len().min(75);
    let body = &input[2..limit];
    let q1 = body.iter().position(|&b| b == b'?')?;
    let charset = &body[..q1];
    let after_charset = &body[q1 + 1..];
    let encoding = *after_charset.first()?;
    if after_charset.get(1) != Some(&b'?') {
        return None;
    }
    let text_and_end = &after_charset[2..];
    let end = text_and_end.windows(2).position(|w| w == b"?=")?;
    let text = &text_and_end[..end];
    if text.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let bytes = match encoding.to_ascii_uppercase() {
        b'B' => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        b'Q' => decode_q(text)?,
        _ => return None,
    };
    // RFC 2231 §5: a language may follow the charset after `*`.
    let charset = charset.split(|&b| b == b'*').next().unwrap_or(charset);
    let decoded = if charset.eq_ignore_ascii_case(b"utf-8")
        || charset.eq_ignore_ascii_case(b"us-ascii")
    {
        String::from_utf8_lossy(&bytes).into_owned()
    } else if charset.eq_ignore_ascii_case(b"iso-8859-1") || charset.eq_ignore_ascii_case(b"latin1")
    {
        bytes.iter().map(|&b| char::from(b)).collect()
    } else {
        return None;
    };
    let used = 2 + q1 + 1 + 2 + end + 2;
    Some((decoded, used))
}

/// The Q encoding (RFC 2047 §4.2): `_` is a space, `=XX` a byte.
fn decode_q(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = text.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::decode_encoded_words;

    #[test]
    fn decodes_q_and_b_words_in_utf8_and_latin1() {
        assert_eq!(decode_encoded_words(b"=?utf-8?q?caf=C3=A9?="), "café");
        assert_eq!(
            decode_encoded_words(b"=?UTF-8?B?Y2Fmw6k=?= au lait"),
            "café au lait"
        );
        assert_eq!(
            decode_encoded_words(b"Re: =?iso-8859-1?Q?Gr=FC=DFe_aus?= Bonn"),
            "Re: Grüße aus Bonn"
        );
    }

    #[test]
    fn drops_space_between_adjacent_words_only() {
        // RFC 2047 §8's examples.
        assert_eq!(decode_encoded_words(b"(=?ISO-8859-1?Q?a?= b)"), "(a b)");
        assert_eq!(
            decode_encoded_words(b"(=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=)"),
            "(ab)"
        );
        assert_eq!(
            decode_encoded_words(b"(=?ISO-8859-1?Q?a?=\r\n    =?ISO-8859-1?Q?b?=)"),
            "(ab)"
        );
        assert_eq!(decode_encoded_words(b"(=?ISO-8859-1?Q?a_b?=)"), "(a b)");
    }

    #[test]
    fn keeps_what_it_cannot_decode() {
        for raw in [
            &b"=?koi8-r?Q?abc?="[..],
            b"=?utf-8?x?abc?=",
            b"=?utf-8?q?bad=ZZ?=",
            b"=?utf-8?q?no end",
            b"plain = text ?= here",
            b"=?",
        ] {
            assert_eq!(
                decode_encoded_words(raw),
                String::from_utf8_lossy(raw),
                "{raw:?}"
            );
        }
    }
}
