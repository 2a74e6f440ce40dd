//! One blocking connection to an authd server: a socket (plain or rustls), driven
//! through the sans-IO [`AuthdClient`] codec.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};
use tidegate_core::authd::{AuthdClient, AuthdClientLimits, ClientEvent, SubmitError};
use tidegate_core::secret::Secret;
use tidegate_core::user::{AuthOutcome, Lookup};

use super::tls::AuthdClientTls;

/// The socket under a connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The answers of one call, by request id.
#[derive(Debug)]
pub(super) struct Answers {
    /// One event per request: its answer, or `TempFail` if the connection failed first.
    pub(super) events: HashMap<u64, ClientEvent>,
    /// The connection broke (reset, EOF, `* BYE`, not a timeout) and no request got a
    /// real answer: a pooled connection the server had already closed fails like this,
    /// so asking again on a fresh connection is safe and worthwhile.
    pub(super) retryable: bool,
}

/// An open connection to one authd address.
pub(super) struct Conn {
    stream: Stream,
    codec: AuthdClient,
    /// Which of the configured addresses this is connected to.
    pub(super) server: usize,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("server", &self.server)
            .finish()
    }
}

impl Conn {
    /// Connects to `addr` (resolving it) within `connect_timeout`; reads and writes
    /// time out after `io_timeout`.
    pub(super) fn open(
        addr: &str,
        server: usize,
        secret: &Secret,
        tls: Option<&AuthdClientTls>,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Result<Conn, String> {
        let targets: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| format!("authd {addr}: {e}"))?
            .collect();
        let mut last = format!("authd {addr}: no address");
        for target in targets {
            match TcpStream::connect_timeout(&target, connect_timeout) {
                Ok(tcp) => {
                    let setup = tcp
                        .set_read_timeout(Some(io_timeout))
                        .and_then(|()| tcp.set_write_timeout(Some(io_timeout)))
                        .and_then(|()| tcp.set_nodelay(true));
                    setup.map_err(|e| format!("authd {addr}: {e}"))?;
                    let stream = match tls {
                        None => Stream::Plain(tcp),
                        Some(tls) => {
                            let conn =
                                ClientConnection::new(tls.config.clone(), tls.server_name.clone())
                                    .map_err(|e| format!("authd {addr}: TLS: {e}"))?;
                            Stream::Tls(Box::new(StreamOwned::new(conn, tcp)))
                        }
                    };
                    return Ok(Conn {
                        stream,
                        codec: AuthdClient::new(secret.clone(), AuthdClientLimits::default()),
                        server,
                    });
                }
                Err(e) => last = format!("authd {addr}: {e}"),
            }
        }
        Err(last)
    }

    /// True while the connection can take requests.
    pub(super) fn is_usable(&self) -> bool {
        !self.codec.is_closed()
    }

    /// Queues requests with `submit` (which returns their ids), sends them pipelined,
    /// and reads until every one is answered. A connection failure answers the rest
    /// with `TempFail` (the codec does that), never with another request's answer.
    pub(super) fn call(
        &mut self,
        submit: impl FnOnce(&mut AuthdClient) -> Result<Vec<u64>, SubmitError>,
    ) -> Result<Answers, String> {
        let ids = submit(&mut self.codec).map_err(|e| format!("authd connection: {e}"))?;
        let mut events = HashMap::with_capacity(ids.len());
        let mut buf = [0u8; 16 * 1024];
        let mut closed = false;
        let mut timed_out = false;
        while events.len() < ids.len() && !closed {
            let out = self.codec.take_output();
            if !out.is_empty()
                && let Err(e) = self
                    .stream
                    .write_all(&out)
                    .and_then(|()| self.stream.flush())
            {
                timed_out = is_timeout(&e);
                self.codec.abort(&format!("write: {e}"));
            }
            if !self.codec.is_closed() {
                match self.stream.read(&mut buf) {
                    Ok(0) => self.codec.handle_eof(),
                    Ok(n) => self.codec.handle_input(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        timed_out = is_timeout(&e);
                        let what = if timed_out {
                            "timed out"
                        } else {
                            "read failed"
                        };
                        self.codec.abort(&format!("{what}: {e}"));
                    }
                }
            }
            while let Some(event) = self.codec.poll_event() {
                match event {
                    ClientEvent::Ready => {}
                    ClientEvent::Closed { .. } => closed = true,
                    ClientEvent::Lookup { id, .. } | ClientEvent::Verify { id, .. } => {
                        events.insert(id, event);
                    }
                }
            }
        }
        let all_failed = events.values().all(|event| {
            matches!(
                event,
                ClientEvent::Lookup {
                    lookup: Lookup::TempFail(_),
                    ..
                } | ClientEvent::Verify {
                    outcome: AuthOutcome::TempFail(_),
                    ..
                }
            )
        });
        Ok(Answers {
            events,
            retryable: closed && !timed_out && all_failed,
        })
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
