//! The message being received: the bytes collected for the next append and the checks
//! every byte passes (size, text line length, bare CR or LF).
//!
//! Every check is decided at a position in the message, never at a chunk boundary, so
//! the outcome is the same however the input was split into reads.

use bytes::{Bytes, BytesMut};

use crate::request::{DeliveryId, Failure};
use crate::wire::{DotUnstuffer, Unstuffed};

/// Why a message will be refused once its end is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Problem {
    /// Over `max_message_size` (RFC 1870 §6: `552 5.3.4`).
    TooLarge,
    /// A text line over `max_text_line` (RFC 5321 §4.5.3.1.6: `500 5.5.6`).
    LineTooLong,
    /// A CR not followed by LF, or an LF not preceded by CR (`550 5.6.0`).
    BareLineEnd,
    /// The store could not take the message.
    Store(Failure),
}

impl Problem {
    /// The reply once the message has ended.
    pub(super) fn reply(&self) -> &'static str {
        use super::reply;
        match self {
            Problem::TooLarge => reply::MESSAGE_TOO_BIG,
            Problem::LineTooLong => reply::TEXT_LINE_TOO_LONG,
            Problem::BareLineEnd => reply::BARE_LINE_END,
            Problem::Store(Failure::OverQuota) => reply::MAILBOX_FULL,
            Problem::Store(_) => reply::TEMPORARY,
        }
    }
}

/// Line-ending and line-length rules for text bodies (everything but BINARYMIME).
#[derive(Debug, Clone)]
pub(super) struct TextCheck {
    prev_cr: bool,
    line_len: usize,
    /// Longest line, CRLF excluded.
    max_line: usize,
}

impl TextCheck {
    /// Rules for lines of at most `max_text_line` octets, CRLF included.
    pub(super) fn new(max_text_line: usize) -> Self {
        TextCheck {
            prev_cr: false,
            line_len: 0,
            max_line: max_text_line.saturating_sub(2),
        }
    }

    /// Checks the next bytes; returns the first problem and the index of the byte that
    /// revealed it. Between line ends only the length changes, so the scan jumps from
    /// one CR or LF to the next (`memchr2`) and counts the bytes between at once.
    pub(super) fn check(&mut self, bytes: &[u8]) -> Option<(usize, Problem)> {
        let mut i = 0;
        while i < bytes.len() {
            if !self.prev_cr {
                let rest = &bytes[i..];
                let ordinary = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                // `line_len <= max_line` holds here, or a problem was returned.
                let room = self.max_line.saturating_sub(self.line_len);
                if ordinary > room {
                    return Some((i + room, Problem::LineTooLong));
                }
                self.line_len += ordinary;
                i += ordinary;
                if i == bytes.len() {
                    break;
                }
            }
            let at = i;
            i += 1;
            match (self.prev_cr, bytes[at]) {
                (true, b'\n') => {
                    self.prev_cr = false;
                    self.line_len = 0;
                }
                (true, _) | (false, b'\n') => return Some((at, Problem::BareLineEnd)),
                // The scan above stops only at a CR or an LF.
                (false, _) => self.prev_cr = true,
            }
        }
        None
    }

    /// The message ended: a CR as its last byte is bare.
    fn at_end(&self) -> Option<Problem> {
        self.prev_cr.then_some(Problem::BareLineEnd)
    }
}

/// A message between BeginDelivery and its commit or abort.
#[derive(Debug)]
pub(super) struct Message {
    /// The store's name for it, once BeginDelivery was answered.
    pub(super) delivery: Option<DeliveryId>,
    /// Our id, in the `Received:` field and the final `250`.
    pub(super) id: String,
    /// Octets so far (DATA: unstuffed; BDAT: announced).
    received: u64,
    /// Bytes not yet appended.
    pending: BytesMut,
    problem: Option<Problem>,
    /// `None` for BODY=BINARYMIME.
    text: Option<TextCheck>,
    /// The end of the data was seen; what remains is flushing and committing.
    pub(super) complete: bool,
}

impl Message {
    /// A message about to be received; `text` is `None` for a binary body.
    pub(super) fn new(id: String, text: Option<TextCheck>) -> Self {
        Message {
            delivery: None,
            id,
            received: 0,
            pending: BytesMut::new(),
            problem: None,
            text,
            complete: false,
        }
    }

    /// The first problem found, if any.
    pub(super) fn problem(&self) -> Option<&Problem> {
        self.problem.as_ref()
    }

    /// Records a problem (the first one wins) and drops what was collected: nothing more
    /// is appended.
    pub(super) fn fail(&mut self, problem: Problem) {
        if self.problem.is_none() {
            self.problem = Some(problem);
        }
        self.pending = BytesMut::new();
    }

    /// How many input bytes may be taken before the next append is due.
    pub(super) fn room(&self, append_chunk: usize) -> usize {
        if self.problem.is_some() {
            usize::MAX
        } else {
            append_chunk.saturating_sub(self.pending.len())
        }
    }

    /// DATA: unstuffs `raw` into the message and checks the new bytes in order.
    pub(super) fn unstuff(
        &mut self,
        unstuffer: &mut DotUnstuffer,
        raw: &[u8],
        max_size: u64,
    ) -> Unstuffed {
        let start = self.pending.len();
        let progress = unstuffer.unstuff(raw, &mut self.pending);
        let new = self.pending.get(start..).unwrap_or_default();
        let before = self.received;
        self.received = before.saturating_add(new.len() as u64);
        if self.problem.is_none() {
            // The first byte past the limit, as an index into `new`.
            let size_at = usize::try_from(max_size.saturating_sub(before)).unwrap_or(usize::MAX);
            let size = (new.len() > size_at).then_some((size_at, Problem::TooLarge));
            let text = self.text.as_mut().and_then(|t| t.check(new));
            let first = match (size, text) {
                (Some(s), Some(t)) if t.0 < s.0 => Some(t),
                (Some(s), _) => Some(s),
                (None, t) => t,
            };
            if let Some((_, problem)) = first {
                self.fail(problem);
            }
        } else {
            self.pending.clear();
        }
        if progress.done {
            self.end_of_text();
        }
        progress
    }

    /// BDAT: reserves `size` announced octets, or fails the message as too large
    /// (checked arithmetic: a count near `u64::MAX` cannot wrap).
    pub(super) fn announce(&mut self, size: u64, max_size: u64) {
        match self.received.checked_add(size).filter(|&n| n <= max_size) {
            Some(total) => self.received = total,
            None => self.fail(Problem::TooLarge),
        }
    }

    /// BDAT: takes chunk bytes as they are (no dot-stuffing).
    pub(super) fn take(&mut self, bytes: &[u8]) {
        if self.problem.is_some() {
            return;
        }
        if let Some((_, problem)) = self.text.as_mut().and_then(|t| t.check(bytes)) {
            return self.fail(problem);
        }
        self.pending.extend_from_slice(bytes);
    }

    /// The data ended (`.` line, BDAT LAST): a trailing bare CR is a problem too.
    pub(super) fn end_of_text(&mut self) {
        if self.problem.is_none()
            && let Some(problem) = self.text.as_ref().and_then(TextCheck::at_end)
        {
            self.fail(problem);
        }
    }

    /// A full append's worth of bytes, when collected.
    pub(super) fn full_chunk(&mut self, append_chunk: usize) -> Option<Bytes> {
        (self.problem.is_none() && self.pending.len() >= append_chunk)
            .then(|| self.pending.split_to(append_chunk).freeze())
    }

    /// What is left to append once the data ended, at most `append_chunk` at a time.
    pub(super) fn rest(&mut self, append_chunk: usize) -> Option<Bytes> {
        let n = self.pending.len().min(append_chunk);
        (self.problem.is_none() && n > 0).then(|| self.pending.split_to(n).freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The line check one byte at a time, the way it was written before the `memchr2`
    /// jumps: the model the fast scan must agree with. Returns the first problem with
    /// its offset in `bytes`.
    fn check_bytewise(max_text_line: usize, bytes: &[u8]) -> Option<(usize, Problem)> {
        let max_line = max_text_line.saturating_sub(2);
        let (mut prev_cr, mut line_len) = (false, 0);
        for (i, &b) in bytes.iter().enumerate() {
            if prev_cr && b != b'\n' {
                return Some((i, Problem::BareLineEnd));
            }
            match b {
                b'\n' if !prev_cr => return Some((i, Problem::BareLineEnd)),
                b'\n' => (prev_cr, line_len) = (false, 0),
                b'\r' => prev_cr = true,
                _ => {
                    line_len += 1;
                    if line_len > max_line {
                        return Some((i, Problem::LineTooLong));
                    }
                }
            }
        }
        None
    }

    proptest! {
        #[test]
        fn the_fast_line_check_agrees_with_the_bytewise_model_however_split(
            max_text_line in 0usize..12,
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), any::<u8>()],
                0..200,
            ),
            cut in any::<prop::sample::Index>(),
        ) {
            let cut = cut.index(bytes.len() + 1);
            let mut text = TextCheck::new(max_text_line);
            let found = match text.check(&bytes[..cut]) {
                Some(problem) => Some(problem),
                None => text.check(&bytes[cut..]).map(|(at, p)| (cut + at, p)),
            };
            prop_assert_eq!(found, check_bytewise(max_text_line, &bytes));
        }
    }

    fn check(max_text_line: usize, chunks: &[&[u8]]) -> Option<Problem> {
        let mut t = TextCheck::new(max_text_line);
        for c in chunks {
            if let Some((_, p)) = t.check(c) {
                return Some(p);
            }
        }
        t.at_end()
    }

    #[test]
    fn line_ends_and_lengths() {
        assert_eq!(check(10, &[b"abc\r\ndef\r\n"]), None);
        assert_eq!(check(10, &[b"abc\r", b"\ndef\r\n"]), None);
        assert_eq!(check(10, &[b"abc\ndef\r\n"]), Some(Problem::BareLineEnd));
        assert_eq!(
            check(10, &[b"abc\r", b"def\r\n"]),
            Some(Problem::BareLineEnd)
        );
        assert_eq!(check(10, &[b"abc\r\r\n"]), Some(Problem::BareLineEnd));
        assert_eq!(check(10, &[b"abc\r"]), Some(Problem::BareLineEnd));
        assert_eq!(check(10, &[b"12345678\r\n"]), None);
        assert_eq!(check(10, &[b"123456789\r\n"]), Some(Problem::LineTooLong));
        assert_eq!(check(10, &[b"1234", b"56789"]), Some(Problem::LineTooLong));
    }

    fn unstuff_all(max_size: u64, chunks: &[&[u8]]) -> (Option<Problem>, bool) {
        let mut m = Message::new("id".into(), Some(TextCheck::new(1000)));
        let mut un = DotUnstuffer::new();
        for c in chunks {
            if m.unstuff(&mut un, c, max_size).done {
                return (m.problem().cloned(), true);
            }
        }
        (m.problem().cloned(), false)
    }

    #[test]
    fn the_first_problem_in_the_stream_wins_however_it_is_split() {
        // A bare LF at byte 2, the size limit crossed at byte 5.
        let data: &[u8] = b"ab\ncdefgh\r\n.\r\n";
        let whole = unstuff_all(5, &[data]);
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(whole, (Some(Problem::BareLineEnd), true));
        assert_eq!(unstuff_all(5, &bytes), whole);
        // The size limit crossed first.
        let data: &[u8] = b"abcdefgh\ncd\r\n.\r\n";
        let whole = unstuff_all(5, &[data]);
        assert_eq!(whole, (Some(Problem::TooLarge), true));
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(unstuff_all(5, &bytes), whole);
        // Exactly at the limit is fine.
        assert_eq!(unstuff_all(5, &[b"abc\r\n.\r\n"]), (None, true));
    }

    #[test]
    fn appends_are_cut_at_fixed_offsets() {
        let mut m = Message::new("id".into(), None);
        m.take(b"0123456789");
        assert_eq!(m.full_chunk(4).as_deref(), Some(&b"0123"[..]));
        assert_eq!(m.full_chunk(4).as_deref(), Some(&b"4567"[..]));
        assert_eq!(m.full_chunk(4), None);
        assert_eq!(m.rest(4).as_deref(), Some(&b"89"[..]));
        assert_eq!(m.rest(4), None);
    }

    #[test]
    fn announced_sizes_use_checked_arithmetic() {
        let mut m = Message::new("id".into(), None);
        m.announce(10, 100);
        assert_eq!(m.problem(), None);
        m.announce(u64::MAX, u64::MAX);
        assert_eq!(m.problem(), Some(&Problem::TooLarge));
        m.take(b"ignored");
        assert_eq!(m.rest(100), None);
    }
}
