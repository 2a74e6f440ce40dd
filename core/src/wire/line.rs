//! CRLF-terminated command lines with a maximum length (RFC 1939 §3, RFC 5321 §2.3.8).

use bytes::{Buf as _, Bytes, BytesMut};

/// What [`LineBuffer::next_line`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// A complete line, without its CRLF (a bare LF is accepted as a line end too).
    Line(Bytes),
    /// A line longer than the limit ended here; its bytes were discarded as they came,
    /// so memory stayed bounded. Reported once per overlong line.
    TooLong,
}

/// Splits input into lines, holding at most `max_line` bytes of an unfinished line.
///
/// Complete lines that have not been taken yet stay buffered; [`LineBuffer::buffered`]
/// lets the session stop reading when too many are queued.
#[derive(Debug)]
pub struct LineBuffer {
    buf: BytesMut,
    /// Bytes of `buf` already searched for LF, so no byte is scanned twice.
    scanned: usize,
    max_line: usize,
    /// Inside an overlong line: drop everything up to its LF.
    discarding: bool,
    /// An overlong line ended; report it before any later line.
    overlong_ended: bool,
}

impl LineBuffer {
    /// A buffer for lines of at most `max_line` bytes, CRLF excluded.
    pub fn new(max_line: usize) -> Self {
        LineBuffer {
            buf: BytesMut::new(),
            scanned: 0,
            max_line,
            discarding: false,
            overlong_ended: false,
        }
    }

    /// Appends input. While an overlong line is being discarded, its bytes are dropped here.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.discarding {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(lf) => {
                    self.discarding = false;
                    self.overlong_ended = true;
                    bytes = &bytes[lf + 1..];
                }
                None => return,
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line or overlong-line marker, if any.
    pub fn next_line(&mut self) -> Option<LineEvent> {
        // The buffer was emptied when the overlong line crossed the limit, so its marker
        // comes before anything that is buffered now.
        if self.overlong_ended {
            self.overlong_ended = false;
            return Some(LineEvent::TooLong);
        }
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let end = self.scanned + offset;
                let mut line = self.buf.split_to(end + 1);
                self.scanned = 0;
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                if line.len() > self.max_line {
                    return Some(LineEvent::TooLong);
                }
                Some(LineEvent::Line(line.freeze()))
            }
            None => {
                self.scanned = self.buf.len();
                // One byte of slack for the CR of a line exactly at the limit.
                if self.buf.len() > self.max_line + 1 {
                    self.buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                }
                None
            }
        }
    }

    /// Bytes held: queued complete lines plus the unfinished one.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The buffered bytes not taken as lines yet, for a protocol that switches to raw
    /// data after a command line (SMTP DATA and BDAT: RFC 5321 §4.1.1.4, RFC 3030 §2).
    ///
    /// Raw access is for the moment right after [`LineBuffer::next_line`] returned a
    /// line: nothing is being discarded then, so these are exactly the bytes that
    /// followed that line. While an overlong line is being discarded it is empty.
    pub fn raw(&self) -> &[u8] {
        if self.discarding { &[] } else { &self.buf }
    }

    /// Removes the first `n` bytes of [`LineBuffer::raw`] (all of them if `n` is larger),
    /// after the caller used them as raw data. The scan position moves with them, so the
    /// next [`LineBuffer::next_line`] neither rescans nor skips a byte.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.advance(n);
        self.scanned = self.scanned.saturating_sub(n);
    }

    /// Drops all buffered input (used when TLS starts: RFC 2595 §4 / CVE-2011-0411).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.scanned = 0;
        self.discarding = false;
        self.overlong_ended = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(max: usize, chunks: &[&[u8]]) -> Vec<LineEvent> {
        let mut lb = LineBuffer::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            lb.push(chunk);
            while let Some(ev) = lb.next_line() {
                out.push(ev);
            }
        }
        out
    }

    fn line(s: &str) -> LineEvent {
        LineEvent::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn splits_crlf_and_bare_lf() {
        assert_eq!(
            lines(10, &[b"USER a\r\nPASS b\nQU", b"IT\r", b"\n"]),
            vec![line("USER a"), line("PASS b"), line("QUIT")]
        );
    }

    #[test]
    fn overlong_line_is_reported_once_and_discarded_while_streaming() {
        let mut lb = LineBuffer::new(8);
        lb.push(b"0123456789");
        assert_eq!(lb.next_line(), None);
        for _ in 0..1000 {
            lb.push(&[b'x'; 1000]);
            assert_eq!(lb.next_line(), None);
            assert!(lb.buffered() <= 10, "discarded bytes must not be kept");
        }
        lb.push(b"yyy\r\nNOOP\r\n");
        assert_eq!(lb.next_line(), Some(LineEvent::TooLong));
        assert_eq!(lb.next_line(), Some(line("NOOP")));
        assert_eq!(lb.next_line(), None);
    }

    #[test]
    fn line_exactly_at_limit_passes_and_one_over_fails() {
        assert_eq!(lines(4, &[b"ABCD\r\n"]), vec![line("ABCD")]);
        assert_eq!(
            lines(4, &[b"ABCDE\r\nOK\r\n"]),
            vec![LineEvent::TooLong, line("OK")]
        );
    }

    #[test]
    fn raw_data_between_lines_keeps_the_scan_position() {
        let mut lb = LineBuffer::new(100);
        lb.push(b"BDAT 5\r\nab");
        assert_eq!(lb.next_line(), Some(line("BDAT 5")));
        assert_eq!(lb.raw(), b"ab");
        lb.consume(2);
        lb.push(b"c\nd");
        assert_eq!(lb.raw(), b"c\nd");
        lb.consume(2);
        // "d" has no LF yet: it is scanned once, then the rest of its line arrives.
        assert_eq!(lb.next_line(), None);
        lb.push(b"ATA\r\nrest");
        assert_eq!(lb.next_line(), Some(line("dATA")));
        lb.consume(99);
        assert_eq!(lb.raw(), b"");
        assert_eq!(lb.buffered(), 0);
    }

    #[test]
    fn consume_after_a_partial_scan_does_not_skip_bytes() {
        let mut lb = LineBuffer::new(100);
        lb.push(b"xyz");
        assert_eq!(lb.next_line(), None);
        lb.consume(1);
        lb.push(b"\nNEXT\r\n");
        assert_eq!(lb.next_line(), Some(line("yz")));
        assert_eq!(lb.next_line(), Some(line("NEXT")));
    }

    #[test]
    fn clear_drops_pipelined_input() {
        let mut lb = LineBuffer::new(100);
        lb.push(b"STLS\r\nUSER injected\r\n");
        assert_eq!(lb.next_line(), Some(line("STLS")));
        lb.clear();
        assert_eq!(lb.next_line(), None);
        assert_eq!(lb.buffered(), 0);
    }
}
