//! Editing a users file for `tidegate user add|passwd|set|del|list|import`.
//!
//! Every edit reads the whole file, checks it parses, changes only the one line it is
//! about (comments, blank lines and other users stay byte for byte), checks the result
//! parses, and replaces the file atomically: write `.<name>.tmp` in the same directory,
//! fsync, rename over the file, fsync the directory. A running server's
//! [`super::UsersFile`] picks the new version up. Two edits racing each other: the last
//! rename wins.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::table::{UserRecord, UserTable, parse_line};
use super::{UsersError, normalize_address};

/// Adds a user with an already hashed password (`{SCHEME}…`) and fields (an empty value
/// writes a bare `KEY`). Creates the file (mode 0600) if it is missing; an address that
/// is already there is [`UsersError::Exists`].
pub fn add_user(
    path: &Path,
    address: &str,
    password_hash: &str,
    fields: &BTreeMap<String, String>,
) -> Result<(), UsersError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    let table = UserTable::parse(&text)?;
    let record = UserRecord {
        address: normalize_address(address),
        password: password_hash.to_owned(),
        fields: fields.clone(),
    };
    if table.contains(&record.address) {
        return Err(UsersError::Exists(record.address));
    }
    let line = checked_line(&record)?;
    let mut new_text = text;
    if !new_text.is_empty() && !new_text.ends_with('\n') {
        new_text.push('\n');
    }
    new_text.push_str(&line);
    new_text.push('\n');
    write_atomically(path, &new_text)
}

/// Adds many users in one atomic rewrite (`tidegate user import`): users whose address
/// is already in the file are left out and returned; the others are appended in order.
/// Either all of the rest are added or, on any error, none.
pub fn add_users(path: &Path, users: &[UserRecord]) -> Result<Vec<String>, UsersError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    let table = UserTable::parse(&text)?;
    let mut existing = Vec::new();
    let mut new_text = text;
    if !new_text.is_empty() && !new_text.ends_with('\n') {
        new_text.push('\n');
    }
    for record in users {
        if table.contains(&record.address) {
            existing.push(record.address.clone());
            continue;
        }
        new_text.push_str(&checked_line(record)?);
        new_text.push('\n');
    }
    UserTable::parse(&new_text)?;
    write_atomically(path, &new_text)?;
    Ok(existing)
}

/// Sets fields of a user (an empty value writes a bare `KEY`) and removes the `unset`
/// ones, keeping the password and every other field.
pub fn set_fields(
    path: &Path,
    address: &str,
    set: &BTreeMap<String, String>,
    unset: &[String],
) -> Result<(), UsersError> {
    rewrite_user(path, address, |mut record| {
        for key in unset {
            record.fields.remove(&key.to_ascii_lowercase());
        }
        for (key, value) in set {
            record
                .fields
                .insert(key.to_ascii_lowercase(), value.clone());
        }
        Some(record)
    })
}

/// Replaces a user's password with an already hashed one, keeping the user's fields.
pub fn set_password(path: &Path, address: &str, password_hash: &str) -> Result<(), UsersError> {
    rewrite_user(path, address, |mut record| {
        record.password = password_hash.to_owned();
        Some(record)
    })
}

/// Removes a user's line.
pub fn delete_user(path: &Path, address: &str) -> Result<(), UsersError> {
    rewrite_user(path, address, |_| None)
}

/// Every user of the file, in file order.
pub fn list_users(path: &Path) -> Result<Vec<UserRecord>, UsersError> {
    let text = fs::read_to_string(path)?;
    Ok(UserTable::parse(&text)?.users().collect())
}

/// Replaces the line of `address` by what `change` makes of its record (`None` deletes
/// it). A trailing comment on that line is kept.
fn rewrite_user(
    path: &Path,
    address: &str,
    change: impl FnOnce(UserRecord) -> Option<UserRecord>,
) -> Result<(), UsersError> {
    let text = fs::read_to_string(path)?;
    UserTable::parse(&text)?;
    let wanted = normalize_address(address);
    let mut out = String::with_capacity(text.len() + 64);
    let mut change = Some(change);
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        let found = match parse_line(content) {
            Ok(Some(record)) if record.address == wanted => Some(record),
            _ => None,
        };
        let Some((record, change)) = found.and_then(|r| Some((r, change.take()?))) else {
            out.push_str(line);
            continue;
        };
        if let Some(new) = change(record) {
            out.push_str(&checked_line(&new)?);
            if let Some(comment) = comment_of(content) {
                out.push(' ');
                out.push_str(comment);
            }
            out.push_str(&line[content.len()..]);
        }
    }
    if change.is_some() {
        return Err(UsersError::NotFound(wanted));
    }
    UserTable::parse(&out)?;
    write_atomically(path, &out)
}

/// The comment at the end of a line, from its `#` word on.
fn comment_of(line: &str) -> Option<&str> {
    let mut rest = line;
    loop {
        let start = rest.find(|c: char| !c.is_whitespace())?;
        let word = &rest[start..];
        if word.starts_with('#') {
            return Some(word);
        }
        let end = word.find(char::is_whitespace).unwrap_or(word.len());
        rest = &word[end..];
    }
}

/// The record as a line, refused unless it parses back to the same record.
fn checked_line(record: &UserRecord) -> Result<String, UsersError> {
    let line = record.to_line();
    match parse_line(&line) {
        Ok(Some(parsed)) if parsed == *record => Ok(line),
        Ok(_) => Err(UsersError::Invalid(format!(
            "{} cannot be written as one users file line",
            record.address
        ))),
        Err(reason) => Err(UsersError::Invalid(reason)),
    }
}

/// Replaces `path` with `text`: `.<name>.tmp` beside it, fsync, rename, fsync the
/// directory. A new file gets mode 0600; an existing one keeps its mode.
fn write_atomically(path: &Path, text: &str) -> Result<(), UsersError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| UsersError::Invalid(format!("{} is not a file path", path.display())))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mode = match fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0o600,
        Err(e) => return Err(e.into()),
    };
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    Ok(written?)
}
