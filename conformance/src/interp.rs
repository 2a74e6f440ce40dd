//! Runs one script against any target through the [`Server`]/[`Conn`] traits, keeping a
//! transcript for failure reports and for comparing runs.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::Protocol;
use crate::memstore::MemStore;
use crate::pattern::{Pattern, escape};
use crate::script::{Script, Step, StepKind, big_message, dot_stuff};
use crate::store_steps;
use crate::transcript::Dir;
pub use crate::transcript::{Failure, Transcript};

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
    /// An error if the server sends anything now (core: without time passing; real
    /// time: within a short wait).
    fn expect_quiet(&mut self) -> Result<(), String>;
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
    /// Opens a connection to the `protocol` listener; `raw` skips the handshake on an
    /// implicit-TLS listener.
    fn connect(&mut self, raw: bool, protocol: Protocol) -> Result<Box<dyn Conn>, String>;
    /// How long store effects of a closed connection may take to show (a shell runs the
    /// abort of a dropped delivery after the socket closed); zero for the core driver.
    fn patience(&self) -> Duration {
        Duration::ZERO
    }
}

/// Runs `script` against `server`, setting up `store` as the script says.
///
/// After the last step the connection is closed, and no delivery may be left open in
/// the store. Returns the transcript; a failure carries the failing line and the
/// transcript so far.
pub fn execute(
    script: &Script,
    driver: &str,
    server: &mut dyn Server,
    store: &MemStore,
) -> Result<Transcript, Failure> {
    let mut run = Run {
        transcript: Transcript::default(),
        conn: None,
        protocol: script.config.protocol,
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
    run.conn = None; // the client goes away
    if let Err(message) = store_steps::settled(store, server.patience()) {
        return Err(run.failure(script, driver, last_line, message));
    }
    Ok(run.transcript)
}

struct Run {
    transcript: Transcript,
    conn: Option<Box<dyn Conn>>,
    /// The script's protocol: where a connection goes unless `@connect` names another.
    protocol: Protocol,
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
            self.connect(line, server, false, self.protocol)?;
        }
        Ok(self.conn.as_deref_mut().expect("connected above"))
    }

    fn connect(
        &mut self,
        line: usize,
        server: &mut dyn Server,
        raw: bool,
        protocol: Protocol,
    ) -> Result<(), String> {
        self.conn = None; // dropping the old connection closes it
        self.transcript.note(
            line,
            format!("connect {protocol}{}", if raw { " raw" } else { "" }),
        );
        self.transcript
            .server_bytes
            .extend_from_slice(b"[connect]\n");
        self.conn = Some(server.connect(raw, protocol)?);
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
            StepKind::Quota { user, bytes } => store.set_quota(user, *bytes),
            StepKind::StoreFail(kind) => store.fail_next(*kind),
            StepKind::Vanish { user, number } => {
                store.vanish(user.as_deref(), *number)?;
                self.transcript
                    .note(line, format!("message {number} vanished"));
            }
            StepKind::Connect { raw, protocol } => {
                self.connect(line, server, *raw, protocol.unwrap_or(self.protocol))?
            }
            StepKind::Send(bytes) => {
                self.transcript.push(line, Dir::Client, bytes);
                self.conn(line, server)?.send(bytes)?;
            }
            StepKind::SendBulk { len, byte } => {
                self.transcript
                    .note(line, format!("client sends {len} x {}", escape(&[*byte])));
                self.conn(line, server)?.send_bulk(*len, *byte)?;
            }
            StepKind::SendData(size) => {
                let data = dot_stuff(&big_message(*size));
                self.transcript.note(
                    line,
                    format!("client sends a {size}-byte message, dot-stuffed"),
                );
                self.conn(line, server)?.send(&data)?;
            }
            StepKind::Expect(pattern) => self.expect_line(line, server, pattern)?,
            StepKind::ExpectQuiet => {
                self.transcript.note(line, "expecting silence".into());
                self.conn(line, server)?.expect_quiet()?;
            }
            StepKind::ExpectMessage { user, number } => {
                let message = self
                    .added
                    .get(user)
                    .and_then(|m| m.get(number - 1))
                    .ok_or_else(|| format!("the script added no message {number} for {user}"))?
                    .clone();
                self.expect_retr(line, server, user, *number, &message)?;
            }
            StepKind::ExpectRetr { user, number } => {
                let message = store_steps::stored(store, user, *number)?;
                self.expect_retr(line, server, user, *number, &message)?;
            }
            StepKind::ExpectStored {
                user,
                number,
                pattern,
            } => store_steps::expect_stored(store, user, *number, pattern)?,
            StepKind::ExpectStoredBig { user, number, size } => {
                store_steps::expect_stored_big(store, user, *number, *size)?
            }
            StepKind::ExpectMailbox { user, count } => {
                store_steps::expect_mailbox(store, user, *count)?
            }
            StepKind::ExpectAborted(count) => {
                store_steps::expect_aborted(store, *count, server.patience())?
            }
            StepKind::ExpectClose { any } => self.expect_close(line, server, *any)?,
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

    /// The lines of a RETR of `message`: dot-stuffed, then `.`.
    fn expect_retr(
        &mut self,
        line: usize,
        server: &mut dyn Server,
        user: &str,
        number: usize,
        message: &[u8],
    ) -> Result<(), String> {
        let expected = stuffed_lines(message);
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
        Ok(())
    }

    fn expect_close(
        &mut self,
        line: usize,
        server: &mut dyn Server,
        any: bool,
    ) -> Result<(), String> {
        match self.conn(line, server)?.read_line()? {
            Received::Closed { leftover } if leftover.is_empty() || any => {
                self.transcript.note(line, "server closed".into());
                self.transcript.server_bytes.extend_from_slice(b"[close]\n");
                Ok(())
            }
            Received::Closed { leftover } => Err(format!(
                "expected the server to close; it sent an unterminated line first: {}",
                escape(&leftover)
            )),
            Received::Line(l) => {
                self.transcript.push(line, Dir::Server, &l);
                Err(format!(
                    "expected the server to close; it sent {}",
                    escape(&l)
                ))
            }
        }
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
