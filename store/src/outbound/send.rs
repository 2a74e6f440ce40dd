//! One delivery attempt on a blocking socket: connect, then drive a
//! [`ClientSession`] until it closes, doing what it asks (write, TLS handshake, read the
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

use super::{
    Destination, OutboundMessage, Outcome, RecipientOutcome, SendFailure, SendOptions, TlsPolicy,
    tls,
};

/// Bytes read from the socket at once: one TLS record's worth.
const READ_BUFFER: usize = 16 * 1024;

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
) -> Result<Vec<RecipientOutcome>, SendFailure> {
    let mut envelope = Envelope {
        mail_from: message.mail_from.to_owned(),
        recipients: message.recipients.to_vec(),
        size: 0,
        eight_bit: message.eight_bit,
        smtputf8: message.smtputf8,
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

    let (stream, addr) = connect(dest, options)?;
    let attempt = Attempt {
        dest,
        options,
        message,
        envelope: &envelope,
    };
    let result = match attempt.run(stream, options.tls) {
        Ok(Err(TlsFellThrough)) => {
            log::info!("outbound: TLS with {addr} failed, retrying without TLS");
            connect_one(addr, options)
                .map_err(|e| connect_failure(format!("{addr}: {e}")))
                .and_then(|stream| attempt.run(stream, TlsPolicy::Disabled))
                .and_then(|result| {
                    result.map_err(|TlsFellThrough| connect_failure("TLS without TLS".into()))
                })
        }
        Ok(Ok(outcomes)) => Ok(outcomes),
        Err(failure) => Err(failure),
    };
    log_attempt(addr, &result);
    result
}

/// One log line per attempt, for the operator: where it went and what came of it.
fn log_attempt(addr: SocketAddr, result: &Result<Vec<RecipientOutcome>, SendFailure>) {
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
}

impl Attempt<'_> {
    fn run(
        &self,
        stream: TcpStream,
        policy: TlsPolicy,
    ) -> Result<Result<Vec<RecipientOutcome>, TlsFellThrough>, SendFailure> {
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
            reuse: false,
        };
        let body = Body::open(self.message)?;
        let session = ClientSession::new(config, self.envelope.clone(), clock());
        let mut driver = Driver {
            session,
            transport: Transport::Plain(stream),
            body,
            options: self.options,
            policy,
            tls_name: &self.dest.tls_name,
            report: None,
            tls_failed: false,
        };
        driver.run();
        let tls_failed = driver.tls_failed;
        let report = driver.report.unwrap_or_else(|| {
            Err(Failure {
                permanent: false,
                reply: None,
                detail: "the SMTP session ended without an outcome".into(),
            })
        });
        match report {
            Err(failure) if tls_failed && policy == TlsPolicy::Opportunistic => {
                log::debug!("outbound: {}", failure.detail);
                Ok(Err(TlsFellThrough))
            }
            Err(failure) => Err(SendFailure {
                permanent: failure.permanent,
                reply: failure.reply,
                detail: failure.detail,
            }),
            Ok(results) => Ok(Ok(self
                .message
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
                .collect())),
        }
    }
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

/// Runs one session over one connection.
struct Driver<'a> {
    session: ClientSession,
    transport: Transport,
    body: Body<'a>,
    options: &'a SendOptions,
    policy: TlsPolicy,
    tls_name: &'a str,
    report: Option<Report>,
    tls_failed: bool,
}

impl Driver<'_> {
    fn run(&mut self) {
        let mut buf = vec![0u8; READ_BUFFER];
        let mut chunk = Vec::new();
        loop {
            while let Some(event) = self.session.poll_event() {
                self.carry_out(event, &mut chunk);
            }
            if self.session.is_closed() {
                break;
            }
            self.read(&mut buf);
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

    fn carry_out(&mut self, event: ClientEvent, chunk: &mut Vec<u8>) {
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
            ClientEvent::ReadBody { max } => match self.body.read(max, chunk) {
                Ok(()) => self.session.handle_body(now, chunk, chunk.is_empty()),
                Err(e) => self.session.handle_body_error(now, &e.to_string()),
            },
            ClientEvent::Finished(report) => self.report = Some(report),
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
        let stream = handshake(socket, self.options, self.policy, self.tls_name)?;
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
