//! Runs one script against any target through the [`Server`]/[`Conn`] traits, keeping a
//! transcript for failure reports and for comparing runs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::memstore::MemStore;
use crate::pattern::{Pattern, escape};
use crate::script::{Script, Step, StepKind};

/// What the client read next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// One line, with the line end the server sent (normally CRLF).
    Line(Vec<u8>),
    /// The server closed the connection; `leftover` holds bytes after the last line end.
    Closed {
        /// Unterminated bytes before the close (a TLS alert on a raw connection).
        leftover: Vec<u8>,
    },
}

/// The client end of one connection, as a driver provides it.
pub trait Conn {
    /// Sends bytes (plaintext; encrypted by the connection once TLS is on).
    fn send(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// Sends `len` copies of `byte`, in blocks.
    fn send_bulk(&mut self, len: usize, byte: u8) -> Result<(), String> {
        let block = vec![byte; len.min(64 * 1024)];
        let mut left = len;
        while left > 0 {
            let n = left.min(block.len());
            self.send(&block[..n])?;
            left -= n;
        }
        Ok(())
    }
    /// The next server line or the close; an error if nothing arrives in time.
    fn read_line(&mut self) -> Result<Received, String>;
    /// Runs the client side of a TLS handshake; later bytes are encrypted.
    fn start_tls(&mut self) -> Result<(), String>;
    /// Closes the client's sending side (EOF for the server).
    fn shutdown_write(&mut self) -> Result<(), String>;
    /// Advances virtual time; drivers on real time refuse.
    fn advance(&mut self, by: Duration) -> Result<(), String>;
    /// Server bytes already received but not read by the script.
    fn unread(&mut self) -> Vec<u8>;
}

/// A target that accepts connections for the duration of one script run.
pub trait Server {
    /// Opens a connection; `raw` skips the handshake on an implicit-TLS listener.
    fn connect(&mut self, raw: bool) -> Result<Box<dyn Conn>, String>;
}

#[derive(Debug, Clone)]
enum Dir {
    Client,
    Server,
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
    fn push(&mut self, line: usize, dir: Dir, bytes: &[u8]) {
        self.events.push((line, dir, bytes.to_vec()));
    }

    fn note(&mut self, line: usize, text: String) {
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

/// Runs `script` against `server`, setting up `store` as the script says.
///
/// Returns the transcript; a failure carries the failing line and the transcript so far.
pub fn execute(
    script: &Script,
    driver: &str,
    server: &mut dyn Server,
    store: &MemStore,
) -> Result<Transcript, Failure> {
    let mut run = Run {
        transcript: Transcript::default(),
        conn: None,
        added: BTreeMap::new(),
    };
    let mut last_line = 0;
    for step in &script.steps {
        last_line = step.line;
        if let Err(message) = run.step(step, server, store) {
            return Err(run.failure(script, driver, step.line, message));
        }
    }
    if let Some(conn) = run.conn.as_mut() {
        let unread = conn.unread();
        if !unread.is_empty() {
            let message = format!(
                "the script ended but the server sent more: {}",
                escape(&unread[..unread.len().min(200)])
            );
            return Err(run.failure(script, driver, last_line, message));
        }
    }
    Ok(run.transcript)
}

struct Run {
    transcript: Transcript,
    conn: Option<Box<dyn Conn>>,
    /// Each user's scripted messages, for `@expect-message`.
    added: BTreeMap<String, Vec<Vec<u8>>>,
}

impl Run {
    fn failure(&self, script: &Script, driver: &str, line: usize, message: String) -> Failure {
        Failure {
            path: script.path.clone(),
            line,
            driver: driver.to_owned(),
            message,
            transcript: self.transcript.render(60),
        }
    }

    fn conn(&mut self, line: usize, server: &mut dyn Server) -> Result<&mut dyn Conn, String> {
        if self.conn.is_none() {
            self.connect(line, server, false)?;
        }
        Ok(self.conn.as_deref_mut().expect("connected above"))
    }

    fn connect(&mut self, line: usize, server: &mut dyn Server, raw: bool) -> Result<(), String> {
        self.conn = None; // dropping the old connection closes it
        self.transcript
            .note(line, format!("connect{}", if raw { " raw" } else { "" }));
        self.transcript
            .server_bytes
            .extend_from_slice(b"[connect]\n");
        self.conn = Some(server.connect(raw)?);
        Ok(())
    }

    fn step(
        &mut self,
        step: &Step,
        server: &mut dyn Server,
        store: &MemStore,
    ) -> Result<(), String> {
        let line = step.line;
        match &step.kind {
            StepKind::AddUser {
                name,
                password,
                nologin,
            } => store.add_user(name, password, *nologin),
            StepKind::AddMessage { user, bytes } => {
                store.add_message(user, bytes.clone());
                self.added
                    .entry(user.clone())
                    .or_default()
                    .push(bytes.clone());
            }
            StepKind::Vanish { user, number } => {
                store.vanish(user.as_deref(), *number)?;
                self.transcript
                    .note(line, format!("message {number} vanished"));
            }
            StepKind::Connect { raw } => self.connect(line, server, *raw)?,
            StepKind::Send(bytes) => {
                self.transcript.push(line, Dir::Client, bytes);
                self.conn(line, server)?.send(bytes)?;
            }
            StepKind::SendBulk { len, byte } => {
                self.transcript
                    .note(line, format!("client sends {len} x {}", escape(&[*byte])));
                self.conn(line, server)?.send_bulk(*len, *byte)?;
            }
            StepKind::Expect(pattern) => self.expect_line(line, server, pattern)?,
            StepKind::ExpectMessage { user, number } => {
                let message = self
                    .added
                    .get(user)
                    .and_then(|m| m.get(number - 1))
                    .ok_or_else(|| format!("the script added no message {number} for {user}"))?
                    .clone();
                let expected = stuffed_lines(&message);
                self.transcript.note(
                    line,
                    format!(
                        "expecting {user}'s message {number}: {} lines",
                        expected.len()
                    ),
                );
                for (i, want) in expected.iter().enumerate() {
                    let got = self.read(line, server, false)?;
                    if &got != want {
                        return Err(format!(
                            "message line {} differs: expected {}, got {}",
                            i + 1,
                            escape(want),
                            escape(&got)
                        ));
                    }
                }
            }
            StepKind::ExpectClose { any } => {
                let received = self.conn(line, server)?.read_line()?;
                match received {
                    Received::Closed { leftover } if leftover.is_empty() || *any => {
                        self.transcript.note(line, "server closed".into());
                        self.transcript.server_bytes.extend_from_slice(b"[close]\n");
                    }
                    Received::Closed { leftover } => {
                        return Err(format!(
                            "expected the server to close; it sent an unterminated line first: {}",
                            escape(&leftover)
                        ));
                    }
                    Received::Line(l) => {
                        self.transcript.push(line, Dir::Server, &l);
                        return Err(format!(
                            "expected the server to close; it sent {}",
                            escape(&l)
                        ));
                    }
                }
            }
            StepKind::StartTls => {
                self.transcript.note(line, "client starts TLS".into());
                self.conn(line, server)?.start_tls()?;
            }
            StepKind::Eof => {
                self.transcript.note(line, "client closes its side".into());
                self.conn(line, server)?.shutdown_write()?;
            }
            StepKind::Tick(by) => {
                self.transcript.note(line, format!("time passes: {by:?}"));
                self.conn(line, server)?.advance(*by)?;
            }
        }
        Ok(())
    }

    /// Reads one line (with its line end), recording it; a close is an error.
    fn read(
        &mut self,
        line: usize,
        server: &mut dyn Server,
        record: bool,
    ) -> Result<Vec<u8>, String> {
        match self.conn(line, server)?.read_line()? {
            Received::Line(l) => {
                if record {
                    self.transcript.push(line, Dir::Server, &l);
                }
                self.transcript.server_bytes.extend_from_slice(&l);
                Ok(l)
            }
            Received::Closed { leftover } => {
                self.transcript.note(line, "server closed".into());
                Err(format!(
                    "expected a line; the server closed the connection{}",
                    if leftover.is_empty() {
                        String::new()
                    } else {
                        format!(" after {}", escape(&leftover))
                    }
                ))
            }
        }
    }

    fn expect_line(
        &mut self,
        line: usize,
        server: &mut dyn Server,
        pattern: &Pattern,
    ) -> Result<(), String> {
        let got = self.read(line, server, true)?;
        let Some(text) = got.strip_suffix(b"\r\n") else {
            return Err(format!(
                "the server line is not CRLF-terminated: {}",
                escape(&got)
            ));
        };
        if !pattern.matches(text) {
            return Err(format!("expected `{pattern}`, got `{}`", escape(text)));
        }
        Ok(())
    }
}

/// The lines a correct server sends for `message` in RETR (RFC 1939 §3): each CRLF line
/// with a leading dot doubled, a final line without CRLF completed, then `.`.
pub fn stuffed_lines(message: &[u8]) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let (line, next) = match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => (&rest[..i], &rest[i + 2..]),
            None => (rest, &rest[rest.len()..]),
        };
        let mut out = Vec::with_capacity(line.len() + 3);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        lines.push(out);
        rest = next;
    }
    lines.push(b".\r\n".to_vec());
    lines
}

#[cfg(test)]
mod tests {
    use super::stuffed_lines;

    #[test]
    fn oracle_stuffs_and_terminates() {
        let lines = stuffed_lines(b"a\r\n.b\r\n..\r\nend");
        let want: Vec<&[u8]> = vec![b"a\r\n", b"..b\r\n", b"...\r\n", b"end\r\n", b".\r\n"];
        assert_eq!(lines, want);
        assert_eq!(stuffed_lines(b""), vec![b".\r\n".to_vec()]);
    }
}
