//! The keywords-file harness (`crate::keywords`, RFC 3501 §2.3.2 keywords as maildir
//! letters).

use crate::keywords::{KeywordMap, KeywordsError, MAX_KEYWORDS, is_keyword};

/// The keywords-file parser on arbitrary bytes: no panic; whatever parses renders back
/// to the same map; adding words taken from the input never renames a letter, finds a
/// defined name under its letter whatever its case, and refuses only non-atoms and, with
/// all 26 letters taken, new names; letters translate to letters of the same name.
pub fn keywords(data: &[u8]) {
    let parsed = KeywordMap::parse(data);
    let mut map = parsed.clone().unwrap_or_default();
    if let Ok(parsed) = &parsed {
        assert_eq!(KeywordMap::parse(&parsed.render()).as_ref(), Ok(parsed));
    }
    let before = map.clone();
    let words: Vec<&str> = data
        .split(|&b| b == b'\n' || b == b' ')
        .filter_map(|w| std::str::from_utf8(w).ok())
        .collect();
    for word in &words {
        let full = map.is_full();
        let known = map.letter_of(word);
        match map.add(word) {
            Ok(letter) => {
                assert!(known.is_none_or(|k| k == letter));
                let stored = map.name_of(letter).unwrap_or_default();
                assert!(stored.eq_ignore_ascii_case(word));
                assert_eq!(map.letter_of(&word.to_ascii_uppercase()), Some(letter));
            }
            Err(KeywordsError::InvalidName) => assert!(!is_keyword(word)),
            Err(KeywordsError::Full) => assert!(full && known.is_none()),
            Err(KeywordsError::Corrupt { .. }) => panic!("add never reports corruption"),
        }
        assert!(map.len() <= MAX_KEYWORDS);
    }
    for letter in 'a'..='z' {
        if let Some(name) = before.name_of(letter) {
            assert_eq!(map.name_of(letter), Some(name), "a letter kept its name");
        }
    }
    assert_eq!(KeywordMap::parse(&map.render()).as_ref(), Ok(&map));
    // Translating every letter to the grown map keeps every named letter's name.
    let letters: String = ('a'..='z').collect();
    let moved = before.translate(&letters, &map);
    let names: Vec<&str> = moved.chars().filter_map(|c| map.name_of(c)).collect();
    assert_eq!(names.len(), before.len());
}
