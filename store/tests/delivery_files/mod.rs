//! What a delivery left on disk, for the store's delivery tests.

use std::fs;
use std::path::Path;

/// The contents of every file in `dir` (none when it does not exist), in directory order.
pub fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| fs::read(e.unwrap().path()).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The files in the store's spool directory (`mail/.tidegate-tmp` under `dir`).
pub fn spool(dir: &tempfile::TempDir) -> Vec<Vec<u8>> {
    files_in(&dir.path().join("mail/.tidegate-tmp"))
}

/// The messages in `new/` of the maildir `mailbox` (`DOMAIN/USER`) under `dir`.
pub fn new_mail(dir: &tempfile::TempDir, mailbox: &str) -> Vec<Vec<u8>> {
    files_in(&dir.path().join("mail").join(mailbox).join("new"))
}
