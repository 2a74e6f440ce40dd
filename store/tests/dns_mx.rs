//! The MX resolver against a real DNS responder on 127.0.0.1 (UDP, and TCP for truncated
//! answers), written here with the same wire-format crate and serving a small test zone.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use simple_dns::rdata::{A, AAAA, CNAME, MX, RData};
use simple_dns::{CLASS, Name, Packet, PacketFlag, QTYPE, RCODE, ResourceRecord, TYPE};
use tidegate_store::dns::{DnsError, MailExchanger, Resolver};

const TIMEOUT: Duration = Duration::from_millis(300);

fn rr<'a>(owner: &'a str, data: RData<'a>) -> ResourceRecord<'a> {
    ResourceRecord::new(Name::new_unchecked(owner), CLASS::IN, 300, data)
}

fn a(owner: &str, ip: [u8; 4]) -> ResourceRecord<'_> {
    rr(
        owner,
        RData::A(A {
            address: u32::from_be_bytes(ip),
        }),
    )
}

fn aaaa(owner: &str, ip: &str) -> ResourceRecord<'static> {
    let address: std::net::Ipv6Addr = ip.parse().unwrap();
    rr(
        Box::leak(owner.to_string().into_boxed_str()),
        RData::AAAA(AAAA {
            address: u128::from(address),
        }),
    )
}

fn mx<'a>(owner: &'a str, preference: u16, exchange: &'a str) -> ResourceRecord<'a> {
    rr(
        owner,
        RData::MX(MX {
            preference,
            exchange: Name::new_unchecked(exchange),
        }),
    )
}

/// What the test zone says about one question.
enum Reply<'a> {
    Records {
        answers: Vec<ResourceRecord<'a>>,
        additional: Vec<ResourceRecord<'a>>,
    },
    Code(RCODE),
    Silence,
    /// Over UDP: an empty answer with TC set; over TCP: these records.
    TruncatedThen(Vec<ResourceRecord<'a>>),
    /// First a datagram with another id, then the real answer.
    SpoofFirst(Vec<ResourceRecord<'a>>),
    /// Our id but the answer cut short (undecodable).
    CutShort,
    /// Our id but another question.
    OtherQuestion,
}

fn zone(name: &str, qtype: TYPE) -> Reply<'static> {
    let records = |answers| Reply::Records {
        answers,
        additional: vec![],
    };
    match (name, qtype) {
        ("multi.test", TYPE::MX) => Reply::Records {
            answers: vec![
                mx("multi.test", 20, "mx3.multi.test"),
                mx("multi.test", 10, "mx1.multi.test"),
                mx("multi.test", 5, "mx0.multi.test"),
                mx("multi.test", 10, "mx2.multi.test"),
            ],
            additional: vec![a("mx0.multi.test", [192, 0, 2, 10])],
        },
        ("mx1.multi.test", TYPE::A) => records(vec![a("mx1.multi.test", [192, 0, 2, 1])]),
        ("mx2.multi.test", TYPE::A) => records(vec![a("mx2.multi.test", [192, 0, 2, 2])]),
        ("mx2.multi.test", TYPE::AAAA) => records(vec![aaaa("mx2.multi.test", "2001:db8::2")]),
        ("mx3.multi.test", TYPE::A) => records(vec![a("mx3.multi.test", [192, 0, 2, 3])]),
        ("plain.test", TYPE::A) => records(vec![a("plain.test", [192, 0, 2, 20])]),
        ("plain.test", TYPE::AAAA) => records(vec![aaaa("plain.test", "2001:db8::20")]),
        ("null.test", TYPE::MX) => records(vec![mx("null.test", 0, ".")]),
        ("alias.test", TYPE::MX) => records(vec![
            rr(
                "alias.test",
                RData::CNAME(CNAME(Name::new_unchecked("real.test"))),
            ),
            mx("real.test", 10, "mail.real.test"),
        ]),
        ("mail.real.test", TYPE::A) => records(vec![
            rr(
                "mail.real.test",
                RData::CNAME(CNAME(Name::new_unchecked("box.real.test"))),
            ),
            a("box.real.test", [192, 0, 2, 30]),
        ]),
        ("outside.test", TYPE::MX) => records(vec![rr(
            "outside.test",
            RData::CNAME(CNAME(Name::new_unchecked("multi.test"))),
        )]),
        ("noaddr.test", TYPE::MX) => records(vec![mx("noaddr.test", 10, "gone.noaddr.test")]),
        ("missing.test", _) | ("gone.noaddr.test", _) => Reply::Code(RCODE::NameError),
        ("broken.test", _) => Reply::Code(RCODE::ServerFailure),
        ("silent.test", _) => Reply::Silence,
        ("big.test", TYPE::MX) => Reply::TruncatedThen(vec![
            mx("big.test", 10, "mx.big.test"),
            a("mx.big.test", [192, 0, 2, 40]),
        ]),
        ("mx.big.test", TYPE::A) => records(vec![a("mx.big.test", [192, 0, 2, 40])]),
        ("cut.test", _) => Reply::CutShort,
        ("otherq.test", _) => Reply::OtherQuestion,
        ("spoof.test", TYPE::A) => Reply::SpoofFirst(vec![a("spoof.test", [192, 0, 2, 50])]),
        // Everything else exists but has no data of the asked type (NODATA).
        _ => records(vec![]),
    }
}

fn respond(query: &[u8], over_tcp: bool) -> Vec<Vec<u8>> {
    let Ok(query) = Packet::parse(query) else {
        return vec![];
    };
    let Some(question) = query.questions.first() else {
        return vec![];
    };
    let name = question.qname.to_string().to_ascii_lowercase();
    let QTYPE::TYPE(qtype) = question.qtype else {
        return vec![];
    };
    let mut reply = Packet::new_reply(query.id());
    reply.questions.push(question.clone());
    let mut out = Vec::new();
    match zone(name.trim_end_matches('.'), qtype) {
        Reply::Records {
            answers,
            additional,
        } => {
            reply.answers = answers;
            reply.additional_records = additional;
        }
        Reply::Code(code) => *reply.rcode_mut() = code,
        Reply::Silence => return vec![],
        Reply::TruncatedThen(answers) => {
            if over_tcp {
                reply.answers = answers;
            } else {
                reply.set_flags(PacketFlag::TRUNCATION);
            }
        }
        Reply::SpoofFirst(answers) => {
            let mut spoof = Packet::new_reply(query.id().wrapping_add(1));
            spoof.questions.push(question.clone());
            spoof.answers = vec![a("spoof.test", [203, 0, 113, 66])];
            out.push(spoof.build_bytes_vec().unwrap());
            reply.answers = answers;
        }
        Reply::CutShort => {
            reply.answers = vec![a("cut.test", [192, 0, 2, 60])];
            let bytes = reply.build_bytes_vec().unwrap();
            return vec![bytes[..bytes.len() - 3].to_vec()];
        }
        Reply::OtherQuestion => {
            let mut other = Packet::new_reply(query.id());
            other.questions.push(simple_dns::Question::new(
                Name::new_unchecked("elsewhere.test"),
                question.qtype,
                question.qclass,
                false,
            ));
            other.answers = vec![a("elsewhere.test", [203, 0, 113, 1])];
            return vec![other.build_bytes_vec().unwrap()];
        }
    }
    out.push(reply.build_bytes_vec().unwrap());
    out
}

/// A test nameserver: UDP and TCP on the same 127.0.0.1 port, counting TCP queries.
struct TestServer {
    addr: SocketAddr,
    tcp_queries: Arc<AtomicUsize>,
}

fn start_server() -> TestServer {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).unwrap();
    let tcp_queries = Arc::new(AtomicUsize::new(0));
    thread::spawn(move || {
        let mut buffer = [0u8; 1500];
        while let Ok((n, peer)) = udp.recv_from(&mut buffer) {
            for datagram in respond(&buffer[..n], false) {
                let _ = udp.send_to(&datagram, peer);
            }
        }
    });
    let counter = tcp_queries.clone();
    thread::spawn(move || {
        for stream in tcp.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut prefix = [0u8; 2];
            if stream.read_exact(&mut prefix).is_err() {
                continue;
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
            if stream.read_exact(&mut query).is_err() {
                continue;
            }
            for answer in respond(&query, true) {
                let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&answer);
                let _ = stream.write_all(&framed);
            }
        }
    });
    TestServer { addr, tcp_queries }
}

fn resolver(server: &TestServer) -> Resolver {
    Resolver::new(vec![server.addr], TIMEOUT)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn mx_records_come_by_preference_with_addresses() {
    let server = start_server();
    let resolver = resolver(&server);
    let mut second = HashSet::new();
    for _ in 0..30 {
        let found = resolver.mail_exchangers("Multi.Test.").unwrap();
        let summary: Vec<(u16, &str)> = found
            .iter()
            .map(|m| (m.preference, m.host.as_str()))
            .collect();
        assert_eq!(summary.len(), 4);
        assert_eq!(summary[0], (5, "mx0.multi.test"));
        assert_eq!(summary[3], (20, "mx3.multi.test"));
        assert_eq!(summary[1].0, 10);
        assert_eq!(summary[2].0, 10);
        second.insert(summary[1].1.to_string());
        for m in &found {
            let want: Vec<IpAddr> = match m.host.as_str() {
                "mx0.multi.test" => vec![ip("192.0.2.10")],
                "mx1.multi.test" => vec![ip("192.0.2.1")],
                "mx2.multi.test" => vec![ip("192.0.2.2"), ip("2001:db8::2")],
                "mx3.multi.test" => vec![ip("192.0.2.3")],
                other => panic!("unexpected host {other}"),
            };
            assert_eq!(m.addrs, want, "{}", m.host);
        }
    }
    assert_eq!(
        second,
        HashSet::from(["mx1.multi.test".to_string(), "mx2.multi.test".to_string()]),
        "hosts of equal preference come in random order"
    );
}

#[test]
fn no_mx_means_the_domain_itself() {
    let server = start_server();
    assert_eq!(
        resolver(&server).mail_exchangers("plain.test"),
        Ok(vec![MailExchanger {
            host: "plain.test".into(),
            preference: 0,
            addrs: vec![ip("192.0.2.20"), ip("2001:db8::20")],
        }])
    );
    let found = resolver(&server).mail_exchangers("plain.test").unwrap();
    assert_eq!(
        found[0].socket_addrs(25),
        vec![
            "192.0.2.20:25".parse::<SocketAddr>().unwrap(),
            "[2001:db8::20]:25".parse().unwrap()
        ]
    );
}

#[test]
fn null_mx_nxdomain_and_no_address_are_permanent() {
    let server = start_server();
    let resolver = resolver(&server);
    for (domain, want) in [
        ("null.test", DnsError::NullMx),
        ("missing.test", DnsError::NoSuchDomain),
        ("noaddr.test", DnsError::NoAddress),
        ("nodata.test", DnsError::NoAddress),
    ] {
        let got = resolver.mail_exchangers(domain);
        assert_eq!(got, Err(want), "{domain}");
        assert!(got.unwrap_err().is_permanent(), "{domain}");
    }
}

#[test]
fn servfail_and_silence_are_temporary() {
    let server = start_server();
    let resolver = resolver(&server);
    let got = resolver.mail_exchangers("broken.test").unwrap_err();
    assert!(
        matches!(&got, DnsError::Temporary(why) if why.contains("ServerFailure")),
        "{got:?}"
    );
    assert!(!got.is_permanent());
    let started = Instant::now();
    let got = resolver.mail_exchangers("silent.test").unwrap_err();
    assert!(
        matches!(&got, DnsError::Temporary(why) if why.contains("timed out")),
        "{got:?}"
    );
    // One retry: two attempts of TIMEOUT each, not one and not forever.
    assert!(started.elapsed() >= TIMEOUT * 2, "{:?}", started.elapsed());
}

#[test]
fn truncated_answers_are_asked_again_over_tcp() {
    let server = start_server();
    let found = resolver(&server).mail_exchangers("big.test").unwrap();
    assert_eq!(
        found,
        vec![MailExchanger {
            host: "mx.big.test".into(),
            preference: 10,
            addrs: vec![ip("192.0.2.40")],
        }]
    );
    assert_eq!(server.tcp_queries.load(Ordering::SeqCst), 1);
}

#[test]
fn cnames_are_followed_inside_and_outside_the_answer() {
    let server = start_server();
    let resolver = resolver(&server);
    assert_eq!(
        resolver.mail_exchangers("alias.test"),
        Ok(vec![MailExchanger {
            host: "mail.real.test".into(),
            preference: 10,
            addrs: vec![ip("192.0.2.30")],
        }])
    );
    let found = resolver.mail_exchangers("outside.test").unwrap();
    assert_eq!(found.len(), 4);
    assert_eq!(found[0].host, "mx0.multi.test");
}

#[test]
fn answers_with_another_id_are_ignored() {
    let server = start_server();
    assert_eq!(
        resolver(&server).addresses("spoof.test"),
        Ok(vec![ip("192.0.2.50")])
    );
}

#[test]
fn a_dead_nameserver_is_skipped_for_the_next() {
    let server = start_server();
    // A bound socket that never answers: the resolver times out on it and moves on.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let resolver = Resolver::new(vec![dead.local_addr().unwrap(), server.addr], TIMEOUT);
    assert_eq!(
        resolver.addresses("mx1.multi.test"),
        Ok(vec![ip("192.0.2.1")])
    );
}

#[test]
fn addresses_of_literals_and_missing_hosts() {
    let server = start_server();
    let resolver = resolver(&server);
    assert_eq!(resolver.addresses("192.0.2.9"), Ok(vec![ip("192.0.2.9")]));
    assert_eq!(
        resolver.mail_exchangers("[IPv6:2001:db8::9]").unwrap()[0].addrs,
        vec![ip("2001:db8::9")]
    );
    assert_eq!(
        resolver.addresses("missing.test"),
        Err(DnsError::NoSuchDomain)
    );
    assert_eq!(resolver.addresses("nodata.test"), Err(DnsError::NoAddress));
}

#[test]
fn resolv_conf_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    std::fs::write(&path, "nameserver 192.0.2.53\nnameserver ::1\n").unwrap();
    let resolver = Resolver::from_resolv_conf(&path, TIMEOUT).unwrap();
    assert_eq!(
        resolver.nameservers(),
        &[
            "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert!(Resolver::from_resolv_conf(&dir.path().join("absent"), TIMEOUT).is_err());
}

#[test]
fn undecodable_or_mismatched_answers_are_not_believed() {
    let server = start_server();
    let resolver = resolver(&server);
    for host in ["cut.test", "otherq.test"] {
        let got = resolver.addresses(host);
        assert!(
            matches!(&got, Err(DnsError::Temporary(why)) if why.contains("timed out")),
            "{host}: {got:?}"
        );
    }
}
