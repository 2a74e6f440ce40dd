//! One delivery attempt on a blocking socket: connect (or take an idle connection to
//! the same destination from a [`ConnectionPool`]), then drive a [`ClientSession`]
//! until the transaction's report, doing what it asks (write, TLS handshake, read the
//! next piece of the message) and feeding it what the server says and when time is up.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use tidegate_core::smtp_client::{
    ClientConfig, ClientEvent, ClientSession, Envelope, Failure, RecipientStatus, Report, StartTls,
};

use super::pool::{ConnectionPool, PoolKey};
use super::{
    Destination, OutboundMessage, Outcome, RecipientOutcome, SendFailure, SendOptions, TlsPolicy,
    tls,
};

/// Bytes read from the socket at once: one TLS record's worth.
const READ_BUFFER: usize = 16 * 1024;

/// The outcome of one attempt, as [`send`] returns it.
type SendResult = Result<Vec<RecipientOutcome>, SendFailure>;

/// One delivery attempt: connect, EHLO (HELO fallback), STARTTLS per policy, AUTH, MAIL,
/// RCPT…, DATA or BDAT, QUIT (RFC 5321 §3.3). Per-recipient outcomes come in the order
/// of `message.recipients`; if every RCPT was refused, no data is sent.
///
/// Under [`TlsPolicy::Opportunistic`] a failed TLS handshake is retried once on the same
/// address without TLS (RFC 7435 §3: fall back rather than not deliver).
pub fn send(
    dest: &Destination,
    options: &SendOptions,
    message: &OutboundMessage<'_>,
) -> SendResult {
    send_with(None, dest, options, message)
}

/// Like [`send`], over an idle connection to the same destination (the same addresses,
/// certificate name and TLS policy) from `pool` when there is one; afterwards the
/// connection goes back to `pool` for the next message instead of saying QUIT
/// (RFC 5321 §3.3), within the pool's [`super::ReuseLimits`].
///
/// An idle connection the server closed meanwhile, or one that fails the new
/// transaction as a whole with a temporary failure before any recipient result (a
/// `421` or EOF crossing the next MAIL), is dropped and the message goes over a fresh
/// connection: nothing of it can have been delivered then. Once recipients were
/// answered a broken connection defers them, like on a fresh one: a message whose
/// final reply was lost is retried later, never counted delivered.
pub fn send_pooled(
    pool: &ConnectionPool,
    dest: &Destination,
    options: &SendOptions,
    message: &OutboundMessage<'_>,
) -> SendResult {
    send_with(Some(pool), dest, options, message)
}

fn send_with(
    pool: Option<&ConnectionPool>,
    dest: &Destination,
    options: &SendOptions,
    message: &OutboundMessage<'_>,
) -> SendResult {
    let mut envelope = Envelope {
        mail_from: message.mail_from.to_owned(),
        recipients: message.recipients.to_vec(),
        size: 0,
        eight_bit: message.eight_bit,
        smtputf8: message.smtputf8,
        xclient: message.xclient.map(|x| Box::new(x.clone())),
    };
    envelope.validate().map_err(|detail| SendFailure {
        permanent: true,
        reply: None,
        detail,
    })?;
    if envelope.recipients.is_empty() {
        return Ok(Vec::new());
    }
    let file_len = File::open(message.path)
        .and_then(|f| f.metadata())
        .map_err(|e| local_failure(message, &e))?
        .len();
    envelope.size = file_len.saturating_add(message.prefix.len() as u64);
    let pool = pool.filter(|p| p.limits().max_messages > 1);
    let key = PoolKey::new(dest, options);

    if let Some(pool) = pool {
        while let Some(mut conn) = pool.take(&key) {
            let addr = conn.addr;
            match conn.next_message(message, &envelope) {
                Some(result) => {
                    log_attempt(addr, &result);
                    pool.put(key, conn);
                    return result;
                }
                None => {
                    log::debug!("outbound: the idle connection to {addr} is gone, reconnecting");
                    conn.close();
                }
            }
        }
    }

    let (stream, addr) = connect(dest, options)?;
    let attempt = Attempt {
        dest,
        options,
        message,
        envelope: &envelope,
        reuse: pool.is_some(),
    };
    let (result, conn) = match attempt.run(stream, addr, options.tls) {
        (Ok(Err(TlsFellThrough)), _) => {
            log::info!("outbound: TLS with {addr} failed, retrying without TLS");
            match connect_one(addr, options) {
                Err(e) => (Err(connect_failure(format!("{addr}: {e}"))), None),
                Ok(stream) => match attempt.run(stream, addr, TlsPolicy::Disabled) {
                    (Ok(Ok(outcomes)), conn) => (Ok(outcomes), Some(conn)),
                    (Ok(Err(TlsFellThrough)), conn) => {
                        (Err(connect_failure("TLS without TLS".into())), Some(conn))
                    }
                    (Err(failure), conn) => (Err(failure), Some(conn)),
                },
            }
        }
        (Ok(Ok(outcomes)), conn) => (Ok(outcomes), Some(conn)),
        (Err(failure), conn) => (Err(failure), Some(conn)),
    };
    log_attempt(addr, &result);
    if let Some(conn) = conn {
        match pool {
            Some(pool) if conn.is_idle() => pool.put(key, conn),
            _ => conn.close(),
        }
    }
    result
}

/// One log line per attempt, for the operator: where it went and what came of it.
fn log_attempt(addr: SocketAddr, result: &SendResult) {
    match result {
        Ok(outcomes) => {
            let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(&o.outcome)).count();
            log::info!(
                "outbound: {addr}: {} delivered, {} deferred, {} failed",
                count(|o| matches!(o, Outcome::Delivered(_))),
                count(|o| matches!(o, Outcome::Deferred(_))),
                count(|o| matches!(o, Outcome::Failed(_))),
            );
        }
        Err(failure) => log::info!("outbound: {addr}: {failure}"),
    }
}

/// The opportunistic handshake failed before any recipient result: try again in plaintext.
struct TlsFellThrough;

/// What one connection of an attempt needs.
struct Attempt<'a> {
    dest: &'a Destination,
    options: &'a SendOptions,
    message: &'a OutboundMessage<'a>,
    envelope: &'a Envelope,
    /// Keep the connection for another message ([`ClientConfig::reuse`]).
    reuse: bool,
}

impl Attempt<'_> {
    /// Runs the first transaction on a fresh connection; returns the outcome and the
    /// connection (idle when it can take another message, else closed or broken).
    fn run(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        policy: TlsPolicy,
    ) -> (
        Result<Result<Vec<RecipientOutcome>, TlsFellThrough>, SendFailure>,
        Connection,
    ) {
        let config = ClientConfig {
            helo_name: self.options.helo_name.clone(),
            starttls: match policy {
                TlsPolicy::Opportunistic => StartTls::Opportunistic,
                TlsPolicy::Required => StartTls::Required,
                TlsPolicy::Disabled => StartTls::Disabled,
            },
            auth: self.options.auth.clone(),
            auth_plaintext: self.options.auth_plaintext,
            command_timeout: self.options.command_timeout,
            data_timeout: self.options.data_timeout,
            quit_timeout: self.options.command_timeout.min(Duration::from_secs(30)),
            body_chunk: tidegate_core::smtp_client::config::DEFAULT_BODY_CHUNK,
            lmtp: self.options.lmtp,
            reuse: self.reuse,
        };
        let session = ClientSession::new(config, self.envelope.clone(), clock());
        let mut conn = Connection {
            session,
            transport: Transport::Plain(stream),
            addr,
            options: self.options.clone(),
            policy,
            tls_name: self.dest.tls_name.clone(),
            messages: 0,
            tls_failed: false,
            xclient_noted: false,
            xclient_wanted: self.envelope.xclient.is_some(),
        };
        let mut body = match Body::open(self.message) {
            Ok(body) => body,
            Err(failure) => return (Err(failure), conn),
        };
        let report = conn.transaction(&mut body);
        let tls_failed = conn.tls_failed;
        let result = match report {
            Err(failure) if tls_failed && policy == TlsPolicy::Opportunistic => {
                log::debug!("outbound: {}", failure.detail);
                Ok(Err(TlsFellThrough))
            }
            Err(failure) => Err(send_failure(failure)),
            Ok(results) => Ok(Ok(outcomes(self.message, results))),
        };
        (result, conn)
    }
}

fn send_failure(failure: Failure) -> SendFailure {
    SendFailure {
        permanent: failure.permanent,
        reply: failure.reply,
        detail: failure.detail,
    }
}

/// Per-recipient outcomes in the order of the message's recipients.
fn outcomes(
    message: &OutboundMessage<'_>,
    results: Vec<tidegate_core::smtp_client::RecipientResult>,
) -> Vec<RecipientOutcome> {
    message
        .recipients
        .iter()
        .zip(results)
        .map(|(recipient, result)| RecipientOutcome {
            recipient: recipient.clone(),
            outcome: match result.status {
                RecipientStatus::Delivered => Outcome::Delivered(result.reply),
                RecipientStatus::Deferred => Outcome::Deferred(result.reply),
                RecipientStatus::Failed => Outcome::Failed(result.reply),
            },
        })
        .collect()
}

fn local_failure(message: &OutboundMessage<'_>, e: &io::Error) -> SendFailure {
    SendFailure {
        permanent: false,
        reply: None,
        detail: format!("cannot read the message {}: {e}", message.path.display()),
    }
}

fn connect_failure(detail: String) -> SendFailure {
    SendFailure {
        permanent: false,
        reply: None,
        detail: format!("cannot connect: {detail}"),
    }
}

/// Connects to the first address that accepts.
fn connect(
    dest: &Destination,
    options: &SendOptions,
) -> Result<(TcpStream, SocketAddr), SendFailure> {
    let mut errors = Vec::new();
    for &addr in &dest.addrs {
        match connect_one(addr, options) {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => {
                log::debug!("outbound: connect to {addr}: {e}");
                errors.push(format!("{addr}: {e}"));
            }
        }
    }
    if errors.is_empty() {
        errors.push("no address to connect to".into());
    }
    Err(connect_failure(errors.join("; ")))
}

fn connect_one(addr: SocketAddr, options: &SendOptions) -> io::Result<TcpStream> {
    let source = options
        .source_addrs
        .iter()
        .find(|ip| ip.is_ipv4() == addr.is_ipv4())
        .copied();
    let mut stream = match source {
        None => TcpStream::connect_timeout(&addr, options.connect_timeout.max(MIN_WAIT))?,
        Some(ip) => connect_from(ip, addr, options.connect_timeout.max(MIN_WAIT))?,
    };
    // Pipelined groups and BDAT headers are small writes that must not wait for acks.
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(options.command_timeout.max(MIN_WAIT)))?;
    if !options.preamble.is_empty() {
        stream.write_all(&options.preamble)?;
    }
    Ok(stream)
}

/// Connects to `addr` from the local address `source` (port chosen by the kernel),
/// waiting at most `timeout`: on Linux a blocking connect honours the send timeout.
fn connect_from(source: IpAddr, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    rustix::net::bind(&fd, &SocketAddr::new(source, 0))?;
    let stream = TcpStream::from(fd);
    stream.set_write_timeout(Some(timeout))?;
    match rustix::net::connect(&stream, &addr) {
        Ok(()) => Ok(stream),
        Err(rustix::io::Errno::INPROGRESS | rustix::io::Errno::AGAIN) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "connection timed out",
        )),
        Err(e) => Err(e.into()),
    }
}

/// The shortest socket timeout set (zero means "none" to the socket API).
const MIN_WAIT: Duration = Duration::from_millis(1);

/// The message as the session asks for it: the prefix, then the file.
struct Body<'a> {
    prefix: &'a [u8],
    file: File,
}

impl<'a> Body<'a> {
    fn open(message: &OutboundMessage<'a>) -> Result<Self, SendFailure> {
        let file = File::open(message.path).map_err(|e| local_failure(message, &e))?;
        Ok(Body {
            prefix: message.prefix,
            file,
        })
    }

    /// Up to `max` next bytes; empty at the end.
    fn read(&mut self, max: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        let from_prefix = self.prefix.len().min(max);
        buf.extend_from_slice(&self.prefix[..from_prefix]);
        self.prefix = &self.prefix[from_prefix..];
        let want = max - from_prefix;
        (&mut self.file).take(want as u64).read_to_end(buf)?;
        Ok(())
    }
}

/// The connection: plaintext, then TLS after STARTTLS.
enum Transport {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// Between the two, or after a failed handshake.
    Gone,
}

impl Transport {
    fn socket(&self) -> Option<&TcpStream> {
        match self {
            Transport::Plain(s) => Some(s),
            Transport::Tls(s) => Some(&s.sock),
            Transport::Gone => None,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
            Transport::Gone => Ok(0),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.write_all(bytes),
            Transport::Tls(s) => {
                s.write_all(bytes)?;
                s.flush()
            }
            Transport::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

/// A connection and the session on it; kept idle in a [`ConnectionPool`] between
/// messages when reused.
pub(super) struct Connection {
    session: ClientSession,
    transport: Transport,
    /// The address connected to.
    pub(super) addr: SocketAddr,
    options: SendOptions,
    /// The policy of this connection (plaintext after an opportunistic fall-back).
    policy: TlsPolicy,
    tls_name: String,
    /// Transactions run on it so far.
    pub(super) messages: usize,
    /// The TLS handshake failed.
    tls_failed: bool,
    /// What became of XCLIENT on this connection was logged (once per connection).
    xclient_noted: bool,
    /// A message on this connection named a client for XCLIENT.
    xclient_wanted: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// True when the session waits for the next message.
    pub(super) fn is_idle(&self) -> bool {
        self.session.is_idle()
    }

    /// The next message on an idle connection. `None` when the connection cannot carry
    /// it and nothing of it can have been delivered: the server hung up or spoke while
    /// idle, it failed the transaction as a whole with a temporary failure (a `421`
    /// crossing the MAIL command), or it named a client with XCLIENT and this message
    /// names none (the server would take it as that client's).
    fn next_message(
        &mut self,
        message: &OutboundMessage<'_>,
        envelope: &Envelope,
    ) -> Option<SendResult> {
        if self.is_stale() {
            return None;
        }
        let mut body = Body::open(message).ok()?;
        self.session.start_next(clock(), envelope.clone()).ok()?;
        self.xclient_wanted |= envelope.xclient.is_some();
        match self.transaction(&mut body) {
            Err(failure) if !failure.permanent => {
                log::debug!(
                    "outbound: reused connection to {}: {}",
                    self.addr,
                    failure.detail
                );
                None
            }
            Err(failure) => Some(Err(send_failure(failure))),
            Ok(results) => Some(Ok(outcomes(message, results))),
        }
    }

    /// Whether an idle connection is no longer usable: the server closed it or sent
    /// something unasked (a `421` before closing, RFC 5321 §3.8). Looks without
    /// waiting; anything but "nothing to read yet" counts as gone.
    fn is_stale(&mut self) -> bool {
        let Some(socket) = self.transport.socket() else {
            return true;
        };
        let mut probe = [0u8; 1];
        if socket.set_nonblocking(true).is_err() {
            return true;
        }
        let peeked = socket.peek(&mut probe);
        if socket.set_nonblocking(false).is_err() {
            return true;
        }
        !matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Drives the session until the current transaction's report, then until it is
    /// idle or closed. A session that ends without a report fails temporarily.
    fn transaction(&mut self, body: &mut Body<'_>) -> Report {
        self.messages += 1;
        let report = self.drive(Some(body));
        report.unwrap_or_else(|| {
            Err(Failure {
                permanent: false,
                reply: None,
                detail: "the SMTP session ended without an outcome".into(),
            })
        })
    }

    /// Ends the connection: QUIT on an idle one the server has not closed (waiting for
    /// its reply within the quit timeout), then the TLS close alert.
    pub(super) fn close(mut self) {
        if self.session.is_idle() && !self.is_stale() {
            self.session.end(clock());
            let _ = self.drive(None);
        }
        if let Transport::Tls(stream) = &mut self.transport {
            // Only write the alert: complete_io could wait to read the peer's.
            stream.conn.send_close_notify();
            while stream.conn.wants_write() {
                if let Ok(0) | Err(_) = stream.conn.write_tls(&mut stream.sock) {
                    break;
                }
            }
        }
    }

    /// Carries out the session's events and reads until it is idle or closed; returns
    /// the report given meanwhile.
    fn drive(&mut self, mut body: Option<&mut Body<'_>>) -> Option<Report> {
        let mut buf = vec![0u8; READ_BUFFER];
        let mut chunk = Vec::new();
        let mut report = None;
        loop {
            while let Some(event) = self.session.poll_event() {
                self.carry_out(event, body.as_deref_mut(), &mut chunk, &mut report);
            }
            if self.session.is_closed() || self.session.is_idle() {
                if report.is_some() {
                    self.note_xclient();
                }
                return report;
            }
            self.read(&mut buf);
        }
    }

    /// Logs once per connection that a client to name with XCLIENT could not be named:
    /// refused (a warning: the back-end does not trust this node) or not offered.
    fn note_xclient(&mut self) {
        if self.xclient_noted {
            return;
        }
        if let Some(refusal) = self.session.xclient_refusal() {
            self.xclient_noted = true;
            log::warn!(
                "outbound: {} refused XCLIENT ({}); mail goes without the original client address (is this node in its [trust] networks?)",
                self.addr,
                refusal.text()
            );
        } else if self.xclient_wanted && !self.session.server_offers_xclient() {
            self.xclient_noted = true;
            log::debug!(
                "outbound: {} does not offer XCLIENT; mail goes without the original client address",
                self.addr
            );
        }
    }

    fn carry_out(
        &mut self,
        event: ClientEvent,
        body: Option<&mut Body<'_>>,
        chunk: &mut Vec<u8>,
        report: &mut Option<Report>,
    ) {
        let now = clock();
        match event {
            ClientEvent::Send(bytes) => {
                if let Err(e) = self.transport.write_all(&bytes) {
                    self.session.handle_io_error(now, &e.to_string());
                }
            }
            ClientEvent::StartTls => match self.start_tls() {
                Ok(()) => self.session.handle_tls_ready(clock()),
                Err(reason) => {
                    self.tls_failed = true;
                    self.session.handle_tls_failed(clock(), &reason);
                }
            },
            ClientEvent::ReadBody { max } => match body.map(|b| b.read(max, chunk)) {
                Some(Ok(())) => self.session.handle_body(now, chunk, chunk.is_empty()),
                Some(Err(e)) => self.session.handle_body_error(now, &e.to_string()),
                None => self.session.handle_body_error(now, "no message to send"),
            },
            ClientEvent::Finished(r) => *report = Some(r),
            ClientEvent::Close => {}
        }
    }

    /// One read from the server, bounded by the session's deadline.
    fn read(&mut self, buf: &mut [u8]) {
        let now = clock();
        let Some(deadline) = self.session.poll_timeout() else {
            // Waiting without a deadline would hang for ever: a session bug, not a
            // server's fault; end the attempt.
            return self
                .session
                .handle_io_error(now, "the session waits for nothing");
        };
        let wait = deadline.saturating_duration_since(now);
        if wait.is_zero() {
            return self.session.handle_timeout(now);
        }
        if let Some(socket) = self.transport.socket()
            && let Err(e) = socket.set_read_timeout(Some(wait.max(MIN_WAIT)))
        {
            return self.session.handle_io_error(now, &e.to_string());
        }
        match self.transport.read(buf) {
            Ok(0) => self.session.handle_eof(clock()),
            Ok(n) => self.session.handle_input(clock(), &buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                self.session.handle_timeout(clock())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => self.session.handle_eof(clock()),
            Err(e) => self.session.handle_io_error(clock(), &e.to_string()),
        }
    }

    /// The RFC 3207 handshake on the plaintext socket, bounded by the command timeout.
    fn start_tls(&mut self) -> Result<(), String> {
        let Transport::Plain(socket) = std::mem::replace(&mut self.transport, Transport::Gone)
        else {
            return Err("STARTTLS on a connection that is not plaintext".into());
        };
        let stream = handshake(socket, &self.options, self.policy, &self.tls_name)?;
        self.transport = Transport::Tls(Box::new(stream));
        Ok(())
    }
}

/// A TLS client handshake on `socket` after STARTTLS, bounded by the command timeout: verified under [`TlsPolicy::Required`] (with
/// [`SendOptions::tls_config`] when set, else against the roots), unverified otherwise.
fn handshake(
    mut socket: TcpStream,
    options: &SendOptions,
    policy: TlsPolicy,
    tls_name: &str,
) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
    let config = match (policy, &options.tls_config) {
        (TlsPolicy::Required, Some(config)) => config.clone(),
        (TlsPolicy::Required, None) => tls::verified(options.roots.clone())?,
        (TlsPolicy::Opportunistic | TlsPolicy::Disabled, _) => tls::opportunistic()?,
    };
    let bare = tls_name.trim_start_matches('[').trim_end_matches(']');
    let name = match ServerName::try_from(bare.to_owned()) {
        Ok(name) => name,
        Err(_) if policy != TlsPolicy::Required => socket
            .peer_addr()
            .map(|a| ServerName::IpAddress(a.ip().into()))
            .map_err(|e| e.to_string())?,
        Err(e) => return Err(format!("{tls_name:?} is not a valid TLS name: {e}")),
    };
    let mut conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(options.command_timeout.max(MIN_WAIT)))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut socket) {
            // Send the alert that says why, if the socket still takes it.
            let _ = conn.write_tls(&mut socket);
            return Err(e.to_string());
        }
    }
    Ok(StreamOwned::new(conn, socket))
}

/// The store's monotonic clock, the one place this module reads it.
fn clock() -> Instant {
    Instant::now()
}
