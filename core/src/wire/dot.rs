//! Dot-stuffed multi-line data (RFC 1939 §3, RFC 5321 §4.5.2), streamed in both directions.
//!
//! Both directions work on chunks of any size with state carried across chunk
//! boundaries, so a message is never copied whole.

use bytes::BytesMut;

/// Encodes message bytes for sending: CRLF line ends (a bare LF becomes CRLF), a dot
/// doubled at the start of a line, and the final `.` line from [`DotStuffer::finish`].
///
/// For POP3 TOP (RFC 1939 §7) it can stop after the header and `n` body lines.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    at_line_start: bool,
    prev_cr: bool,
    line_len: u64,
    in_header: bool,
    /// Body lines still allowed; `None` sends the whole message.
    body_lines_left: Option<u64>,
    done: bool,
}

impl DotStuffer {
    /// Stuffs a whole message.
    pub fn new() -> Self {
        DotStuffer {
            at_line_start: true,
            prev_cr: false,
            line_len: 0,
            in_header: true,
            body_lines_left: None,
            done: false,
        }
    }

    /// Stuffs the header, the blank line and at most `body_lines` lines of the body.
    pub fn top(body_lines: u64) -> Self {
        DotStuffer {
            body_lines_left: Some(body_lines),
            ..DotStuffer::new()
        }
    }

    /// True once a TOP limit was reached: no more input is wanted.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Stuffs `input` into `out`. Input after a TOP limit is ignored.
    pub fn stuff(&mut self, input: &[u8], out: &mut BytesMut) {
        out.reserve(input.len() + input.len() / 64 + 8);
        if self.done {
            return;
        }
        let mut run_start = 0;
        for (i, &b) in input.iter().enumerate() {
            if self.at_line_start {
                if b == b'.' {
                    out.extend_from_slice(&input[run_start..i]);
                    out.extend_from_slice(b".");
                    run_start = i;
                }
                self.at_line_start = false;
            }
            match b {
                b'\n' => {
                    if !self.prev_cr {
                        out.extend_from_slice(&input[run_start..i]);
                        out.extend_from_slice(b"\r");
                        run_start = i;
                    }
                    self.end_line();
                    if self.done {
                        out.extend_from_slice(&input[run_start..=i]);
                        return;
                    }
                }
                b'\r' => {
                    self.prev_cr = true;
                    continue;
                }
                _ => self.line_len += 1,
            }
            self.prev_cr = false;
        }
        out.extend_from_slice(&input[run_start..]);
    }

    fn end_line(&mut self) {
        if self.in_header {
            if self.line_len == 0 {
                self.in_header = false;
            }
        } else if let Some(left) = self.body_lines_left.as_mut() {
            *left = left.saturating_sub(1);
        }
        self.line_len = 0;
        self.at_line_start = true;
        if !self.in_header && self.body_lines_left == Some(0) {
            self.done = true;
        }
    }

    /// Ends the data: completes a last line without CRLF, then writes the `.` line.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if !self.at_line_start {
            out.extend_from_slice(if self.prev_cr { b"\n" } else { b"\r\n" });
        }
        out.extend_from_slice(b".\r\n");
        self.at_line_start = true;
        self.done = true;
    }
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

/// Progress of [`DotUnstuffer::unstuff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unstuffed {
    /// Input bytes used; bytes after the end marker are the next command's.
    pub consumed: usize,
    /// True when the `CRLF.CRLF` end marker was seen.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnstuffState {
    LineStart,
    Middle,
    Cr,
    Dot,
    DotCr,
}

/// Decodes received dot-stuffed data up to the `.` line, removing the stuffed dots.
///
/// Only CRLF ends a line: a bare LF is data, so `LF.LF` or `LF.CRLF` cannot end the data
/// early (the "SMTP smuggling" ambiguity).
#[derive(Debug, Clone)]
pub struct DotUnstuffer {
    state: UnstuffState,
}

impl DotUnstuffer {
    /// A decoder positioned at the start of the data (just after the `354`/`+OK`).
    pub fn new() -> Self {
        DotUnstuffer {
            state: UnstuffState::LineStart,
        }
    }

    /// Appends the data in `input` to `out` and reports how far it got.
    ///
    /// Inside a line only a CR can change the state, so the scan jumps from one CR to
    /// the next (`memchr`) instead of stepping through every byte.
    pub fn unstuff(&mut self, input: &[u8], out: &mut BytesMut) -> Unstuffed {
        use UnstuffState::*;
        let mut run_start = 0;
        let mut i = 0;
        while i < input.len() {
            if self.state == Middle {
                match memchr::memchr(b'\r', &input[i..]) {
                    Some(offset) => i += offset,
                    None => break,
                }
            }
            let b = input[i];
            self.state = match (self.state, b) {
                (LineStart, b'.') => {
                    out.extend_from_slice(&input[run_start..i]);
                    run_start = i + 1;
                    Dot
                }
                (Dot, b'\r') => {
                    // Hold the CR back until we know whether LF (the end) follows.
                    run_start = i + 1;
                    DotCr
                }
                (DotCr, b'\n') => {
                    return Unstuffed {
                        consumed: i + 1,
                        done: true,
                    };
                }
                (DotCr, other) => {
                    // "." CR x: the dot was stuffing and the held-back CR is data.
                    out.extend_from_slice(b"\r");
                    run_start = i;
                    after_data_byte(other)
                }
                (Cr, b'\n') => LineStart,
                (_, other) => after_data_byte(other),
            };
            i += 1;
        }
        out.extend_from_slice(&input[run_start..]);
        Unstuffed {
            consumed: input.len(),
            done: false,
        }
    }
}

fn after_data_byte(b: u8) -> UnstuffState {
    match b {
        b'\r' => UnstuffState::Cr,
        _ => UnstuffState::Middle,
    }
}

impl Default for DotUnstuffer {
    fn default() -> Self {
        DotUnstuffer::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The unstuffer one byte at a time, the way it was written before the `memchr`
    /// jumps: the model the fast scan must agree with.
    fn unstuff_bytewise(input: &[u8]) -> (Vec<u8>, Option<usize>) {
        use UnstuffState::*;
        let (mut state, mut out) = (LineStart, Vec::new());
        for (i, &b) in input.iter().enumerate() {
            state = match (state, b) {
                (LineStart, b'.') => Dot,
                // The CR is held back until the next byte decides what it is.
                (Dot, b'\r') => DotCr,
                (DotCr, b'\n') => return (out, Some(i + 1)),
                (DotCr, other) => {
                    out.extend_from_slice(&[b'\r', other]);
                    after_data_byte(other)
                }
                (Cr, b'\n') => {
                    out.push(b'\n');
                    LineStart
                }
                (_, other) => {
                    out.push(other);
                    after_data_byte(other)
                }
            };
        }
        (out, None)
    }

    /// Bytes rich in the characters that matter to the unstuffer.
    fn data() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b'.'),
                Just(b'\r'),
                Just(b'\n'),
                Just(b'a'),
                any::<u8>()
            ],
            0..300,
        )
    }

    proptest! {
        #[test]
        fn the_fast_scan_agrees_with_the_bytewise_model_however_split(
            input in data(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            bounds.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for end in bounds.into_iter().chain([input.len()]) {
                chunks.push(&input[start..end]);
                start = end;
            }
            prop_assert_eq!(unstuff_chunks(&chunks), unstuff_bytewise(&input));
        }
    }

    fn stuff_chunks(mut stuffer: DotStuffer, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for c in chunks {
            stuffer.stuff(c, &mut out);
        }
        stuffer.finish(&mut out);
        out.to_vec()
    }

    fn unstuff_chunks(chunks: &[&[u8]]) -> (Vec<u8>, Option<usize>) {
        let mut un = DotUnstuffer::new();
        let mut out = BytesMut::new();
        let mut total = 0;
        for c in chunks {
            let p = un.unstuff(c, &mut out);
            if p.done {
                return (out.to_vec(), Some(total + p.consumed));
            }
            total += p.consumed;
        }
        (out.to_vec(), None)
    }

    #[test]
    fn stuffing_doubles_leading_dots_and_fixes_bare_lf() {
        let out = stuff_chunks(DotStuffer::new(), &[b"a\n.b\r\n..c\r\nd"]);
        assert_eq!(out, b"a\r\n..b\r\n...c\r\nd\r\n.\r\n");
    }

    #[test]
    fn stuffing_state_crosses_chunk_boundaries() {
        let whole = stuff_chunks(DotStuffer::new(), &[b"x\r\n.y\r\n.\r\n"]);
        let split = stuff_chunks(
            DotStuffer::new(),
            &[b"x\r", b"\n", b".", b"y\r\n", b".\r", b"\n"],
        );
        assert_eq!(whole, split);
        assert_eq!(whole, b"x\r\n..y\r\n..\r\n.\r\n");
    }

    #[test]
    fn top_stops_after_header_and_n_body_lines() {
        let msg: &[u8] = b"Subject: s\r\nFrom: f\r\n\r\nl1\r\n.l2\r\nl3\r\n";
        assert_eq!(
            stuff_chunks(DotStuffer::top(0), &[msg]),
            b"Subject: s\r\nFrom: f\r\n\r\n.\r\n"
        );
        assert_eq!(
            stuff_chunks(DotStuffer::top(2), &[msg]),
            b"Subject: s\r\nFrom: f\r\n\r\nl1\r\n..l2\r\n.\r\n"
        );
        assert_eq!(
            stuff_chunks(DotStuffer::top(99), &[msg]),
            stuff_chunks(DotStuffer::new(), &[msg])
        );
    }

    #[test]
    fn unstuffing_stops_at_the_end_marker_only_after_crlf() {
        let (data, end) = unstuff_chunks(&[b"a\r\n..b\r\n.\r\nNEXT"]);
        assert_eq!(data, b"a\r\n.b\r\n");
        assert_eq!(end, Some(11));
        // A bare LF never starts a line: "\n.\n" and "\n.\r\n" are data.
        let (data, end) = unstuff_chunks(&[b"a\n.\nb\n.\r\nc\r\n.\r\n"]);
        assert_eq!(data, b"a\n.\nb\n.\r\nc\r\n");
        assert_eq!(end, Some(15));
    }

    #[test]
    fn unstuffing_holds_a_dot_cr_across_chunks() {
        let (data, end) = unstuff_chunks(&[b"x\r\n.", b"\r", b"y\r\n.", b"\r", b"\n"]);
        assert_eq!(data, b"x\r\n\ry\r\n");
        assert!(end.is_some());
    }

    #[test]
    fn stuff_then_unstuff_round_trips_crlf_text() {
        let msg: &[u8] = b"From: a\r\n\r\n.\r\n..x\r\nend\r\n";
        let wire = stuff_chunks(DotStuffer::new(), &[msg]);
        let (back, end) = unstuff_chunks(&[&wire]);
        assert_eq!(back, msg);
        assert_eq!(end, Some(wire.len()));
    }
}
