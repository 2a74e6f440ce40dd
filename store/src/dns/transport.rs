//! One DNS exchange with one nameserver (RFC 1035 §4.2): a query over UDP, retried once
//! on timeout, and over TCP when the UDP answer comes back truncated (RFC 7766 §5).
//!
//! The answer is checked before it is believed: the id must be ours (a random 16-bit id,
//! RFC 5452 §9.2), the QR bit set, and the question section must repeat our question.
//! The UDP socket is connected, so the kernel drops datagrams from any other address.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, TYPE};

/// Largest UDP answer we read. We advertise no EDNS buffer size, so servers send at most
/// 512 bytes (RFC 1035 §4.2.1); the larger buffer only tolerates servers that ignore that.
const UDP_BUFFER: usize = 4096;

/// How many UDP datagrams that are not our answer (wrong id, wrong question) we skip
/// before giving up on this attempt: bounds the work a flood of spoofed replies can cause.
const MAX_STRAY_DATAGRAMS: usize = 16;

/// Why one exchange with one server gave no usable answer.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// No answer within the timeout (after the one retry).
    Timeout,
    /// A socket error, or an answer we could not decode or that did not match the question.
    Failed(String),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::Timeout => f.write_str("timed out"),
            ExchangeError::Failed(why) => f.write_str(why),
        }
    }
}

/// Sends a query for `name`/`qtype` to `server` and returns the raw bytes of the checked
/// answer. `timeout` bounds each UDP attempt (two at most) and the TCP exchange.
pub(crate) fn exchange(
    server: SocketAddr,
    name: &str,
    qtype: TYPE,
    timeout: Duration,
) -> Result<Vec<u8>, ExchangeError> {
    let id = random_id()?;
    let query = build_query(id, name, qtype)?;
    let mut last = ExchangeError::Timeout;
    for _attempt in 0..2 {
        match udp_attempt(server, &query, id, name, qtype, timeout) {
            Ok(answer) => {
                let truncated = Packet::parse(&answer)
                    .map(|p| p.has_flags(PacketFlag::TRUNCATION))
                    .unwrap_or(false);
                if truncated {
                    return tcp_exchange(server, &query, id, name, qtype, timeout);
                }
                return Ok(answer);
            }
            Err(ExchangeError::Timeout) => last = ExchangeError::Timeout,
            Err(other) => return Err(other),
        }
    }
    Err(last)
}

fn random_id() -> Result<u16, ExchangeError> {
    let mut bytes = [0u8; 2];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| ExchangeError::Failed(format!("no random query id: {e}")))?;
    Ok(u16::from_be_bytes(bytes))
}

fn build_query(id: u16, name: &str, qtype: TYPE) -> Result<Vec<u8>, ExchangeError> {
    let qname = Name::new(name).map_err(|e| ExchangeError::Failed(format!("bad name: {e}")))?;
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    packet.questions.push(Question::new(
        qname,
        QTYPE::TYPE(qtype),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet
        .build_bytes_vec()
        .map_err(|e| ExchangeError::Failed(format!("cannot encode query: {e}")))
}

fn udp_attempt(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    name: &str,
    qtype: TYPE,
    timeout: Duration,
) -> Result<Vec<u8>, ExchangeError> {
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let failed = |what: &str, e: io::Error| ExchangeError::Failed(format!("{what}: {e}"));
    let socket = UdpSocket::bind(local).map_err(|e| failed("udp bind", e))?;
    socket
        .connect(server)
        .map_err(|e| failed("udp connect", e))?;
    socket.send(query).map_err(|e| failed("udp send", e))?;
    let deadline = Instant::now() + timeout;
    let mut buffer = vec![0u8; UDP_BUFFER];
    for _ in 0..MAX_STRAY_DATAGRAMS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ExchangeError::Timeout);
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| failed("udp timeout", e))?;
        match socket.recv(&mut buffer) {
            Ok(n) => {
                let answer = buffer.get(..n).unwrap_or_default();
                if matches_question(answer, id, name, qtype) {
                    return Ok(answer.to_vec());
                }
            }
            Err(e) if is_timeout(&e) => return Err(ExchangeError::Timeout),
            // A port-unreachable ICMP shows up as "connection refused": no server there.
            Err(e) => return Err(failed("udp receive", e)),
        }
    }
    Err(ExchangeError::Timeout)
}

fn tcp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    name: &str,
    qtype: TYPE,
    timeout: Duration,
) -> Result<Vec<u8>, ExchangeError> {
    let failed = |what: &str, e: io::Error| {
        if is_timeout(&e) {
            ExchangeError::Timeout
        } else {
            ExchangeError::Failed(format!("{what}: {e}"))
        }
    };
    let mut stream =
        TcpStream::connect_timeout(&server, timeout).map_err(|e| failed("tcp connect", e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| failed("tcp timeout", e))?;
    let length =
        u16::try_from(query.len()).map_err(|_| ExchangeError::Failed("query too long".into()))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(query);
    stream
        .write_all(&framed)
        .map_err(|e| failed("tcp send", e))?;
    let mut prefix = [0u8; 2];
    stream
        .read_exact(&mut prefix)
        .map_err(|e| failed("tcp receive", e))?;
    // The two-byte length prefix bounds the answer to 65535 bytes (RFC 1035 §4.2.2).
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream
        .read_exact(&mut answer)
        .map_err(|e| failed("tcp receive", e))?;
    if matches_question(&answer, id, name, qtype) {
        Ok(answer)
    } else {
        Err(ExchangeError::Failed(
            "tcp answer does not match the question".into(),
        ))
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Whether `answer` is a response to our query: same id, QR set, and exactly our question
/// (names compare case-insensitively, RFC 4343).
fn matches_question(answer: &[u8], id: u16, name: &str, qtype: TYPE) -> bool {
    let Ok(packet) = Packet::parse(answer) else {
        return false;
    };
    if packet.id() != id || !packet.has_flags(PacketFlag::RESPONSE) {
        return false;
    }
    match packet.questions.as_slice() {
        [question] => {
            same_name(&question.qname.to_string(), name)
                && question.qtype == QTYPE::TYPE(qtype)
                && question.qclass == QCLASS::CLASS(CLASS::IN)
        }
        _ => false,
    }
}

/// Compares two domain names ignoring ASCII case and a trailing root dot.
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}
