//! The "relaxed" canonicalisation of DKIM (RFC 6376 §3.4.2 for header fields, §3.4.4 for
//! the body): the form of the message that is hashed, tolerant of the whitespace changes
//! relays commonly make.

/// Whitespace as RFC 5234 WSP: space and horizontal tab.
fn is_wsp(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// RFC 6376 §3.4.2: one header field in relaxed form, `name:value\r\n`. `field` is the
/// raw field as it appears in the message (name, colon, value, continuation lines), with or
/// without its final CRLF. The name is lower-cased, the value unfolded, each run of
/// whitespace becomes one space, and whitespace around the colon and at the end goes.
/// A field without a colon is taken as a name with an empty value (it is never one of the
/// fields we sign, but it must not break the output's one-line shape).
pub fn relaxed_header(field: &[u8]) -> Vec<u8> {
    let (name, value) = match field.iter().position(|&b| b == b':') {
        Some(colon) => (&field[..colon], &field[colon + 1..]),
        None => (field, &[][..]),
    };
    let mut out = Vec::with_capacity(field.len() + 2);
    let unfolded_name: Vec<u8> = name
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    out.extend(trim_wsp(&unfolded_name).iter().map(u8::to_ascii_lowercase));
    out.push(b':');
    let mut pending_space = false;
    let mut value_started = false;
    let mut rest = value;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        if byte == b'\r' && rest.first() == Some(&b'\n') {
            // Unfolding: a CRLF disappears; the WSP after it is handled as whitespace.
            rest = &rest[1..];
            continue;
        }
        if is_wsp(byte) {
            pending_space = true;
            continue;
        }
        if pending_space && value_started {
            out.push(b' ');
        }
        pending_space = false;
        value_started = true;
        out.push(byte);
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn trim_wsp(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_wsp(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_wsp(b))
        .map_or(start, |last| last + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// RFC 6376 §3.4.4: the relaxed body canonicalisation as a stream, so a message of any size
/// is hashed in fixed memory. Feed the body in chunks of any size with [`Self::push`]; the
/// canonical bytes come out through the `sink` callback. Whitespace at line ends is
/// dropped, runs of whitespace inside a line become one space, empty lines at the end are
/// dropped, and a last line without CRLF gets one. Only CRLF ends a line; a lone CR or LF
/// is an ordinary character.
#[derive(Debug, Default)]
pub struct RelaxedBody {
    /// Whitespace seen and not yet written (it becomes one space if more text follows).
    pending_space: bool,
    /// A CR seen as the last byte of the previous chunk.
    pending_cr: bool,
    /// The current line has had a non-whitespace character.
    line_has_text: bool,
    /// Empty lines seen and not yet written (dropped if the body ends here).
    pending_empty_lines: u64,
}

impl RelaxedBody {
    /// A canonicaliser at the start of a body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Canonicalises the next chunk of the body.
    pub fn push(&mut self, chunk: &[u8], sink: &mut impl FnMut(&[u8])) {
        let mut rest = chunk;
        while let Some(&byte) = rest.first() {
            if self.pending_cr {
                self.pending_cr = false;
                if byte == b'\n' {
                    self.end_line(sink);
                    rest = &rest[1..];
                    continue;
                }
                self.text(b"\r", sink);
            }
            match byte {
                b'\r' => {
                    self.pending_cr = true;
                    rest = &rest[1..];
                }
                b' ' | b'\t' => {
                    self.pending_space = true;
                    rest = &rest[1..];
                }
                _ => {
                    // A run of ordinary bytes goes out in one piece.
                    let run = rest
                        .iter()
                        .position(|&b| matches!(b, b'\r' | b' ' | b'\t'))
                        .unwrap_or(rest.len());
                    let (text, after) = rest.split_at(run);
                    self.text(text, sink);
                    rest = after;
                }
            }
        }
    }

    /// Ends the body: a trailing lone CR counts as text, and a last line with text and no
    /// CRLF gets one. Empty lines still pending are dropped.
    pub fn finish(mut self, sink: &mut impl FnMut(&[u8])) {
        if self.pending_cr {
            self.pending_cr = false;
            self.text(b"\r", sink);
        }
        if self.line_has_text {
            sink(b"\r\n");
        }
    }

    /// Writes non-whitespace text (never empty), after any deferred empty lines and space.
    fn text(&mut self, text: &[u8], sink: &mut impl FnMut(&[u8])) {
        if !self.line_has_text {
            for _ in 0..self.pending_empty_lines {
                sink(b"\r\n");
            }
            self.pending_empty_lines = 0;
            self.line_has_text = true;
        }
        if self.pending_space {
            sink(b" ");
            self.pending_space = false;
        }
        sink(text);
    }

    fn end_line(&mut self, sink: &mut impl FnMut(&[u8])) {
        self.pending_space = false;
        if self.line_has_text {
            sink(b"\r\n");
            self.line_has_text = false;
        } else {
            self.pending_empty_lines = self.pending_empty_lines.saturating_add(1);
        }
    }
}

/// The whole relaxed body of `body` at once (for tests and small messages).
pub fn relaxed_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut canon = RelaxedBody::new();
    canon.push(body, &mut |bytes| out.extend_from_slice(bytes));
    canon.finish(&mut |bytes| out.extend_from_slice(bytes));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_unfolds_and_squeezes() {
        assert_eq!(
            relaxed_header(b"SUBJect \t:  a \t b\r\n\t c  \r\n"),
            b"subject:a b c\r\n"
        );
        assert_eq!(relaxed_header(b"X-Empty:   \r\n"), b"x-empty:\r\n");
        assert_eq!(relaxed_header(b"To: a : b\r\n"), b"to:a : b\r\n");
        assert_eq!(relaxed_header(b"NoColon"), b"nocolon:\r\n");
    }

    #[test]
    fn body_chunking_does_not_matter() {
        let body = b" a  b \t\r\n\r\n\r\nc\r\r\n \r\n\r\n";
        let whole = relaxed_body(body);
        assert_eq!(whole, b" a b\r\n\r\n\r\nc\r\r\n");
        for split in 0..body.len() {
            let mut out = Vec::new();
            let mut canon = RelaxedBody::new();
            canon.push(&body[..split], &mut |b| out.extend_from_slice(b));
            canon.push(&body[split..], &mut |b| out.extend_from_slice(b));
            canon.finish(&mut |b| out.extend_from_slice(b));
            assert_eq!(out, whole, "split at {split}");
        }
    }

    #[test]
    fn empty_and_blank_bodies_are_empty() {
        assert_eq!(relaxed_body(b""), b"");
        assert_eq!(relaxed_body(b"\r\n\r\n  \r\n"), b"");
        assert_eq!(relaxed_body(b"x"), b"x\r\n");
    }
}
