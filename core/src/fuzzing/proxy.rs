//! Proxy harnesses: the PROXY protocol and XCLIENT codecs, and the POP3 and submission
//! front-ends driven by a script of shell events with a scripted back-end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Script, WIND_DOWN_STEPS};
use crate::io::{Action, MAX_READ, Peer, RequestId, Session};
use crate::proxy::haproxy::{self, ProxiedAddresses, ProxiedTls, ProxyHeader};
use crate::proxy::imap_id;
use crate::proxy::xclient;
use crate::proxy::{
    ClientAddressMode, FrontConn, ImapFrontSession, Pop3FrontSession, ProxyConfig,
    SubmissionFrontSession,
};
use crate::request::{Account, Backend, Failure, Reply, Request, Route};

// ---------------------------------------------------------------------------------------
// Codecs
// ---------------------------------------------------------------------------------------

/// Fuzzes [`haproxy::parse`] with arbitrary bytes, and the v2 encoder with a header
/// built from them.
///
/// Invariants: parsing never panics and never claims more bytes than it was given; a
/// header parses the same from exactly its own bytes and from every longer input; every
/// strict prefix of it is "incomplete", never an error; a v2 header re-encodes to bytes
/// that parse back to it; a header built from the input survives encode → parse.
pub fn proxy_header(data: &[u8]) {
    match haproxy::parse(data) {
        Ok(Some((header, n))) => {
            assert!(
                n > 0 && n <= data.len(),
                "claimed {n} of {} bytes",
                data.len()
            );
            assert_eq!(
                haproxy::parse(&data[..n]),
                Ok(Some((header.clone(), n))),
                "the header alone parses differently"
            );
            for cut in 0..n {
                assert_eq!(haproxy::parse(&data[..cut]), Ok(None), "prefix {cut}");
            }
            if data.starts_with(&haproxy::V2_SIGNATURE) {
                let again = haproxy::encode_v2(&header);
                let parsed = haproxy::parse(&again).ok().flatten().map(|(h, _)| h);
                let mut expected = header.clone();
                // The encoder caps the version string and maps mixed families.
                if let Some(tls) = expected.tls.as_mut() {
                    tls.version.truncate(32);
                }
                if let Some(a) = expected.addresses.as_mut() {
                    *a = canonical(*a);
                }
                assert_eq!(parsed, Some(expected), "v2 header does not re-encode");
            }
        }
        Ok(None) => assert!(data.len() < haproxy::V1_MAX_LEN + 16 + haproxy::V2_MAX_PAYLOAD),
        Err(_) => {}
    }
    let built = header_from(data);
    let bytes = haproxy::encode_v2(&built);
    let mut expected = built.clone();
    if let Some(a) = expected.addresses.as_mut() {
        *a = canonical(*a);
    }
    assert_eq!(
        haproxy::parse(&bytes),
        Ok(Some((expected, bytes.len()))),
        "encode → parse changed {built:?}"
    );
    if let Some(a) = built.addresses.as_ref() {
        let line = haproxy::encode_v1(Some(a));
        let parsed = haproxy::parse(line.as_bytes()).ok().flatten();
        assert_eq!(parsed.map(|(h, _)| h.addresses), Some(Some(canonical(*a))));
    }
}

/// Mixed or IPv6 families come back as IPv6 (IPv4-mapped where needed).
fn canonical(a: ProxiedAddresses) -> ProxiedAddresses {
    let v6 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    };
    if a.source.is_ipv4() && a.destination.is_ipv4() {
        return a;
    }
    ProxiedAddresses {
        source: SocketAddr::new(v6(a.source.ip()), a.source.port()),
        destination: SocketAddr::new(v6(a.destination.ip()), a.destination.port()),
    }
}

/// A header whose fields come from the input bytes (zero-padded).
fn header_from(data: &[u8]) -> ProxyHeader {
    let mut bytes = [0u8; 48];
    let n = data.len().min(bytes.len());
    bytes[..n].copy_from_slice(&data[..n]);
    let ip = |at: usize, v6: bool| -> IpAddr {
        if v6 {
            let mut o = [0u8; 16];
            o.copy_from_slice(&bytes[at..at + 16]);
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            IpAddr::V4(Ipv4Addr::new(
                bytes[at],
                bytes[at + 1],
                bytes[at + 2],
                bytes[at + 3],
            ))
        }
    };
    let flags = bytes[0];
    let addresses = (flags & 1 != 0).then(|| ProxiedAddresses {
        source: SocketAddr::new(
            ip(4, flags & 2 != 0),
            u16::from_be_bytes([bytes[1], bytes[2]]),
        ),
        destination: SocketAddr::new(ip(20, flags & 4 != 0), u16::from(bytes[3])),
    });
    let tls = (flags & 8 != 0).then(|| ProxiedTls {
        version: ["", "TLSv1.2", "TLSv1.3"][usize::from(bytes[36] % 3)].into(),
    });
    ProxyHeader {
        addresses,
        tls,
        hops: (flags & 16 != 0).then_some(bytes[37]),
    }
}

/// Fuzzes [`xclient::parse`] with one line, and xtext with the whole input.
///
/// Invariants: no panic; xtext decode(encode(x)) = x for any bytes; a parsed command
/// with any attribute tidegate keeps re-encodes to a line that parses to the same
/// attributes.
pub fn proxy_xclient(data: &[u8]) {
    let encoded = xclient::xtext_encode(data);
    assert_eq!(
        xclient::xtext_decode(encoded.as_bytes()).as_deref(),
        Some(data)
    );
    if let Ok(x) = xclient::parse(data) {
        let line = xclient::encode(&x);
        // Only attributes tidegate keeps are re-encoded; with none left there is no
        // command to send.
        if line.len() <= xclient::MAX_LINE && x != xclient::Xclient::default() {
            assert_eq!(xclient::parse(line.as_bytes()), Ok(x), "{line:?}");
        }
    }
}

/// Fuzzes [`imap_id::parse_params`] with the arguments of an ID command.
///
/// Invariants: no panic; results within RFC 2971 §3.3 limits; a parsed list whose
/// values are all present re-encodes to a command that parses to the same pairs.
pub fn proxy_imap_id(data: &[u8]) {
    let Ok(pairs) = imap_id::parse_params(data) else {
        return;
    };
    assert!(pairs.len() <= imap_id::MAX_PAIRS);
    for (key, value) in &pairs {
        assert!(key.len() <= imap_id::MAX_KEY);
        assert!(value.as_ref().is_none_or(|v| v.len() <= imap_id::MAX_VALUE));
    }
    let _ = imap_id::client_of(&pairs);
    if pairs.iter().all(|(_, v)| v.is_some()) {
        let borrowed: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref().unwrap_or_default()))
            .collect();
        let line = imap_id::encode(&borrowed);
        let again = if pairs.is_empty() {
            // `ID ()` is not in the grammar; an empty list is sent as NIL.
            Ok(Vec::new())
        } else {
            imap_id::parse_params(&line.as_bytes()[3..])
        };
        assert_eq!(again, Ok(pairs), "{line:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Front-end sessions
// ---------------------------------------------------------------------------------------

/// What the scripted shell knows about the back-end connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    None,
    Connecting,
    Up,
}

/// The in-memory shell of the front-end harnesses; checks the contract as it goes.
struct Shell<S> {
    s: S,
    now: Instant,
    leg: Leg,
    routes: Vec<RequestId>,
    ended: bool,
    /// Client bytes handed out since the last client drain.
    client_backlog: usize,
    limit: usize,
}

impl<S: Session> Shell<S> {
    fn pump(&mut self) {
        while let Some(action) = self.s.poll_action() {
            assert!(!self.ended, "{action:?} after the session ended");
            match action {
                Action::Write {
                    to: Peer::Client,
                    bytes,
                } => {
                    self.client_backlog += bytes.len();
                    assert!(
                        self.client_backlog <= self.limit,
                        "{} client bytes not drained",
                        self.client_backlog
                    );
                }
                Action::Write {
                    to: Peer::Backend, ..
                } => assert_eq!(self.leg, Leg::Up, "back-end write without a connection"),
                Action::Connect { to, .. } => {
                    assert_eq!(to, Peer::Backend);
                    assert_eq!(self.leg, Leg::None, "second back-end connection");
                    self.leg = Leg::Connecting;
                }
                Action::Close { to: Peer::Backend } => {
                    assert_ne!(self.leg, Leg::None, "closing a back-end that is not there");
                    self.leg = Leg::None;
                }
                Action::Close { to: Peer::Client } => self.ended = true,
                Action::Splice { to_backend, .. } => {
                    assert_eq!(self.leg, Leg::Up, "splice without a back-end");
                    assert!(to_backend.len() <= 64 * 1024 + MAX_READ);
                    self.ended = true;
                }
                Action::Request { id, request } => {
                    if matches!(request, Request::Route { .. }) {
                        self.routes.push(id);
                    }
                }
                Action::StartTls { .. } => {}
            }
        }
    }

    fn route_reply(&mut self, choice: u8) {
        let Some(id) = self.routes.pop() else { return };
        let addr = |n: u8| SocketAddr::from(([10, 0, 0, n], 110));
        let reply = match choice % 6 {
            0 => Reply::Routed(Route {
                account: Account("alice@example.com".into()),
                backend: Backend {
                    host: "b1".into(),
                    addrs: vec![addr(1), addr(2)],
                },
            }),
            1 => Reply::Failed(Failure::Denied),
            2 => Reply::Failed(Failure::Temporary("down".into())),
            3 => Reply::Failed(Failure::Disabled),
            4 => Reply::Failed(Failure::Throttled(Duration::from_secs(5))),
            _ => Reply::Failed(Failure::Gone),
        };
        self.s.handle_reply(self.now, id, reply);
    }

    /// Runs one script; returns when it is used up.
    fn run(&mut self, script: &mut Script<'_>) {
        self.pump();
        while let Some(op) = script.byte() {
            if self.ended {
                return;
            }
            match op % 8 {
                0 => {
                    let line = script.line();
                    if self.s.wants_read(Peer::Client) {
                        self.s.handle_input(self.now, Peer::Client, line);
                    }
                }
                1 => {
                    let line = script.line();
                    if self.leg == Leg::Up && self.s.wants_read(Peer::Backend) {
                        self.s.handle_input(self.now, Peer::Backend, line);
                    }
                }
                2 => {
                    let choice = script.byte().unwrap_or(0);
                    self.route_reply(choice);
                }
                3 => {
                    if self.leg == Leg::Connecting {
                        let ok = script.byte().unwrap_or(0).is_multiple_of(2);
                        self.leg = if ok { Leg::Up } else { Leg::None };
                        let result = if ok { Ok(()) } else { Err("refused".into()) };
                        self.s.handle_connected(self.now, Peer::Backend, result);
                    }
                }
                4 => {
                    let secs = script.byte().unwrap_or(1);
                    self.now += Duration::from_secs(u64::from(secs));
                    self.s.handle_timeout(self.now);
                }
                5 => {
                    let peer = if script.byte().unwrap_or(0).is_multiple_of(2) {
                        Peer::Client
                    } else {
                        Peer::Backend
                    };
                    // The back-end can only end a connection that is up; the session
                    // answers with its Close.
                    if peer == Peer::Client || self.leg == Leg::Up {
                        self.s.handle_eof(self.now, peer);
                    }
                }
                6 => {
                    self.client_backlog = 0;
                    self.s.handle_drained(self.now, Peer::Client);
                    self.s.handle_drained(self.now, Peer::Backend);
                }
                _ => {
                    if let Some(at) = self.s.poll_timeout() {
                        self.now = self.now.max(at);
                        self.s.handle_timeout(self.now);
                    }
                }
            }
            self.pump();
        }
    }

    /// After the script: the client leaves; the session must end within bounded steps.
    fn wind_down(&mut self) {
        if self.ended {
            return;
        }
        self.s.handle_eof(self.now, Peer::Client);
        self.pump();
        for _ in 0..WIND_DOWN_STEPS {
            if self.ended {
                return;
            }
            self.client_backlog = 0;
            self.s.handle_drained(self.now, Peer::Client);
            self.pump();
            if let Some(at) = self.s.poll_timeout() {
                self.now = self.now.max(at);
                self.s.handle_timeout(self.now);
                self.pump();
            }
        }
        assert!(self.ended, "the session did not end after the client left");
    }
}

fn front_setup(data: &[u8]) -> (Arc<ProxyConfig>, FrontConn, Script<'_>) {
    let mut script = Script { rest: data };
    let flags = script.byte().unwrap_or(0);
    let cfg = ProxyConfig {
        client_address: match flags % 3 {
            0 => ClientAddressMode::ProxyV2,
            1 => ClientAddressMode::Xclient,
            _ => ClientAddressMode::None,
        },
        pipelined_login: flags & 32 == 0,
        ..ProxyConfig::default()
    };
    let conn = FrontConn {
        client: SocketAddr::from(([192, 0, 2, 1], 40000)),
        local: SocketAddr::from(([198, 51, 100, 1], 110)),
        implicit_tls: false,
        starttls_available: flags & 4 != 0,
        plaintext_auth: flags & 8 == 0,
        hops: (flags & 16 != 0).then_some(flags >> 6),
    };
    (Arc::new(cfg), conn, script)
}

/// The most client output between two drains: the high-water mark plus what one
/// input can produce past it (a line's reply, a back-end read relayed).
const FRONT_OUTPUT_SLACK: usize = 2 * MAX_READ + 4096;

/// Fuzzes [`Pop3FrontSession`] with a script: one flags byte (client-address mode,
/// STLS, plaintext policy, incoming hops, pipelined back-end login), then operations chosen by `byte % 8`:
/// 0 client line, 1 back-end line, 2 answer the route (next byte: remote, denied,
/// temporary, disabled, throttled, local), 3 finish the connect (next byte: ok/refused),
/// 4 advance the clock by the next byte in seconds, 5 EOF (next byte: client/back-end),
/// 6 both peers drained, 7 fire the next deadline.
///
/// Invariants: no panic; nothing after the splice or the client's close; back-end
/// writes only on an established connection, one connection at a time; a splice only
/// with a back-end; client output between drains bounded; after the script the
/// session ends once the client leaves.
pub fn proxy_pop3_session(now: Instant, data: &[u8]) {
    let (cfg, conn, mut script) = front_setup(data);
    let limit = cfg.limits.output_high_water + FRONT_OUTPUT_SLACK;
    let mut shell = Shell {
        s: Pop3FrontSession::new(cfg, conn, now),
        now,
        leg: Leg::None,
        routes: Vec::new(),
        ended: false,
        client_backlog: 0,
        limit,
    };
    shell.run(&mut script);
    shell.wind_down();
}

/// Fuzzes [`SubmissionFrontSession`] with the script of [`proxy_pop3_session`].
pub fn proxy_submission_session(now: Instant, data: &[u8]) {
    let (cfg, conn, mut script) = front_setup(data);
    let limit = cfg.limits.output_high_water + FRONT_OUTPUT_SLACK;
    let mut shell = Shell {
        s: SubmissionFrontSession::new(cfg, conn, now),
        now,
        leg: Leg::None,
        routes: Vec::new(),
        ended: false,
        client_backlog: 0,
        limit,
    };
    shell.run(&mut script);
    shell.wind_down();
}

/// Fuzzes [`ImapFrontSession`] with the script of [`proxy_pop3_session`] (flags bit 0-1
/// choose PROXY v2, IMAP ID or nothing for the client address).
pub fn proxy_imap_session(now: Instant, data: &[u8]) {
    let (cfg, conn, mut script) = front_setup(data);
    let mut cfg = (*cfg).clone();
    if cfg.client_address == ClientAddressMode::Xclient {
        cfg.client_address = ClientAddressMode::ImapId;
    }
    let cfg = Arc::new(cfg);
    let limit = cfg.limits.output_high_water + FRONT_OUTPUT_SLACK;
    let mut shell = Shell {
        s: ImapFrontSession::new(cfg, conn, now),
        now,
        leg: Leg::None,
        routes: Vec::new(),
        ended: false,
        client_backlog: 0,
        limit,
    };
    shell.run(&mut script);
    shell.wind_down();
}
