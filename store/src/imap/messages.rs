//! Message operations: FETCH reads, STORE (flags by rename), APPEND, COPY, MOVE and
//! EXPUNGE (RFC 3501 §6.4.3, §6.4.6, §6.4.7, §6.3.11; RFC 6851 MOVE).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write as _};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use tidegate_core::keywords::KeywordMap;
use tidegate_core::maildir::parse_name;
use tidegate_core::uidlist::UidList;
use tidegate_core::{Account, MessageRef};

use super::keywords::read_keywords;
use super::{
    Flags, ImapMailboxes, ImapStoreError, MAX_READ, Sub, find_by_unique, locate, sync_dir,
    unique_of,
};

/// Bytes copied at a time by APPEND and by COPY when a hard link is impossible.
const COPY_BUF: usize = 64 * 1024;

/// Attempts at a fresh file name when one is taken.
const NAME_ATTEMPTS: usize = 5;

/// What APPEND stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The folder's UIDVALIDITY when the UID was assigned (RFC 4315 APPENDUID).
    pub uidvalidity: u32,
    /// The new message's UID.
    pub uid: u32,
    /// Its file in the folder.
    pub file: MessageRef,
}

/// What COPY or MOVE did to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// The UID in the source folder (0 if it had none yet).
    pub from_uid: u32,
    /// The UID in the target folder.
    pub to_uid: u32,
}

/// COPY/MOVE results: the target's UIDVALIDITY and the UID pairs (RFC 4315 COPYUID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOutcome {
    /// The target folder's UIDVALIDITY.
    pub uidvalidity: u32,
    /// One entry per message copied, in the order given; messages that no longer
    /// existed are left out.
    pub copied: Vec<Copied>,
}

impl ImapMailboxes {
    /// Reads up to `max_len` bytes (at most [`MAX_READ`]) of a message from `offset`; the
    /// flag is true when the message ends after them. A message renamed since the
    /// snapshot (flags, new/ → cur/) is found by its unique name.
    pub fn read(
        &self,
        account: &Account,
        folder: &str,
        file: &MessageRef,
        offset: u64,
        max_len: usize,
    ) -> Result<(Bytes, bool), ImapStoreError> {
        let dir = self.existing_folder(account, folder)?;
        for _ in 0..3 {
            let (sub, name) = locate(&dir, &file.0)?;
            match File::open(dir.join(sub.name()).join(&name)) {
                Ok(handle) => return read_at(&handle, offset, max_len.min(MAX_READ)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ImapStoreError::Gone)
    }

    /// Reads a whole message of at most `limit` bytes (for MIME structure and sections);
    /// a larger message is `InvalidData`.
    pub fn read_all(
        &self,
        account: &Account,
        folder: &str,
        file: &MessageRef,
        limit: u64,
    ) -> Result<Vec<u8>, ImapStoreError> {
        let dir = self.existing_folder(account, folder)?;
        let (sub, name) = locate(&dir, &file.0)?;
        let handle = match File::open(dir.join(sub.name()).join(&name)) {
            Ok(handle) => handle,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (sub, name) =
                    find_by_unique(&dir, unique_of(&name))?.ok_or(ImapStoreError::Gone)?;
                File::open(dir.join(sub.name()).join(name))?
            }
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        handle.take(limit.saturating_add(1)).read_to_end(&mut out)?;
        if out.len() as u64 > limit {
            return Err(
                io::Error::new(io::ErrorKind::InvalidData, "message over the read limit").into(),
            );
        }
        Ok(out)
    }

    /// STORE: gives the message exactly `flags` by renaming its file (content is never
    /// rewritten); letters of other tools in the name are kept. Returns the new file.
    pub fn set_flags(
        &self,
        account: &Account,
        folder: &str,
        file: &MessageRef,
        flags: Flags,
    ) -> Result<MessageRef, ImapStoreError> {
        let dir = self.existing_folder(account, folder)?;
        // Under the uidlist lock, so a snapshot's listing never misses the file.
        self.with_uidlist(&dir, |_, _| Ok((rename_flags(&dir, file, flags)?, false)))
    }

    /// APPEND: stores the message read from `message` (bytes as given) with `flags` and
    /// the INTERNALDATE `internal_date` (seconds since the epoch; `None` for now), and
    /// returns its UID. The file is written in `tmp/`, synced, then linked into place,
    /// so readers never see a partial message. Without flags it goes to `new/`, so the
    /// next SELECT sees it as `\Recent`; with flags to `cur/`.
    pub fn append(
        &self,
        account: &Account,
        folder: &str,
        flags: Flags,
        internal_date: Option<i64>,
        mut message: impl Read,
    ) -> Result<Appended, ImapStoreError> {
        let dir = self.existing_folder(account, folder)?;
        let unique = self.next_unique();
        let temp_path = dir.join("tmp").join(unique.file_name(0));
        let mut temp = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp_path)?;
        let result = (|| -> Result<Appended, ImapStoreError> {
            let size = copy_stream(&mut message, &mut temp)?;
            if self.fsync {
                temp.sync_data()?;
            }
            if let Some(date) = internal_date {
                temp.set_modified(system_time(date))?;
            }
            let letters = flags.to_maildir("");
            let (sub, name) = if letters.is_empty() {
                (Sub::New, unique.file_name(size))
            } else {
                (Sub::Cur, format!("{}:2,{letters}", unique.file_name(size)))
            };
            fs::hard_link(&temp_path, dir.join(sub.name()).join(&name))?;
            if self.fsync {
                sync_dir(&dir.join(sub.name()))?;
            }
            let unique_name = unique_of(&name).to_owned();
            let (uidvalidity, uids) = self.add_uids(&dir, &[unique_name])?;
            let uid = uids
                .first()
                .copied()
                .flatten()
                .ok_or(ImapStoreError::Gone)?;
            Ok(Appended {
                uidvalidity,
                uid,
                file: MessageRef(format!("{}/{name}", sub.name())),
            })
        })();
        let _ = fs::remove_file(&temp_path);
        result
    }

    /// COPY: copies the messages to folder `to` with their flags (a hard link where the
    /// filesystem allows, a copy otherwise; the content is byte-identical) and returns
    /// the UID pairs. Messages that no longer exist are skipped.
    pub fn copy(
        &self,
        account: &Account,
        from: &str,
        files: &[MessageRef],
        to: &str,
    ) -> Result<CopyOutcome, ImapStoreError> {
        let source = self.existing_folder(account, from)?;
        let target = self.existing_folder(account, to)?;
        let relabel = self.relabel(&source, &target, files)?;
        let old = uid_index(self.current_list(&source)?);
        let mut added = Vec::with_capacity(files.len());
        for file in files {
            let Ok((sub, name)) = locate(&source, &file.0) else {
                continue;
            };
            let old_uid = old.get(unique_of(&name)).copied().unwrap_or(0);
            let from_path = source.join(sub.name()).join(&name);
            match self.place_copy(&from_path, &target, &name, relabel.as_ref()) {
                Ok(unique) => added.push((old_uid, unique)),
                Err(ImapStoreError::Gone) => {}
                Err(e) => return Err(e),
            }
        }
        if self.fsync && !added.is_empty() {
            sync_dir(&target.join("cur"))?;
        }
        self.finish_copy(&target, added)
    }

    /// MOVE (RFC 6851): moves the messages to folder `to` by renaming their files, so
    /// each is in exactly one folder at any time, and drops their source UIDs. Returns
    /// the UID pairs; the source UIDs are the ones to report as expunged.
    pub fn move_messages(
        &self,
        account: &Account,
        from: &str,
        files: &[MessageRef],
        to: &str,
    ) -> Result<CopyOutcome, ImapStoreError> {
        let source = self.existing_folder(account, from)?;
        let target = self.existing_folder(account, to)?;
        let relabel = self.relabel(&source, &target, files)?;
        let old = uid_index(self.current_list(&source)?);
        let mut added = Vec::with_capacity(files.len());
        let mut moved = Vec::with_capacity(files.len());
        for file in files {
            for _ in 0..3 {
                let Ok((sub, name)) = locate(&source, &file.0) else {
                    break;
                };
                let cur_name = match &relabel {
                    Some(relabel) => relabelled(&name, relabel).ok_or(ImapStoreError::Gone)?,
                    None if name.contains(":2,") => name.clone(),
                    None => format!("{name}:2,"),
                };
                let from_path = source.join(sub.name()).join(&name);
                let unique = unique_of(&name).to_owned();
                let new_unique = match fs::rename(&from_path, target.join("cur").join(&cur_name)) {
                    Ok(()) => unique.clone(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                        // Another filesystem: copy, then remove the original.
                        let copy = self.place_copy(&from_path, &target, &name, relabel.as_ref())?;
                        fs::remove_file(&from_path)?;
                        copy
                    }
                    Err(e) => return Err(e.into()),
                };
                added.push((old.get(&unique).copied().unwrap_or(0), new_unique));
                moved.push(unique);
                break;
            }
        }
        if self.fsync && !moved.is_empty() {
            sync_dir(&target.join("cur"))?;
            sync_dir(&source.join("cur"))?;
        }
        let outcome = self.finish_copy(&target, added)?;
        self.remove_uids(&source, &moved)?;
        Ok(outcome)
    }

    /// EXPUNGE: deletes these messages (unlink) and drops their UIDs; returns the UIDs
    /// removed. Messages already gone are skipped.
    pub fn expunge(
        &self,
        account: &Account,
        folder: &str,
        files: &[MessageRef],
    ) -> Result<Vec<u32>, ImapStoreError> {
        let dir = self.existing_folder(account, folder)?;
        let mut removed = Vec::with_capacity(files.len());
        for file in files {
            for _ in 0..3 {
                let Ok((sub, name)) = locate(&dir, &file.0) else {
                    break;
                };
                match fs::remove_file(dir.join(sub.name()).join(&name)) {
                    Ok(()) => {
                        removed.push(unique_of(&name).to_owned());
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if self.fsync && !removed.is_empty() {
            sync_dir(&dir.join("cur"))?;
        }
        self.remove_uids(&dir, &removed)
    }

    /// Puts a copy of `source` (named `name`) into `target/cur/` under a fresh unique
    /// name with the same flags (keyword letters rewritten by `relabel`): a hard link, or
    /// a byte copy through `tmp/` when linking across filesystems is impossible. Returns
    /// the new unique name.
    fn place_copy(
        &self,
        source: &Path,
        target: &Path,
        name: &str,
        relabel: Option<&Relabel>,
    ) -> Result<String, ImapStoreError> {
        let parsed = parse_name(name).ok_or(ImapStoreError::Gone)?;
        let letters = match relabel {
            Some((from, to)) => from.translate(parsed.flags, to),
            None => parsed.flags.to_owned(),
        };
        let size = match parsed.size {
            Some(size) => size,
            None => match fs::metadata(source) {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ImapStoreError::Gone),
                Err(e) => return Err(e.into()),
            },
        };
        for _ in 0..NAME_ATTEMPTS {
            let unique = self.next_unique();
            let new_name = format!("{}:2,{letters}", unique.file_name(size));
            let dest = target.join("cur").join(&new_name);
            match fs::hard_link(source, &dest) {
                Ok(()) => return Ok(unique_of(&new_name).to_owned()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ImapStoreError::Gone),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EXDEV | libc::EPERM | libc::EMLINK)
                    ) =>
                {
                    self.copy_bytes(source, target, &unique.file_name(0), &dest)?;
                    return Ok(unique_of(&new_name).to_owned());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free file name").into())
    }

    /// Copies `source` into `target/tmp/temp_name`, syncs it, keeps its mtime, and links
    /// it to `dest`.
    fn copy_bytes(
        &self,
        source: &Path,
        target: &Path,
        temp_name: &str,
        dest: &Path,
    ) -> Result<(), ImapStoreError> {
        let mut input = match File::open(source) {
            Ok(input) => input,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ImapStoreError::Gone),
            Err(e) => return Err(e.into()),
        };
        let modified = input.metadata()?.modified()?;
        let temp_path = target.join("tmp").join(temp_name);
        let result = (|| -> io::Result<()> {
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp_path)?;
            copy_stream(&mut input, &mut out)?;
            if self.fsync {
                out.sync_data()?;
            }
            out.set_modified(modified)?;
            fs::hard_link(&temp_path, dest)
        })();
        let _ = fs::remove_file(&temp_path);
        Ok(result?)
    }

    /// The keyword maps a COPY or MOVE from `source` to `target` translates letters
    /// with (RFC 3501 §6.4.7: the copy keeps its flags, keywords included), the names the
    /// messages carry defined in `target` first; `None` when letters stay as they are
    /// (the same folder, or a source without keywords). Called without the lock held.
    fn relabel(
        &self,
        source: &Path,
        target: &Path,
        files: &[MessageRef],
    ) -> Result<Option<Relabel>, ImapStoreError> {
        let from = read_keywords(source)?;
        if from.is_empty() || source == target {
            return Ok(None);
        }
        let mut used = Flags::default();
        for file in files {
            if let Ok((_, name)) = locate(source, &file.0) {
                let letters = parse_name(&name).map_or("", |p| p.flags);
                used.keywords |= Flags::from_maildir(letters).keywords;
            }
        }
        let names: Vec<&str> = used
            .keyword_letters()
            .filter_map(|letter| from.name_of(letter))
            .collect();
        let to = self.define_in(target, &names)?;
        Ok(Some((from, to)))
    }

    /// Lists the copies in the target's uidlist and pairs the UIDs.
    fn finish_copy(
        &self,
        target: &Path,
        added: Vec<(u32, String)>,
    ) -> Result<CopyOutcome, ImapStoreError> {
        let uniques: Vec<String> = added.iter().map(|(_, u)| u.clone()).collect();
        let (uidvalidity, uids) = self.add_uids(target, &uniques)?;
        let copied = added
            .iter()
            .zip(uids)
            .filter_map(|((from_uid, _), to_uid)| {
                to_uid.map(|to_uid| Copied {
                    from_uid: *from_uid,
                    to_uid,
                })
            })
            .collect();
        Ok(CopyOutcome {
            uidvalidity,
            copied,
        })
    }
}

/// The source and target folders' keyword maps of a COPY or MOVE.
type Relabel = (KeywordMap, KeywordMap);

/// `name` (a message file name) in `cur/` form with its keyword letters translated.
fn relabelled(name: &str, (from, to): &Relabel) -> Option<String> {
    let parsed = parse_name(name)?;
    let base = name.split_once(":2,").map_or(name, |(b, _)| b);
    let base = base.split_once(':').map_or(base, |(b, _)| b);
    Some(format!("{base}:2,{}", from.translate(parsed.flags, to)))
}

/// The UIDs of a list by unique name.
fn uid_index(list: UidList) -> HashMap<String, u32> {
    list.entries
        .into_iter()
        .map(|(uid, name)| (name, uid))
        .collect()
}

/// Copies everything from `input` to `out`; returns the byte count.
fn copy_stream(input: &mut impl Read, out: &mut File) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Seconds since the epoch as a `SystemTime` (dates before 1970 clamp to it).
fn system_time(seconds: i64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// Reads up to `max_len` bytes at `offset` with positioned reads.
fn read_at(file: &File, offset: u64, max_len: usize) -> Result<(Bytes, bool), ImapStoreError> {
    let len = file.metadata()?.len();
    let remaining = len.saturating_sub(offset);
    let want = usize::try_from(remaining).map_or(max_len, |r| r.min(max_len));
    let mut buf = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(filled);
    Ok((
        Bytes::from(buf),
        offset.saturating_add(filled as u64) >= len,
    ))
}

/// The rename of [`ImapMailboxes::set_flags`], following other sessions' renames.
fn rename_flags(dir: &Path, file: &MessageRef, flags: Flags) -> Result<MessageRef, ImapStoreError> {
    for _ in 0..3 {
        let (sub, name) = locate(dir, &file.0)?;
        let Some(parsed) = parse_name(&name) else {
            return Err(ImapStoreError::Gone);
        };
        let base = name.split_once(":2,").map_or(name.as_str(), |(b, _)| b);
        let base = base.split_once(':').map_or(base, |(b, _)| b);
        let new_name = format!("{base}:2,{}", flags.to_maildir(parsed.flags));
        if sub == Sub::Cur && new_name == name {
            return Ok(MessageRef(format!("cur/{name}")));
        }
        match fs::rename(
            dir.join(sub.name()).join(&name),
            dir.join("cur").join(&new_name),
        ) {
            Ok(()) => return Ok(MessageRef(format!("cur/{new_name}"))),
            // Renamed by another session meanwhile: look again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ImapStoreError::Gone)
}
