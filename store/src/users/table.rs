//! Parsing the users file into a lookup table.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

pub use tidegate_core::user::UserRecord;

use crate::maildir::split_address;
use crate::password::{self, Params, Scheme};

use super::normalize_address;

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

/// A parsed users file: users by normalised address, and the local domains.
#[derive(Debug, Default, Clone)]
pub struct UserTable {
    users: Vec<UserRecord>,
    index: HashMap<String, usize>,
    domains: BTreeSet<String>,
    dummy: Option<Params>,
}

impl UserTable {
    /// Parses users file text. Errors name the line: a malformed line, an unknown
    /// `{SCHEME}`, or a duplicate address (naming both lines). A `{PLAIN}` password is
    /// accepted with a warning in the log.
    pub fn parse(text: &str) -> Result<UserTable, UsersFileError> {
        let mut table = UserTable::default();
        let mut lines_of = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let record = parse_line(line).map_err(|reason| UsersFileError {
                line: number,
                reason,
            })?;
            let Some(record) = record else {
                continue;
            };
            if let Some(first) = lines_of.insert(record.address.clone(), number) {
                return Err(UsersFileError {
                    line: number,
                    reason: format!("{} is already defined on line {first}", record.address),
                });
            }
            match Scheme::split(&record.password) {
                Some((Scheme::Plain, _)) => log::warn!(
                    "users file line {number}: {} has a {{PLAIN}} password; \
                     store it as argon2id (`tidegate user passwd`)",
                    record.address
                ),
                Some((Scheme::Argon2id, _)) if table.dummy.is_none() => {
                    table.dummy = password::argon2id_params(&record.password);
                }
                _ => {}
            }
            if let Some((_, domain)) = record.address.rsplit_once('@') {
                table.domains.insert(domain.to_owned());
            }
            table
                .index
                .insert(record.address.clone(), table.users.len());
            table.users.push(record);
        }
        Ok(table)
    }

    /// The user with this address (normalised first), if any.
    pub fn lookup(&self, address: &str) -> Option<&UserRecord> {
        let index = *self.index.get(&normalize_address(address))?;
        self.users.get(index)
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
    pub fn users(&self) -> &[UserRecord] {
        &self.users
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file lists no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The Argon2 parameters of the first `{ARGON2ID}` user, for
    /// [`password::verify_dummy_with`]: an unknown user then costs what a real check
    /// costs on this server.
    pub fn dummy_params(&self) -> Option<&Params> {
        self.dummy.as_ref()
    }
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
