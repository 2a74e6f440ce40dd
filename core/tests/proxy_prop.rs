//! Property tests of the proxy codecs: PROXY v1/v2, XCLIENT with xtext and IMAP ID
//! round-trip through their encoders and parsers, and a PROXY header parses the same
//! however the bytes are cut.
//!
//! `PROPTEST_CASES` sets the number of cases (256 when unset).

// The test reads PROPTEST_CASES from the environment; the core itself never does.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use tidegate_core::proxy::haproxy::{self, ProxiedAddresses, ProxiedTls, ProxyHeader};
use tidegate_core::proxy::imap_id;
use tidegate_core::proxy::xclient::{self, Xclient};

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 256;
    }
    config
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ]
}

fn same_family_addresses() -> impl Strategy<Value = ProxiedAddresses> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| ProxiedAddresses {
                source: SocketAddr::new(Ipv4Addr::from(s).into(), sp),
                destination: SocketAddr::new(Ipv4Addr::from(d).into(), dp),
            }),
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| ProxiedAddresses {
                source: SocketAddr::new(Ipv6Addr::from(s).into(), sp),
                destination: SocketAddr::new(Ipv6Addr::from(d).into(), dp),
            }),
    ]
}

fn header() -> impl Strategy<Value = ProxyHeader> {
    (
        prop::option::of(same_family_addresses()),
        prop::option::of("[A-Za-z0-9.]{0,32}"),
        prop::option::of(any::<u8>()),
    )
        .prop_map(|(addresses, tls, hops)| ProxyHeader {
            addresses,
            tls: tls.map(|version| ProxiedTls { version }),
            hops,
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn proxy_v2_round_trips(header in header(), tail in prop::collection::vec(any::<u8>(), 0..32)) {
        let mut bytes = haproxy::encode_v2(&header);
        let n = bytes.len();
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(haproxy::parse(&bytes), Ok(Some((header, n))));
        for cut in 0..n {
            prop_assert_eq!(haproxy::parse(&bytes[..cut]), Ok(None));
        }
    }

    #[test]
    fn proxy_v1_round_trips(addresses in prop::option::of(same_family_addresses())) {
        let line = haproxy::encode_v1(addresses.as_ref());
        prop_assert!(line.len() <= haproxy::V1_MAX_LEN);
        let parsed = haproxy::parse(line.as_bytes());
        prop_assert_eq!(parsed, Ok(Some((ProxyHeader { addresses, ..ProxyHeader::default() }, line.len()))));
    }

    #[test]
    fn proxy_parse_never_overreads(data in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(Some((_, n))) = haproxy::parse(&data) {
            prop_assert!(n <= data.len());
        }
    }

    #[test]
    fn xtext_round_trips(data in prop::collection::vec(any::<u8>(), 0..200)) {
        let encoded = xclient::xtext_encode(&data);
        prop_assert!(encoded.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'='));
        prop_assert_eq!(xclient::xtext_decode(encoded.as_bytes()), Some(data));
    }

    #[test]
    fn xclient_round_trips(
        addr in prop::option::of(ip()),
        port in prop::option::of(any::<u16>()),
        helo in prop::option::of("[ -~]{1,60}"),
        name in prop::option::of("[a-z0-9.-]{1,60}"),
        ttl in prop::option::of(any::<u8>()),
    ) {
        let x = Xclient { addr, port, helo, name, proto: Some("ESMTP".into()), ttl };
        let line = xclient::encode(&x);
        prop_assert_eq!(xclient::parse(line.as_bytes()), Ok(x));
    }

    #[test]
    fn imap_id_round_trips(
        pairs in prop::collection::vec(("[a-z-]{1,30}", "[ -~]{0,100}"), 1..30),
        client in (ip(), any::<u16>()),
        ttl in any::<u8>(),
    ) {
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let line = imap_id::encode(&borrowed);
        let parsed = imap_id::parse_params(&line.as_bytes()[3..]).unwrap();
        let expected: Vec<(String, Option<String>)> =
            pairs.into_iter().map(|(k, v)| (k, Some(v))).collect();
        prop_assert_eq!(parsed, expected);

        let addr = SocketAddr::new(client.0, client.1);
        let line = imap_id::encode_client(addr, ttl);
        let parsed = imap_id::parse_params(&line.as_bytes()[3..]).unwrap();
        let fields = imap_id::client_of(&parsed);
        prop_assert_eq!(fields.ip, Some(addr.ip()));
        prop_assert_eq!(fields.port, Some(addr.port()));
        prop_assert_eq!(fields.ttl, Some(ttl));
    }
}
