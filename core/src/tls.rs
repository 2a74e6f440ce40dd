//! TLS inside the core: rustls driven from memory, composed with any [`Session`].
//!
//! [`Secured`] sits between the shell and a protocol session. The shell moves only
//! ciphertext; the protocol session sees only plaintext. rustls is used through its
//! buffered API (`read_tls`/`process_new_packets`/`write_tls` on in-memory buffers), and
//! nothing outside this module names a rustls type except the server config, so the
//! coming rustls API change touches one file.

use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf as _, Bytes, BytesMut};
use rustls::{ServerConfig, ServerConnection};

use crate::io::{Action, MAX_READ, Peer, RequestId, Session};
use crate::request::Reply;

/// A protocol session wrapped in an optional server-side TLS layer.
///
/// Created plain (TLS may start later, when the session emits [`Action::StartTls`]) or
/// implicit (a TLS port: the first byte is a ClientHello).
pub struct Secured<S> {
    inner: S,
    config: Option<Arc<ServerConfig>>,
    tls: Option<Box<ServerConnection>>,
    /// Actions ready for the shell, in order.
    ready: std::collections::VecDeque<Action>,
    /// A TLS error or close ended the connection; only the final flush remains.
    failed: bool,
    /// Decrypted bytes the inner session did not want yet. One ciphertext read can
    /// complete an earlier record and carry several more, so this holds at most about
    /// two reads' worth; while it is not empty `wants_read` is false.
    pending_plain: BytesMut,
    /// The time of the latest event, for telling the inner session about a TLS failure
    /// found while polling.
    last_now: Option<Instant>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Secured<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secured")
            .field("inner", &self.inner)
            .field("tls_active", &self.tls.is_some())
            .field("failed", &self.failed)
            .finish()
    }
}

/// Why TLS could not be started.
#[derive(Debug)]
pub struct TlsSetupError(pub String);

impl<S: Session> Secured<S> {
    /// A plaintext session; `starttls` is the config used if the session asks for TLS.
    pub fn plain(inner: S, starttls: Option<Arc<ServerConfig>>) -> Self {
        Secured {
            inner,
            config: starttls,
            tls: None,
            ready: Default::default(),
            failed: false,
            pending_plain: BytesMut::new(),
            last_now: None,
        }
    }

    /// A session on an implicit-TLS port: TLS is active before the first byte.
    pub fn implicit(inner: S, config: Arc<ServerConfig>) -> Result<Self, TlsSetupError> {
        let conn = ServerConnection::new(config).map_err(|e| TlsSetupError(e.to_string()))?;
        Ok(Secured {
            inner,
            config: None,
            tls: Some(Box::new(conn)),
            ready: Default::default(),
            failed: false,
            pending_plain: BytesMut::new(),
            last_now: None,
        })
    }

    /// The wrapped protocol session.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// True once TLS is active on the connection.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Moves ciphertext rustls wants to send into the ready queue.
    fn collect_tls_output(&mut self) {
        let Some(tls) = self.tls.as_mut() else { return };
        let mut out = Vec::new();
        while tls.wants_write() {
            match tls.write_tls(&mut out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if !out.is_empty() {
            self.ready.push_back(Action::Write {
                to: Peer::Client,
                bytes: Bytes::from(out),
            });
        }
    }

    /// Encrypts `bytes` for the client. rustls takes plaintext only up to its buffer
    /// limit at a time, so the records made so far are moved out between writes: a
    /// reply longer than the limit (many pipelined commands answered at once) goes out
    /// whole instead of being cut mid-line. A write that makes no progress even after
    /// that ends the connection.
    fn write_secured(&mut self, mut bytes: &[u8]) {
        let mut drained = false;
        while !bytes.is_empty() {
            let Some(tls) = self.tls.as_mut() else {
                return self.fail();
            };
            match tls.writer().write(bytes) {
                Ok(n) if n > 0 => {
                    bytes = bytes.get(n..).unwrap_or_default();
                    drained = false;
                }
                Ok(_) if !drained => {
                    self.collect_tls_output();
                    drained = true;
                }
                Ok(_) | Err(_) => return self.fail(),
            }
        }
        self.collect_tls_output();
    }

    /// Ends the connection after a TLS error: flush the alert, then close.
    fn fail(&mut self) {
        self.collect_tls_output();
        if self.failed {
            return;
        }
        self.failed = true;
        // The protocol session must learn that the connection is gone so it can release
        // what it holds (an SMTP message file being received): its requests still go
        // out, its replies cannot.
        if let Some(now) = self.last_now {
            self.inner.handle_eof(now, Peer::Client);
            while let Some(action) = self.inner.poll_action() {
                if matches!(action, Action::Request { .. }) {
                    self.ready.push_back(action);
                }
            }
        }
        self.ready.push_back(Action::Close { to: Peer::Client });
    }

    /// Takes the inner session's next action and turns it into what the shell must do.
    fn translate(&mut self, action: Action) {
        match action {
            Action::Write {
                to: Peer::Client,
                bytes,
            } => match self.tls.as_mut() {
                None => self.ready.push_back(Action::Write {
                    to: Peer::Client,
                    bytes,
                }),
                Some(_) => self.write_secured(&bytes),
            },
            Action::StartTls { with: Peer::Client } => self.start_tls(),
            // Raw bytes cannot be spliced past a TLS session that ends here.
            Action::Splice { .. } if self.tls.is_some() => self.fail(),
            Action::Close { to: Peer::Client } => {
                if let Some(tls) = self.tls.as_mut() {
                    tls.send_close_notify();
                    self.collect_tls_output();
                }
                self.failed = true;
                self.ready.push_back(Action::Close { to: Peer::Client });
            }
            other => self.ready.push_back(other),
        }
    }

    /// Hands buffered plaintext to the inner session, at most [`MAX_READ`] bytes a call
    /// and only while it wants input, so the session's own limits hold under TLS too.
    fn feed_pending(&mut self, now: Instant) {
        while !self.pending_plain.is_empty() && !self.failed && self.inner.wants_read(Peer::Client)
        {
            let n = self.pending_plain.len().min(MAX_READ);
            self.inner
                .handle_input(now, Peer::Client, &self.pending_plain[..n]);
            self.pending_plain.advance(n);
        }
        if self.pending_plain.is_empty() {
            // Allocated again on demand: an idle connection keeps no plaintext buffer.
            self.pending_plain = BytesMut::new();
        }
    }

    fn start_tls(&mut self) {
        let conn = self
            .config
            .take()
            .and_then(|config| ServerConnection::new(config).ok());
        match conn {
            Some(conn) if self.tls.is_none() => self.tls = Some(Box::new(conn)),
            // The session only asks when we said STLS is available; anything else is a bug
            // we survive by closing.
            _ => self.fail(),
        }
    }
}

impl<S: Session> Session for Secured<S> {
    fn handle_input(&mut self, now: Instant, from: Peer, mut bytes: &[u8]) {
        self.last_now = Some(now);
        if self.failed {
            return;
        }
        // Only the client leg is secured here; a proxy's back-end leg has its own TLS.
        let Some(tls) = self.tls.as_mut().filter(|_| from == Peer::Client) else {
            return self.inner.handle_input(now, from, bytes);
        };
        let mut plain = [0u8; MAX_READ];
        while !bytes.is_empty() {
            if tls.read_tls(&mut bytes).is_err() {
                return self.fail();
            }
            if tls.process_new_packets().is_err() {
                // Sticky: the alert rustls queued is flushed by fail().
                return self.fail();
            }
            loop {
                match tls.reader().read(&mut plain) {
                    Ok(0) => break,
                    Ok(n) => self.pending_plain.extend_from_slice(&plain[..n]),
                    // WouldBlock: no more plaintext yet. Other errors: the peer closed
                    // uncleanly, which the shell's next read reports as EOF.
                    Err(_) => break,
                }
            }
        }
        self.collect_tls_output();
        self.feed_pending(now);
    }

    fn handle_eof(&mut self, now: Instant, from: Peer) {
        self.last_now = Some(now);
        if from == Peer::Client {
            self.pending_plain.clear();
        }
        self.inner.handle_eof(now, from)
    }

    fn handle_reply(&mut self, now: Instant, id: RequestId, reply: Reply) {
        self.last_now = Some(now);
        self.inner.handle_reply(now, id, reply);
        self.feed_pending(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        self.inner.handle_timeout(now);
        self.feed_pending(now);
    }

    fn handle_drained(&mut self, now: Instant, to: Peer) {
        self.last_now = Some(now);
        self.inner.handle_drained(now, to);
        self.feed_pending(now);
    }

    fn poll_action(&mut self) -> Option<Action> {
        loop {
            if let Some(action) = self.ready.pop_front() {
                return Some(action);
            }
            if self.failed {
                return None;
            }
            let action = self.inner.poll_action()?;
            self.translate(action);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.failed {
            return None;
        }
        self.inner.poll_timeout()
    }

    fn wants_read(&self, from: Peer) -> bool {
        let drained = from != Peer::Client || self.pending_plain.is_empty();
        !self.failed && drained && self.inner.wants_read(from)
    }

    fn account(&self) -> Option<&str> {
        self.inner.account()
    }

    fn handle_abort(&mut self, now: Instant) {
        self.inner.handle_abort(now)
    }

    fn handle_connected(&mut self, now: Instant, to: Peer, result: Result<(), String>) {
        self.last_now = Some(now);
        self.inner.handle_connected(now, to, result);
        self.feed_pending(now);
    }
}
