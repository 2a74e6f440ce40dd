//! The users file (design.md §4, "Users file"): one user a line,
//! `ADDRESS PASSWORD [KEY=VALUE | KEY ...]`, `#` comments, blank lines.
//!
//! [`UserTable`] is one parsed file; [`UsersFile`] keeps the current table of a path,
//! reloads it when the file changes and answers as a [`UserDirectory`], the interface of
//! every user database; [`CachedDirectory`] remembers successful logins of any
//! directory. [`add_user`], [`add_users`], [`set_password`], [`set_fields`],
//! [`delete_user`] and [`list_users`] edit a file for `tidegate user …`, atomically and
//! keeping every other line as it was; [`parse_passwd_file`] reads a Dovecot
//! passwd-file for `tidegate user import`. docs/users.md is the operator's guide.

mod authd;
mod cache;
mod directory;
mod edit;
mod file;
mod import;
pub mod ldap;
mod table;
mod timed;

use std::fmt;
use std::io;

pub use authd::{AuthdClientConfig, AuthdClientTls, AuthdDirectory};
pub use cache::{CacheConfig, CachedDirectory};
pub use directory::UserDirectory;
pub use edit::{add_user, add_users, delete_user, list_users, set_fields, set_password};
pub use file::UsersFile;
pub use import::{Imported, parse_passwd_file};
pub use ldap::{LdapAuth, LdapConfig, LdapDirectory};
pub use table::{MAX_LINE, UserRecord, UserTable, UsersFileError};
pub use tidegate_core::user::normalize_address;
pub use timed::TimedDirectory;

/// Why loading or editing a users file failed.
#[derive(Debug)]
pub enum UsersError {
    /// The file could not be read or written.
    Io(io::Error),
    /// The file has a syntax error.
    Syntax(UsersFileError),
    /// `add_user` of an address that is already in the file.
    Exists(String),
    /// `set_password`/`delete_user` of an address that is not in the file.
    NotFound(String),
    /// The new line would not be valid (bad address, password or field).
    Invalid(String),
}

impl fmt::Display for UsersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsersError::Io(e) => write!(f, "users file: {e}"),
            UsersError::Syntax(e) => write!(f, "users file: {e}"),
            UsersError::Exists(a) => write!(f, "user {a} already exists"),
            UsersError::NotFound(a) => write!(f, "no user {a}"),
            UsersError::Invalid(reason) => write!(f, "invalid user entry: {reason}"),
        }
    }
}

impl std::error::Error for UsersError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UsersError::Io(e) => Some(e),
            UsersError::Syntax(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for UsersError {
    fn from(e: io::Error) -> Self {
        UsersError::Io(e)
    }
}

impl From<UsersFileError> for UsersError {
    fn from(e: UsersFileError) -> Self {
        UsersError::Syntax(e)
    }
}
