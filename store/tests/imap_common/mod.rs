//! What the store's IMAP tests share: the test account, mailbox references, and a
//! temporary maildir root. Each test file adds its own `impl Fixture` methods.
#![allow(dead_code)] // not every test file uses every piece

use std::path::PathBuf;

use tidegate_core::Account;
use tidegate_core::imap::MailboxRef;

/// The account every store IMAP test works on.
pub fn account() -> Account {
    Account("bob@example.org".into())
}

/// Folder `name` of [`account`].
pub fn mailbox(name: &str) -> MailboxRef {
    MailboxRef {
        account: account(),
        name: name.into(),
    }
}

/// A temporary mailbox_path, removed when the fixture is dropped.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Fixture {
    /// A new empty root.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        Fixture { _dir: dir, root }
    }
}
