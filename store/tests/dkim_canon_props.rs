//! The streaming relaxed body canonicalisation (RFC 6376 §3.4.4) against a plain
//! line-by-line reading of the RFC's rules, on arbitrary bodies cut at arbitrary points.

use proptest::prelude::*;
use tidegate_store::dkim::canon::{RelaxedBody, relaxed_header};

/// §3.4.4 taken literally: split into CRLF-terminated lines (a last line without CRLF
/// counts if it has any byte), squeeze whitespace runs to one space, drop whitespace at
/// line ends, drop empty lines at the end, terminate every line with CRLF.
fn reference(body: &[u8]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut rest = body;
    loop {
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(at) => {
                lines.push(rest[..at].to_vec());
                rest = &rest[at + 2..];
            }
            None => {
                if !rest.is_empty() {
                    lines.push(rest.to_vec());
                }
                break;
            }
        }
    }
    let mut canonical: Vec<Vec<u8>> = lines
        .into_iter()
        .map(|line| {
            let mut out = Vec::new();
            for &b in &line {
                let wsp = b == b' ' || b == b'\t';
                if wsp {
                    if out.last() != Some(&b' ') {
                        out.push(b' ');
                    }
                } else {
                    out.push(b);
                }
            }
            while out.last() == Some(&b' ') {
                out.pop();
            }
            out
        })
        .collect();
    while canonical.last().is_some_and(|line| line.is_empty()) {
        canonical.pop();
    }
    canonical
        .into_iter()
        .flat_map(|mut line| {
            line.extend_from_slice(b"\r\n");
            line
        })
        .collect()
}

fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            Just(b' '),
            Just(b'\t'),
            Just(b'\r'),
            Just(b'\n'),
            Just(b'a'),
            Just(b'.'),
            any::<u8>()
        ],
        0..200,
    )
}

/// A header field value as the message reader hands it over: any bytes but CR and LF,
/// and folds (CRLF followed by whitespace) between them.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            Just(b" ".to_vec()),
            Just(b"\t".to_vec()),
            Just(b"\r\n ".to_vec()),
            Just(b"\r\n\t".to_vec()),
            any::<u8>()
                .prop_filter("no line ends", |b| *b != b'\r' && *b != b'\n')
                .prop_map(|b| vec![b]),
        ],
        0..60,
    )
    .prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn streaming_matches_the_rules_wherever_the_body_is_cut(
        body in body_bytes(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        points.sort_unstable();
        let mut out = Vec::new();
        let mut canon = RelaxedBody::new();
        let mut start = 0;
        for point in points.into_iter().chain([body.len()]) {
            canon.push(&body[start..point], &mut |b| out.extend_from_slice(b));
            start = point;
        }
        canon.finish(&mut |b| out.extend_from_slice(b));
        prop_assert_eq!(out, reference(&body));
    }

    #[test]
    fn relaxed_headers_are_one_line_and_stable(name in "[A-Za-z-]{1,12}[ \t]{0,2}", value in header_value()) {
        let mut field = name.into_bytes();
        field.push(b':');
        field.extend_from_slice(&value);
        field.extend_from_slice(b"\r\n");
        let once = relaxed_header(&field);
        prop_assert!(once.ends_with(b"\r\n"));
        let line = &once[..once.len() - 2];
        prop_assert!(!line.windows(2).any(|w| w == b"\r\n"));
        prop_assert!(!line.windows(2).any(|w| w == b"  "));
        prop_assert!(!line.ends_with(b" ") && !line.contains(&b'\t'));
        // Canonicalising the canonical form changes nothing.
        prop_assert_eq!(relaxed_header(&once), once.clone());
    }
}

proptest! {
    #[test]
    // Any bytes at all: no panic, and a CRLF-terminated result. (Bytes a message reader
    // never hands over, like CR CR LF LF, may leave a CRLF inside after unfolding, as they
    // do in other verifiers.)
    fn any_field_gives_a_terminated_result(field in body_bytes()) {
        let once = relaxed_header(&field);
        prop_assert!(once.ends_with(b"\r\n"));
    }
}
