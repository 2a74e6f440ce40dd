//! The TLS layer with a real rustls client, all in memory: STLS, implicit TLS, and
//! garbage instead of a handshake.
#![allow(clippy::disallowed_methods)] // tests take a base instant from the clock

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig};
use tidegate_core::pop3::{ConnInfo, Pop3Config, Pop3Session};
use tidegate_core::tls::Secured;
use tidegate_core::{Action, Peer, Session};

/// The fixed test PKI the fuzz harnesses use: a certificate for "localhost" and a
/// client that trusts it.
fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let tls = tidegate_core::fuzzing::FuzzTls::new();
    (tls.server, tls.client)
}

fn pop3(implicit_tls: bool, now: Instant) -> Pop3Session {
    let conn = ConnInfo {
        client: "192.0.2.1:5000".parse().unwrap(),
        implicit_tls,
        starttls_available: !implicit_tls,
        plaintext_auth: false,
        may_override_client: false,
    };
    Pop3Session::new(Arc::new(Pop3Config::default()), conn, now)
}

/// Drains the session; returns the bytes written and whether it closed.
fn drain(session: &mut impl Session) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut closed = false;
    while let Some(action) = session.poll_action() {
        match action {
            Action::Write {
                to: Peer::Client,
                bytes,
            } => out.extend_from_slice(&bytes),
            Action::Close { .. } => closed = true,
            other => panic!("unexpected action {other:?}"),
        }
    }
    (out, closed)
}

/// Moves records between the client and the server until neither has anything to say;
/// returns the plaintext the client received.
fn pump(client: &mut ClientConnection, server: &mut impl Session, now: Instant) -> Vec<u8> {
    let mut plain = Vec::new();
    for _ in 0..20 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        if !to_server.is_empty() {
            server.handle_input(now, Peer::Client, &to_server);
        }
        let (to_client, _) = drain(server);
        if to_server.is_empty() && to_client.is_empty() {
            break;
        }
        if !to_client.is_empty() {
            client.read_tls(&mut &to_client[..]).unwrap();
            client.process_new_packets().unwrap();
        }
        let mut buf = [0u8; 4096];
        while let Ok(n) = client.reader().read(&mut buf) {
            if n == 0 {
                break;
            }
            plain.extend_from_slice(&buf[..n]);
        }
    }
    plain
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn stls_discards_pipelined_plaintext_and_lifts_the_login_ban() {
    let now = Instant::now();
    let (server_config, client_config) = configs();
    let mut server = Secured::plain(pop3(false, now), Some(server_config));
    let (greeting, _) = drain(&mut server);
    assert!(text(&greeting).starts_with("+OK "));

    server.handle_input(now, Peer::Client, b"CAPA\r\n");
    let capa = text(&drain(&mut server).0);
    assert!(capa.contains("\r\nSTLS\r\n"), "{capa}");
    assert!(
        !capa.contains("\r\nUSER\r\n"),
        "no plaintext login offered: {capa}"
    );

    server.handle_input(now, Peer::Client, b"USER alice\r\n");
    assert!(
        text(&drain(&mut server).0).starts_with("-ERR [AUTH] Plaintext authentication disallowed")
    );

    // The injected USER after STLS must never be answered (CVE-2011-0411).
    server.handle_input(now, Peer::Client, b"STLS\r\nUSER injected\r\n");
    let (reply, closed) = drain(&mut server);
    assert_eq!(text(&reply), "+OK Begin TLS negotiation\r\n");
    assert!(!closed);
    assert!(server.is_tls());

    let mut client =
        ClientConnection::new(client_config, ServerName::try_from("localhost").unwrap()).unwrap();
    assert!(
        pump(&mut client, &mut server, now).is_empty(),
        "nothing but the handshake"
    );
    client.writer().write_all(b"CAPA\r\n").unwrap();
    let capa = text(&pump(&mut client, &mut server, now));
    assert!(capa.starts_with("+OK Capability list follows"), "{capa}");
    assert!(
        capa.contains("\r\nUSER\r\n") && capa.contains("\r\nSASL PLAIN\r\n"),
        "{capa}"
    );
    assert!(!capa.contains("STLS"), "{capa}");
    client
        .writer()
        .write_all(b"USER alice\r\nSTLS\r\n")
        .unwrap();
    assert_eq!(
        text(&pump(&mut client, &mut server, now)),
        "+OK\r\n-ERR TLS is already active\r\n"
    );
}

#[test]
fn implicit_tls_greets_after_the_handshake() {
    let now = Instant::now();
    let (server_config, client_config) = configs();
    let mut server = Secured::implicit(pop3(true, now), server_config).unwrap();
    let (before, _) = drain(&mut server);
    assert!(before.is_empty(), "no plaintext before the handshake");
    let mut client =
        ClientConnection::new(client_config, ServerName::try_from("localhost").unwrap()).unwrap();
    let greeting = text(&pump(&mut client, &mut server, now));
    assert!(
        greeting.starts_with("+OK localhost POP3 ready"),
        "{greeting:?}"
    );
    client.writer().write_all(b"QUIT\r\n").unwrap();
    assert!(text(&pump(&mut client, &mut server, now)).starts_with("+OK localhost POP3 closing"));
}

#[test]
fn garbage_instead_of_a_handshake_gets_an_alert_and_a_close() {
    let now = Instant::now();
    let (server_config, _) = configs();
    let mut server = Secured::implicit(pop3(true, now), server_config).unwrap();
    drain(&mut server);
    server.handle_input(now, Peer::Client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (alert, closed) = drain(&mut server);
    assert!(closed, "the connection must close");
    assert_eq!(
        alert.first(),
        Some(&21),
        "a TLS alert record (content type 21)"
    );
    assert!(!server.wants_read(Peer::Client));
    server.handle_input(now, Peer::Client, b"more garbage");
    assert_eq!(
        drain(&mut server),
        (Vec::new(), false),
        "nothing after the close"
    );
}
