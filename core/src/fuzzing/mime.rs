//! Harnesses for the IMAP storage formats: the MIME part tree ([`mime_structure`]) and
//! the uidlist file ([`uidlist`]).

use crate::mime::{self, Body, Part, SectionBytes, SectionPart};
use crate::uidlist::UidList;

/// Checks that a part and its descendants lie inside the message and inside their
/// parent's body, and that multiparts are never empty.
fn check_part(part: &Part, len: usize, depth: usize) {
    assert!(depth <= mime::MAX_DEPTH + 1, "nesting past the limit");
    assert!(part.header.start <= part.header.end && part.header.end <= len);
    assert!(part.body.start <= part.body.end && part.body.end <= len);
    assert_eq!(
        part.header.end, part.body.start,
        "the body follows the header"
    );
    match &part.content {
        Body::Leaf => {}
        Body::Multipart(children) => {
            assert!(!children.is_empty(), "an empty multipart");
            for child in children {
                assert!(child.header.start >= part.body.start);
                assert!(child.body.end <= part.body.end);
                check_part(child, len, depth + 1);
            }
        }
        Body::Message(inner) => {
            assert_eq!(inner.header.start, part.body.start);
            assert_eq!(inner.body.end, part.body.end);
            check_part(inner, len, depth + 1);
        }
    }
}

/// MIME structure of arbitrary bytes: no panic; every part's offsets lie within the
/// input and within its parent; BODYSTRUCTURE and ENVELOPE are parenthesised; every
/// section is inside the input, and built header sections end with a blank line.
pub fn mime_structure(data: &[u8]) {
    let root = mime::parse(data);
    check_part(&root, data.len(), 0);
    for extensible in [false, true] {
        let structure = mime::body_structure(data, extensible);
        assert!(structure.first() == Some(&b'(') && structure.last() == Some(&b')'));
    }
    let envelope = mime::envelope(data);
    assert!(envelope.first() == Some(&b'(') && envelope.last() == Some(&b')'));
    let paths: [&[u32]; 7] = [&[], &[1], &[2], &[1, 1], &[1, 2], &[2, 1, 1], &[3, 1]];
    for path in paths {
        for part in [
            SectionPart::Full,
            SectionPart::Header,
            SectionPart::Text,
            SectionPart::Mime,
            SectionPart::HeaderFields(vec!["subject".into(), "from".into()]),
            SectionPart::HeaderFieldsNot(vec!["content-type".into()]),
        ] {
            match mime::section(data, path, &part) {
                Some(SectionBytes::Range(range)) => {
                    assert!(range.start <= range.end && range.end <= data.len());
                }
                Some(SectionBytes::Built(bytes)) => {
                    assert!(bytes.ends_with(b"\r\n"));
                    assert!(bytes.len() <= data.len() + 2);
                }
                None => {}
            }
        }
    }
}

/// The uidlist parser on arbitrary bytes: no panic; whatever parses renders back to the
/// same list; merging names taken from the input keeps UIDs increasing, never lowers
/// the next UID and never gives a listed name a new UID; adding names returns the UIDs
/// they have and numbers new ones from the next UID.
pub fn uidlist(data: &[u8]) {
    let Ok(mut list) = UidList::parse(data) else {
        let mut fresh = UidList::new(1);
        let names: Vec<String> = data
            .split(|&b| b == b'\n' || b == b' ')
            .filter_map(|w| std::str::from_utf8(w).ok())
            .map(str::to_owned)
            .collect();
        let _ = fresh.merge(names.iter().map(String::as_str));
        assert!(fresh.entries.windows(2).all(|w| w[0].0 < w[1].0));
        return;
    };
    assert_eq!(UidList::parse(&list.render()).as_ref(), Ok(&list));
    let before = list.clone();
    // Keep every other listed name, add names made from the entries' reversed text.
    let mut present: Vec<String> = list
        .entries
        .iter()
        .step_by(2)
        .map(|(_, n)| n.clone())
        .collect();
    present.extend(
        list.entries
            .iter()
            .map(|(_, n)| n.chars().rev().collect::<String>()),
    );
    if list.merge(present.iter().map(String::as_str)).is_ok() {
        assert!(list.uidnext >= before.uidnext);
        assert!(list.entries.windows(2).all(|w| w[0].0 < w[1].0));
        for (uid, name) in &list.entries {
            if let Some(old) = before.uid_of(name) {
                assert_eq!(old, *uid, "a listed name kept its UID");
            } else {
                assert!(*uid >= before.uidnext, "new UIDs come from uidnext");
            }
        }
        assert_eq!(UidList::parse(&list.render()).as_ref(), Ok(&list));
        // Adding names again gives their UIDs; new ones get UIDs from uidnext.
        let next = list.uidnext;
        let again: Vec<&str> = present
            .iter()
            .map(String::as_str)
            .chain(["fresh"])
            .collect();
        let known: Vec<Option<u32>> = again.iter().map(|n| list.uid_of(n)).collect();
        if let Ok(uids) = list.add_all(again.iter().copied()) {
            for (uid, known) in uids.iter().zip(known) {
                if let (Some(uid), Some(known)) = (uid, known) {
                    assert_eq!(*uid, known);
                }
            }
            assert!(uids.iter().flatten().all(|&u| u < list.uidnext));
            assert!(list.uidnext >= next);
            assert_eq!(UidList::parse(&list.render()), Ok(list));
        }
    }
}
