//! One blocking connection to an LDAP server: TCP, optionally TLS from the start
//! (`ldaps://`) or after StartTLS (RFC 4511 §4.14, RFC 4513 §3), with a deadline on
//! every operation.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::ber::{self, MAX_MESSAGE};
use super::filter::Filter;
use super::proto::{self, Entry, LdapResult, Response};

/// Most entries a search may return before it counts as ambiguous; the server is asked
/// for no more than this.
pub(crate) const MAX_ENTRIES: usize = 2;

/// Why an LDAP operation did not produce an answer. All of them mean "try later".
#[derive(Debug)]
pub(crate) enum LdapError {
    /// Connecting or reading/writing failed (server down, connection dropped).
    Io(io::Error),
    /// The operation's deadline passed.
    Timeout,
    /// The server sent something that is not valid LDAP, or TLS failed.
    Protocol(String),
    /// The server answered with an error result code.
    Result(LdapResult),
}

impl LdapError {
    /// Whether a fresh connection may succeed where this one failed (a pooled
    /// connection the server closed meanwhile).
    pub(crate) fn is_connection_lost(&self) -> bool {
        match self {
            LdapError::Io(_) => true,
            LdapError::Protocol(_) | LdapError::Timeout | LdapError::Result(_) => false,
        }
    }
}

impl fmt::Display for LdapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LdapError::Io(e) => write!(f, "LDAP connection: {e}"),
            LdapError::Timeout => write!(f, "LDAP server did not answer in time"),
            LdapError::Protocol(e) => write!(f, "LDAP protocol: {e}"),
            LdapError::Result(r) => write!(f, "LDAP result code {}: {}", r.code, r.message),
        }
    }
}

impl From<io::Error> for LdapError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => LdapError::Timeout,
            _ => LdapError::Io(e),
        }
    }
}

/// Where and how to connect: parsed from the `url` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// Host name or IP address (without brackets).
    pub(crate) host: String,
    /// TCP port (389 for `ldap://`, 636 for `ldaps://` unless given).
    pub(crate) port: u16,
    /// `ldaps://`: TLS from the first byte.
    pub(crate) implicit_tls: bool,
}

impl Endpoint {
    /// Parses `ldap://HOST[:PORT][/]` or `ldaps://HOST[:PORT][/]` (RFC 4516 without a
    /// DN or other parts; IPv6 addresses in brackets).
    pub(crate) fn parse(url: &str) -> Result<Endpoint, String> {
        let lower = url.to_ascii_lowercase();
        let (implicit_tls, rest) = if lower.starts_with("ldaps://") {
            (true, &url[8..])
        } else if lower.starts_with("ldap://") {
            (false, &url[7..])
        } else {
            return Err(format!(
                "LDAP url {url:?} must start with ldap:// or ldaps://"
            ));
        };
        let hostport = rest.strip_suffix('/').unwrap_or(rest);
        if hostport.contains('/') || hostport.contains('?') {
            return Err(format!(
                "LDAP url {url:?}: only ldap[s]://HOST[:PORT] is supported"
            ));
        }
        let default_port = if implicit_tls { 636 } else { 389 };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("LDAP url {url:?}: unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(format!("LDAP url {url:?}: junk after ']'")),
            };
            (host, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(format!("LDAP url {url:?} names no host"));
        }
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("LDAP url {url:?}: bad port {port:?}"))?,
            None => default_port,
        };
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            implicit_tls,
        })
    }
}

/// Connection settings shared by every connection of a directory.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The server.
    pub(crate) endpoint: Endpoint,
    /// Upgrade `ldap://` with StartTLS.
    pub(crate) starttls: bool,
    /// TLS client configuration (when `ldaps://` or `starttls`).
    pub(crate) tls: Option<Arc<ClientConfig>>,
    /// Deadline for the TCP connect and the TLS handshake.
    pub(crate) connect_timeout: Duration,
    /// Deadline for one operation (bind or search) including every response message.
    pub(crate) timeout: Duration,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// One open LDAP connection. After any error it is [`Connection::is_broken`] and must
/// be dropped: a half-read answer would confuse the next operation.
pub(crate) struct Connection {
    stream: Stream,
    /// Bytes read but not yet decoded; never more than one message plus one read.
    buffer: Vec<u8>,
    next_id: i32,
    broken: bool,
    timeout: Duration,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.stream.tcp().peer_addr().ok())
            .field("broken", &self.broken)
            .finish()
    }
}

impl Connection {
    /// Connects (and negotiates TLS) within the connect timeout.
    pub(crate) fn open(settings: &Settings) -> Result<Connection, LdapError> {
        let deadline = Instant::now() + settings.connect_timeout;
        let endpoint = &settings.endpoint;
        let addresses = (endpoint.host.as_str(), endpoint.port).to_socket_addrs()?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "host has no address");
        let mut tcp = None;
        for address in addresses {
            let left = remaining(deadline)?;
            match TcpStream::connect_timeout(&address, left) {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or(last)?;
        tcp.set_nodelay(true)?;
        let mut connection = Connection {
            stream: Stream::Plain(tcp),
            buffer: Vec::new(),
            next_id: 1,
            broken: false,
            timeout: settings.timeout,
        };
        if endpoint.implicit_tls {
            connection.start_tls(settings, deadline)?;
        } else if settings.starttls {
            let id = connection.send(proto::starttls_request)?;
            match connection.receive(id, deadline)? {
                Response::Extended(result) if result.code == proto::SUCCESS => {}
                Response::Extended(result) => return Err(LdapError::Result(result)),
                other => {
                    return Err(LdapError::Protocol(format!(
                        "unexpected answer to StartTLS: {other:?}"
                    )));
                }
            }
            if !connection.buffer.is_empty() {
                // Bytes sent before the TLS handshake must not be read as if protected.
                return Err(LdapError::Protocol("data after the StartTLS answer".into()));
            }
            connection.start_tls(settings, deadline)?;
        }
        Ok(connection)
    }

    /// Whether an error left this connection unusable.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    fn start_tls(&mut self, settings: &Settings, deadline: Instant) -> Result<(), LdapError> {
        let config = settings
            .tls
            .clone()
            .ok_or_else(|| LdapError::Protocol("TLS wanted but not configured".into()))?;
        let name = ServerName::try_from(settings.endpoint.host.clone())
            .map_err(|e| LdapError::Protocol(format!("server name for TLS: {e}")))?;
        let client = ClientConnection::new(config, name)
            .map_err(|e| LdapError::Protocol(format!("TLS setup: {e}")))?;
        let tcp = match &self.stream {
            Stream::Plain(tcp) => tcp.try_clone()?,
            Stream::Tls(_) => return Err(LdapError::Protocol("TLS started twice".into())),
        };
        let mut tls = StreamOwned::new(client, tcp);
        while tls.conn.is_handshaking() {
            let left = remaining(deadline)?;
            tls.sock.set_read_timeout(Some(left))?;
            tls.sock.set_write_timeout(Some(left))?;
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::InvalidData => LdapError::Protocol(format!("TLS: {e}")),
                    _ => LdapError::from(e),
                })?;
        }
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// Binds with a simple DN and password (RFC 4511 §4.2). `Ok(true)` on success,
    /// `Ok(false)` on invalidCredentials; other result codes are errors.
    pub(crate) fn bind(&mut self, dn: &str, password: &[u8]) -> Result<bool, LdapError> {
        let deadline = Instant::now() + self.timeout;
        let id = self.send(|id| proto::bind_request(id, dn, password))?;
        match self.receive(id, deadline)? {
            Response::Bind(result) if result.code == proto::SUCCESS => Ok(true),
            Response::Bind(result) if result.code == proto::INVALID_CREDENTIALS => Ok(false),
            Response::Bind(result) => Err(LdapError::Result(result)),
            other => self.fail(format!("unexpected answer to a bind: {other:?}")),
        }
    }

    /// Searches the subtree under `base`, returning at most [`MAX_ENTRIES`] entries
    /// (a sizeLimitExceeded answer yields the entries that came). A missing base is an
    /// empty answer.
    pub(crate) fn search(
        &mut self,
        base: &str,
        filter: &Filter,
        attributes: &[&str],
    ) -> Result<Vec<Entry>, LdapError> {
        let deadline = Instant::now() + self.timeout;
        let time_limit = i64::try_from(self.timeout.as_secs().max(1)).unwrap_or(i64::MAX);
        let id = self.send(|id| {
            proto::search_request(id, base, filter, attributes, MAX_ENTRIES as i64, time_limit)
        })?;
        let mut entries = Vec::new();
        loop {
            match self.receive(id, deadline)? {
                Response::Entry(entry) => {
                    if entries.len() <= MAX_ENTRIES {
                        entries.push(entry);
                    }
                }
                Response::Reference => {}
                Response::Done(result) => {
                    return match result.code {
                        proto::SUCCESS | proto::SIZE_LIMIT_EXCEEDED => Ok(entries),
                        proto::NO_SUCH_OBJECT => Ok(Vec::new()),
                        _ => Err(LdapError::Result(result)),
                    };
                }
                other => return self.fail(format!("unexpected answer to a search: {other:?}")),
            }
        }
    }

    /// Says goodbye (RFC 4511 §4.3) without waiting; errors do not matter here.
    pub(crate) fn unbind(mut self) {
        if !self.broken {
            let _ = self.send(proto::unbind_request);
        }
    }

    fn send(&mut self, build: impl FnOnce(i32) -> Vec<u8>) -> Result<i32, LdapError> {
        if self.broken {
            return Err(LdapError::Protocol("connection already failed".into()));
        }
        let id = self.next_id;
        self.next_id = id.checked_add(1).unwrap_or(1);
        let bytes = build(id);
        let timeout = Some(self.timeout);
        self.stream.tcp().set_write_timeout(timeout)?;
        let written = self
            .stream
            .write_all(&bytes)
            .and_then(|()| self.stream.flush());
        if let Err(e) = written {
            self.broken = true;
            return Err(e.into());
        }
        Ok(id)
    }

    /// Reads the next message answering `id`, before `deadline`.
    fn receive(&mut self, id: i32, deadline: Instant) -> Result<Response, LdapError> {
        let result = self.receive_inner(id, deadline);
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn receive_inner(&mut self, id: i32, deadline: Instant) -> Result<Response, LdapError> {
        loop {
            if let Some(len) = ber::element_len(&self.buffer).map_err(protocol)? {
                if len > MAX_MESSAGE {
                    return Err(LdapError::Protocol(format!(
                        "message of {len} bytes exceeds the {MAX_MESSAGE}-byte limit"
                    )));
                }
                if self.buffer.len() >= len {
                    let message: Vec<u8> = self.buffer.drain(..len).collect();
                    let (message_id, response) = proto::decode(&message).map_err(protocol)?;
                    if message_id == 0 {
                        return Err(LdapError::Protocol(format!(
                            "server notice of disconnection: {response:?}"
                        )));
                    }
                    if message_id != i64::from(id) {
                        return Err(LdapError::Protocol(format!(
                            "answer to message {message_id} while waiting for {id}"
                        )));
                    }
                    return Ok(response);
                }
            }
            let left = remaining(deadline)?;
            self.stream.tcp().set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(LdapError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                )));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    fn fail<T>(&mut self, reason: String) -> Result<T, LdapError> {
        self.broken = true;
        Err(LdapError::Protocol(reason))
    }
}

fn protocol(e: ber::BerError) -> LdapError {
    LdapError::Protocol(e.to_string())
}

fn remaining(deadline: Instant) -> Result<Duration, LdapError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or(LdapError::Timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let parse = |u| Endpoint::parse(u);
        assert_eq!(
            parse("ldap://ldap.example.com"),
            Ok(Endpoint {
                host: "ldap.example.com".into(),
                port: 389,
                implicit_tls: false
            })
        );
        assert_eq!(
            parse("LDAPS://10.0.0.1:1636/"),
            Ok(Endpoint {
                host: "10.0.0.1".into(),
                port: 1636,
                implicit_tls: true
            })
        );
        assert_eq!(parse("ldaps://[::1]").map(|e| e.port), Ok(636));
        assert_eq!(
            parse("ldap://[::1]:10389").map(|e| e.host),
            Ok("::1".into())
        );
        for bad in [
            "http://x",
            "ldap://",
            "ldap://x:0",
            "ldap://x:99999",
            "ldap://x/dc=a",
            "ldap://[::1",
            "ldap://[::1]x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
