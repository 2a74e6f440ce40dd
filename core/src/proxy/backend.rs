//! The back-end leg of a front-end session during the login dialogue: which address to
//! try next, optional TLS, and the back-end's reply lines.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use rustls::ClientConfig;

use super::backend_tls::BackendTls;
use super::haproxy;
use super::route::{BackendTlsMode, ClientAddressMode, FrontConn, ProxyConfig};
use crate::io::{Action, Peer};
use crate::outbox::Outbox;
use crate::request::{Backend, Request};
use crate::wire::{LineBuffer, LineEvent};

/// The longest back-end reply line read during the login dialogue, CRLF excluded. POP3
/// (RFC 2449 §4) and SMTP (RFC 5321 §4.5.3.1.5) replies are at most 512 octets; IMAP
/// tagged replies with a CAPABILITY code run longer, 8 KiB is ample.
pub const MAX_BACKEND_LINE: usize = 8 * 1024;

/// Reply bytes a back-end may send during the login dialogue before it is read: a
/// multi-line EHLO reply is well under 4 KiB, an IMAP greeting with capabilities a
/// few; anything beyond this is not a login dialogue.
pub const MAX_BACKEND_BUFFER: usize = 32 * 1024;

/// The back-end connection while the front-end logs the user in.
#[derive(Debug)]
pub(crate) struct BackendLeg {
    /// The back-end as the route named it.
    pub(crate) backend: Backend,
    /// Index of the next address to try.
    next: usize,
    /// The address being connected to or connected.
    pub(crate) current: Option<SocketAddr>,
    /// The connection is established.
    pub(crate) connected: bool,
    /// TLS on this leg, once started.
    pub(crate) tls: Option<BackendTls>,
    /// Plaintext reply lines from the back-end.
    lines: LineBuffer,
}

impl BackendLeg {
    pub(crate) fn new(backend: Backend) -> Self {
        BackendLeg {
            backend,
            next: 0,
            current: None,
            connected: false,
            tls: None,
            lines: LineBuffer::new(MAX_BACKEND_LINE),
        }
    }

    /// Queues a connect to the next untried address; false when none is left.
    pub(crate) fn connect_next(
        &mut self,
        io: &mut Outbox,
        source: Option<std::net::IpAddr>,
    ) -> bool {
        let Some(&addr) = self.backend.addrs.get(self.next) else {
            return false;
        };
        self.next += 1;
        self.current = Some(addr);
        self.connected = false;
        self.tls = None;
        self.lines.clear();
        io.push(Action::Connect {
            to: Peer::Backend,
            addr,
            source,
        });
        true
    }

    /// The connection is up: the PROXY v2 header goes first when configured, then the
    /// TLS handshake for `backend_tls = "tls"`.
    pub(crate) fn established(
        &mut self,
        io: &mut Outbox,
        cfg: &ProxyConfig,
        conn: &FrontConn,
        client_tls: bool,
        hops: u8,
    ) -> Result<(), String> {
        self.connected = true;
        if cfg.client_address == ClientAddressMode::ProxyV2 {
            let header = proxy_header(conn, client_tls, hops);
            self.send_raw(io, haproxy::encode_v2(&header));
        }
        if cfg.backend_tls == BackendTlsMode::Tls {
            self.start_tls(io, cfg.backend_tls_config.as_ref())?;
        }
        Ok(())
    }

    /// The connect failed: report the address and try the next one. False when none
    /// is left (nothing is connected then, so there is nothing to close).
    pub(crate) fn connect_failed(
        &mut self,
        io: &mut Outbox,
        source: Option<std::net::IpAddr>,
        reason: String,
    ) -> bool {
        self.report(io, reason);
        if self.connect_next(io, source) {
            return true;
        }
        self.current = None;
        false
    }

    /// Tells the host the current address failed (`Request::BackendFailed`, for its
    /// circuit breaker). Its reply, `Reply::Done`, is not waited for.
    pub(crate) fn report(&self, io: &mut Outbox, reason: String) {
        if let Some(addr) = self.current {
            io.request(Request::BackendFailed {
                host: self.backend.host.clone(),
                addr,
                reason,
            });
        }
    }

    /// Sends plaintext to the back-end (encrypted when TLS is on).
    pub(crate) fn send(&mut self, io: &mut Outbox, plain: &[u8]) -> Result<(), String> {
        match self.tls.as_mut() {
            None => io.push(Action::Write {
                to: Peer::Backend,
                bytes: Bytes::copy_from_slice(plain),
            }),
            Some(tls) => {
                tls.write(plain)?;
                Self::flush_tls(tls, io);
            }
        }
        Ok(())
    }

    /// Sends bytes that must stay outside TLS (the PROXY header).
    pub(crate) fn send_raw(&mut self, io: &mut Outbox, bytes: Vec<u8>) {
        io.push(Action::Write {
            to: Peer::Backend,
            bytes: Bytes::from(bytes),
        });
    }

    /// Starts TLS towards the back-end; the ClientHello is queued at once.
    pub(crate) fn start_tls(
        &mut self,
        io: &mut Outbox,
        config: Option<&Arc<ClientConfig>>,
    ) -> Result<(), String> {
        let config = config.ok_or("no TLS client configuration for back-ends")?;
        let mut tls = BackendTls::new(config.clone(), &self.backend.host)?;
        // RFC 2595 §4 / RFC 3207 §4.2: nothing read before TLS is kept.
        self.lines.clear();
        Self::flush_tls(&mut tls, io);
        self.tls = Some(tls);
        Ok(())
    }

    fn flush_tls(tls: &mut BackendTls, io: &mut Outbox) {
        if let Some(bytes) = tls.take_output() {
            io.push(Action::Write {
                to: Peer::Backend,
                bytes,
            });
        }
    }

    /// Takes bytes read from the back-end. Errors (TLS failure, too much unread
    /// input) end the dialogue.
    pub(crate) fn receive(&mut self, io: &mut Outbox, bytes: &[u8]) -> Result<(), String> {
        match self.tls.as_mut() {
            None => self.lines.push(bytes),
            Some(tls) => {
                let mut plain = Vec::new();
                let result = tls.read(bytes, &mut plain);
                Self::flush_tls(tls, io);
                result?;
                self.lines.push(&plain);
            }
        }
        if self.lines.buffered() > MAX_BACKEND_BUFFER + crate::io::MAX_READ {
            return Err("the back-end sent more than a login dialogue".into());
        }
        Ok(())
    }

    /// The next complete reply line; an overlong line is an error.
    pub(crate) fn next_line(&mut self) -> Option<Result<Bytes, String>> {
        match self.lines.next_line()? {
            LineEvent::Line(line) => Some(Ok(line)),
            LineEvent::TooLong => Some(Err("overlong reply line from the back-end".into())),
        }
    }

    /// Whether the session should read more from the back-end now.
    pub(crate) fn wants_read(&self) -> bool {
        self.connected && self.lines.buffered() < MAX_BACKEND_BUFFER
    }

    /// Bytes the back-end sent after the last line taken: the client gets them first.
    pub(crate) fn take_residual(&mut self) -> Bytes {
        let rest = Bytes::copy_from_slice(self.lines.raw());
        self.lines.clear();
        rest
    }

    /// Queues a close of the back-end connection (close_notify first under TLS).
    pub(crate) fn close(&mut self, io: &mut Outbox) {
        if let Some(tls) = self.tls.as_mut() {
            tls.close();
            Self::flush_tls(tls, io);
        }
        if self.current.is_some() {
            io.push(Action::Close { to: Peer::Backend });
        }
        self.current = None;
        self.connected = false;
    }
}

/// The PROXY v2 header for this client (hops: what the back-end may still do).
pub(crate) fn proxy_header(conn: &FrontConn, client_tls: bool, hops: u8) -> haproxy::ProxyHeader {
    haproxy::ProxyHeader {
        addresses: Some(haproxy::ProxiedAddresses {
            source: conn.client,
            destination: conn.local,
        }),
        // The TLS version is known to the TLS layer, not to the session.
        tls: client_tls.then(|| haproxy::ProxiedTls {
            version: String::new(),
        }),
        hops: Some(hops),
    }
}
