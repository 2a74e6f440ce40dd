//! A tiny authoritative DNS responder on 127.0.0.1 (UDP) for the outbound tests: it
//! answers MX and A questions from a fixed table and says NXDOMAIN for anything else.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use simple_dns::rdata::{A, MX, RData};
use simple_dns::{CLASS, Name, Packet, QTYPE, RCODE, ResourceRecord, TYPE};

/// One record of the test zone.
#[derive(Debug, Clone)]
pub enum Record {
    /// `name MX preference exchange`.
    Mx(&'static str, u16, &'static str),
    /// `name A address`.
    A(&'static str, Ipv4Addr),
}

/// Starts the responder; returns its address (for `[relay] nameservers`).
pub fn start(zone: Vec<Record>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buffer) {
            if let Some(answer) = respond(&zone, &buffer[..n]) {
                let _ = socket.send_to(&answer, peer);
            }
        }
    });
    addr
}

fn respond(zone: &[Record], query: &[u8]) -> Option<Vec<u8>> {
    let query = Packet::parse(query).ok()?;
    let question = query.questions.first()?;
    let name = question.qname.to_string().to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    let QTYPE::TYPE(qtype) = question.qtype else {
        return None;
    };
    let mut reply = Packet::new_reply(query.id());
    reply.questions.push(question.clone());
    let mut known = false;
    for record in zone {
        let (owner, data) = match record {
            Record::Mx(owner, preference, exchange) => (
                *owner,
                RData::MX(MX {
                    preference: *preference,
                    exchange: Name::new_unchecked(exchange),
                }),
            ),
            Record::A(owner, ip) => (
                *owner,
                RData::A(A {
                    address: u32::from(*ip),
                }),
            ),
        };
        if owner != name {
            continue;
        }
        known = true;
        let wanted = matches!(
            (&data, qtype),
            (RData::MX(_), TYPE::MX) | (RData::A(_), TYPE::A)
        );
        if wanted {
            reply.answers.push(ResourceRecord::new(
                Name::new_unchecked(owner),
                CLASS::IN,
                60,
                data,
            ));
        }
    }
    if !known {
        *reply.rcode_mut() = RCODE::NameError;
    }
    reply.build_bytes_vec().ok()
}
