//! The uidlist file format and merge rule (`tidegate_core::uidlist`).

use proptest::prelude::*;
use tidegate_core::uidlist::{UidList, UidListError, new_uidvalidity};

#[test]
fn parse_render_round_trip() {
    let text = b"1 V1790000000 N4\n1 100.M1P1Q1.h\n3 100.M1P1Q2.h\n";
    let list = UidList::parse(text).unwrap();
    assert_eq!(list.uidvalidity, 1_790_000_000);
    assert_eq!(list.uidnext, 4);
    assert_eq!(
        list.entries,
        vec![
            (1, "100.M1P1Q1.h".to_owned()),
            (3, "100.M1P1Q2.h".to_owned())
        ]
    );
    assert_eq!(list.render(), text);
    assert_eq!(list.uid_of("100.M1P1Q2.h"), Some(3));
    assert_eq!(list.uid_of("nope"), None);
}

#[test]
fn a_truncated_last_line_is_ignored() {
    let list = UidList::parse(b"1 V7 N4\n1 a\n3 b").unwrap();
    assert_eq!(list.entries, vec![(1, "a".to_owned())]);
    assert_eq!(list.uidnext, 4);
    // Even a line cut inside its UID.
    assert!(UidList::parse(b"1 V7 N4\n1 a\n3").is_ok());
}

#[test]
fn corrupt_files_are_errors() {
    let corrupt = |text: &[u8]| match UidList::parse(text) {
        Err(UidListError::Corrupt { line, .. }) => line,
        other => panic!("{:?} parsed as {other:?}", String::from_utf8_lossy(text)),
    };
    assert_eq!(corrupt(b""), 1);
    assert_eq!(corrupt(b"1 V7 N4"), 1, "header cut short");
    assert_eq!(corrupt(b"2 V7 N4\n"), 1, "unknown version");
    assert_eq!(corrupt(b"1 V0 N4\n"), 1, "UIDVALIDITY 0");
    assert_eq!(corrupt(b"1 V7\n"), 1, "no next UID");
    assert_eq!(corrupt(b"1 V7 N4\n2 a\n1 b\n"), 3, "out of order");
    assert_eq!(corrupt(b"1 V7 N4\n4 a\n"), 2, "not below N");
    assert_eq!(corrupt(b"1 V7 N4\n1 a\n2 a\n"), 3, "listed twice");
    assert_eq!(corrupt(b"1 V7 N4\nx a\n"), 2);
    assert_eq!(corrupt(b"1 V7 N4\n1\n"), 2);
    assert_eq!(corrupt(b"1 V7 N4\n1 a b\n"), 2, "space in name");
    assert_eq!(corrupt(b"1 V7 N4\n0 a\n"), 2, "UID 0");
    assert_eq!(corrupt(b"1 V7 N4\n1 \xff\n"), 2);
    let long = [&b"1 V7 N4\n1 "[..], &vec![b'a'; 2000], b"\n"].concat();
    assert_eq!(corrupt(&long), 2);
}

#[test]
fn merge_assigns_in_arrival_order_and_never_reuses() {
    let mut list = UidList::new(5);
    let outcome = list
        .merge(["200.M5P1Q1.h", "100.M9P1Q2.h", "100.M10P1Q1.h"])
        .unwrap();
    assert_eq!(
        outcome.added,
        vec![
            (1, "100.M9P1Q2.h".to_owned()),
            (2, "100.M10P1Q1.h".to_owned()),
            (3, "200.M5P1Q1.h".to_owned())
        ]
    );
    assert!(outcome.removed.is_empty());
    // The newest message goes away, another arrives: it gets 4, not 3.
    let outcome = list
        .merge(["100.M9P1Q2.h", "100.M10P1Q1.h", "300.M1P1Q1.h"])
        .unwrap();
    assert_eq!(outcome.removed, vec![3]);
    assert_eq!(outcome.added, vec![(4, "300.M1P1Q1.h".to_owned())]);
    assert_eq!(list.uidnext, 5);
    assert_eq!(
        list.render(),
        b"1 V5 N5\n1 100.M9P1Q2.h\n2 100.M10P1Q1.h\n4 300.M1P1Q1.h\n"
    );
    // Nothing changed: nothing to write.
    assert!(
        !list
            .merge(["300.M1P1Q1.h", "100.M9P1Q2.h", "100.M10P1Q1.h"])
            .unwrap()
            .changed()
    );
    list.remove(&[1, 4]);
    assert_eq!(list.entries, vec![(2, "100.M10P1Q1.h".to_owned())]);
    // Names that cannot be stored are left out.
    assert!(!list.merge(["100.M10P1Q1.h", "a b", ""]).unwrap().changed());
}

#[test]
fn add_lists_a_name_once() {
    let mut list = UidList::new(3);
    assert_eq!(list.add("a"), Ok(Some(1)));
    assert_eq!(list.add("b"), Ok(Some(2)));
    assert_eq!(list.add("a"), Ok(Some(1)));
    assert_eq!(list.add("a b"), Ok(None));
    assert_eq!(list.render(), b"1 V3 N3\n1 a\n2 b\n");
    assert_eq!(
        list.add_all(["c", "a", "c", "d"]),
        Ok(vec![Some(3), Some(1), Some(3), Some(4)])
    );
    assert_eq!(list.remove_names(["a", "d", "zz"]), vec![1, 4]);
    assert_eq!(list.render(), b"1 V3 N5\n2 b\n3 c\n");
    let mut full = UidList::parse(b"1 V7 N4294967294\n").unwrap();
    assert_eq!(full.add_all(["x", "y"]), Err(UidListError::Exhausted));
    assert!(
        full.entries.is_empty() && full.uidnext == u32::MAX - 1,
        "all or nothing"
    );
    let mut full = UidList::parse(b"1 V7 N4294967295\n").unwrap();
    assert_eq!(full.add("x"), Err(UidListError::Exhausted));
    assert!(full.entries.is_empty());
}

#[test]
fn exhausted_uids_leave_the_list_alone() {
    let mut list = UidList::parse(b"1 V7 N4294967295\n").unwrap();
    assert_eq!(list.merge(["a", "b"]), Err(UidListError::Exhausted));
    assert_eq!(list.uidnext, u32::MAX);
    assert!(list.entries.is_empty());
}

#[test]
fn uidvalidity_always_grows() {
    assert_eq!(new_uidvalidity(1_790_000_000, None), 1_790_000_000);
    assert_eq!(
        new_uidvalidity(1_790_000_000, Some(1_790_000_000)),
        1_790_000_001
    );
    assert_eq!(new_uidvalidity(5, Some(9)), 10);
    assert_eq!(new_uidvalidity(0, None), 1);
    assert_eq!(new_uidvalidity(u64::MAX, None), u32::MAX);
}

proptest! {
    #[test]
    fn arbitrary_bytes_parse_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(list) = UidList::parse(&bytes) {
            // Whatever parses renders to something that parses to the same list.
            prop_assert_eq!(UidList::parse(&list.render()), Ok(list));
        }
    }

    #[test]
    fn merged_lists_round_trip(names in prop::collection::vec("[0-9]{1,3}\\.M[0-9]{1,2}P1Q[0-9]\\.h", 0..30),
                               keep in prop::collection::vec(any::<bool>(), 30)) {
        let mut list = UidList::new(9);
        list.merge(names.iter().map(String::as_str)).unwrap();
        let kept: Vec<&str> = names.iter().zip(&keep).filter(|(_, k)| **k).map(|(n, _)| n.as_str()).collect();
        let before = list.uidnext;
        list.merge(kept.iter().copied()).unwrap();
        prop_assert_eq!(list.uidnext, before);
        prop_assert!(list.entries.windows(2).all(|w| w[0].0 < w[1].0));
        prop_assert_eq!(UidList::parse(&list.render()), Ok(list));
    }
}
