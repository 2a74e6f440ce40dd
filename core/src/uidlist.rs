//! The uidlist file of a maildir folder: which IMAP UID (RFC 3501 §2.3.1.1) each message
//! has, the folder's UIDVALIDITY and the next UID to assign. Pure format and merge rule;
//! the store reads and replaces the file under a dotlock.
//!
//! ```text
//! 1 V1790000000 N4
//! 1 1790000000.M000042P77Q3.mx1.example.com
//! 3 1790000100.M000001P77Q9.mx1.example.com
//! ```
//!
//! The first line is the format version (`1`), `V` the UIDVALIDITY and `N` the next UID.
//! Each further line is a UID and the unique part of a message file name
//! ([`crate::maildir::ParsedName::unique`]), in increasing UID order. Every line ends in
//! LF. A last line without its LF (a write cut short) is ignored, so a crash never makes
//! a readable file unreadable; anything else malformed is [`UidListError`], and the
//! store then rebuilds the list under a new UIDVALIDITY.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fmt::Write as _;

use crate::maildir::arrival_key;

/// The format version this module reads and writes.
pub const VERSION: u32 = 1;

/// Longest line accepted; a longer one means the file is not a uidlist.
pub const MAX_LINE: usize = 1024;

/// The UID map of one folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidList {
    /// The folder's UIDVALIDITY (non-zero).
    pub uidvalidity: u32,
    /// The UID the next new message gets; greater than every UID ever assigned.
    pub uidnext: u32,
    /// `(uid, unique name)`, UIDs strictly increasing.
    pub entries: Vec<(u32, String)>,
}

/// Why a uidlist cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UidListError {
    /// The content is not a uidlist of this version: `line` (1-based) says where.
    Corrupt {
        /// The first bad line.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No UID is left below 2^32 for new messages: the folder needs a new UIDVALIDITY.
    Exhausted,
}

impl fmt::Display for UidListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UidListError::Corrupt { line, reason } => write!(f, "uidlist line {line}: {reason}"),
            UidListError::Exhausted => f.write_str("uidlist: no UIDs left"),
        }
    }
}

impl std::error::Error for UidListError {}

/// What [`UidList::merge`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// UIDs given to names that were not listed, in arrival order.
    pub added: Vec<(u32, String)>,
    /// UIDs of listed names that are no longer present.
    pub removed: Vec<u32>,
}

impl MergeOutcome {
    /// Whether the list changed (and must be written back).
    pub fn changed(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty()
    }
}

/// A UIDVALIDITY for a new or rebuilt list: the current time in seconds, but always
/// greater than `previous`, so a client never sees the same value for different UIDs
/// (RFC 3501 §2.3.1.1). Never zero.
pub fn new_uidvalidity(now_unix_seconds: u64, previous: Option<u32>) -> u32 {
    let now = u32::try_from(now_unix_seconds).unwrap_or(u32::MAX).max(1);
    match previous {
        Some(previous) if previous >= now => previous.checked_add(1).unwrap_or(1),
        _ => now,
    }
}

fn corrupt(line: usize, reason: &'static str) -> UidListError {
    UidListError::Corrupt { line, reason }
}

/// Whether `name` can be stored: non-empty printable ASCII without spaces.
fn valid_unique(name: &str) -> bool {
    !name.is_empty() && name.len() < MAX_LINE && name.bytes().all(|b| b.is_ascii_graphic())
}

impl UidList {
    /// An empty list for a new folder.
    pub fn new(uidvalidity: u32) -> Self {
        UidList {
            uidvalidity: uidvalidity.max(1),
            uidnext: 1,
            entries: Vec::new(),
        }
    }

    /// Parses a uidlist file. Only complete (LF-terminated) lines count.
    pub fn parse(bytes: &[u8]) -> Result<UidList, UidListError> {
        let mut lines = bytes.split_inclusive(|&b| b == b'\n').enumerate();
        let header = match lines.next() {
            Some((_, line)) if line.ends_with(b"\n") => line,
            _ => return Err(corrupt(1, "no complete header line")),
        };
        let header = std::str::from_utf8(header).map_err(|_| corrupt(1, "not text"))?;
        let mut words = header.trim_end_matches('\n').split(' ');
        if words.next() != Some("1") {
            return Err(corrupt(1, "unknown version"));
        }
        let mut uidvalidity = None;
        let mut uidnext = None;
        for word in words {
            let number = |w: &str| w.parse::<u32>().ok().filter(|&n| n > 0);
            if let Some(v) = word.strip_prefix('V') {
                uidvalidity = Some(number(v).ok_or(corrupt(1, "bad UIDVALIDITY"))?);
            } else if let Some(n) = word.strip_prefix('N') {
                uidnext = Some(number(n).ok_or(corrupt(1, "bad next UID"))?);
            }
            // Other fields are for later versions of this format and ignored.
        }
        let (Some(uidvalidity), Some(uidnext)) = (uidvalidity, uidnext) else {
            return Err(corrupt(1, "missing V or N"));
        };
        let mut list = UidList {
            uidvalidity,
            uidnext,
            entries: Vec::new(),
        };
        let mut seen = HashSet::new();
        for (index, line) in lines {
            let number = index + 1;
            if !line.ends_with(b"\n") {
                break; // cut short by a crash: ignored
            }
            if line.len() > MAX_LINE {
                return Err(corrupt(number, "line too long"));
            }
            let text = std::str::from_utf8(&line[..line.len() - 1])
                .map_err(|_| corrupt(number, "not text"))?;
            let (uid, name) = text.split_once(' ').ok_or(corrupt(number, "no space"))?;
            let uid: u32 = uid
                .parse()
                .ok()
                .filter(|&u| u > 0)
                .ok_or(corrupt(number, "bad UID"))?;
            if !valid_unique(name) {
                return Err(corrupt(number, "bad name"));
            }
            if list.entries.last().is_some_and(|&(last, _)| uid <= last) {
                return Err(corrupt(number, "UIDs out of order"));
            }
            if uid >= list.uidnext {
                return Err(corrupt(number, "UID not below the next UID"));
            }
            if !seen.insert(name) {
                return Err(corrupt(number, "name listed twice"));
            }
            list.entries.push((uid, name.to_owned()));
        }
        Ok(list)
    }

    /// The file content.
    pub fn render(&self) -> Vec<u8> {
        let mut out = String::with_capacity(32 + self.entries.len() * 48);
        let _ = writeln!(out, "{VERSION} V{} N{}", self.uidvalidity, self.uidnext);
        for (uid, name) in &self.entries {
            let _ = writeln!(out, "{uid} {name}");
        }
        out.into_bytes()
    }

    /// The UID of a unique name, if listed.
    pub fn uid_of(&self, unique: &str) -> Option<u32> {
        self.entries
            .iter()
            .find(|(_, name)| name == unique)
            .map(|&(uid, _)| uid)
    }

    /// Brings the list in line with the messages `present` (unique names): names not
    /// listed get new UIDs from `uidnext` in arrival order
    /// ([`arrival_key`], then the name), names no longer present are dropped. UIDs are
    /// never reused. Names that cannot be stored (empty, spaces, control characters)
    /// are left out. On [`UidListError::Exhausted`] the list is unchanged.
    pub fn merge<'a>(
        &mut self,
        present: impl IntoIterator<Item = &'a str>,
    ) -> Result<MergeOutcome, UidListError> {
        let present: HashSet<&str> = present.into_iter().filter(|n| valid_unique(n)).collect();
        let listed: HashMap<&str, u32> = self
            .entries
            .iter()
            .map(|(uid, name)| (name.as_str(), *uid))
            .collect();
        let mut new: Vec<&str> = present
            .iter()
            .copied()
            .filter(|name| !listed.contains_key(name))
            .collect();
        new.sort_by(|a, b| (arrival_key(a), a).cmp(&(arrival_key(b), b)));
        let count = u32::try_from(new.len()).map_err(|_| UidListError::Exhausted)?;
        let last = self
            .uidnext
            .checked_add(count)
            .ok_or(UidListError::Exhausted)?;
        let mut outcome = MergeOutcome::default();
        self.entries.retain(|(uid, name)| {
            let keep = present.contains(name.as_str());
            if !keep {
                outcome.removed.push(*uid);
            }
            keep
        });
        for name in new {
            outcome.added.push((self.uidnext, name.to_owned()));
            self.entries.push((self.uidnext, name.to_owned()));
            self.uidnext += 1;
        }
        debug_assert_eq!(self.uidnext, last);
        Ok(outcome)
    }

    /// The UID of `unique`, listing it with the next UID first if it is not listed yet
    /// (a message the store just added: APPEND, COPY, MOVE). `None` when the name cannot
    /// be stored; [`UidListError::Exhausted`] when no UID is left.
    pub fn add(&mut self, unique: &str) -> Result<Option<u32>, UidListError> {
        Ok(self.add_all([unique])?.pop().flatten())
    }

    /// [`UidList::add`] for several names at once, in the order given, with one index of
    /// the list (linear in the list plus the names). All or nothing: on
    /// [`UidListError::Exhausted`] the list is unchanged.
    pub fn add_all<'a>(
        &mut self,
        uniques: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Option<u32>>, UidListError> {
        let mut index: HashMap<String, u32> = self
            .entries
            .iter()
            .map(|(uid, name)| (name.clone(), *uid))
            .collect();
        let mut next = self.uidnext;
        let mut added = Vec::new();
        let mut uids = Vec::new();
        for unique in uniques {
            if !valid_unique(unique) {
                uids.push(None);
                continue;
            }
            if let Some(&uid) = index.get(unique) {
                uids.push(Some(uid));
                continue;
            }
            let uid = next;
            next = next.checked_add(1).ok_or(UidListError::Exhausted)?;
            index.insert(unique.to_owned(), uid);
            added.push((uid, unique.to_owned()));
            uids.push(Some(uid));
        }
        self.uidnext = next;
        self.entries.extend(added);
        Ok(uids)
    }

    /// Removes the entries of these unique names; returns the UIDs they had, in list
    /// order. `uidnext` stays.
    pub fn remove_names<'a>(&mut self, uniques: impl IntoIterator<Item = &'a str>) -> Vec<u32> {
        let gone: HashSet<&str> = uniques.into_iter().collect();
        let mut removed = Vec::new();
        self.entries.retain(|(uid, name)| {
            let keep = !gone.contains(name.as_str());
            if !keep {
                removed.push(*uid);
            }
            keep
        });
        removed
    }

    /// Removes the entries of these UIDs (expunge); `uidnext` stays.
    pub fn remove(&mut self, uids: &[u32]) {
        let gone: HashSet<u32> = uids.iter().copied().collect();
        self.entries.retain(|(uid, _)| !gone.contains(uid));
    }
}
