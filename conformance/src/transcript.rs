//! What a script run recorded: the transcript for failure reports and chunking
//! comparisons, and the failure report itself.

use std::fmt;
use std::path::PathBuf;

use crate::pattern::escape;

/// Who an event came from.
#[derive(Debug, Clone)]
pub(crate) enum Dir {
    /// Bytes the client sent.
    Client,
    /// Bytes the server sent.
    Server,
    /// A remark of the interpreter.
    Note,
}

/// Everything a run sent and received, for reports and chunking comparisons.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    events: Vec<(usize, Dir, Vec<u8>)>,
    /// All server plaintext the client read, with connection and close markers: two runs
    /// of one script must produce the same.
    pub server_bytes: Vec<u8>,
}

impl Transcript {
    pub(crate) fn push(&mut self, line: usize, dir: Dir, bytes: &[u8]) {
        self.events.push((line, dir, bytes.to_vec()));
    }

    pub(crate) fn note(&mut self, line: usize, text: String) {
        self.events.push((line, Dir::Note, text.into_bytes()));
    }

    /// The last `max` events, one per line: `  12 C: USER alice\r\n`.
    pub fn render(&self, max: usize) -> String {
        let skip = self.events.len().saturating_sub(max);
        let mut out = String::new();
        if skip > 0 {
            out.push_str(&format!("  ... {skip} earlier events\n"));
        }
        for (line, dir, bytes) in &self.events[skip..] {
            let tag = match dir {
                Dir::Client => "C:",
                Dir::Server => "S:",
                Dir::Note => "--",
            };
            let mut text = match dir {
                Dir::Note => String::from_utf8_lossy(bytes).into_owned(),
                _ => escape(bytes),
            };
            if text.len() > 160 {
                let mut cut = 150;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text = format!("{}... ({} bytes)", &text[..cut], bytes.len());
            }
            out.push_str(&format!("  {line:>4} {tag} {text}\n"));
        }
        out
    }
}

/// A script that did not pass: where, why, and what happened before.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The script file.
    pub path: PathBuf,
    /// The script line of the failing step (0: not tied to a line).
    pub line: usize,
    /// Which driver (and chunking) ran it.
    pub driver: String,
    /// What went wrong.
    pub message: String,
    /// The end of the transcript.
    pub transcript: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}:{}: [{}] {}",
            self.path.display(),
            self.line,
            self.driver,
            self.message
        )?;
        write!(f, "{}", self.transcript)
    }
}
