//! Parsing the users file into a lookup table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, Read as _};

pub use tidegate_core::user::UserRecord;

use crate::maildir::split_address;
use crate::password::{self, Params, Scheme};

use super::{UsersError, normalize_address};

/// A syntax error in the users file, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsersFileError {
    /// The offending line (1-based).
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for UsersFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for UsersFileError {}

/// Longest accepted users file line in bytes; a longer one is a syntax error rather
/// than an unbounded read.
pub const MAX_LINE: usize = 64 * 1024;

/// Largest users file the table holds: its offsets are 32-bit.
pub const MAX_TABLE_BYTES: usize = u32::MAX as usize;

/// How many `{PLAIN}` warnings one load logs before it only counts them.
const PLAIN_WARNINGS: usize = 10;

/// Where one user's text sits in the table's arena: `ADDRESS PASSWORD[ FIELDS]`, the
/// address normalised and the fields as `key=value` words with lowercased keys.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: u32,
    address_end: u32,
    password_end: u32,
    end: u32,
    line: u32,
}

/// A parsed users file: users by normalised address, and the local domains.
///
/// Built for a million users: every user's text lives in one string arena, found
/// through an open-addressing hash index of 8-byte slots (32 bits of the address's
/// hash, 32 bits of entry number) at most half full: about 40 bytes a user beyond the
/// line itself (`store/benches/users_file.rs` measures it; docs/users.md has the
/// figures). The hash is SipHash with a per-table random key, so crafted addresses
/// cannot pile into one chain. Lookups build a [`UserRecord`] on demand.
#[derive(Default, Clone)]
pub struct UserTable {
    arena: String,
    entries: Vec<Entry>,
    slots: Vec<u64>,
    hasher: RandomState,
    domains: BTreeSet<String>,
    dummy: Option<u32>,
}

/// An unused index slot.
const EMPTY: u64 = u64::MAX;

impl fmt::Debug for UserTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserTable")
            .field("users", &self.entries.len())
            .field("domains", &self.domains)
            .finish_non_exhaustive()
    }
}

impl UserTable {
    /// Parses users file text. Errors name the line: a malformed line, an unknown
    /// `{SCHEME}`, or a duplicate address (naming both lines). A `{PLAIN}` password is
    /// accepted with a warning in the log.
    pub fn parse(text: &str) -> Result<UserTable, UsersFileError> {
        let mut builder = Builder::default();
        for line in text.lines() {
            builder.push_line(line)?;
        }
        builder.finish()
    }

    /// Reads and parses a users file line by line, never holding more than one line
    /// ([`MAX_LINE`]) besides the table. A line that is not UTF-8 or is too long is a
    /// syntax error naming it.
    pub fn read(reader: impl BufRead) -> Result<UserTable, UsersError> {
        UserTable::read_sized(reader, 0)
    }

    /// [`UserTable::read`] with the file's size, so the arena is allocated once.
    pub fn read_sized(mut reader: impl BufRead, size_hint: u64) -> Result<UserTable, UsersError> {
        let mut builder = Builder::default();
        let hint = usize::try_from(size_hint).unwrap_or(0).min(MAX_TABLE_BYTES);
        builder.table.arena.reserve(hint);
        let mut buf = Vec::with_capacity(256);
        loop {
            buf.clear();
            let limit = MAX_LINE as u64 + 1;
            let n = reader.by_ref().take(limit).read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            let number = builder.line + 1;
            if buf.len() > MAX_LINE {
                return Err(UsersFileError {
                    line: number,
                    reason: format!("longer than {MAX_LINE} bytes"),
                }
                .into());
            }
            let line = std::str::from_utf8(&buf).map_err(|_| UsersFileError {
                line: number,
                reason: "not UTF-8".into(),
            })?;
            builder.push_line(line.trim_end_matches(['\n', '\r']))?;
        }
        Ok(builder.finish()?)
    }

    /// The user with this address (normalised first), if any.
    pub fn lookup(&self, address: &str) -> Option<UserRecord> {
        self.find(&normalize_address(address))
            .map(|entry| self.record(entry))
    }

    /// Whether a user has this address (normalised first).
    pub fn contains(&self, address: &str) -> bool {
        self.find(&normalize_address(address)).is_some()
    }

    /// The domains of the listed addresses: the domains this server delivers for.
    pub fn local_domains(&self) -> &BTreeSet<String> {
        &self.domains
    }

    /// Whether `domain` (any case) is a local domain.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.domains.contains(&domain.trim().to_lowercase())
    }

    /// Every user, in file order.
    pub fn users(&self) -> impl Iterator<Item = UserRecord> + '_ {
        self.entries.iter().map(|entry| self.record(entry))
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file lists no user.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The stored password of the first user with a hashed (not `{PLAIN}`) password,
    /// for [`password::verify_dummy`]: an unknown user then costs what a real check
    /// costs on this server.
    pub fn dummy_hash(&self) -> Option<&str> {
        let entry = self.entries.get(*self.dummy.as_ref()? as usize)?;
        Some(self.password_of(entry))
    }

    /// The Argon2 parameters of the [`UserTable::dummy_hash`], if it is `{ARGON2ID}`.
    pub fn dummy_params(&self) -> Option<Params> {
        password::argon2id_params(self.dummy_hash()?)
    }

    /// The bytes the table holds for user text (the arena), for memory reports.
    pub fn arena_bytes(&self) -> usize {
        self.arena.len()
    }

    fn find(&self, address: &str) -> Option<&Entry> {
        match self.probe(address) {
            Probe::Found(index) => self.entries.get(index as usize),
            Probe::Vacant(_) => None,
        }
    }

    /// Walks the index from `address`'s home slot to its entry or the first free slot.
    fn probe(&self, address: &str) -> Probe {
        let mask = self.slots.len().wrapping_sub(1);
        let hash = self.hasher.hash_one(address);
        let check = hash >> 32;
        let mut at = hash as usize & mask;
        for _ in 0..self.slots.len() {
            let slot = self.slots.get(at).copied().unwrap_or(EMPTY);
            if slot == EMPTY {
                return Probe::Vacant(at);
            }
            let index = slot as u32;
            if slot >> 32 == check
                && self
                    .entries
                    .get(index as usize)
                    .is_some_and(|entry| self.address_of(entry) == address)
            {
                return Probe::Found(index);
            }
            at = (at + 1) & mask;
        }
        Probe::Vacant(usize::MAX)
    }

    fn address_of(&self, entry: &Entry) -> &str {
        self.arena
            .get(entry.start as usize..entry.address_end as usize)
            .unwrap_or_default()
    }

    fn password_of(&self, entry: &Entry) -> &str {
        self.arena
            .get(entry.address_end as usize + 1..entry.password_end as usize)
            .unwrap_or_default()
    }

    fn record(&self, entry: &Entry) -> UserRecord {
        let fields = self
            .arena
            .get(entry.password_end as usize..entry.end as usize)
            .unwrap_or_default()
            .split_ascii_whitespace()
            .map(|word| {
                let (key, value) = word.split_once('=').unwrap_or((word, ""));
                (key.to_owned(), value.to_owned())
            })
            .collect();
        UserRecord {
            address: self.address_of(entry).to_owned(),
            password: self.password_of(entry).to_owned(),
            fields,
        }
    }
}

/// Builds a [`UserTable`] one line at a time.
#[derive(Default)]
struct Builder {
    table: UserTable,
    line: usize,
    plain: usize,
}

impl Builder {
    fn push_line(&mut self, line: &str) -> Result<(), UsersFileError> {
        self.line += 1;
        let number = self.line;
        let error = |reason: String| UsersFileError {
            line: number,
            reason,
        };
        let Some(record) = parse_line(line).map_err(error)? else {
            return Ok(());
        };
        let table = &mut self.table;
        match Scheme::split(&record.password) {
            Some((Scheme::Plain, _)) => {
                self.plain += 1;
                if self.plain <= PLAIN_WARNINGS {
                    log::warn!(
                        "users file line {number}: {} has a {{PLAIN}} password; \
                         store it as argon2id (`tidegate user passwd`)",
                        record.address
                    );
                }
            }
            Some((scheme, _)) if scheme.is_hashed() && table.dummy.is_none() => {
                table.dummy = u32::try_from(table.entries.len()).ok();
            }
            _ => {}
        }
        if let Some((_, domain)) = record.address.rsplit_once('@')
            && !table.domains.contains(domain)
        {
            table.domains.insert(domain.to_owned());
        }
        let too_big = || error(format!("the users file is over {MAX_TABLE_BYTES} bytes"));
        let offset = |arena: &String| u32::try_from(arena.len()).map_err(|_| too_big());
        let start = offset(&table.arena)?;
        table.arena.push_str(&record.address);
        let address_end = offset(&table.arena)?;
        table.arena.push(' ');
        table.arena.push_str(&record.password);
        let password_end = offset(&table.arena)?;
        for (key, value) in &record.fields {
            table.arena.push(' ');
            table.arena.push_str(key);
            if !value.is_empty() {
                table.arena.push('=');
                table.arena.push_str(value);
            }
        }
        let end = offset(&table.arena)?;
        let line = u32::try_from(number).map_err(|_| too_big())?;
        table.entries.push(Entry {
            start,
            address_end,
            password_end,
            end,
            line,
        });
        Ok(())
    }

    /// Builds the index and refuses duplicate addresses, naming the first duplicate
    /// line in file order and the line it repeats.
    fn finish(self) -> Result<UserTable, UsersFileError> {
        let mut table = self.table;
        if self.plain > PLAIN_WARNINGS {
            log::warn!("users file: {} users have {{PLAIN}} passwords", self.plain);
        }
        table.arena.shrink_to_fit();
        table.entries.shrink_to_fit();
        let size = (table.entries.len() * 2).next_power_of_two().max(16);
        table.slots = vec![EMPTY; size];
        for (index, entry) in table.entries.iter().enumerate() {
            let address = table.address_of(entry);
            match table.probe(address) {
                Probe::Vacant(at) => {
                    let check = table.hasher.hash_one(address) >> 32;
                    if let Some(slot) = table.slots.get_mut(at) {
                        *slot = (check << 32) | index as u64;
                    }
                }
                Probe::Found(first) => {
                    let first = table.entries.get(first as usize).map_or(0, |e| e.line);
                    return Err(UsersFileError {
                        line: entry.line as usize,
                        reason: format!("{address} is already defined on line {first}"),
                    });
                }
            }
        }
        Ok(table)
    }
}

/// Where [`UserTable::probe`] ended.
enum Probe {
    /// The entry with the address.
    Found(u32),
    /// The free slot where the address would go.
    Vacant(usize),
}

/// The words of a line up to a comment: `#` starts a comment at the start of a word
/// (so a `{PLAIN}` password may contain `#` inside it).
pub(super) fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split_whitespace().take_while(|w| !w.starts_with('#'))
}

/// Parses one line; `Ok(None)` for blank and comment lines.
pub(super) fn parse_line(line: &str) -> Result<Option<UserRecord>, String> {
    let mut words = words(line);
    let Some(raw_address) = words.next() else {
        return Ok(None);
    };
    let address = normalize_address(raw_address);
    if split_address(&address).is_none() {
        return Err(format!(
            "{raw_address:?} is not a usable local@domain address"
        ));
    }
    let password = words
        .next()
        .ok_or_else(|| format!("{address} has no password"))?;
    password::check_stored(password).map_err(|reason| format!("{address}: {reason}"))?;
    let mut fields = BTreeMap::new();
    for word in words {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        let key = key.to_ascii_lowercase();
        let key_ok = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !key_ok {
            return Err(format!("{address}: bad field {word:?}"));
        }
        check_field(&key, value).map_err(|reason| format!("{address}: {reason}"))?;
        if fields.insert(key, value.to_owned()).is_some() {
            return Err(format!("{address}: field {word:?} given twice"));
        }
    }
    Ok(Some(UserRecord {
        address,
        password: password.to_owned(),
        fields,
    }))
}

fn check_field(key: &str, value: &str) -> Result<(), String> {
    match key {
        "quota" if value.parse::<u64>().is_err() => {
            Err(format!("quota must be a number of bytes, not {value:?}"))
        }
        "tohost" if value.is_empty() => Err("tohost needs a host".into()),
        "nologin" if !value.is_empty() => Err("nologin takes no value".into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users_fields_comments_and_domains() {
        let text = "# users\n\n  Alice@Example.COM {PLAIN}pw#1 tohost=10.0.0.2 quota=1000 # note\n\
                    bob@example.org {PLAIN}x nologin Extra=1\n";
        let table = UserTable::parse(text).unwrap();
        assert_eq!(table.len(), 2);
        let alice = table.lookup(" ALICE@example.com ").unwrap();
        assert_eq!(alice.address, "alice@example.com");
        assert_eq!(alice.password, "{PLAIN}pw#1");
        assert_eq!(alice.tohost(), Some("10.0.0.2"));
        assert_eq!(alice.quota(), Some(1000));
        assert!(!alice.nologin());
        let bob = table.lookup("bob@example.org").unwrap();
        assert!(bob.nologin());
        assert_eq!(bob.fields.get("extra").map(String::as_str), Some("1"));
        assert_eq!(bob.to_line(), "bob@example.org {PLAIN}x extra=1 nologin");
        assert!(table.is_local_domain("EXAMPLE.org"));
        assert_eq!(
            table.local_domains().iter().collect::<Vec<_>>(),
            ["example.com", "example.org"]
        );
        assert!(table.lookup("carol@example.org").is_none());
        assert!(!format!("{bob:?}").contains("{PLAIN}"));
    }

    #[test]
    fn errors_carry_line_numbers() {
        let cases = [
            ("a@b {PLAIN}x\n\nnot-an-address {PLAIN}x\n", 3, "address"),
            ("a@b\n", 1, "no password"),
            ("# c\na@b {MD5}abc\n", 2, "SCHEME"),
            ("a@b {PLAIN}x\nx@y {PLAIN}y\nA@B {PLAIN}z\n", 3, "line 1"),
            ("a@b {PLAIN}x quota=lots\n", 1, "quota"),
            ("a@b {PLAIN}x k=1 k=2\n", 1, "twice"),
            ("a@b {PLAIN}x =v\n", 1, "bad field"),
            ("../x@b {PLAIN}x\n", 1, "address"),
            ("a@b {ARGON2ID}$argon2id$nonsense\n", 1, "a@b"),
        ];
        for (text, line, needle) in cases {
            let err = UserTable::parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.reason.contains(needle), "{text:?}: {err}");
        }
    }
}
