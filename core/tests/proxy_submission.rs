//! The submission front-end driven byte by byte against a scripted SMTP back-end.

#![allow(clippy::disallowed_methods)] // tests take one clock reading as their epoch

mod proxy_support;

use std::io::{Read as _, Write as _};
use std::sync::LazyLock;
use std::time::Instant;

use proxy_support::*;
use rustls::ServerConnection;
use tidegate_core::fuzzing::FuzzTls;
use tidegate_core::proxy::{
    BackendTlsMode, ClientAddressMode, FrontConn, ProxyConfig, SubmissionFrontSession,
};
use tidegate_core::{Failure, Peer, Reply, Request, Session};

static TLS: LazyLock<FuzzTls> = LazyLock::new(FuzzTls::new);

const GREETING: &str = "220 front.example.com ESMTP submission ready\r\n";
const EHLO_REPLY: &str = "250-front.example.com\r\n250-PIPELINING\r\n250-SIZE\r\n\
    250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 AUTH PLAIN LOGIN\r\n";
const BACKEND_AUTH: &[u8] = b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHNlY3JldA==\r\n";
const BACKEND_EHLO: &[u8] = b"EHLO front.example.com\r\n";

fn session(cfg: ProxyConfig, conn: FrontConn) -> Drive<SubmissionFrontSession> {
    let now = Instant::now();
    Drive::new(SubmissionFrontSession::new(shared(cfg), conn, now), now)
}

fn routed(d: &mut Drive<impl Session>, extra: &[u8]) {
    let mut input = b"EHLO client.example\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n".to_vec();
    input.extend_from_slice(extra);
    d.client_sends(&input);
    d.route_alice();
}

#[test]
fn login_is_replayed_and_spliced() {
    let mut d = session(config(), conn());
    routed(&mut d, b"MAIL FROM:<alice@example.com>\r\n");
    assert_eq!(d.take_client(), format!("{GREETING}{EHLO_REPLY}"));
    d.connected(Ok(()));
    assert_eq!(d.take_backend(), expected_proxy_header(false));
    d.backend_sends(b"220 b1.example.com ESMTP\r\n");
    assert_eq!(d.take_backend(), BACKEND_EHLO);
    d.backend_sends(b"250-b1.example.com\r\n250-AUTH PLAIN LOGIN\r\n");
    assert_eq!(d.take_backend(), b"");
    d.backend_sends(b"250 8BITMIME\r\n");
    assert_eq!(d.take_backend(), BACKEND_AUTH);
    d.backend_sends(b"235 2.7.0 Authentication successful\r\n");
    assert_eq!(d.take_client(), "235 2.7.0 Authentication successful\r\n");
    let splice = d.splice.clone().expect("spliced");
    assert_eq!(&splice.to_backend[..], b"MAIL FROM:<alice@example.com>\r\n");
    assert!(d.s.is_finished());
}

#[test]
fn pre_login_dialogue() {
    let mut c = conn();
    c.starttls_available = true;
    let mut d = session(config(), c.clone());
    d.take_client();
    d.client_sends(b"AUTH PLAIN\r\nMAIL FROM:<a@b>\r\nHELO x\r\nNOOP\r\nRSET\r\nFOO\r\nQUIT\r\n");
    assert_eq!(
        d.take_client(),
        "503 5.5.1 EHLO first\r\n530 5.7.0 Authentication required\r\n\
         250 front.example.com\r\n250 2.0.0 OK\r\n250 2.0.0 OK\r\n\
         500 5.5.2 Command not recognized\r\n221 2.0.0 front.example.com closing connection\r\n"
    );
    assert_eq!(d.closed, vec![Peer::Client]);

    c.plaintext_auth = false;
    let mut d = session(config(), c);
    d.take_client();
    d.client_sends(b"EHLO x\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nSTARTTLS\r\nEHLO evil\r\n");
    assert_eq!(
        d.take_client(),
        "250-front.example.com\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n\
         250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n\
         538 5.7.11 Encryption required for requested authentication mechanism\r\n\
         220 2.0.0 Ready to start TLS\r\n"
    );
    assert_eq!(d.starttls, vec![Peer::Client]);
    assert!(d.requests.is_empty());
}

#[test]
fn auth_login_and_plain_continuation() {
    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"EHLO x\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\n");
    assert_eq!(
        d.take_client(),
        format!("{EHLO_REPLY}334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n")
    );
    d.route_request("alice", b"secret");

    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"EHLO x\r\nAUTH LOGIN YWxpY2U=\r\nc2VjcmV0\r\n");
    d.route_request("alice", b"secret");

    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"EHLO x\r\nAUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n");
    assert!(d.take_client().ends_with("334 \r\n"));
    d.route_request("alice", b"secret");

    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"EHLO x\r\nAUTH LOGIN\r\n*\r\nAUTH PLAIN ###\r\nAUTH CRAM-MD5\r\n");
    assert!(d.take_client().ends_with(
        "334 VXNlcm5hbWU6\r\n501 5.0.0 Authentication cancelled\r\n\
         501 5.5.2 Invalid base64 data\r\n504 5.5.4 Unrecognized authentication type\r\n"
    ));
    assert!(d.requests.is_empty());
}

#[test]
fn xclient_when_the_backend_offers_it() {
    let cfg = ProxyConfig {
        client_address: ClientAddressMode::Xclient,
        ..config()
    };
    let mut d = session(cfg.clone(), conn());
    routed(&mut d, b"");
    d.connected(Ok(()));
    assert_eq!(d.take_backend(), b"");
    d.backend_sends(b"220 b1\r\n");
    assert_eq!(d.take_backend(), BACKEND_EHLO);
    d.backend_sends(b"250-b1\r\n250-XCLIENT ADDR PORT HELO PROTO TTL\r\n250 AUTH PLAIN\r\n");
    assert_eq!(
        d.take_backend(),
        b"XCLIENT HELO=client.example PROTO=ESMTP ADDR=192.0.2.10 PORT=40000 TTL=4\r\n"
    );
    // XCLIENT resets the session: a new greeting, then EHLO again.
    d.backend_sends(b"220 b1\r\n");
    assert_eq!(d.take_backend(), BACKEND_EHLO);
    d.backend_sends(b"250-b1\r\n250-XCLIENT ADDR\r\n250 AUTH PLAIN\r\n");
    assert_eq!(d.take_backend(), BACKEND_AUTH);
    d.backend_sends(b"235 2.7.0 OK\r\n");
    assert!(d.splice.is_some());

    // Not offered: straight to AUTH.
    let mut d = session(cfg, conn());
    routed(&mut d, b"");
    d.connected(Ok(()));
    d.backend_sends(b"220 b1\r\n250 b1\r\n");
    assert_eq!(d.take_backend(), [BACKEND_EHLO, BACKEND_AUTH].concat());
}

#[test]
fn failures_use_the_rfc_codes() {
    // Denied: 535 5.7.8, after the delay.
    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"EHLO x\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    d.take_client();
    let id = d.route_request("alice", b"secret");
    d.reply(id, Reply::Failed(Failure::Denied));
    assert_eq!(d.take_client(), "");
    d.fire_next_timer();
    assert_eq!(
        d.take_client(),
        "535 5.7.8 Authentication credentials invalid\r\n"
    );

    // The user database is down: 454 4.7.0.
    let mut d = session(config(), conn());
    d.client_sends(b"EHLO x\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    d.take_client();
    let id = d.route_request("alice", b"secret");
    d.reply(id, Reply::Failed(Failure::Temporary("down".into())));
    assert_eq!(
        d.take_client(),
        "454 4.7.0 Temporary authentication failure\r\n"
    );

    // Every back-end address refuses: 451 4.4.1.
    let mut d = session(config(), conn());
    routed(&mut d, b"");
    d.take_client();
    d.connected(Err("refused".into()));
    d.connected(Err("refused".into()));
    assert_eq!(
        d.take_client(),
        "451 4.4.1 Mail server unavailable, try again later\r\n"
    );
    assert_eq!(d.failures().len(), 2);

    // The back-end refuses the login.
    for (answer, expected) in [
        (
            &b"535 5.7.8 bad\r\n"[..],
            "535 5.7.8 Authentication credentials invalid\r\n",
        ),
        (
            b"454 4.7.0 ldap\r\n",
            "454 4.7.0 Temporary authentication failure\r\n",
        ),
    ] {
        let mut d = session(config(), conn());
        routed(&mut d, b"");
        d.take_client();
        d.connected(Ok(()));
        d.backend_sends(b"220 b1\r\n250 b1\r\n");
        d.backend_sends(answer);
        assert_eq!(d.take_client(), expected);
        assert_eq!(d.closed, vec![Peer::Backend]);
    }

    // The back-end goes silent: 451 4.4.1 at the deadline.
    let mut d = session(config(), conn());
    routed(&mut d, b"");
    d.take_client();
    d.connected(Ok(()));
    d.fire_next_timer();
    assert_eq!(
        d.take_client(),
        "451 4.4.1 Mail server unavailable, try again later\r\n"
    );
    assert_eq!(d.closed, vec![Peer::Backend]);
}

#[test]
fn overlong_lines() {
    let mut d = session(config(), conn());
    d.take_client();
    let mut long = vec![b'a'; 4000];
    long.extend_from_slice(b"\r\nNOOP\r\n");
    d.client_sends(&long);
    assert_eq!(
        d.take_client(),
        "500 5.5.6 Line too long\r\n250 2.0.0 OK\r\n"
    );
    // An overlong back-end reply ends the dialogue.
    let mut d = session(config(), conn());
    routed(&mut d, b"");
    d.take_client();
    d.connected(Ok(()));
    d.backend_sends(&[b'2'; 9000]);
    d.backend_sends(b"\r\n");
    assert_eq!(
        d.take_client(),
        "451 4.4.1 Mail server unavailable, try again later\r\n"
    );
}

fn scripted_run(pieces: &[&[u8]]) -> (String, Vec<u8>, Option<Splice>) {
    let mut d = session(config(), conn());
    for piece in pieces {
        d.client_sends(piece);
    }
    if let Some(id) = d
        .requests
        .iter()
        .find_map(|(id, r)| matches!(r, Request::Route { .. }).then_some(*id))
    {
        d.reply(id, remote("alice@example.com", "b1", &[BACKEND1]));
        d.connected(Ok(()));
        d.backend_sends(b"220 b1\r\n250-b1\r\n250 AUTH PLAIN\r\n235 2.7.0 OK\r\n");
    }
    (d.take_client(), d.take_backend(), d.splice)
}

#[test]
fn chunking_does_not_change_the_result() {
    let input: &[u8] =
        b"EHLO c\r\nNOOP\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n";
    let whole = scripted_run(&[input]);
    assert_eq!(
        &whole.2.as_ref().expect("spliced").to_backend[..],
        b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
    );
    for cut in 1..input.len() {
        assert_eq!(
            scripted_run(&[&input[..cut], &input[cut..]]),
            whole,
            "split at {cut}"
        );
    }
}

fn backend_tls_exchange<S: Session>(d: &mut Drive<S>, tls: &mut ServerConnection) -> Vec<u8> {
    let mut plain = Vec::new();
    for _ in 0..20 {
        let incoming = std::mem::take(&mut d.backend);
        let mut rest = &incoming[..];
        while !rest.is_empty() {
            tls.read_tls(&mut rest).unwrap();
            tls.process_new_packets().unwrap();
        }
        let mut buf = [0u8; 4096];
        while let Ok(n) = tls.reader().read(&mut buf) {
            if n == 0 {
                break;
            }
            plain.extend_from_slice(&buf[..n]);
        }
        let mut out = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut out).unwrap();
        }
        if !out.is_empty() {
            d.backend_sends(&out);
        }
        if incoming.is_empty() && out.is_empty() {
            break;
        }
    }
    plain
}

#[test]
fn starttls_to_the_backend_then_relay() {
    let cfg = ProxyConfig {
        backend_tls: BackendTlsMode::StartTls,
        backend_tls_config: Some(TLS.client.clone()),
        client_address: ClientAddressMode::None,
        ..config()
    };
    let mut d = session(cfg, conn());
    d.client_sends(b"EHLO x\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    let id = d.route_request("alice", b"secret");
    d.reply(id, remote("alice@example.com", "localhost", &[BACKEND1]));
    d.connected(Ok(()));
    d.backend_sends(b"220 b1\r\n250-b1\r\n250 STARTTLS\r\n");
    assert_eq!(d.take_backend(), [BACKEND_EHLO, b"STARTTLS\r\n"].concat());
    d.backend_sends(b"220 2.0.0 go ahead\r\n");
    let mut server = ServerConnection::new(TLS.server.clone()).unwrap();
    assert_eq!(backend_tls_exchange(&mut d, &mut server), BACKEND_EHLO);
    server
        .writer()
        .write_all(b"250-b1\r\n250 AUTH PLAIN\r\n")
        .unwrap();
    assert_eq!(backend_tls_exchange(&mut d, &mut server), BACKEND_AUTH);
    d.take_client();
    server.writer().write_all(b"235 2.7.0 OK\r\n").unwrap();
    backend_tls_exchange(&mut d, &mut server);
    assert_eq!(d.take_client(), "235 2.7.0 OK\r\n");
    assert!(d.splice.is_none());
    d.client_sends(b"QUIT\r\n");
    assert_eq!(backend_tls_exchange(&mut d, &mut server), b"QUIT\r\n");
}
