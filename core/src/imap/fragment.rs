//! IMAP command framing (RFC 3501 §4.3 literals, §7.5 continuation; RFC 7888 LITERAL+).
//!
//! An IMAP command is a line that may end in a literal announcement, `{n}`
//! (synchronising: the client waits for a `+` continuation request) or `{n+}`
//! (non-synchronising: the bytes follow at once), then `n` raw bytes, then the rest of
//! the command on the next line, and so on. The [`Fragmentizer`] finds these pieces in
//! the byte stream before any grammar runs:
//!
//! * lines are bounded by `max_line`; an overlong line is discarded as it streams in
//!   and reported once as [`Fragment::LineTooLong`];
//! * after a line announcing a literal, the fragmentizer stops and waits for the
//!   session's decision: [`Fragmentizer::accept_literal`] (the session sends `+` for a
//!   synchronising literal) or [`Fragmentizer::reject_literal`] (the session answers the
//!   command with a tagged `NO`/`BAD` and never sends `+`; the bytes of a rejected
//!   non-synchronising literal, and the rest of its command, are dropped as they arrive);
//! * literal bytes are handed out as they arrive ([`Fragment::LiteralData`]), so the
//!   session decides whether to buffer them (a command argument) or stream them on (an
//!   APPEND message); the fragmentizer never holds more than what one read brought in.
//!
//! Every byte is looked at once: the scan position for the line end is remembered
//! across calls.

use bytes::{Bytes, BytesMut};

/// A literal announced at the end of a command line (`{n}` or `{n+}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Literal {
    /// The announced size; `None` when the digits do not fit the 32-bit `number` of
    /// RFC 3501 §9 (such a literal is always rejected).
    pub length: Option<u32>,
    /// True for `{n}` (RFC 3501 §7.5: wait for `+`), false for `{n+}` (RFC 7888).
    pub sync: bool,
}

/// One piece of the client's byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fragment {
    /// A line without its CRLF (a bare LF also ends a line). When it ends in a literal
    /// announcement, `literal` describes it and the fragmentizer waits for
    /// [`Fragmentizer::accept_literal`] or [`Fragmentizer::reject_literal`].
    Line {
        /// The line, announcement included.
        bytes: Bytes,
        /// The literal announced at its end, if any.
        literal: Option<Literal>,
    },
    /// The next bytes of an accepted literal.
    LiteralData(Bytes),
    /// The accepted literal is complete; the command continues on the next line.
    LiteralEnd,
    /// A line longer than the limit ended here; its bytes were dropped as they came.
    LineTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Looking for the end of a line.
    Line,
    /// A line announced a literal; waiting for the session's decision.
    Decision(Literal),
    /// Inside an accepted literal with this many bytes still to come.
    Literal(u64),
    /// Dropping a rejected non-synchronising literal, then the rest of its command.
    Skip(u64),
    /// Dropping the rest of a rejected command up to the end of its line.
    SkipLine,
    /// Dropping an overlong line up to its LF.
    Overlong,
}

/// Splits a client byte stream into [`Fragment`]s. See the module documentation.
#[derive(Debug)]
pub struct Fragmentizer {
    buf: BytesMut,
    /// Bytes of `buf` already searched for LF in line mode.
    scanned: usize,
    max_line: usize,
    mode: Mode,
    /// An overlong line ended: report it before anything later.
    overlong_ended: bool,
    /// The last bytes of a line being skipped (at most [`TAIL`]).
    tail: Vec<u8>,
}

/// Bytes kept from the end of a skipped line: `{4294967295+}` plus a CR.
const TAIL: usize = 14;

impl Fragmentizer {
    /// A fragmentizer for lines of at most `max_line` bytes (CRLF excluded).
    pub fn new(max_line: usize) -> Self {
        Fragmentizer {
            buf: BytesMut::new(),
            scanned: 0,
            max_line,
            mode: Mode::Line,
            overlong_ended: false,
            tail: Vec::new(),
        }
    }

    /// Appends input. Bytes that are being dropped never reach the buffer.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.mode {
                Mode::Skip(remaining) => {
                    let n = bytes
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    bytes = &bytes[n..];
                    let left = remaining - n as u64;
                    self.mode = if left == 0 {
                        Mode::SkipLine
                    } else {
                        Mode::Skip(left)
                    };
                }
                Mode::SkipLine | Mode::Overlong => {
                    let Some(lf) = bytes.iter().position(|&b| b == b'\n') else {
                        self.keep_tail(bytes);
                        return;
                    };
                    self.keep_tail(&bytes[..lf]);
                    bytes = &bytes[lf + 1..];
                    // The rest of a rejected command may announce another
                    // non-synchronising literal: keep skipping through it.
                    let next = match announced(trim_cr(&self.tail)) {
                        Some(Literal {
                            sync: false,
                            length,
                        }) if self.mode == Mode::SkipLine => {
                            Mode::Skip(length.map_or(u64::MAX, u64::from))
                        }
                        _ => Mode::Line,
                    };
                    if self.mode == Mode::Overlong {
                        self.overlong_ended = true;
                    }
                    self.tail.clear();
                    self.mode = next;
                }
                Mode::Line | Mode::Decision(_) | Mode::Literal(_) => {
                    self.buf.extend_from_slice(bytes);
                    return;
                }
            }
        }
    }

    /// Remembers the last bytes of a line being skipped: enough to see a literal
    /// announcement at its end ([`TAIL`] bytes), never more.
    fn keep_tail(&mut self, bytes: &[u8]) {
        let from = bytes.len().saturating_sub(TAIL);
        self.tail.extend_from_slice(&bytes[from..]);
        let excess = self.tail.len().saturating_sub(TAIL);
        self.tail.drain(..excess);
    }

    /// Lets go of the buffer's allocation once everything in it was taken, so it dies
    /// with the last fragment cut from it and an idle session holds no input buffer.
    fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// The next fragment, or `None` when more input (or a literal decision) is needed.
    pub fn next_fragment(&mut self) -> Option<Fragment> {
        if self.overlong_ended {
            self.overlong_ended = false;
            return Some(Fragment::LineTooLong);
        }
        match self.mode {
            Mode::Line => self.next_line(),
            Mode::Literal(0) => {
                self.mode = Mode::Line;
                Some(Fragment::LiteralEnd)
            }
            Mode::Literal(remaining) => {
                if self.buf.is_empty() {
                    return None;
                }
                let n = self
                    .buf
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                let data = self.buf.split_to(n).freeze();
                self.release_if_empty();
                self.scanned = 0;
                self.mode = Mode::Literal(remaining - n as u64);
                Some(Fragment::LiteralData(data))
            }
            Mode::Decision(_) | Mode::Skip(_) | Mode::SkipLine | Mode::Overlong => None,
        }
    }

    fn next_line(&mut self) -> Option<Fragment> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let end = self.scanned + offset;
                let mut line = self.buf.split_to(end + 1);
                self.release_if_empty();
                self.scanned = 0;
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                if line.len() > self.max_line {
                    return Some(Fragment::LineTooLong);
                }
                let literal = announced(&line);
                if let Some(literal) = literal {
                    self.mode = Mode::Decision(literal);
                }
                Some(Fragment::Line {
                    bytes: line.freeze(),
                    literal,
                })
            }
            None => {
                self.scanned = self.buf.len();
                // One byte of slack for the CR of a line exactly at the limit.
                if self.buf.len() > self.max_line + 1 {
                    self.buf = BytesMut::new();
                    self.scanned = 0;
                    self.mode = Mode::Overlong;
                }
                None
            }
        }
    }

    /// The session takes the literal announced by the last line: its bytes follow as
    /// [`Fragment::LiteralData`]. For a synchronising literal the session must send the
    /// `+` continuation request itself. Does nothing unless a decision is pending.
    pub fn accept_literal(&mut self) {
        if let Mode::Decision(literal) = self.mode {
            self.mode = match literal.length {
                Some(n) => Mode::Literal(u64::from(n)),
                // Never accepted by a sane session; treat as rejected.
                None => Mode::Skip(u64::MAX),
            };
        }
    }

    /// The session refuses the literal announced by the last line and has answered the
    /// command. A synchronising literal is never sent by the client (it waits for `+`),
    /// so the next line is a new command; a non-synchronising literal is on its way and
    /// is dropped, with the rest of its command, as it arrives.
    pub fn reject_literal(&mut self) {
        if let Mode::Decision(literal) = self.mode {
            self.mode = Mode::Line;
            if !literal.sync {
                self.mode = Mode::Skip(literal.length.map_or(u64::MAX, u64::from));
                let held = std::mem::take(&mut self.buf);
                self.scanned = 0;
                self.push(&held);
            }
        }
    }

    /// Bytes held, for the session's input limit.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Drops everything buffered (STARTTLS: RFC 3501 §6.2.1, CVE-2011-0411).
    pub fn clear(&mut self) {
        self.buf = BytesMut::new();
        self.scanned = 0;
        self.mode = Mode::Line;
        self.overlong_ended = false;
        self.tail.clear();
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The literal announced at the end of `line`: `{digits}` or `{digits+}`.
pub(crate) fn announced(line: &[u8]) -> Option<Literal> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let body = &inner[open + 1..];
    let (digits, sync) = match body.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (body, true),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let length = digits.iter().try_fold(0u32, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    });
    Some(Literal { length, sync })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str, literal: Option<Literal>) -> Fragment {
        Fragment::Line {
            bytes: Bytes::copy_from_slice(s.as_bytes()),
            literal,
        }
    }

    #[test]
    fn announcements() {
        assert_eq!(
            announced(b"A1 LOGIN {5}"),
            Some(Literal {
                length: Some(5),
                sync: true
            })
        );
        assert_eq!(
            announced(b"A1 LOGIN {0+}"),
            Some(Literal {
                length: Some(0),
                sync: false
            })
        );
        assert_eq!(
            announced(b"x {4294967296}"),
            Some(Literal {
                length: None,
                sync: true
            })
        );
        assert_eq!(announced(b"x {}"), None);
        assert_eq!(announced(b"x {+}"), None);
        assert_eq!(announced(b"x {1a}"), None);
        assert_eq!(announced(b"x 5}"), None);
    }

    #[test]
    fn a_drained_buffer_holds_no_allocation() {
        let mut f = Fragmentizer::new(100);
        f.push(&[b'x'; 60]);
        f.push(b"\r\nA2 IDLE\r\n");
        assert!(matches!(f.next_fragment(), Some(Fragment::Line { .. })));
        assert!(f.buf.capacity() > 0, "the second line is still buffered");
        assert_eq!(f.next_fragment(), Some(line("A2 IDLE", None)));
        assert_eq!(f.buf.capacity(), 0);
        // A partial line keeps its bytes, of course.
        f.push(b"DO");
        assert_eq!(f.next_fragment(), None);
        f.push(b"NE\r\n");
        assert_eq!(f.next_fragment(), Some(line("DONE", None)));
        assert_eq!(f.buf.capacity(), 0);
    }

    #[test]
    fn literal_is_handed_out_after_acceptance() {
        let mut f = Fragmentizer::new(100);
        f.push(b"A1 LOGIN {5}\r\nfred {3+}\r\nabc\r\nB NOOP\r\n");
        let lit = Literal {
            length: Some(5),
            sync: true,
        };
        assert_eq!(f.next_fragment(), Some(line("A1 LOGIN {5}", Some(lit))));
        assert_eq!(f.next_fragment(), None, "waits for the decision");
        f.accept_literal();
        assert_eq!(
            f.next_fragment(),
            Some(Fragment::LiteralData(Bytes::from_static(b"fred ")))
        );
        assert_eq!(f.next_fragment(), Some(Fragment::LiteralEnd));
        let lit2 = Literal {
            length: Some(3),
            sync: false,
        };
        assert_eq!(f.next_fragment(), Some(line("{3+}", Some(lit2))));
        f.accept_literal();
        assert_eq!(
            f.next_fragment(),
            Some(Fragment::LiteralData(Bytes::from_static(b"abc")))
        );
        assert_eq!(f.next_fragment(), Some(Fragment::LiteralEnd));
        assert_eq!(f.next_fragment(), Some(line("", None)));
        assert_eq!(f.next_fragment(), Some(line("B NOOP", None)));
        assert_eq!(f.next_fragment(), None);
    }

    #[test]
    fn rejected_sync_literal_is_never_read() {
        let mut f = Fragmentizer::new(100);
        f.push(b"A APPEND x {99999}\r\nB NOOP\r\n");
        assert!(matches!(f.next_fragment(), Some(Fragment::Line { .. })));
        f.reject_literal();
        assert_eq!(f.next_fragment(), Some(line("B NOOP", None)));
    }

    #[test]
    fn rejected_non_sync_literal_is_dropped_without_buffering() {
        let mut f = Fragmentizer::new(100);
        f.push(b"A APPEND x {100000+}\r\n");
        assert!(matches!(f.next_fragment(), Some(Fragment::Line { .. })));
        f.reject_literal();
        for _ in 0..100 {
            f.push(&[b'x'; 1000]);
            assert_eq!(f.next_fragment(), None);
            assert_eq!(f.buffered(), 0);
        }
        // The rest of the command line, with another literal, is skipped too.
        f.push(b" {3+}\r\nabc tail\r\nB NOOP\r\n");
        assert_eq!(f.next_fragment(), Some(line("B NOOP", None)));
    }

    #[test]
    fn overlong_line_reported_once() {
        let mut f = Fragmentizer::new(8);
        f.push(b"0123456789");
        assert_eq!(f.next_fragment(), None);
        f.push(&[b'x'; 5000]);
        assert_eq!(f.next_fragment(), None);
        assert!(f.buffered() <= 10);
        f.push(b"{5}\r\nB NOOP\r\n");
        assert_eq!(f.next_fragment(), Some(Fragment::LineTooLong));
        assert_eq!(f.next_fragment(), Some(line("B NOOP", None)));
    }
}
