//! Mailbox usage for `quota=` checks.
//!
//! Usage is computed on demand: the sizes of every message in `new/` and `cur/`, from the
//! Maildir++ `,S=` field of the name or, without one, from `stat`. That is one directory
//! scan per check, cheap for the mailbox sizes POP3 users keep; a usage cache
//! (Maildir++ `maildirsize`, or an in-memory figure updated on delivery and expunge) is
//! future work. The check is not atomic with delivery: concurrent deliveries may each
//! see room for themselves and together pass the quota by a message or so (a soft quota).

use std::fs;
use std::io;
use std::path::Path;

use tidegate_core::Account;
use tidegate_core::maildir::parse_name;

use super::{MaildirStore, StoreError, Sub};

impl MaildirStore {
    /// The octets an account's inbox holds (new/ and cur/); a missing maildir holds 0.
    pub fn usage(&self, account: &Account) -> Result<u64, StoreError> {
        Ok(maildir_usage(&self.mailbox_dir(account)?)?)
    }
}

/// Whether a message of `size` octets fits a mailbox holding `usage` under `quota`.
pub(super) fn fits(usage: u64, size: u64, quota: Option<u64>) -> bool {
    quota.is_none_or(|quota| usage.saturating_add(size) <= quota)
}

/// The sum of message sizes in `<maildir>/new` and `<maildir>/cur`.
pub(super) fn maildir_usage(maildir: &Path) -> io::Result<u64> {
    let mut total = 0u64;
    for sub in [Sub::New, Sub::Cur] {
        let entries = match fs::read_dir(maildir.join(sub.name())) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let file_name = entry.file_name();
            let sized = file_name
                .to_str()
                .and_then(parse_name)
                .and_then(|parsed| parsed.size);
            let size = match sized {
                Some(size) => size,
                None => match entry.metadata() {
                    Ok(meta) if meta.is_file() => meta.len(),
                    Ok(_) => 0,
                    // Moved or deleted meanwhile: counted under its new name, or gone.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(e),
                },
            };
            total = total.saturating_add(size);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::fits;

    #[test]
    fn quota_boundaries() {
        assert!(fits(u64::MAX, 1, None));
        assert!(fits(90, 10, Some(100)));
        assert!(!fits(90, 11, Some(100)));
        assert!(!fits(u64::MAX, 1, Some(u64::MAX - 1)));
    }
}
