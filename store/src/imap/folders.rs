//! Folder management: LIST with child and SPECIAL-USE attributes (RFC 3501 §6.3.8,
//! RFC 3348, RFC 6154), CREATE, DELETE, RENAME (§6.3.3 to §6.3.5), SUBSCRIBE and
//! UNSUBSCRIBE (§6.3.6, §6.3.7), and the default folders of a new account.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use tidegate_core::Account;

use super::{
    COUNTER, ImapMailboxes, ImapStoreError, SUBSCRIPTIONS_FILE, Sub, folder_dir, is_inbox,
    make_maildir,
};
use crate::lock::Dotlock;

/// The Maildir++ marker file in every sub-folder.
const FOLDER_MARKER: &str = "maildirfolder";

/// Most bytes of the subscriptions file read.
const MAX_SUBSCRIPTIONS: u64 = 1 << 20;

/// A SPECIAL-USE attribute (RFC 6154 §2) of a standard folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialUse {
    /// `\Sent`: the folder `Sent`.
    Sent,
    /// `\Drafts`: the folder `Drafts`.
    Drafts,
    /// `\Trash`: the folder `Trash`.
    Trash,
    /// `\Junk`: the folder `Junk`.
    Junk,
    /// `\Archive`: the folder `Archive`.
    Archive,
}

impl SpecialUse {
    /// Every special-use folder, created for a new account.
    pub const ALL: [SpecialUse; 5] = [
        SpecialUse::Sent,
        SpecialUse::Drafts,
        SpecialUse::Trash,
        SpecialUse::Junk,
        SpecialUse::Archive,
    ];

    /// The folder name.
    pub fn folder(self) -> &'static str {
        match self {
            SpecialUse::Sent => "Sent",
            SpecialUse::Drafts => "Drafts",
            SpecialUse::Trash => "Trash",
            SpecialUse::Junk => "Junk",
            SpecialUse::Archive => "Archive",
        }
    }

    /// The LIST attribute.
    pub fn attribute(self) -> &'static str {
        match self {
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Archive => "\\Archive",
        }
    }

    fn of(name: &str) -> Option<SpecialUse> {
        SpecialUse::ALL.into_iter().find(|s| s.folder() == name)
    }
}

/// One folder name as LIST and LSUB report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    /// The IMAP name (`INBOX`, `Archive/2026`), as the client created it.
    pub name: String,
    /// `\Noselect`: only a level above existing folders, not a folder itself.
    pub noselect: bool,
    /// `\HasChildren` (true) or `\HasNoChildren` (false).
    pub has_children: bool,
    /// The SPECIAL-USE attribute, for the standard folders.
    pub special_use: Option<SpecialUse>,
    /// Whether the name is in the subscriptions.
    pub subscribed: bool,
}

impl FolderInfo {
    /// The name attributes for a LIST response, in a fixed order.
    pub fn attributes(&self) -> Vec<&'static str> {
        let mut out = Vec::with_capacity(3);
        if self.noselect {
            out.push("\\Noselect");
        }
        out.push(if self.has_children {
            "\\HasChildren"
        } else {
            "\\HasNoChildren"
        });
        if let Some(special) = self.special_use {
            out.push(special.attribute());
        }
        out
    }
}

/// The IMAP names of the sub-folders in `maildir` (directories `.A.B`).
fn folder_names(maildir: &Path) -> io::Result<BTreeSet<String>> {
    let entries = match fs::read_dir(maildir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e),
    };
    let mut names = BTreeSet::new();
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_prefix('.')) else {
            continue;
        };
        if name.is_empty() || name.split('.').any(str::is_empty) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            names.insert(name.replace('.', "/"));
        }
    }
    Ok(names)
}

impl ImapMailboxes {
    /// The directory of an existing (selectable) folder; creates the account's default
    /// folders on its first access.
    pub(super) fn existing_folder(
        &self,
        account: &Account,
        folder: &str,
    ) -> Result<PathBuf, ImapStoreError> {
        let maildir = self.maildir(account)?;
        self.ensure_account(&maildir)?;
        let dir = folder_dir(&maildir, folder)?;
        if !dir.join("cur").is_dir() {
            return Err(ImapStoreError::NoSuchFolder);
        }
        Ok(dir)
    }

    /// On an account's first IMAP access (no subscriptions file yet): creates INBOX and
    /// the special-use folders and subscribes them all.
    fn ensure_account(&self, maildir: &Path) -> Result<(), ImapStoreError> {
        if maildir.join(SUBSCRIPTIONS_FILE).exists() {
            return Ok(());
        }
        make_maildir(maildir)?;
        let mut names = vec!["INBOX".to_owned()];
        for special in SpecialUse::ALL {
            create_folder_dir(&folder_dir(maildir, special.folder())?)?;
            names.push(special.folder().to_owned());
        }
        self.write_subscriptions(maildir, &names)?;
        Ok(())
    }

    /// Every folder of the account: INBOX first, then the others by name, with the
    /// `\Noselect` levels in between that hold sub-folders without being folders.
    /// Pattern matching (`*`, `%`) is the protocol's job.
    pub fn list_folders(&self, account: &Account) -> Result<Vec<FolderInfo>, ImapStoreError> {
        let maildir = self.maildir(account)?;
        self.ensure_account(&maildir)?;
        let real = folder_names(&maildir)?;
        let subscribed = self.subscriptions(account)?;
        let mut all: BTreeSet<String> = real.clone();
        for name in &real {
            let mut level = name.as_str();
            while let Some((parent, _)) = level.rsplit_once('/') {
                all.insert(parent.to_owned());
                level = parent;
            }
        }
        let has_children = |name: &str| {
            all.range(format!("{name}/")..)
                .next()
                .is_some_and(|n| n.starts_with(&format!("{name}/")))
        };
        let mut out = vec![FolderInfo {
            name: "INBOX".into(),
            noselect: false,
            has_children: has_children("INBOX"),
            special_use: None,
            subscribed: subscribed.iter().any(|s| is_inbox(s)),
        }];
        for name in &all {
            if is_inbox(name) {
                continue;
            }
            out.push(FolderInfo {
                noselect: !real.contains(name),
                has_children: has_children(name),
                special_use: SpecialUse::of(name),
                subscribed: subscribed.contains(name),
                name: name.clone(),
            });
        }
        Ok(out)
    }

    /// CREATE: a new empty folder (a trailing `/` is dropped, RFC 3501 §6.3.3).
    pub fn create_folder(&self, account: &Account, folder: &str) -> Result<(), ImapStoreError> {
        let maildir = self.maildir(account)?;
        self.ensure_account(&maildir)?;
        let folder = folder.strip_suffix('/').unwrap_or(folder);
        if is_inbox(folder) {
            return Err(ImapStoreError::AlreadyExists);
        }
        let dir = folder_dir(&maildir, folder)?;
        match fs::symlink_metadata(&dir) {
            Ok(_) => Err(ImapStoreError::AlreadyExists),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_folder_dir(&dir)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// DELETE (RFC 3501 §6.3.4): removes the folder and its messages; its sub-folders
    /// stay (it then lists as `\Noselect`). INBOX cannot be deleted, nor a `\Noselect`
    /// level. The directory is first renamed out of the folder namespace, so the folder
    /// disappears at once even if removing its files takes a while.
    pub fn delete_folder(&self, account: &Account, folder: &str) -> Result<(), ImapStoreError> {
        let maildir = self.maildir(account)?;
        if is_inbox(folder) {
            return Err(ImapStoreError::NotAllowed);
        }
        let dir = folder_dir(&maildir, folder)?;
        if !dir.is_dir() {
            let prefix = format!("{folder}/");
            let has_children = folder_names(&maildir)?
                .iter()
                .any(|n| n.starts_with(&prefix));
            return Err(if has_children {
                ImapStoreError::NotAllowed
            } else {
                ImapStoreError::NoSuchFolder
            });
        }
        let doomed = maildir.join(format!(
            "tidegate-deleted.{}.{}.{}",
            self.host,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImapStoreError::NoSuchFolder);
            }
            Err(e) => return Err(e.into()),
        }
        fs::remove_dir_all(&doomed)?;
        Ok(())
    }

    /// RENAME (RFC 3501 §6.3.5): the folder and all its sub-folders get the new name.
    /// Renaming INBOX moves its messages into a new folder of that name and leaves INBOX
    /// empty (its sub-folders stay). The target must not exist.
    pub fn rename_folder(
        &self,
        account: &Account,
        from: &str,
        to: &str,
    ) -> Result<(), ImapStoreError> {
        let maildir = self.maildir(account)?;
        self.ensure_account(&maildir)?;
        if is_inbox(to) {
            return Err(ImapStoreError::AlreadyExists);
        }
        let target = folder_dir(&maildir, to)?;
        if fs::symlink_metadata(&target).is_ok() {
            return Err(ImapStoreError::AlreadyExists);
        }
        if is_inbox(from) {
            create_folder_dir(&target)?;
            for sub in [Sub::New, Sub::Cur] {
                for entry in fs::read_dir(maildir.join(sub.name()))? {
                    let entry = entry?;
                    match fs::rename(
                        entry.path(),
                        target.join(sub.name()).join(entry.file_name()),
                    ) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            return Ok(());
        }
        let source = folder_dir(&maildir, from)?;
        let prefix = format!("{from}/");
        let children: Vec<String> = folder_names(&maildir)?
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        if !source.is_dir() && children.is_empty() {
            return Err(ImapStoreError::NoSuchFolder);
        }
        if to.starts_with(&prefix) {
            return Err(ImapStoreError::NotAllowed); // into itself
        }
        // Every new name is checked before anything moves.
        let mut moves = Vec::with_capacity(children.len());
        for child in &children {
            let renamed = format!("{to}{}", &child[from.len()..]);
            let child_target = folder_dir(&maildir, &renamed)?;
            if fs::symlink_metadata(&child_target).is_ok() {
                return Err(ImapStoreError::AlreadyExists);
            }
            moves.push((folder_dir(&maildir, child)?, child_target));
        }
        if source.is_dir() {
            fs::rename(&source, &target)?;
        }
        for (child, child_target) in moves {
            fs::rename(child, child_target)?;
        }
        Ok(())
    }

    /// The subscribed folder names (LSUB), in file order.
    pub fn subscriptions(&self, account: &Account) -> Result<Vec<String>, ImapStoreError> {
        let maildir = self.maildir(account)?;
        let file = match File::open(maildir.join(SUBSCRIPTIONS_FILE)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut text = String::new();
        io::Read::read_to_string(&mut io::Read::take(file, MAX_SUBSCRIPTIONS), &mut text).or_else(
            |e| {
                if e.kind() == io::ErrorKind::InvalidData {
                    Ok(0)
                } else {
                    Err(e)
                }
            },
        )?;
        Ok(text
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// SUBSCRIBE: adds the name (which need not exist, RFC 3501 §6.3.6).
    pub fn subscribe(&self, account: &Account, folder: &str) -> Result<(), ImapStoreError> {
        self.change_subscriptions(account, folder, true)
    }

    /// UNSUBSCRIBE: removes the name.
    pub fn unsubscribe(&self, account: &Account, folder: &str) -> Result<(), ImapStoreError> {
        self.change_subscriptions(account, folder, false)
    }

    fn change_subscriptions(
        &self,
        account: &Account,
        folder: &str,
        add: bool,
    ) -> Result<(), ImapStoreError> {
        let maildir = self.maildir(account)?;
        self.ensure_account(&maildir)?;
        let name = if is_inbox(folder) { "INBOX" } else { folder };
        folder_dir(&maildir, name)?; // the same naming rules as folders
        let lock = Dotlock::acquire(&maildir.join(SUBSCRIPTIONS_FILE), &self.lock)?;
        let mut names = self.subscriptions(account)?;
        let present = names.iter().any(|n| n == name);
        if add && !present {
            names.push(name.to_owned());
        } else if !add && present {
            names.retain(|n| n != name);
        } else {
            lock.release()?;
            return Ok(());
        }
        self.write_subscriptions(&maildir, &names)?;
        lock.release()?;
        Ok(())
    }

    /// Replaces the subscriptions file (write, fsync, rename).
    fn write_subscriptions(&self, maildir: &Path, names: &[String]) -> io::Result<()> {
        let temp = maildir.join(format!(
            "{SUBSCRIPTIONS_FILE}.tmp.{}.{}.{}",
            self.host,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut text = String::new();
        for name in names {
            text.push_str(name);
            text.push('\n');
        }
        let mut file = File::create(&temp)?;
        file.write_all(text.as_bytes())?;
        if self.fsync {
            file.sync_data()?;
        }
        fs::rename(&temp, maildir.join(SUBSCRIPTIONS_FILE))
    }
}

/// Creates a Maildir++ sub-folder: `tmp/ new/ cur/` and the `maildirfolder` marker.
fn create_folder_dir(dir: &Path) -> io::Result<()> {
    make_maildir(dir)?;
    match File::options()
        .write(true)
        .create_new(true)
        .open(dir.join(FOLDER_MARKER))
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}
