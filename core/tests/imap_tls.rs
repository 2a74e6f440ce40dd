//! IMAP STARTTLS (RFC 3501 §6.2.1) and implicit TLS with a real rustls client, all in
//! memory: plaintext pipelined after STARTTLS is never executed, and LOGIN is offered
//! only once TLS is up.
#![allow(clippy::disallowed_methods)] // tests take a base instant from the clock

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use tidegate_core::imap::{ConnInfo, ImapConfig, ImapSession};
use tidegate_core::tls::Secured;
use tidegate_core::{Account, Action, Peer, Reply, Request, Session};

fn imap(implicit_tls: bool, now: Instant) -> ImapSession {
    let conn = ConnInfo {
        client: "192.0.2.1:5000".parse().unwrap(),
        implicit_tls,
        starttls_available: !implicit_tls,
        plaintext_auth: false,
        may_override_client: false,
    };
    ImapSession::new(Arc::new(ImapConfig::default()), conn, now)
}

/// Drains the session, answering every login with success; returns the bytes written.
fn drain(session: &mut impl Session, now: Instant, logins: &mut Vec<String>) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut replies = Vec::new();
        while let Some(action) = session.poll_action() {
            match action {
                Action::Write { bytes, .. } => out.extend_from_slice(&bytes),
                Action::Request {
                    id,
                    request: Request::Authenticate { user, .. },
                } => {
                    logins.push(user.clone());
                    replies.push((id, Reply::Authenticated(Account(user))));
                }
                Action::Close { .. } => {}
                other => panic!("unexpected action {other:?}"),
            }
        }
        if replies.is_empty() {
            return out;
        }
        for (id, reply) in replies {
            session.handle_reply(now, id, reply);
        }
    }
}

fn pump(
    client: &mut ClientConnection,
    server: &mut impl Session,
    now: Instant,
    logins: &mut Vec<String>,
) -> String {
    let mut plain = Vec::new();
    for _ in 0..20 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        if !to_server.is_empty() {
            server.handle_input(now, Peer::Client, &to_server);
        }
        let to_client = drain(server, now, logins);
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
    String::from_utf8_lossy(&plain).into_owned()
}

#[test]
fn starttls_discards_pipelined_plaintext_and_allows_login() {
    let now = Instant::now();
    let tls = tidegate_core::fuzzing::FuzzTls::new();
    let mut server = Secured::plain(imap(false, now), Some(tls.server.clone()));
    let mut logins = Vec::new();
    let greeting = String::from_utf8(drain(&mut server, now, &mut logins)).unwrap();
    assert!(greeting.contains(" STARTTLS LOGINDISABLED]"), "{greeting}");

    // The LOGIN pipelined after STARTTLS must never run (CVE-2011-0411).
    server.handle_input(now, Peer::Client, b"a STARTTLS\r\nb LOGIN mallory x\r\n");
    let reply = String::from_utf8(drain(&mut server, now, &mut logins)).unwrap();
    assert_eq!(reply, "a OK Begin TLS negotiation now\r\n");
    assert!(server.is_tls());

    let mut client = ClientConnection::new(
        tls.client.clone(),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    assert_eq!(pump(&mut client, &mut server, now, &mut logins), "");
    client.writer().write_all(b"c CAPABILITY\r\n").unwrap();
    let caps = pump(&mut client, &mut server, now, &mut logins);
    assert!(caps.contains(" AUTH=PLAIN\r\nc OK"), "{caps}");
    assert!(
        !caps.contains("STARTTLS") && !caps.contains("LOGINDISABLED"),
        "{caps}"
    );
    client
        .writer()
        .write_all(b"d LOGIN alice secret\r\ne STARTTLS\r\n")
        .unwrap();
    let out = pump(&mut client, &mut server, now, &mut logins);
    assert!(out.starts_with("d OK [CAPABILITY "), "{out}");
    assert!(out.ends_with("e BAD Already authenticated\r\n"), "{out}");
    assert_eq!(logins, vec!["alice".to_string()]);
}

#[test]
fn implicit_tls_greets_after_the_handshake() {
    let now = Instant::now();
    let tls = tidegate_core::fuzzing::FuzzTls::new();
    let mut server = Secured::implicit(imap(true, now), tls.server.clone()).unwrap();
    let mut logins = Vec::new();
    assert!(drain(&mut server, now, &mut logins).is_empty());
    let mut client = ClientConnection::new(
        tls.client.clone(),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let greeting = pump(&mut client, &mut server, now, &mut logins);
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4rev1 "),
        "{greeting}"
    );
    assert!(greeting.contains(" AUTH=PLAIN]"), "{greeting}");
    client.writer().write_all(b"z LOGOUT\r\n").unwrap();
    assert_eq!(
        pump(&mut client, &mut server, now, &mut logins),
        "* BYE Logging out\r\nz OK LOGOUT completed\r\n"
    );
}

#[test]
fn listener_builds_plain_tls_and_busy_sessions() {
    use tidegate_core::imap::{BUSY_REPLY, ImapListener};
    use tidegate_core::net::PlaintextAuth;
    let now = Instant::now();
    let tls = tidegate_core::fuzzing::FuzzTls::new();
    let client: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let plain = ImapListener {
        config: Arc::new(ImapConfig::default()),
        tls: Some(tls.server.clone()),
        implicit_tls: false,
        plaintext_auth: PlaintextAuth::Never,
        trusted: Vec::new(),
    };
    let mut session = plain.open(client, now);
    let greeting = String::from_utf8(drain(&mut session, now, &mut Vec::new())).unwrap();
    assert!(
        greeting.contains(" STARTTLS LOGINDISABLED] localhost IMAP4rev1 ready\r\n"),
        "{greeting}"
    );
    let mut busy = plain.busy();
    assert_eq!(drain(&mut busy, now, &mut Vec::new()), BUSY_REPLY);
    let implicit_without_cert = ImapListener {
        tls: None,
        implicit_tls: true,
        ..plain.clone()
    };
    let mut refused = implicit_without_cert.open(client, now);
    assert_eq!(drain(&mut refused, now, &mut Vec::new()), BUSY_REPLY);
}
