//! Harnesses for the framers of [`crate::wire`]: CRLF lines and dot-stuffing.

use bytes::{Bytes, BytesMut};

use super::Chunker;
use crate::wire::{DotStuffer, DotUnstuffer, LineBuffer, LineEvent};

// ---------------------------------------------------------------------------------------
// Line framer
// ---------------------------------------------------------------------------------------

/// Fuzzes [`LineBuffer`].
///
/// Layout: `data[0] % 64` is `max_line`; `data[1]` sets the largest chunk (1 to 64 bytes)
/// and, with `data[2]`, seeds the chunk sizes; the rest is the input.
///
/// Invariants, all four ways of feeding the input giving the same [`LineEvent`]s:
/// 1. a reference splitter: lines end at LF, one CR before the LF is removed, a line
///    longer than `max_line` is [`LineEvent::TooLong`], a last line without LF is not
///    reported;
/// 2. one `push` of everything, then draining;
/// 3. random chunks, draining after every push: `buffered()` is at most
///    `max_line + 1 + chunk` after a push and at most `max_line + 1` after draining;
/// 4. random chunks, draining only sometimes.
///
/// Every reported line is at most `max_line` bytes and contains no LF.
pub fn line_framer(data: &[u8]) {
    let [max_line, chunking, seed, input @ ..] = data else {
        return;
    };
    let (max_line, chunking, seed) = (*max_line, *chunking, *seed);
    let max_line = usize::from(max_line % 64);
    let max_chunk = 1 + usize::from(chunking % 64);
    let mut chunker = Chunker::new(u16::from_le_bytes([chunking, seed]), max_chunk);

    let expected = reference_lines(input, max_line);
    for event in &expected {
        if let LineEvent::Line(line) = event {
            assert!(line.len() <= max_line && !line.contains(&b'\n'));
        }
    }

    let mut whole = LineBuffer::new(max_line);
    whole.push(input);
    let got = drain_lines(&mut whole);
    assert_eq!(got, expected, "one push of {input:?}, max_line {max_line}");

    let mut chunked = LineBuffer::new(max_line);
    let mut got = Vec::new();
    for chunk in chunker.split(input) {
        chunked.push(chunk);
        assert!(
            chunked.buffered() <= max_line + 1 + chunk.len(),
            "{} bytes buffered after a push of {} (max_line {max_line})",
            chunked.buffered(),
            chunk.len()
        );
        got.extend(drain_lines(&mut chunked));
        assert!(
            chunked.buffered() <= max_line + 1,
            "{} bytes of an unfinished line buffered (max_line {max_line})",
            chunked.buffered()
        );
    }
    assert_eq!(
        got, expected,
        "chunked push of {input:?}, max_line {max_line}"
    );

    let mut lazy = LineBuffer::new(max_line);
    let mut got = Vec::new();
    for chunk in chunker.split(input) {
        lazy.push(chunk);
        if chunker.coin() {
            got.extend(drain_lines(&mut lazy));
        }
    }
    got.extend(drain_lines(&mut lazy));
    assert_eq!(got, expected, "lazily drained push of {input:?}");
}

fn drain_lines(buffer: &mut LineBuffer) -> Vec<LineEvent> {
    std::iter::from_fn(|| buffer.next_line()).collect()
}

/// The obvious line splitter over a whole input, as the oracle for [`LineBuffer`].
pub(super) fn reference_lines(input: &[u8], max_line: usize) -> Vec<LineEvent> {
    let mut events = Vec::new();
    let mut rest = input;
    while let Some(lf) = rest.iter().position(|&b| b == b'\n') {
        let mut line = &rest[..lf];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        events.push(if line.len() > max_line {
            LineEvent::TooLong
        } else {
            LineEvent::Line(Bytes::copy_from_slice(line))
        });
        rest = &rest[lf + 1..];
    }
    events
}

// ---------------------------------------------------------------------------------------
// Dot-stuffing
// ---------------------------------------------------------------------------------------

/// Fuzzes [`DotStuffer`] and [`DotUnstuffer`].
///
/// Layout: `data[0]` picks the mode: below 128 a whole message ([`DotStuffer::new`]),
/// otherwise [`DotStuffer::top`] with `data[0] % 8` body lines. `data[1]` seeds the
/// chunking; the rest is the message.
///
/// Invariants:
/// * Stuffing in random chunks gives the same bytes as stuffing the whole message.
/// * Unstuffing the stuffed bytes, followed by arbitrary trailing bytes, stops exactly at
///   the end of the `.` line and yields `normalise(message)` (whole mode) or
///   `normalise(top_prefix(message))` (TOP mode), where `normalise` turns every LF not
///   preceded by CR into CRLF and ends a non-empty last line without LF with CRLF (just
///   LF if it already ends with CR), and `top_prefix` is the header up to and including
///   the first blank line plus at most `n` body lines (the stuffer counts a line as blank
///   when it has no bytes other than CR before its LF).
/// * The unstuffer, fed the raw input as if it were received data, gives the same output
///   and stop position in one piece and in random chunks, matches a reference decoder
///   (lines end only at CRLF, a leading dot is dropped, `.` CRLF ends the data), and has
///   never emitted more bytes than it consumed.
pub fn dot_stuffing(data: &[u8]) {
    let [mode, seed, message @ ..] = data else {
        return;
    };
    let (mode, seed) = (*mode, *seed);
    let top = (mode >= 128).then_some(u64::from(mode % 8));
    let mut chunker = Chunker::new(u16::from_le_bytes([mode, seed]), 1 + usize::from(seed % 32));
    let new_stuffer = || top.map_or_else(DotStuffer::new, DotStuffer::top);

    // Stuffing is chunking-invariant.
    let mut whole = BytesMut::new();
    let mut stuffer = new_stuffer();
    stuffer.stuff(message, &mut whole);
    stuffer.finish(&mut whole);
    let mut chunked = BytesMut::new();
    let mut stuffer = new_stuffer();
    for chunk in chunker.split(message) {
        stuffer.stuff(chunk, &mut chunked);
    }
    stuffer.finish(&mut chunked);
    assert_eq!(whole, chunked, "stuffing {message:?} in chunks differs");

    // Stuff → unstuff round trip, with the next command's bytes behind the `.` line.
    let source = match top {
        Some(n) => top_prefix(message, n),
        None => message,
    };
    let expected = normalise(source);
    let mut wire = whole.to_vec();
    wire.extend_from_slice(message);
    let whole_run = unstuff_in(&[&wire]);
    assert_eq!(
        whole_run,
        (expected.clone(), Some(whole.len())),
        "round trip of {message:?} (top {top:?}) through {whole:?}"
    );
    let chunked_run = unstuff_in(&chunker.split(&wire));
    assert_eq!(chunked_run, whole_run, "chunked unstuffing of {wire:?}");

    // The unstuffer on arbitrary received bytes.
    let reference = reference_unstuff(message);
    let whole_run = unstuff_in(&[message]);
    assert_eq!(whole_run, reference, "unstuffing {message:?}");
    let chunked_run = unstuff_in(&chunker.split(message));
    assert_eq!(chunked_run, reference, "chunked unstuffing of {message:?}");
}

/// Unstuffs `chunks` until the end marker; returns the data and where it ended.
/// Checks on the way that the output never outgrows the input consumed.
fn unstuff_in(chunks: &[&[u8]]) -> (Vec<u8>, Option<usize>) {
    let mut unstuffer = DotUnstuffer::new();
    let mut out = BytesMut::new();
    let mut consumed = 0;
    for chunk in chunks {
        let progress = unstuffer.unstuff(chunk, &mut out);
        assert!(progress.consumed <= chunk.len());
        assert!(
            progress.done || progress.consumed == chunk.len(),
            "the unstuffer stopped early without the end marker"
        );
        consumed += progress.consumed;
        assert!(
            out.len() <= consumed,
            "unstuffer emitted {} bytes after consuming {consumed}",
            out.len()
        );
        if progress.done {
            return (out.to_vec(), Some(consumed));
        }
    }
    (out.to_vec(), None)
}

/// Bare LF → CRLF, and a non-empty last line without LF completed with CRLF (LF alone
/// after a trailing CR): what [`DotStuffer`] sends, before stuffing.
fn normalise(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 8 + 2);
    let mut prev = None;
    for &b in message {
        if b == b'\n' && prev != Some(b'\r') {
            out.push(b'\r');
        }
        out.push(b);
        prev = Some(b);
    }
    match prev {
        None | Some(b'\n') => {}
        Some(b'\r') => out.push(b'\n'),
        Some(_) => out.extend_from_slice(b"\r\n"),
    }
    out
}

/// The part of `message` a TOP with `n` body lines sends: every line up to and including
/// the first blank one, then `n` more. Lines end at LF; a line is blank when it has no
/// bytes other than CR before its LF (the stuffer's definition).
fn top_prefix(message: &[u8], n: u64) -> &[u8] {
    let mut end = 0;
    let mut in_header = true;
    let mut body_lines = 0;
    while let Some(lf) = message[end..].iter().position(|&b| b == b'\n') {
        let line = &message[end..end + lf];
        end += lf + 1;
        if in_header {
            in_header = !line.iter().all(|&b| b == b'\r');
        } else {
            body_lines += 1;
        }
        if !in_header && body_lines == n {
            return &message[..end];
        }
    }
    message
}

/// The obvious decoder of received dot-stuffed data: lines end only at CRLF, a line that
/// is exactly `.` CRLF ends the data, any other line loses one leading dot. An unfinished
/// last line `.` CR is held back (its CR may yet start the end marker).
pub(super) fn reference_unstuff(input: &[u8]) -> (Vec<u8>, Option<usize>) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < input.len() {
        let rest = &input[pos..];
        let line_len = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(rest.len(), |i| i + 2);
        let line = &rest[..line_len];
        if line == b".\r\n" {
            return (out, Some(pos + 3));
        }
        if line == b".\r" {
            break;
        }
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        pos += line_len;
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_helpers() {
        assert_eq!(normalise(b"a\nb\r\nc\r"), b"a\r\nb\r\nc\r\n");
        assert_eq!(normalise(b"x"), b"x\r\n");
        assert_eq!(normalise(b""), b"");
        assert_eq!(
            top_prefix(b"H: 1\r\n\r\nb1\r\nb2\r\n", 1),
            b"H: 1\r\n\r\nb1\r\n"
        );
        assert_eq!(top_prefix(b"H: 1\r\n\r\nb1\r\n", 0), b"H: 1\r\n\r\n");
        assert_eq!(top_prefix(b"H: 1\r\n", 0), b"H: 1\r\n");
        assert_eq!(
            reference_unstuff(b"..a\r\n.\r\nrest"),
            (b".a\r\n".to_vec(), Some(8))
        );
    }
}
