//! The client side of [`CoreConn`]: what a script's steps do to an in-process session.

use std::time::Duration;

use tidegate_core::{Peer, Session as _};

use super::CoreConn;
use crate::interp::{Conn, Received};

impl Conn for CoreConn {
    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.log(|seed| seed.client(bytes));
        let wire = self.encrypt(bytes)?;
        self.deliver(&wire)?;
        self.check_violation()
    }

    fn send_bulk(&mut self, len: usize, byte: u8) -> Result<(), String> {
        let seed = self.seed.take();
        if let Some(seed) = &seed {
            seed.bulk(len);
        }
        let block = vec![byte; len.min(64 * 1024)];
        let mut left = len;
        let mut result = Ok(());
        while left > 0 && result.is_ok() {
            let n = left.min(block.len());
            result = self.send(&block[..n]);
            left -= n;
        }
        self.seed = seed;
        result
    }

    fn read_line(&mut self) -> Result<Received, String> {
        for _ in 0..100 {
            self.check_violation()?;
            if let Some(end) = self.inbox[self.read_pos..].iter().position(|&b| b == b'\n') {
                let line = self.inbox[self.read_pos..=self.read_pos + end].to_vec();
                self.read_pos += end + 1;
                if self.read_pos > 64 * 1024 {
                    // Forget what was read, in bulk, so reading stays linear.
                    self.inbox.drain(..self.read_pos);
                    self.read_pos = 0;
                }
                return Ok(Received::Line(line));
            }
            if self.closed {
                return Ok(Received::Closed {
                    leftover: self.take_unread(),
                });
            }
            if !self.fire_short_timer() {
                break;
            }
        }
        let next = self
            .session
            .poll_timeout()
            .map(|at| format!("{:?} away", at.saturating_duration_since(self.now())));
        Err(format!(
            "the server sent nothing more (next timer: {})",
            next.as_deref().unwrap_or("none")
        ))
    }

    fn expect_quiet(&mut self) -> Result<(), String> {
        self.pump();
        self.check_violation()?;
        if self.pending() > 0 {
            let unread = &self.inbox[self.read_pos..];
            return Err(format!(
                "expected silence; the server sent {}",
                crate::pattern::escape(&unread[..unread.len().min(200)])
            ));
        }
        if self.closed {
            return Err("expected silence; the server closed the connection".into());
        }
        Ok(())
    }

    fn start_tls(&mut self) -> Result<(), String> {
        if self.tls.is_some() {
            return Err("TLS is already on".into());
        }
        if self.pending() > 0 {
            return Err("plaintext arrived after the go-ahead, before the handshake".into());
        }
        self.tls = Some(self.pki.client_connection());
        for _ in 0..50 {
            self.check_violation()?;
            let tls = self.tls.as_mut().expect("set above");
            let mut out = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut out).map_err(|e| e.to_string())?;
            }
            let handshaking = tls.is_handshaking();
            if !out.is_empty() {
                self.deliver(&out)?;
            }
            if !handshaking {
                // Our last flight (Finished) went out above.
                return self.check_violation();
            }
            if out.is_empty() || self.closed {
                return Err("the TLS handshake stalled or the server closed".into());
            }
        }
        Err("the TLS handshake did not finish".into())
    }

    fn shutdown_write(&mut self) -> Result<(), String> {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let notify = self.encrypt(b"")?;
            self.deliver(&notify)?;
        }
        self.log(|seed| seed.eof());
        if !self.closed {
            self.session.handle_eof(self.now(), Peer::Client);
            self.pump();
        }
        self.check_violation()
    }

    fn advance(&mut self, by: Duration) -> Result<(), String> {
        self.log(|seed| seed.time(by));
        self.clock.set(self.now() + by);
        if !self.closed {
            self.session.handle_timeout(self.now());
            self.pump();
        }
        self.check_violation()
    }

    fn unread(&mut self) -> Vec<u8> {
        self.pump();
        self.take_unread()
    }
}
