//! Property tests of the IMAP fragmentizer (RFC 3501 §4.3, RFC 7888): the same bytes cut
//! at any points give the same fragments as in one piece, and dropped bytes are never
//! buffered.
//!
//! `PROPTEST_CASES` sets the number of cases (64 when unset, to keep `cargo test` quick).

// The test reads PROPTEST_CASES from the environment; the core itself never does.
#![allow(clippy::disallowed_methods)]

use proptest::prelude::*;
use tidegate_core::imap::fragment::{Fragment, Fragmentizer};

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 64;
    }
    config
}

/// Bytes biased towards what the fragmentizer looks at: line ends and announcements.
fn imap_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            b"\r\n".to_vec(), b"\n".to_vec(), b"{3}".to_vec(), b"{2+}".to_vec(),
            b"{25+}".to_vec(), b"{40}".to_vec(), b"{99999999999+}".to_vec(), b"{0}".to_vec(),
        ]),
        3 => prop::collection::vec(prop::sample::select(b"ab {}+".to_vec()), 1..4),
        1 => prop::collection::vec(any::<u8>(), 1..3),
    ];
    prop::collection::vec(piece, 0..max_len).prop_map(|p| p.concat())
}

/// Runs the fragmentizer over `chunks`, accepting literals of at most 20 bytes and
/// rejecting larger ones; consecutive literal data is joined so chunking cannot show.
fn run(max_line: usize, chunks: &[&[u8]]) -> Vec<Fragment> {
    let mut f = Fragmentizer::new(max_line);
    let mut out: Vec<Fragment> = Vec::new();
    for chunk in chunks {
        f.push(chunk);
        assert!(f.buffered() <= max_line + 2 + chunk.len() + 64);
        while let Some(fragment) = f.next_fragment() {
            if let Fragment::Line {
                literal: Some(l), ..
            } = &fragment
            {
                if l.length.is_some_and(|n| n <= 20) {
                    f.accept_literal();
                } else {
                    f.reject_literal();
                }
            }
            match (out.last_mut(), fragment) {
                (Some(Fragment::LiteralData(prev)), Fragment::LiteralData(more)) => {
                    let mut joined = prev.to_vec();
                    joined.extend_from_slice(&more);
                    *prev = joined.into();
                }
                (_, fragment) => out.push(fragment),
            }
        }
    }
    out
}

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

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_split_gives_the_same_fragments(
        data in imap_bytes(40),
        points in prop::collection::vec(any::<usize>(), 0..12),
        max_line in 4usize..40,
    ) {
        let whole = run(max_line, &[&data]);
        let split = run(max_line, &split_at_points(&data, &points));
        prop_assert_eq!(&whole, &split);
        let bytewise: Vec<&[u8]> = data.chunks(1).collect();
        prop_assert_eq!(&whole, &run(max_line, &bytewise));
    }
}

#[test]
fn every_byte_split_of_a_literal_command() {
    let data: &[u8] = b"A1 LOGIN {4}\r\nfred {6+}\r\nsecret\r\nA2 APPEND x {1000+}\r\n";
    let whole = run(100, &[data]);
    for cut in 0..=data.len() {
        let (a, b) = data.split_at(cut);
        assert_eq!(run(100, &[a, b]), whole, "cut at {cut}");
    }
}
