//! TLS on the back-end leg: a rustls client driven from memory, verifying the back-end's
//! certificate against the root store in the caller's [`rustls::ClientConfig`] (build it
//! with the `ring` provider).
//!
//! The client leg is secured by [`crate::tls::Secured`]; this is the other direction,
//! used for `backend_tls = "tls"` (TLS from the first byte after the PROXY header) and
//! `"starttls"` (after the protocol's STLS/STARTTLS).

use std::io::{Read as _, Write as _};
use std::sync::Arc;

use bytes::Bytes;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

/// The most plaintext one call to [`BackendTls::read`] yields: what one 16 KiB TLS
/// record can carry, plus a record's worth of slack for records split across reads.
pub const MAX_PLAIN_PER_READ: usize = 2 * crate::io::MAX_READ;

/// One TLS client connection to a back-end.
pub struct BackendTls {
    conn: Box<ClientConnection>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("handshaking", &self.conn.is_handshaking())
            .finish()
    }
}

impl BackendTls {
    /// Starts a handshake with the back-end named `host` (a DNS name or IP address,
    /// checked against its certificate). The ClientHello is ready in [`BackendTls::take_output`].
    pub fn new(config: Arc<ClientConfig>, host: &str) -> Result<Self, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("back-end name {host:?} is not valid for TLS: {e}"))?;
        let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        Ok(BackendTls {
            conn: Box::new(conn),
        })
    }

    /// Takes ciphertext from the back-end and appends the plaintext it carried to
    /// `plain`. An error (bad record, failed certificate check) ends the connection;
    /// the alert to send is in [`BackendTls::take_output`].
    pub fn read(&mut self, mut ciphertext: &[u8], plain: &mut Vec<u8>) -> Result<(), String> {
        let mut buf = [0u8; 4096];
        while !ciphertext.is_empty() {
            self.conn
                .read_tls(&mut ciphertext)
                .map_err(|e| e.to_string())?;
            self.conn.process_new_packets().map_err(|e| e.to_string())?;
            loop {
                match self.conn.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => plain.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
        }
        Ok(())
    }

    /// Queues plaintext for the back-end (sent once the handshake is done).
    pub fn write(&mut self, plain: &[u8]) -> Result<(), String> {
        self.conn
            .writer()
            .write_all(plain)
            .map_err(|e| e.to_string())
    }

    /// Ciphertext to send to the back-end, if any.
    pub fn take_output(&mut self) -> Option<Bytes> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    /// Sends a close_notify alert (collect it with [`BackendTls::take_output`]).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// The negotiated protocol version, for logs (`TLSv1.3`).
    pub fn version(&self) -> Option<&'static str> {
        self.conn.protocol_version().and_then(|v| v.as_str())
    }
}
