//! Property tests of the bounded framers in `tidegate_core::wire`: the same bytes cut at
//! random points give the same result as in one piece, and dot-stuffing round-trips.
//!
//! `PROPTEST_CASES` sets the number of cases (64 when unset, to keep `cargo test` quick).

// The test reads PROPTEST_CASES from the environment; the core itself never does.
#![allow(clippy::disallowed_methods)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tidegate_core::wire::{DotStuffer, DotUnstuffer, LineBuffer, LineEvent};

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 64;
    }
    config
}

/// Bytes biased towards the ones the framers care about.
fn wire_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => prop::sample::select(b"\r\n.".to_vec()),
        3 => prop::sample::select(b"ab ".to_vec()),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..max_len)
}

/// `data` cut at the given points (taken modulo its length, in any order).
fn split_at_points<'a>(data: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = points
        .iter()
        .map(|p| p % (data.len() + 1))
        .chain([0, data.len()])
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

fn lines(max_line: usize, chunks: &[&[u8]]) -> Vec<LineEvent> {
    let mut buffer = LineBuffer::new(max_line);
    let mut events = Vec::new();
    for chunk in chunks {
        buffer.push(chunk);
        while let Some(event) = buffer.next_line() {
            events.push(event);
        }
        assert!(buffer.buffered() <= max_line + 1);
    }
    events
}

fn stuff(stuffer: &mut DotStuffer, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for chunk in chunks {
        stuffer.stuff(chunk, &mut out);
    }
    stuffer.finish(&mut out);
    out.to_vec()
}

/// Unstuffs until the end marker: the data and the offset just past the `.` line.
fn unstuff(chunks: &[&[u8]]) -> (Vec<u8>, Option<usize>) {
    let mut unstuffer = DotUnstuffer::new();
    let mut out = BytesMut::new();
    let mut consumed = 0;
    for chunk in chunks {
        let progress = unstuffer.unstuff(chunk, &mut out);
        consumed += progress.consumed;
        assert!(out.len() <= consumed);
        if progress.done {
            return (out.to_vec(), Some(consumed));
        }
    }
    (out.to_vec(), None)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn line_buffer_is_chunking_invariant(
        data in wire_bytes(400),
        max_line in 0usize..40,
        points in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let whole = lines(max_line, &[&data]);
        let chunked = lines(max_line, &split_at_points(&data, &points));
        prop_assert_eq!(&whole, &chunked);
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        prop_assert_eq!(&whole, &lines(max_line, &bytes));
        for event in &whole {
            if let LineEvent::Line(line) = event {
                prop_assert!(line.len() <= max_line);
            }
        }
    }

    #[test]
    fn line_buffer_passes_lines_within_the_limit_unchanged(
        commands in prop::collection::vec("[A-Z]{4}( [a-z0-9]{1,8})?", 0..10),
        points in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let wire: Vec<u8> = commands.iter().flat_map(|c| format!("{c}\r\n").into_bytes()).collect();
        let expected: Vec<LineEvent> = commands
            .iter()
            .map(|c| LineEvent::Line(Bytes::copy_from_slice(c.as_bytes())))
            .collect();
        prop_assert_eq!(lines(13, &split_at_points(&wire, &points)), expected);
    }

    #[test]
    fn dot_stuffer_is_chunking_invariant(
        message in wire_bytes(400),
        points in prop::collection::vec(any::<usize>(), 0..20),
        top in prop::option::of(0u64..5),
    ) {
        let new = || top.map_or_else(DotStuffer::new, DotStuffer::top);
        let whole = stuff(&mut new(), &[&message]);
        prop_assert_eq!(&whole, &stuff(&mut new(), &split_at_points(&message, &points)));
        let bytes: Vec<&[u8]> = message.chunks(1).collect();
        prop_assert_eq!(&whole, &stuff(&mut new(), &bytes));
    }

    #[test]
    fn dot_unstuffer_is_chunking_invariant(
        data in wire_bytes(400),
        points in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let whole = unstuff(&[&data]);
        prop_assert_eq!(&whole, &unstuff(&split_at_points(&data, &points)));
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        prop_assert_eq!(&whole, &unstuff(&bytes));
    }

    /// CRLF text survives stuff → unstuff unchanged, and the unstuffer stops exactly at
    /// the end of the `.` line even when the next command follows in the same read.
    #[test]
    fn stuff_then_unstuff_round_trips(
        lines in prop::collection::vec(prop::collection::vec(
            prop::sample::select(b".a \t\r".to_vec()), 0..12), 0..12),
        points in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        // Lines without a CR at their end, so every line end is exactly CRLF.
        let mut message = Vec::new();
        for mut line in lines {
            while line.last() == Some(&b'\r') {
                line.pop();
            }
            message.extend_from_slice(&line);
            message.extend_from_slice(b"\r\n");
        }
        let stuffed = stuff(&mut DotStuffer::new(), &[&message]);
        let mut wire = stuffed.clone();
        wire.extend_from_slice(b"QUIT\r\n");
        let (back, end) = unstuff(&split_at_points(&wire, &points));
        prop_assert_eq!(back, message);
        prop_assert_eq!(end, Some(stuffed.len()));
    }
}
