//! Moving bytes both ways after the login when the shell cannot splice: the client leg
//! is TLS terminated by [`crate::tls::Secured`], or the back-end leg is TLS terminated
//! here.
//!
//! Bounded both ways: the session stops reading from one peer while more than
//! `high_water` bytes it forwarded to the other are not yet drained.

use bytes::Bytes;

use super::backend::BackendLeg;
use super::backend_tls::BackendTls;
use crate::io::{Action, Peer};
use crate::outbox::Outbox;
use crate::wire::LineBuffer;

/// The relay state of one front-end session after the hand-over.
#[derive(Debug)]
pub(crate) struct Relay {
    /// TLS on the back-end leg, if any.
    tls: Option<BackendTls>,
    /// Bytes written to the back-end and not yet drained.
    backend_backlog: usize,
    /// The drain mark for both directions.
    high_water: usize,
}

impl Relay {
    pub(crate) fn new(tls: Option<BackendTls>, high_water: usize) -> Self {
        Relay {
            tls,
            backend_backlog: 0,
            high_water,
        }
    }

    /// Client bytes (plaintext: `Secured` decrypted them) go to the back-end.
    pub(crate) fn client_bytes(&mut self, io: &mut Outbox, bytes: &[u8]) -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        let out = match self.tls.as_mut() {
            None => Some(Bytes::copy_from_slice(bytes)),
            Some(tls) => {
                tls.write(bytes)?;
                tls.take_output()
            }
        };
        if let Some(bytes) = out {
            self.backend_backlog += bytes.len();
            io.push(Action::Write {
                to: Peer::Backend,
                bytes,
            });
        }
        Ok(())
    }

    /// Back-end bytes go to the client (decrypted first when the back-end leg is TLS).
    pub(crate) fn backend_bytes(&mut self, io: &mut Outbox, bytes: &[u8]) -> Result<(), String> {
        match self.tls.as_mut() {
            None => io.out.extend_from_slice(bytes),
            Some(tls) => {
                let mut plain = Vec::new();
                let result = tls.read(bytes, &mut plain);
                if let Some(out) = tls.take_output() {
                    self.backend_backlog += out.len();
                    io.push(Action::Write {
                        to: Peer::Backend,
                        bytes: out,
                    });
                }
                result?;
                io.out.extend_from_slice(&plain);
            }
        }
        io.flush();
        Ok(())
    }

    /// The shell drained what was written to `to`.
    pub(crate) fn drained(&mut self, io: &mut Outbox, to: Peer) {
        match to {
            Peer::Client => io.drained(),
            Peer::Backend => self.backend_backlog = 0,
        }
    }

    /// Backpressure: read from a peer only while the other side keeps up.
    pub(crate) fn wants_read(&self, io: &Outbox, from: Peer) -> bool {
        match from {
            Peer::Client => self.backend_backlog < self.high_water,
            Peer::Backend => io.backlog() < self.high_water,
        }
    }

    /// Closes both legs: close_notify to a TLS back-end, then both closes.
    pub(crate) fn close(&mut self, io: &mut Outbox) {
        if let Some(tls) = self.tls.as_mut() {
            tls.close();
            if let Some(bytes) = tls.take_output() {
                io.push(Action::Write {
                    to: Peer::Backend,
                    bytes,
                });
            }
        }
        io.push(Action::Close { to: Peer::Backend });
        io.push(Action::Close { to: Peer::Client });
    }
}

/// The back-end accepted the login: write its success reply (`ok`, CRLF included) to
/// the client, then hand over. Both legs plain: [`Action::Splice`] with the bytes each
/// side sent past the login, and `None`. Otherwise: the same bytes relayed, and the
/// [`Relay`] that carries on (or `Err` when the back-end's TLS failed).
pub(crate) fn hand_over(
    io: &mut Outbox,
    leg: &mut BackendLeg,
    input: &mut LineBuffer,
    client_tls: bool,
    ok: &[u8],
    cfg: &super::route::ProxyConfig,
) -> Result<Option<Relay>, String> {
    io.out.extend_from_slice(ok);
    let to_client = leg.take_residual();
    let to_backend = Bytes::copy_from_slice(input.raw());
    input.clear();
    let backend_tls = leg.tls.take();
    if !client_tls && backend_tls.is_none() {
        io.push(Action::Splice {
            to_client,
            to_backend,
            idle_timeout: cfg.relay_idle_timeout,
        });
        return Ok(None);
    }
    let mut relay = Relay::new(backend_tls, cfg.limits.output_high_water);
    io.out.extend_from_slice(&to_client);
    io.flush();
    relay.client_bytes(io, &to_backend)?;
    Ok(Some(relay))
}
