//! Fuzz seeds from conformance runs, written only when `TIDEGATE_WRITE_SEEDS=1`.
//!
//! The `pop3_session` fuzz target does not take raw client bytes but a script of shell
//! events (`tidegate_core::fuzzing::pop3_session`: `>` line, `+` line, `-` partial line,
//! `Y n` overlong line, `A k` store reply, `D` drained, `T b` time, `E` EOF). The core
//! driver records the first connection of each script's whole-write run in that form
//! ([`SeedLog`]), so the seeds replay what the conformance run did, client bytes and
//! store answers alike. Files are named `seed-conf-<script>` so they never overwrite
//! the hand-written `seed-*` files beside them.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use tidegate_core::{Failure, Reply};

/// `fuzz/corpus/pop3_session/` in the workspace.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/pop3_session")
}

/// Whether `TIDEGATE_WRITE_SEEDS=1`.
pub fn enabled() -> bool {
    std::env::var("TIDEGATE_WRITE_SEEDS").as_deref() == Ok("1")
}

/// Writes `bytes` to `seed-conf-<script>` in [`corpus_dir`]. A write error is reported
/// on stderr, not fatal: seeds are a by-product.
pub fn write(script: &str, bytes: &[u8]) {
    let dir = corpus_dir();
    let path = dir.join(format!("seed-conf-{script}"));
    let result = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, bytes));
    if let Err(e) = result {
        eprintln!("cannot write fuzz seed {}: {e}", path.display());
    }
}

/// A session's events in the `pop3_session` harness format. Clones share one buffer.
#[derive(Debug, Clone, Default)]
pub struct SeedLog(Rc<RefCell<Vec<u8>>>);

impl SeedLog {
    /// A log that starts with the connection byte: bit 1 STLS available, bit 2 plaintext
    /// login refused.
    pub fn new(starttls_available: bool, plaintext_refused: bool) -> Self {
        let byte = u8::from(starttls_available) << 1 | u8::from(plaintext_refused) << 2;
        SeedLog(Rc::new(RefCell::new(vec![b'0' | byte])))
    }

    /// The script so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.borrow().clone()
    }

    fn push(&self, bytes: &[u8]) {
        self.0.borrow_mut().extend_from_slice(bytes);
    }

    /// Client bytes in one write: pipelined lines (`+`), the last one read (`>`), and an
    /// unfinished line (`-`, then `P` to read it).
    pub fn client(&self, mut bytes: &[u8]) {
        while let Some(lf) = bytes.iter().position(|&b| b == b'\n') {
            let last = lf + 1 == bytes.len();
            self.push(if last { b">" } else { b"+" });
            self.push(&bytes[..=lf]);
            bytes = &bytes[lf + 1..];
        }
        if !bytes.is_empty() {
            self.push(b"-");
            self.push(bytes);
            self.push(b"\nP");
        }
    }

    /// `len` bytes of one repeated byte: an overlong line of `x` (`Y n`), then a read.
    pub fn bulk(&self, len: usize) {
        let blocks = (len / 128).clamp(1, 256);
        self.push(&[b'Y', (blocks - 1) as u8, b'P']);
    }

    /// The store's answer (`A k`).
    pub fn reply(&self, reply: &Reply) {
        let kind = match reply {
            Reply::Authenticated(_) => b'a',
            Reply::Listing(list) => b'0' + list.len().min(3) as u8,
            Reply::Chunk { .. } => b'm',
            Reply::Done => b'o',
            Reply::Failed(Failure::Denied) => b'd',
            Reply::Failed(Failure::Disabled) => b'x',
            Reply::Failed(Failure::Gone) => b'g',
            Reply::Failed(Failure::InUse) => b'i',
            Reply::Failed(Failure::Permanent(_)) => b'p',
            _ => b't',
        };
        self.push(&[b'A', kind]);
    }

    /// The client read everything (`D`).
    pub fn drained(&self) {
        self.push(b"D");
    }

    /// The client closed its side (`E`).
    pub fn eof(&self) {
        self.push(b"E");
    }

    /// Time passes (`T b`, b seconds per step; the digits `0`-`9` mean milliseconds
    /// there, so steps stay below 48 s).
    pub fn time(&self, by: Duration) {
        let mut secs = by.as_secs().max(1);
        while secs > 0 {
            let step = secs.min(47);
            self.push(&[b'T', step as u8]);
            secs -= step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SeedLog;
    use std::time::Duration;

    #[test]
    fn events_in_harness_form() {
        let log = SeedLog::new(true, false);
        log.client(b"USER a\r\nPASS b\r\n");
        log.client(b"NOOP ");
        log.time(Duration::from_secs(100));
        log.eof();
        assert_eq!(
            log.bytes(),
            b"2+USER a\r\n>PASS b\r\n-NOOP \nPT\x2fT\x2fT\x06E".to_vec()
        );
    }
}
