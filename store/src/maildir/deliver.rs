//! NFS-safe delivery by the Maildir convention: write the message once into the first
//! recipient's `tmp/`, fsync it, then `link(2)` it into every recipient's `new/` under
//! its final name (`TIME.M<usec>P<pid>Q<counter>.<host>,S=<size>`), fsync each `new/`,
//! and unlink the tmp file. Link and rename are atomic on NFS, so a reader never sees a
//! partial message.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tidegate_core::Account;
use tidegate_core::maildir::UniqueName;

use super::{MaildirStore, StoreError, make_dir, sync_dir};

/// Deliveries by this process so far: the `Q` part of unique names.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Bytes read from the input at a time; the converted output is at most twice this.
const READ_BUF: usize = 64 * 1024;

/// Attempts at a fresh tmp/ name before giving up (a clash means a clock or pid reuse).
const NAME_ATTEMPTS: usize = 5;

/// Turns bare LF line ends into CRLF (RFC 5322 §2.1 line ends, as POP3 serves them
/// byte for byte) on a stream split anywhere; CRLF and lone CR pass unchanged.
#[derive(Debug, Default, Clone)]
pub struct LfToCrlf {
    prev_cr: bool,
}

impl LfToCrlf {
    /// A converter at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `input`, converted, to `out` (which grows by at most `2 * input.len()`).
    pub fn convert(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut start = 0;
        let mut prev_cr = self.prev_cr;
        for (i, &byte) in input.iter().enumerate() {
            if byte == b'\n' && !prev_cr {
                out.extend_from_slice(&input[start..i]);
                out.extend_from_slice(b"\r\n");
                start = i + 1;
            }
            prev_cr = byte == b'\r';
        }
        out.extend_from_slice(&input[start..]);
        self.prev_cr = prev_cr;
    }
}

/// Removes the tmp/ file when delivery ends, however it ends.
struct TmpFile(PathBuf);

impl Drop for TmpFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != io::ErrorKind::NotFound
        {
            log::warn!("could not remove {}: {e}", self.0.display());
        }
    }
}

impl MaildirStore {
    /// Delivers one message to every recipient's inbox, all or nothing, converting bare LF
    /// to CRLF while streaming (memory stays bounded whatever the size). Missing
    /// `tmp/ new/ cur/` folders are created (mode 0700). Returns the file name given in
    /// every `new/`. Recipients sharing a maildir get one copy.
    pub fn deliver(
        &self,
        recipients: &[Account],
        mut reader: impl Read,
    ) -> Result<String, StoreError> {
        let mut dirs: Vec<PathBuf> = Vec::with_capacity(recipients.len());
        for account in recipients {
            let dir = self.mailbox_dir(account)?;
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        let Some(first) = dirs.first() else {
            return Err(StoreError::InvalidAccount);
        };
        for dir in &dirs {
            for sub in ["tmp", "new", "cur"] {
                make_dir(&dir.join(sub))?;
            }
        }
        let (unique, tmp, file) = self.create_tmp(first)?;
        let size = copy_converted(&mut reader, &file)?;
        if self.fsync {
            file.sync_all()?;
        }
        drop(file);
        let name = unique.file_name(size);
        let mut placed = Vec::with_capacity(dirs.len());
        let mut outcome = Ok(());
        for dir in &dirs {
            match self.place(&tmp.0, dir, &name) {
                Ok(path) => placed.push(path),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        if outcome.is_ok() && self.fsync {
            outcome = dirs.iter().try_for_each(|dir| sync_dir(&dir.join("new")));
        }
        if let Err(e) = outcome {
            for path in &placed {
                if let Err(e) = std::fs::remove_file(path) {
                    log::error!("delivery rollback: cannot remove {}: {e}", path.display());
                }
            }
            return Err(e.into());
        }
        Ok(name)
    }

    fn next_unique(&self) -> UniqueName {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        UniqueName {
            seconds: now.as_secs(),
            micros: now.subsec_micros(),
            pid: std::process::id(),
            counter: COUNTER.fetch_add(1, Ordering::Relaxed),
            host: self.host.clone(),
        }
    }

    /// Opens a new file in `<dir>/tmp/` named by a fresh unique name.
    fn create_tmp(&self, dir: &Path) -> Result<(UniqueName, TmpFile, File), StoreError> {
        for _ in 0..NAME_ATTEMPTS {
            let unique = self.next_unique();
            let full = unique.file_name(0);
            let base = full.strip_suffix(",S=0").unwrap_or(&full);
            let path = dir.join("tmp").join(base);
            match new_file(&path) {
                Ok(file) => return Ok((unique, TmpFile(path), file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Io(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free unique name in tmp/",
        )))
    }

    /// Puts the finished tmp file into `<dir>/new/<name>`: a hard link, or a copy through
    /// `<dir>/tmp/` and a rename when the maildirs are on different filesystems.
    fn place(&self, tmp: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
        let target = dir.join("new").join(name);
        match std::fs::hard_link(tmp, &target) {
            Ok(()) => Ok(target),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::CrossesDevices | io::ErrorKind::Unsupported
                ) =>
            {
                let staging = dir.join("tmp").join(name);
                let copied = self.copy_file(tmp, &staging);
                let renamed = copied.and_then(|()| std::fs::rename(&staging, &target));
                if renamed.is_err() {
                    let _ = std::fs::remove_file(&staging);
                }
                renamed.map(|()| target)
            }
            Err(e) => Err(e),
        }
    }

    fn copy_file(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut source = File::open(from)?;
        let mut dest = new_file(to)?;
        io::copy(&mut source, &mut dest)?;
        if self.fsync {
            dest.sync_all()?;
        }
        Ok(())
    }
}

/// Creates a file that must not exist yet, readable by the owner only.
fn new_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Streams `reader` into `file` with LF → CRLF; returns the bytes written.
fn copy_converted(reader: &mut impl Read, mut file: &File) -> io::Result<u64> {
    let mut input = vec![0u8; READ_BUF];
    let mut out = Vec::with_capacity(2 * READ_BUF);
    let mut converter = LfToCrlf::new();
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut input) {
            Ok(0) => return Ok(size),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.clear();
        converter.convert(&input[..n], &mut out);
        file.write_all(&out)?;
        size += out.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::LfToCrlf;

    fn convert_split(input: &[u8], at: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut c = LfToCrlf::new();
        let (a, b) = input.split_at(at);
        c.convert(a, &mut out);
        c.convert(b, &mut out);
        out
    }

    #[test]
    fn bare_lf_becomes_crlf_wherever_the_input_is_split() {
        let input = b"a\nb\r\nc\rd\n\n";
        for at in 0..=input.len() {
            assert_eq!(
                convert_split(input, at),
                b"a\r\nb\r\nc\rd\r\n\r\n",
                "split at {at}"
            );
        }
    }
}
