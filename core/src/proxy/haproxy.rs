//! The PROXY protocol (HAProxy's `proxy-protocol.txt`): how a front-end tells a back-end
//! the real client address in the first bytes of a connection.
//!
//! Version 1 is one text line (`PROXY TCP4 src dst sport dport\r\n`, at most 107
//! bytes); version 2 is a binary header: a 12-byte signature, version and command,
//! family, a 16-bit length, the addresses, then TLVs. The front-end sends version 2
//! ([`encode_v2`]); a back-end accepts either ([`parse`]).
//!
//! Besides the addresses, tidegate carries two TLVs: `PP2_TYPE_SSL` (0x20) with the
//! `PP2_SUBTYPE_SSL_VERSION` sub-TLV when the client leg used TLS, and a custom TLV
//! ([`TLV_HOPS`], in the 0xE0-0xEF range the spec reserves for private use) with the
//! number of proxy hops still allowed, which breaks routing loops.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature that starts a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// The longest version 1 line, CRLF included (spec §2.1).
pub const V1_MAX_LEN: usize = 107;

/// The longest version 2 header accepted: 16 fixed bytes plus this many bytes of
/// addresses and TLVs. The spec allows 65535, but the addresses take at most 216 and
/// tidegate's TLVs a few dozen; 1 KiB leaves room for a load balancer's extra TLVs
/// while keeping a hostile peer's header small.
pub const V2_MAX_PAYLOAD: usize = 1024;

/// Type of the TLV with TLS facts about the client leg (spec §2.2.5).
pub const TLV_SSL: u8 = 0x20;
/// Sub-TLV of [`TLV_SSL`]: the TLS version as US-ASCII, e.g. `TLSv1.3`.
pub const SUBTLV_SSL_VERSION: u8 = 0x21;
/// `PP2_CLIENT_SSL`: the client connected over TLS.
const PP2_CLIENT_SSL: u8 = 0x01;
/// tidegate's private TLV: one byte, the proxy hops still allowed (spec §2.2.8 custom range).
pub const TLV_HOPS: u8 = 0xE0;

/// The longest TLS version string carried; real ones are 7 bytes (`TLSv1.3`).
const MAX_TLS_VERSION_LEN: usize = 32;

/// The client and server ends of the proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxiedAddresses {
    /// The real client.
    pub source: SocketAddr,
    /// The address the client connected to (the front-end's listener).
    pub destination: SocketAddr,
}

/// TLS facts about the client leg that the front-end terminated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedTls {
    /// The protocol version, as the spec's `PP2_SUBTYPE_SSL_VERSION` (`TLSv1.3`); empty
    /// when not known.
    pub version: String,
}

/// A parsed or to-be-sent PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyHeader {
    /// The connection's real ends; `None` for `LOCAL` (v2), `UNKNOWN` (v1) or an
    /// unsupported family: the connection is the proxy's own (a health check) and the
    /// peer's socket address stands.
    pub addresses: Option<ProxiedAddresses>,
    /// Set when the client used TLS to reach the front-end.
    pub tls: Option<ProxiedTls>,
    /// Proxy hops still allowed after this one ([`TLV_HOPS`]).
    pub hops: Option<u8>,
}

/// Why bytes are not a valid PROXY header. The connection must be closed: the spec
/// forbids guessing (§2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// Neither signature: the peer did not send a PROXY header.
    NotProxy,
    /// A version 1 line that breaks the grammar or is longer than [`V1_MAX_LEN`].
    BadV1,
    /// A version 2 header with a wrong version, command, length or TLV.
    BadV2,
    /// A version 2 header longer than [`V2_MAX_PAYLOAD`] allows.
    TooLong,
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProxyError::NotProxy => "no PROXY protocol header",
            ProxyError::BadV1 => "malformed PROXY v1 header",
            ProxyError::BadV2 => "malformed PROXY v2 header",
            ProxyError::TooLong => "PROXY v2 header too long",
        })
    }
}

impl std::error::Error for ProxyError {}

/// Parses a PROXY header (v1 or v2) at the start of `buf`.
///
/// `Ok(None)`: the bytes so far are a valid beginning, more are needed. `Ok(Some((header,
/// n)))`: the header took the first `n` bytes; what follows belongs to the protocol.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let v1_prefix = b"PROXY ";
    let sig = buf.len().min(V2_SIGNATURE.len());
    if buf[..sig] == V2_SIGNATURE[..sig] && !buf.is_empty() {
        return parse_v2(buf);
    }
    let pre = buf.len().min(v1_prefix.len());
    if buf[..pre] == v1_prefix[..pre] {
        return parse_v1(buf);
    }
    if buf.is_empty() {
        return Ok(None);
    }
    Err(ProxyError::NotProxy)
}

/// Parses a version 1 line (spec §2.1): `PROXY TCP4|TCP6|UNKNOWN ...\r\n`.
pub fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX_LEN {
            Err(ProxyError::BadV1)
        } else {
            Ok(None)
        };
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err(ProxyError::BadV1);
    }
    let line = std::str::from_utf8(&window[..lf - 1]).map_err(|_| ProxyError::BadV1)?;
    let mut fields = line.split(' ');
    if fields.next() != Some("PROXY") {
        return Err(ProxyError::BadV1);
    }
    let header = match fields.next() {
        // "UNKNOWN" may be followed by anything, which the receiver ignores (§2.1).
        Some("UNKNOWN") => ProxyHeader::default(),
        Some(family @ ("TCP4" | "TCP6")) => {
            let v4 = family == "TCP4";
            let mut next = || fields.next().ok_or(ProxyError::BadV1);
            let (src, dst) = (v1_ip(next()?, v4)?, v1_ip(next()?, v4)?);
            let (sport, dport) = (v1_port(next()?)?, v1_port(next()?)?);
            if fields.next().is_some() {
                return Err(ProxyError::BadV1);
            }
            ProxyHeader {
                addresses: Some(ProxiedAddresses {
                    source: SocketAddr::new(src, sport),
                    destination: SocketAddr::new(dst, dport),
                }),
                ..ProxyHeader::default()
            }
        }
        _ => return Err(ProxyError::BadV1),
    };
    Ok(Some((header, lf + 1)))
}

fn v1_ip(text: &str, v4: bool) -> Result<IpAddr, ProxyError> {
    let ip = if v4 {
        text.parse::<Ipv4Addr>().map(IpAddr::V4)
    } else {
        text.parse::<Ipv6Addr>().map(IpAddr::V6)
    };
    ip.map_err(|_| ProxyError::BadV1)
}

/// A decimal port without leading zeros (§2.1).
fn v1_port(text: &str) -> Result<u16, ProxyError> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return Err(ProxyError::BadV1);
    }
    text.parse().map_err(|_| ProxyError::BadV1)
}

/// Parses a version 2 header (spec §2.2).
pub fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let sig = buf.len().min(V2_SIGNATURE.len());
    if buf[..sig] != V2_SIGNATURE[..sig] {
        return Err(ProxyError::NotProxy);
    }
    if buf.len() < 16 {
        // Check what is there already so garbage fails early.
        if let Some(&ver_cmd) = buf.get(12) {
            check_ver_cmd(ver_cmd)?;
        }
        return Ok(None);
    }
    let ver_cmd = buf[12];
    let local = check_ver_cmd(ver_cmd)?;
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyError::TooLong);
    }
    let Some(payload) = buf.get(16..16 + len) else {
        return Ok(None);
    };
    let (addresses, tlvs) = match family {
        // TCP over IPv4, UDP over IPv4.
        0x11 | 0x12 => {
            let (a, rest) = split(payload, 12)?;
            let src = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let dst = Ipv4Addr::new(a[4], a[5], a[6], a[7]);
            let addrs = ProxiedAddresses {
                source: SocketAddr::new(src.into(), be16(&a[8..10])),
                destination: SocketAddr::new(dst.into(), be16(&a[10..12])),
            };
            (Some(addrs), rest)
        }
        // TCP over IPv6, UDP over IPv6.
        0x21 | 0x22 => {
            let (a, rest) = split(payload, 36)?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            let addrs = ProxiedAddresses {
                source: SocketAddr::new(ip(0).into(), be16(&a[32..34])),
                destination: SocketAddr::new(ip(16).into(), be16(&a[34..36])),
            };
            (Some(addrs), rest)
        }
        // UNSPEC, or UNIX sockets (216 address bytes): no IP addresses to pass on.
        0x00 => (None, payload),
        0x31 | 0x32 => (None, split(payload, 216)?.1),
        _ => return Err(ProxyError::BadV2),
    };
    let mut header = ProxyHeader {
        addresses: if local { None } else { addresses },
        ..ProxyHeader::default()
    };
    read_tlvs(tlvs, &mut header)?;
    Ok(Some((header, 16 + len)))
}

/// Version 2, and the command: true for LOCAL, false for PROXY.
fn check_ver_cmd(ver_cmd: u8) -> Result<bool, ProxyError> {
    match ver_cmd {
        0x20 => Ok(true),
        0x21 => Ok(false),
        _ => Err(ProxyError::BadV2),
    }
}

fn split(payload: &[u8], n: usize) -> Result<(&[u8], &[u8]), ProxyError> {
    if payload.len() < n {
        return Err(ProxyError::BadV2);
    }
    Ok(payload.split_at(n))
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Walks the TLVs after the addresses; unknown types are skipped (§2.2.9).
fn read_tlvs(mut tlvs: &[u8], header: &mut ProxyHeader) -> Result<(), ProxyError> {
    while !tlvs.is_empty() {
        let (head, rest) = split(tlvs, 3)?;
        let (value, rest) = split(rest, usize::from(be16(&head[1..3])))?;
        tlvs = rest;
        match head[0] {
            TLV_SSL => header.tls = read_ssl(value)?,
            TLV_HOPS => match value {
                [hops] => header.hops = Some(*hops),
                _ => return Err(ProxyError::BadV2),
            },
            _ => {}
        }
    }
    Ok(())
}

/// `PP2_TYPE_SSL`: client flags (1 byte), verify (4 bytes), then sub-TLVs (§2.2.5).
fn read_ssl(value: &[u8]) -> Result<Option<ProxiedTls>, ProxyError> {
    let (fixed, mut subs) = split(value, 5)?;
    let mut tls = ProxiedTls {
        version: String::new(),
    };
    while !subs.is_empty() {
        let (head, rest) = split(subs, 3)?;
        let (sub, rest) = split(rest, usize::from(be16(&head[1..3])))?;
        subs = rest;
        if head[0] == SUBTLV_SSL_VERSION {
            if sub.len() > MAX_TLS_VERSION_LEN || !sub.iter().all(u8::is_ascii_graphic) {
                return Err(ProxyError::BadV2);
            }
            tls.version = String::from_utf8_lossy(sub).into_owned();
        }
    }
    Ok((fixed[0] & PP2_CLIENT_SSL != 0).then_some(tls))
}

/// Encodes a version 2 `PROXY` header for a TCP connection from `addresses.source` to
/// `addresses.destination`, with the TLS and hop-count TLVs when set. Mixed families are
/// sent as IPv6 with IPv4-mapped addresses. With no addresses a `LOCAL` header is sent.
pub fn encode_v2(header: &ProxyHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&V2_SIGNATURE);
    let mut payload = Vec::with_capacity(64);
    match header.addresses {
        None => {
            out.push(0x20);
            out.push(0x00);
        }
        Some(ProxiedAddresses {
            source,
            destination,
        }) => {
            out.push(0x21);
            match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11);
                    payload.extend_from_slice(&s.octets());
                    payload.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.push(0x21);
                    payload.extend_from_slice(&v6(s).octets());
                    payload.extend_from_slice(&v6(d).octets());
                }
            }
            payload.extend_from_slice(&source.port().to_be_bytes());
            payload.extend_from_slice(&destination.port().to_be_bytes());
        }
    }
    if let Some(tls) = &header.tls {
        let version = &tls.version.as_bytes()[..tls.version.len().min(MAX_TLS_VERSION_LEN)];
        let mut value = vec![PP2_CLIENT_SSL, 0, 0, 0, 0];
        if !version.is_empty() {
            tlv(&mut value, SUBTLV_SSL_VERSION, version);
        }
        tlv(&mut payload, TLV_SSL, &value);
    }
    if let Some(hops) = header.hops {
        tlv(&mut payload, TLV_HOPS, &[hops]);
    }
    // At most 36 address bytes and two short TLVs: far below u16::MAX.
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

/// Encodes a version 1 line (for back-ends that only speak v1).
pub fn encode_v1(addresses: Option<&ProxiedAddresses>) -> String {
    match addresses {
        Some(a) => match (a.source.ip(), a.destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => format!(
                "PROXY TCP4 {s} {d} {} {}\r\n",
                a.source.port(),
                a.destination.port()
            ),
            (s, d) => format!(
                "PROXY TCP6 {} {} {} {}\r\n",
                v6(s),
                v6(d),
                a.source.port(),
                a.destination.port()
            ),
        },
        None => "PROXY UNKNOWN\r\n".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(src: &str, dst: &str) -> ProxiedAddresses {
        ProxiedAddresses {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        }
    }

    #[test]
    fn v1_forms() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 110\r\nUSER x\r\n";
        let (header, n) = parse(line).unwrap().unwrap();
        assert_eq!(n, 45);
        assert_eq!(
            header.addresses,
            Some(addrs("192.0.2.1:56324", "198.51.100.7:110"))
        );
        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 143\r\n";
        assert!(parse(v6).unwrap().is_some());
        let (unknown, _) = parse(b"PROXY UNKNOWN whatever\r\n").unwrap().unwrap();
        assert_eq!(unknown, ProxyHeader::default());
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(None));
        assert_eq!(parse(b"PRO"), Ok(None));
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert_eq!(parse(bad), Err(ProxyError::BadV1), "{bad:?}");
        }
        assert_eq!(parse(&[b'P'; 200][..]), Err(ProxyError::NotProxy));
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(200, b'x');
        assert_eq!(parse(&long), Err(ProxyError::BadV1));
        assert_eq!(parse(b"USER alice\r\n"), Err(ProxyError::NotProxy));
    }

    #[test]
    fn v2_bytes_are_as_specified() {
        let header = ProxyHeader {
            addresses: Some(addrs("192.0.2.1:56324", "198.51.100.7:110")),
            tls: None,
            hops: Some(4),
        };
        let bytes = encode_v2(&header);
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0x00, 16]);
        expected.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 7, 0xdc, 0x04, 0, 110]);
        expected.extend_from_slice(&[0xE0, 0, 1, 4]);
        assert_eq!(bytes, expected);
        assert_eq!(parse(&bytes), Ok(Some((header, bytes.len()))));
    }

    #[test]
    fn v2_round_trips_tls_and_ipv6() {
        let header = ProxyHeader {
            addresses: Some(addrs("[2001:db8::1]:4000", "[2001:db8::2]:993")),
            tls: Some(ProxiedTls {
                version: "TLSv1.3".into(),
            }),
            hops: Some(0),
        };
        let mut bytes = encode_v2(&header);
        let n = bytes.len();
        bytes.extend_from_slice(b"a001 LOGIN");
        assert_eq!(parse(&bytes), Ok(Some((header, n))));
        for cut in 0..n {
            assert_eq!(parse(&bytes[..cut]), Ok(None), "prefix of {cut}");
        }
        // Mixed families become IPv4-mapped IPv6.
        let mixed = encode_v2(&ProxyHeader {
            addresses: Some(addrs("192.0.2.1:1", "[2001:db8::2]:2")),
            ..ProxyHeader::default()
        });
        let (parsed, _) = parse(&mixed).unwrap().unwrap();
        assert_eq!(
            parsed.addresses.unwrap().source,
            "[::ffff:192.0.2.1]:1".parse().unwrap()
        );
        // LOCAL carries no addresses.
        let local = encode_v2(&ProxyHeader::default());
        assert_eq!(local.len(), 16);
        assert_eq!(parse(&local), Ok(Some((ProxyHeader::default(), 16))));
    }

    #[test]
    fn v2_rejects_bad_headers() {
        let good = encode_v2(&ProxyHeader {
            addresses: Some(addrs("192.0.2.1:1", "192.0.2.2:2")),
            ..ProxyHeader::default()
        });
        let mut bad_version = good.clone();
        bad_version[12] = 0x11;
        assert_eq!(parse(&bad_version), Err(ProxyError::BadV2));
        let mut bad_family = good.clone();
        bad_family[13] = 0x41;
        assert_eq!(parse(&bad_family), Err(ProxyError::BadV2));
        let mut short = good.clone();
        short[15] = 4;
        assert_eq!(parse(&short), Err(ProxyError::BadV2));
        let mut huge = good.clone();
        huge[14] = 0xff;
        assert_eq!(parse(&huge), Err(ProxyError::TooLong));
        let mut bad_tlv = good[..16].to_vec();
        bad_tlv[15] = 15;
        bad_tlv.extend_from_slice(&good[16..28]);
        bad_tlv.extend_from_slice(&[0xE0, 0, 2]);
        assert_eq!(parse(&bad_tlv), Err(ProxyError::BadV2));
    }

    #[test]
    fn v1_encoding_parses_back() {
        let a = addrs("192.0.2.1:1", "192.0.2.2:2");
        let line = encode_v1(Some(&a));
        assert_eq!(line, "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n");
        let (header, _) = parse(line.as_bytes()).unwrap().unwrap();
        assert_eq!(header.addresses, Some(a));
    }
}
