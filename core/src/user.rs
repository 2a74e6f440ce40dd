//! The user model every user database answers with (design.md §4, "Users file").
//!
//! A lookup in the users file, the networked lookup service (authd) or LDAP produces a
//! [`Lookup`]; a password check produces an [`AuthOutcome`]. Fields other than the
//! address and password are kept as data (`KEY=VALUE`), so a new routing or policy field
//! needs no code in the databases: only the code that acts on it reads it.

use std::collections::BTreeMap;
use std::fmt;

/// One user as a user database knows it. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The normalised address ([`normalize_address`]): the account name.
    pub address: String,
    /// The stored password, `{SCHEME}DATA`; empty when the database does not hand out
    /// password hashes (LDAP with bind authentication, authd lookups).
    pub password: String,
    /// The `KEY=VALUE` fields (keys lowercased); a bare `KEY` has an empty value.
    pub fields: BTreeMap<String, String>,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("address", &self.address)
            .field("password", &"..")
            .field("fields", &self.fields)
            .finish()
    }
}

impl UserRecord {
    /// A record with no password and no fields.
    pub fn new(address: impl Into<String>) -> UserRecord {
        UserRecord {
            address: address.into(),
            password: String::new(),
            fields: BTreeMap::new(),
        }
    }

    /// The value of a field (`KEY=VALUE`; `Some("")` for a bare `KEY`).
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// `tohost=HOST`: the back-end that owns this user (proxy mode).
    pub fn tohost(&self) -> Option<&str> {
        self.field("tohost").filter(|host| !host.is_empty())
    }

    /// `nologin`: the account exists but may not log in.
    pub fn nologin(&self) -> bool {
        self.fields.contains_key("nologin")
    }

    /// `quota=BYTES`: the mailbox size limit.
    pub fn quota(&self) -> Option<u64> {
        self.field("quota").and_then(|q| q.parse().ok())
    }

    /// The record as a users file line (without a line end).
    pub fn to_line(&self) -> String {
        let mut line = format!("{} {}", self.address, self.password);
        for (key, value) in &self.fields {
            line.push(' ');
            line.push_str(key);
            if !value.is_empty() {
                line.push('=');
                line.push_str(value);
            }
        }
        line
    }
}

/// The answer of a user database to "who is ADDRESS?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The user exists.
    Found(UserRecord),
    /// The address is in a domain this database serves, but no such user exists
    /// (SMTP `550 5.1.1`).
    NotFound,
    /// The database does not serve the address's domain (SMTP: not a local recipient,
    /// relaying rules apply).
    UnknownDomain,
    /// The database could not be asked (unreachable, timed out); try again later.
    TempFail(String),
}

/// The answer of a user database to "is this the password of USER?".
///
/// An unknown user and a wrong password are both [`AuthOutcome::Denied`], after the same
/// work, so a client cannot tell which addresses exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The password is right and the account may log in.
    Accepted(UserRecord),
    /// Unknown user or wrong password.
    Denied,
    /// The password is right but the account has `nologin`.
    Disabled,
    /// The database could not be asked; try again later.
    TempFail(String),
}

/// The canonical form of an address, used for every lookup and stored in every database:
/// surrounding whitespace removed and everything lowercased.
///
/// The domain is case-insensitive (RFC 5321 §2.4). The local part is lowercased too:
/// RFC 5321 lets servers treat it case-sensitively, but users type their address in any
/// case and expect it to work. A site that needs case-sensitive local parts changes this
/// one function.
pub fn normalize_address(address: &str) -> String {
    address.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_data() {
        let mut user = UserRecord::new("alice@example.com");
        user.password = "{PLAIN}secret".into();
        user.fields.insert("tohost".into(), "10.0.0.2".into());
        user.fields.insert("quota".into(), "1000".into());
        user.fields.insert("nologin".into(), String::new());
        user.fields.insert("plan".into(), "gold".into());
        assert_eq!(user.tohost(), Some("10.0.0.2"));
        assert_eq!(user.quota(), Some(1000));
        assert!(user.nologin());
        assert_eq!(user.field("plan"), Some("gold"));
        assert_eq!(
            user.to_line(),
            "alice@example.com {PLAIN}secret nologin plan=gold quota=1000 tohost=10.0.0.2"
        );
        assert!(!format!("{user:?}").contains("secret"));
    }

    #[test]
    fn normalisation_trims_and_lowercases() {
        assert_eq!(
            normalize_address("  Alice@Example.COM\t"),
            "alice@example.com"
        );
    }
}
