//! Sequence sets and UID sets (RFC 3501 §9 `sequence-set`, RFC 4315 `uid-set`).

use std::fmt;

/// One end of a range: a number, or `*` (the largest number in use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqNumber {
    /// A message sequence number or UID (non-zero).
    Value(u32),
    /// `*`: the last message (or the highest UID).
    Last,
}

impl SeqNumber {
    fn resolve(self, last: u32) -> u32 {
        match self {
            SeqNumber::Value(n) => n,
            SeqNumber::Last => last,
        }
    }
}

/// A `sequence-set`: ranges in the order the client wrote them (`1:3,7,9:*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceSet(pub Vec<(SeqNumber, SeqNumber)>);

/// The most ranges accepted in one set; a longer list is a syntax error rather than a
/// way to make the server loop (the command line limit bounds it already).
pub const MAX_RANGES: usize = 4096;

impl SequenceSet {
    /// True when `n` is in the set, with `*` standing for `last`. RFC 3501 §9: `a:b`
    /// and `b:a` are the same range.
    pub fn contains(&self, n: u32, last: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let (a, b) = (a.resolve(last), b.resolve(last));
            (a.min(b)..=a.max(b)).contains(&n)
        })
    }

    /// The members of the set among `1..=count`, ascending and without duplicates
    /// (message sequence numbers; RFC 3501 §6.4.8 makes an out-of-range number a
    /// no-op member, not an error, for UIDs: the caller checks sequence numbers).
    pub fn members(&self, count: u32) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for &(a, b) in &self.0 {
            let (a, b) = (a.resolve(count), b.resolve(count));
            let (lo, hi) = (a.min(b).max(1), a.max(b).min(count));
            if lo <= hi {
                out.extend(lo..=hi);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The largest explicit number in the set (for "no such message" checks).
    pub fn max_value(&self) -> u32 {
        self.0
            .iter()
            .flat_map(|&(a, b)| [a, b])
            .filter_map(|n| match n {
                SeqNumber::Value(v) => Some(v),
                SeqNumber::Last => None,
            })
            .max()
            .unwrap_or(0)
    }
}

impl fmt::Display for SequenceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write_number(f, a)?;
            if a != b {
                f.write_str(":")?;
                write_number(f, b)?;
            }
        }
        Ok(())
    }
}

fn write_number(f: &mut fmt::Formatter<'_>, n: SeqNumber) -> fmt::Result {
    match n {
        SeqNumber::Value(v) => write!(f, "{v}"),
        SeqNumber::Last => f.write_str("*"),
    }
}

/// Writes a list of UIDs compactly as a `uid-set` (`3:5,9`), in the given order;
/// consecutive runs become ranges (RFC 4315 §3 COPYUID keeps source and destination
/// sets in corresponding order, so this never sorts).
pub fn compact(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && end.checked_add(1) == Some(uids[i + 1]) {
            end = uids[i + 1];
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::SeqNumber::{Last, Value};
    use super::*;

    #[test]
    fn members_resolve_star_and_reverse_ranges() {
        let set = SequenceSet(vec![
            (Value(4), Value(2)),
            (Value(9), Last),
            (Value(3), Value(3)),
        ]);
        assert_eq!(set.members(10), vec![2, 3, 4, 9, 10]);
        assert_eq!(set.members(3), vec![2, 3]);
        assert!(set.contains(10, 10));
        assert!(!set.contains(5, 10));
        assert_eq!(set.to_string(), "4:2,9:*,3");
        assert_eq!(set.max_value(), 9);
    }

    #[test]
    fn star_on_empty_mailbox_is_empty() {
        let set = SequenceSet(vec![(Value(1), Last)]);
        assert_eq!(set.members(0), Vec::<u32>::new());
    }

    #[test]
    fn compact_runs() {
        assert_eq!(compact(&[3, 4, 5, 9, 11, 12]), "3:5,9,11:12");
        assert_eq!(compact(&[7, 6]), "7,6");
        assert_eq!(compact(&[u32::MAX, 1]), "4294967295,1");
        assert_eq!(compact(&[]), "");
    }
}
