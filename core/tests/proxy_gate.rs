//! The back-end's PROXY header gate in front of a real POP3 server session.

#![allow(clippy::disallowed_methods)] // tests take one clock reading as their epoch

mod proxy_support;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_support::Drive;
use tidegate_core::net::Cidr;
use tidegate_core::pop3::{ConnInfo, Pop3Config, Pop3Session};
use tidegate_core::proxy::gate::DEFAULT_HEADER_TIMEOUT;
use tidegate_core::proxy::haproxy;
use tidegate_core::proxy::{
    ProxiedAddresses, ProxiedClient, ProxiedTls, ProxyHeader, ProxyHeaderGate,
};
use tidegate_core::{Peer, Session};

type Seen = Rc<RefCell<Option<ProxiedClient>>>;

fn gate(peer: &str, now: Instant) -> (Drive<impl Session>, Seen) {
    let seen: Seen = Rc::default();
    let record = seen.clone();
    let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
    let gate = ProxyHeaderGate::new(
        peer.parse().unwrap(),
        &trusted,
        now,
        DEFAULT_HEADER_TIMEOUT,
        move |client: ProxiedClient| {
            let conn = ConnInfo {
                client: client.addr,
                implicit_tls: false,
                starttls_available: false,
                plaintext_auth: true,
                may_override_client: false,
            };
            *record.borrow_mut() = Some(client);
            let cfg = Pop3Config {
                hostname: "b1.example.com".into(),
                ..Pop3Config::default()
            };
            Pop3Session::new(Arc::new(cfg), conn, now)
        },
    );
    (Drive::new(gate, now), seen)
}

fn v2(source: &str, tls: bool, hops: Option<u8>) -> Vec<u8> {
    haproxy::encode_v2(&ProxyHeader {
        addresses: Some(ProxiedAddresses {
            source: source.parse().unwrap(),
            destination: "198.51.100.1:110".parse().unwrap(),
        }),
        tls: tls.then(|| ProxiedTls {
            version: "TLSv1.3".into(),
        }),
        hops,
    })
}

#[test]
fn a_trusted_v2_header_starts_the_session_with_the_real_client() {
    let (mut d, seen) = gate("10.0.0.5:50000", Instant::now());
    // Nothing is said before the header.
    assert_eq!(d.take_client(), "");
    let mut bytes = v2("192.0.2.10:40000", true, Some(3));
    bytes.extend_from_slice(b"CAPA\r\nQUIT\r\n");
    // Split inside the header: still nothing until it is complete.
    d.client_sends(&bytes[..10]);
    assert_eq!(d.take_client(), "");
    d.client_sends(&bytes[10..]);
    let out = d.take_client();
    assert!(out.starts_with("+OK b1.example.com POP3 ready\r\n+OK Capability list follows\r\n"));
    assert!(out.ends_with("+OK b1.example.com POP3 closing\r\n"));
    let client = seen.borrow().clone().expect("session built");
    let expected: SocketAddr = "192.0.2.10:40000".parse().unwrap();
    assert_eq!(client.addr, expected);
    assert_eq!(client.hops, Some(3));
    assert_eq!(client.tls.map(|t| t.version), Some("TLSv1.3".into()));
}

#[test]
fn v1_and_local_headers() {
    let (mut d, seen) = gate("10.0.0.5:50000", Instant::now());
    d.client_sends(b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 110\r\nQUIT\r\n");
    assert!(d.take_client().ends_with("closing\r\n"));
    assert_eq!(
        seen.borrow().as_ref().unwrap().addr,
        "192.0.2.10:40000".parse().unwrap()
    );

    // LOCAL: the proxy's own health check keeps the socket's address.
    let (mut d, seen) = gate("10.0.0.5:50000", Instant::now());
    d.client_sends(&haproxy::encode_v2(&ProxyHeader::default()));
    assert!(d.take_client().starts_with("+OK"));
    assert_eq!(
        seen.borrow().as_ref().unwrap().addr,
        "10.0.0.5:50000".parse().unwrap()
    );
}

#[test]
fn refusals_close_without_a_word() {
    // An untrusted peer.
    let (d, seen) = gate("203.0.113.9:50000", Instant::now());
    assert_eq!(d.closed, vec![Peer::Client]);
    assert!(!d.s.wants_read(Peer::Client));
    assert!(seen.borrow().is_none());

    // A client that does not send a header: no guessing.
    let (mut d, _) = gate("10.0.0.5:50000", Instant::now());
    d.client_sends(b"USER alice\r\n");
    assert_eq!(d.closed, vec![Peer::Client]);
    assert_eq!(d.take_client(), "");

    // A malformed v1 line.
    let (mut d, _) = gate("10.0.0.5:50000", Instant::now());
    d.client_sends(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n");
    assert_eq!(d.closed, vec![Peer::Client]);

    // A v2 header longer than the cap.
    let (mut d, _) = gate("10.0.0.5:50000", Instant::now());
    let mut huge = haproxy::V2_SIGNATURE.to_vec();
    huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    d.client_sends(&huge);
    assert_eq!(d.closed, vec![Peer::Client]);

    // A peer too slow to finish its header.
    let (mut d, seen) = gate("10.0.0.5:50000", Instant::now());
    d.client_sends(b"PROXY TCP4 ");
    d.advance(DEFAULT_HEADER_TIMEOUT - Duration::from_millis(1));
    assert!(d.closed.is_empty());
    d.advance(Duration::from_millis(1));
    assert_eq!(d.closed, vec![Peer::Client]);
    assert!(seen.borrow().is_none());
    assert_eq!(d.s.poll_timeout(), None);
}
