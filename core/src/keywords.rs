//! The keywords file of a maildir folder: which IMAP keyword (RFC 3501 §2.3.2
//! flag-keyword) each lower-case maildir info letter stands for. Pure format and rules;
//! the store reads and replaces the file under the folder's dotlock.
//!
//! ```text
//! 0 $Label1
//! 1 Work
//! ```
//!
//! Each line is an index (`0` for `a` up to `25` for `z`) and the keyword's name as it
//! was first stored, ending in LF: the layout Dovecot keeps in `dovecot-keywords`, so a
//! folder's letters can be read by tools that know it. Names match case-insensitively.
//! A letter, once given a name, keeps it for good (the map only grows), so a message
//! file's letters keep their meaning. A last line without its LF (a write cut short) is
//! ignored; anything else malformed is [`KeywordsError`].

use std::fmt;
use std::fmt::Write as _;

/// Letters `a`..`z`: the most keywords a folder can define.
pub const MAX_KEYWORDS: usize = 26;

/// Longest keyword name accepted (bytes); longer names are refused, never cut.
pub const MAX_KEYWORD_LEN: usize = 200;

/// Longest line of a keywords file: an index, a space, a name and the LF.
const MAX_LINE: usize = MAX_KEYWORD_LEN + 4;

/// Why a keywords file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeywordsError {
    /// Line `line` (1-based) is not `INDEX NAME`, or repeats an index or a name.
    Corrupt {
        /// The first bad line.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// All 26 letters have names and the keyword is not one of them.
    Full,
    /// The name is not an RFC 3501 flag-keyword atom (or is over [`MAX_KEYWORD_LEN`]).
    InvalidName,
}

impl fmt::Display for KeywordsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeywordsError::Corrupt { line, reason } => {
                write!(f, "keywords line {line}: {reason}")
            }
            KeywordsError::Full => f.write_str("keywords: all 26 letters are taken"),
            KeywordsError::InvalidName => f.write_str("keywords: not a keyword atom"),
        }
    }
}

impl std::error::Error for KeywordsError {}

/// Whether `name` is a flag-keyword: an RFC 3501 §9 `atom` (no `(){ %*"\]`, space,
/// control or non-ASCII character) of at most [`MAX_KEYWORD_LEN`] bytes. System flags
/// (`\Seen`) are not keywords.
pub fn is_keyword(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_KEYWORD_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b))
}

/// The maildir letter of keyword index `index` (`0` is `a`), if below 26.
pub fn letter(index: usize) -> Option<char> {
    u8::try_from(index)
        .ok()
        .filter(|&i| usize::from(i) < MAX_KEYWORDS)
        .map(|i| char::from(b'a' + i))
}

/// The keyword index of a maildir letter (`a` is `0`), if it is a keyword letter.
pub fn index_of(letter: char) -> Option<usize> {
    letter
        .is_ascii_lowercase()
        .then(|| usize::from(letter as u8 - b'a'))
}

fn corrupt(line: usize, reason: &'static str) -> KeywordsError {
    KeywordsError::Corrupt { line, reason }
}

/// The keywords of one folder by letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeywordMap {
    slots: [Option<String>; MAX_KEYWORDS],
}

impl KeywordMap {
    /// An empty map (a folder without keywords).
    pub fn new() -> Self {
        KeywordMap::default()
    }

    /// Parses a keywords file. Only complete (LF-terminated) lines count.
    pub fn parse(bytes: &[u8]) -> Result<KeywordMap, KeywordsError> {
        let mut map = KeywordMap::new();
        for (index, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
            let number = index + 1;
            let Some(line) = line.strip_suffix(b"\n") else {
                break; // cut short by a crash: ignored
            };
            if line.len() >= MAX_LINE {
                return Err(corrupt(number, "line too long"));
            }
            let text = std::str::from_utf8(line).map_err(|_| corrupt(number, "not text"))?;
            let (slot, name) = text.split_once(' ').ok_or(corrupt(number, "no space"))?;
            let slot: usize = slot
                .parse()
                .ok()
                .filter(|&s| s < MAX_KEYWORDS && !slot.starts_with('+'))
                .ok_or(corrupt(number, "bad index"))?;
            if !is_keyword(name) {
                return Err(corrupt(number, "bad name"));
            }
            if map.slots[slot].is_some() {
                return Err(corrupt(number, "index listed twice"));
            }
            if map.letter_of(name).is_some() {
                return Err(corrupt(number, "name listed twice"));
            }
            map.slots[slot] = Some(name.to_owned());
        }
        Ok(map)
    }

    /// The file content, in index order.
    pub fn render(&self) -> Vec<u8> {
        let mut out = String::new();
        for (index, slot) in self.slots.iter().enumerate() {
            if let Some(name) = slot {
                let _ = writeln!(out, "{index} {name}");
            }
        }
        out.into_bytes()
    }

    /// The defined keywords in letter order, as first stored.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().flatten().map(String::as_str)
    }

    /// How many keywords are defined.
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Whether no keyword is defined.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// Whether every letter is taken, so no new keyword can be stored (RFC 3501 §7.1:
    /// PERMANENTFLAGS then lacks `\*`).
    pub fn is_full(&self) -> bool {
        self.slots.iter().all(Option::is_some)
    }

    /// The letter of a keyword (case-insensitive), if defined.
    pub fn letter_of(&self, name: &str) -> Option<char> {
        let index = self
            .slots
            .iter()
            .position(|s| s.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(name)))?;
        letter(index)
    }

    /// The keyword a letter stands for, if any.
    pub fn name_of(&self, letter: char) -> Option<&str> {
        self.slots.get(index_of(letter)?)?.as_deref()
    }

    /// The letter of `name`, giving it the first free letter if it has none yet.
    /// [`KeywordsError::Full`] when all are taken; [`KeywordsError::InvalidName`] for a
    /// name that is not a keyword atom. On error the map is unchanged.
    pub fn add(&mut self, name: &str) -> Result<char, KeywordsError> {
        if !is_keyword(name) {
            return Err(KeywordsError::InvalidName);
        }
        if let Some(found) = self.letter_of(name) {
            return Ok(found);
        }
        let free = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(KeywordsError::Full)?;
        self.slots[free] = Some(name.to_owned());
        letter(free).ok_or(KeywordsError::Full)
    }

    /// The maildir info letters `letters` of a message in the folder of this map,
    /// rewritten for the folder of map `to` (COPY, MOVE): each keyword letter becomes the
    /// letter of the same name in `to`, and is dropped when this map has no name for it
    /// or `to` does not define the name. Other letters are kept. The result is in ASCII
    /// order without duplicates (the maildir convention).
    pub fn translate(&self, letters: &str, to: &KeywordMap) -> String {
        let mut out: Vec<char> = letters
            .chars()
            .filter_map(|c| {
                if index_of(c).is_none() {
                    return Some(c);
                }
                to.letter_of(self.name_of(c)?)
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_letters() {
        let mut map = KeywordMap::new();
        assert_eq!(map.add("$Label1"), Ok('a'));
        assert_eq!(map.add("Work"), Ok('b'));
        assert_eq!(map.add("work"), Ok('b'));
        assert_eq!(map.render(), b"0 $Label1\n1 Work\n");
        let parsed = KeywordMap::parse(&map.render()).unwrap();
        assert_eq!(parsed, map);
        assert_eq!(parsed.letter_of("$label1"), Some('a'));
        assert_eq!(parsed.name_of('b'), Some("Work"));
        assert_eq!(parsed.name_of('c'), None);
        assert_eq!(parsed.name_of('S'), None);
        assert_eq!(parsed.names().collect::<Vec<_>>(), ["$Label1", "Work"]);
    }

    #[test]
    fn gaps_are_kept_and_filled_first() {
        let mut map = KeywordMap::parse(b"0 One\n2 Three\n").unwrap();
        assert_eq!(map.name_of('c'), Some("Three"));
        assert_eq!(map.add("Two"), Ok('b'));
        assert_eq!(map.add("Four"), Ok('d'));
        assert_eq!(map.render(), b"0 One\n1 Two\n2 Three\n3 Four\n");
    }

    #[test]
    fn a_cut_short_last_line_is_ignored() {
        let map = KeywordMap::parse(b"0 One\n1 Tw").unwrap();
        assert_eq!(map.len(), 1);
        assert!(KeywordMap::parse(b"").unwrap().is_empty());
    }

    #[test]
    fn malformed_files_are_refused() {
        for bad in [
            &b"a One\n"[..],
            b"26 One\n",
            b"+1 One\n",
            b"0 One\n0 Two\n",
            b"0 One\n1 one\n",
            b"0\n",
            b"0 \\Seen\n",
            b"0 two words\n",
            b"0 \xff\n",
        ] {
            assert!(KeywordMap::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("0 {}\n", "x".repeat(MAX_KEYWORD_LEN + 1));
        assert!(KeywordMap::parse(long.as_bytes()).is_err());
    }

    #[test]
    fn twenty_six_letters_at_most() {
        let mut map = KeywordMap::new();
        for i in 0..MAX_KEYWORDS {
            assert_eq!(map.add(&format!("k{i}")), Ok(letter(i).unwrap()));
        }
        assert!(map.is_full());
        assert_eq!(map.add("one-more"), Err(KeywordsError::Full));
        assert_eq!(map.add("K3"), Ok('d'));
        assert_eq!(map.len(), MAX_KEYWORDS);
        assert_eq!(letter(26), None);
        assert_eq!(index_of('z'), Some(25));
    }

    #[test]
    fn invalid_names_are_refused() {
        let mut map = KeywordMap::new();
        for bad in [
            "", "\\Seen", "a b", "a(", "a*", "a%", "a\"", "a]", "a{", "ä",
        ] {
            assert_eq!(map.add(bad), Err(KeywordsError::InvalidName), "{bad:?}");
        }
        assert!(map.is_empty());
    }

    #[test]
    fn translation_follows_names() {
        let from = KeywordMap::parse(b"0 Work\n1 $Junk\n2 Old\n").unwrap();
        let to = KeywordMap::parse(b"0 $junk\n1 Other\n2 Work\n").unwrap();
        // a (Work) -> c, b ($Junk) -> a, c (Old) undefined in `to`, d unnamed.
        assert_eq!(from.translate("FSabcd", &to), "FSac");
        assert_eq!(from.translate("", &to), "");
    }
}
