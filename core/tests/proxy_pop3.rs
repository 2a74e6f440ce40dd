//! The POP3 front-end driven byte by byte: an in-memory client on one side, a scripted
//! back-end on the other. Every test checks the exact bytes each peer receives.

#![allow(clippy::disallowed_methods)] // tests take one clock reading as their epoch

mod proxy_support;

use std::io::{Read as _, Write as _};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use proxy_support::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection};
use tidegate_core::fuzzing::FuzzTls;
use tidegate_core::proxy::{
    BackendTlsMode, ClientAddressMode, FrontConn, Pop3FrontSession, ProxyConfig,
};
use tidegate_core::tls::Secured;
use tidegate_core::{Failure, Peer, Reply, Request, Session};

static TLS: LazyLock<FuzzTls> = LazyLock::new(FuzzTls::new);

const GREETING: &str = "+OK front.example.com POP3 ready\r\n";
/// `AUTH PLAIN` for alice@example.com / secret, as the back-end must receive it.
const BACKEND_AUTH: &[u8] = b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHNlY3JldA==\r\n";

fn session(cfg: ProxyConfig, conn: FrontConn) -> Drive<Pop3FrontSession> {
    let now = Instant::now();
    Drive::new(Pop3FrontSession::new(shared(cfg), conn, now), now)
}

/// Logs in as alice with USER/PASS and answers the route with one back-end address.
fn routed(d: &mut Drive<impl Session>, extra: &[u8]) {
    let mut input = b"USER alice\r\nPASS secret\r\n".to_vec();
    input.extend_from_slice(extra);
    d.client_sends(&input);
    d.route_alice();
}

#[test]
fn login_is_replayed_on_the_backend_and_spliced() {
    let mut d = session(config(), conn());
    assert_eq!(d.take_client(), GREETING);
    routed(&mut d, b"STAT\r\n");
    assert_eq!(d.take_client(), "+OK\r\n");
    assert_eq!(d.connects, vec![BACKEND1.parse().unwrap()]);
    d.connected(Ok(()));
    assert_eq!(d.take_backend(), expected_proxy_header(false));
    d.backend_sends(b"+OK b1 POP3 ready\r\n");
    assert_eq!(d.take_backend(), BACKEND_AUTH);
    assert!(d.splice.is_none());
    d.backend_sends(b"+OK Logged in, 2 messages (300 octets)\r\n");
    assert_eq!(
        d.take_client(),
        "+OK Logged in, 2 messages (300 octets)\r\n"
    );
    let splice = d.splice.clone().expect("spliced");
    // The STAT pipelined behind PASS goes to the back-end.
    assert_eq!(&splice.to_backend[..], b"STAT\r\n");
    assert_eq!(&splice.to_client[..], b"");
    assert_eq!(
        splice.idle_timeout,
        ProxyConfig::default().relay_idle_timeout
    );
    assert!(d.failures().is_empty());
    assert!(d.s.is_finished());
    assert_eq!(d.s.poll_timeout(), None);
    assert_eq!(d.after_end, 0);
}

/// The default: `AUTH PLAIN` goes out right behind the PROXY header, before the
/// greeting, and the greeting then the login's reply finish the dialogue.
#[test]
fn pipelined_login_goes_out_with_the_proxy_header() {
    let cfg = ProxyConfig {
        pipelined_login: true,
        ..config()
    };
    let mut d = session(cfg, conn());
    d.take_client();
    routed(&mut d, b"STAT\r\n");
    assert_eq!(d.take_client(), "+OK\r\n");
    d.connected(Ok(()));
    assert_eq!(
        d.take_backend(),
        [expected_proxy_header(false).as_slice(), BACKEND_AUTH].concat()
    );
    // Greeting and reply in one read, as a back-end answering early input sends them.
    d.backend_sends(b"+OK b1 POP3 ready\r\n+OK Logged in\r\n");
    assert_eq!(d.take_backend(), b"", "nothing sent twice");
    assert_eq!(d.take_client(), "+OK Logged in\r\n");
    let splice = d.splice.clone().expect("spliced");
    assert_eq!(&splice.to_backend[..], b"STAT\r\n");

    // A refusal after the greeting is the back-end's, with its code.
    let mut d = session(
        ProxyConfig {
            pipelined_login: true,
            ..config()
        },
        conn(),
    );
    d.take_client();
    routed(&mut d, b"");
    d.take_client();
    d.connected(Ok(()));
    d.take_backend();
    d.backend_sends(b"+OK ready\r\n");
    assert!(d.splice.is_none());
    d.backend_sends(b"-ERR [IN-USE] locked by pid 42\r\n");
    assert_eq!(
        d.take_client(),
        "-ERR [IN-USE] Mailbox is in use by another session\r\n"
    );
    assert!(d.splice.is_none());

    // XCLIENT must come first: no pipelining then.
    let mut d = session(
        ProxyConfig {
            pipelined_login: true,
            client_address: ClientAddressMode::Xclient,
            ..config()
        },
        conn(),
    );
    routed(&mut d, b"");
    d.connected(Ok(()));
    assert_eq!(d.take_backend(), b"");
}

#[test]
fn backend_bytes_after_its_ok_reach_the_client() {
    let mut d = session(config(), conn());
    routed(&mut d, b"");
    d.connected(Ok(()));
    d.backend_sends(b"+OK ready\r\n");
    d.backend_sends(b"+OK Logged in\r\n+OK 0 0\r\n");
    let splice = d.splice.clone().expect("spliced");
    assert_eq!(&splice.to_client[..], b"+OK 0 0\r\n");
}

#[test]
fn sasl_plain_initial_response_and_continuation() {
    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    d.route_request("alice", b"secret");
    assert_eq!(d.take_client(), "");

    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"AUTH\r\nAUTH PLAIN\r\n");
    assert_eq!(d.take_client(), "+OK\r\nPLAIN\r\n.\r\n+ \r\n");
    d.client_sends(b"YWxpY2UAYWxpY2UAc2VjcmV0\r\n");
    d.route_request("alice", b"secret");

    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"AUTH PLAIN\r\n*\r\nAUTH PLAIN !!\r\nAUTH PLAIN AGFsaWNl\r\nAUTH CRAM-MD5\r\n");
    assert_eq!(
        d.take_client(),
        "+ \r\n-ERR Authentication cancelled\r\n-ERR [AUTH] Invalid base64 data\r\n\
         -ERR [AUTH] Malformed PLAIN response\r\n-ERR Unrecognized authentication type\r\n"
    );
    assert!(d.requests.is_empty());
}

#[test]
fn capa_lists_only_what_the_front_end_relays() {
    let mut cfg_conn = conn();
    cfg_conn.starttls_available = true;
    let mut d = session(config(), cfg_conn.clone());
    d.take_client();
    d.client_sends(b"CAPA\r\n");
    assert_eq!(
        d.take_client(),
        "+OK Capability list follows\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN\r\n\
         STLS\r\nIMPLEMENTATION tidegate\r\n.\r\n"
    );
    cfg_conn.plaintext_auth = false;
    let mut d = session(config(), cfg_conn);
    d.take_client();
    d.client_sends(b"CAPA\r\nUSER alice\r\nSTAT\r\nQUIT\r\n");
    assert_eq!(
        d.take_client(),
        "+OK Capability list follows\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nSTLS\r\n\
         IMPLEMENTATION tidegate\r\n.\r\n\
         -ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS first\r\n\
         -ERR Command not valid in this state\r\n+OK front.example.com POP3 closing\r\n"
    );
    assert_eq!(d.closed, vec![Peer::Client]);
}

#[test]
fn xclient_mode_sends_the_address_after_the_greeting() {
    let cfg = ProxyConfig {
        client_address: ClientAddressMode::Xclient,
        ..config()
    };
    let mut d = session(cfg, conn());
    routed(&mut d, b"");
    d.connected(Ok(()));
    assert_eq!(d.take_backend(), b"");
    d.backend_sends(b"+OK ready\r\n");
    assert_eq!(
        d.take_backend(),
        b"XCLIENT ADDR=192.0.2.10 PORT=40000 TTL=4\r\n"
    );
    d.backend_sends(b"+OK\r\n");
    assert_eq!(d.take_backend(), BACKEND_AUTH);
    d.backend_sends(b"+OK Logged in\r\n");
    assert!(d.splice.is_some());
}

#[test]
fn client_address_none_sends_only_the_login() {
    let cfg = ProxyConfig {
        client_address: ClientAddressMode::None,
        ..config()
    };
    let mut d = session(cfg, conn());
    routed(&mut d, b"");
    d.connected(Ok(()));
    d.backend_sends(b"+OK ready\r\n");
    assert_eq!(d.take_backend(), BACKEND_AUTH);
}

#[test]
fn denied_login_is_answered_after_the_delay() {
    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"USER alice\r\nPASS wrong\r\nCAPA\r\n");
    let id = d.route_request("alice", b"wrong");
    d.reply(id, Reply::Failed(Failure::Denied));
    assert_eq!(d.take_client(), "+OK\r\n");
    d.advance(Duration::from_millis(1999));
    assert_eq!(d.take_client(), "");
    d.advance(Duration::from_millis(1));
    let out = d.take_client();
    assert!(
        out.starts_with("-ERR [AUTH] Authentication failed\r\n+OK Capability"),
        "{out}"
    );
    assert!(d.connects.is_empty());

    // A throttled client waits for the longer penalty.
    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"USER alice\r\nPASS wrong\r\n");
    let id = d.route_request("alice", b"wrong");
    d.reply(
        id,
        Reply::Failed(Failure::Throttled(Duration::from_secs(10))),
    );
    d.advance(Duration::from_secs(9));
    assert_eq!(d.take_client(), "+OK\r\n");
    d.advance(Duration::from_secs(1));
    assert_eq!(d.take_client(), "-ERR [AUTH] Authentication failed\r\n");
}

#[test]
fn third_failed_login_closes() {
    let mut d = session(config(), conn());
    d.take_client();
    for _ in 0..3 {
        d.client_sends(b"USER alice\r\nPASS wrong\r\n");
        let id = d.route_request("alice", b"wrong");
        d.reply(id, Reply::Failed(Failure::Denied));
        d.fire_next_timer();
    }
    let out = d.take_client();
    assert!(out.ends_with(
        "-ERR [AUTH] Authentication failed\r\n-ERR Too many failed logins, closing connection\r\n"
    ));
    assert_eq!(d.closed, vec![Peer::Client]);
}

#[test]
fn user_database_failures() {
    for (reply, expected) in [
        (
            Reply::Failed(Failure::Temporary("ldap down".into())),
            "-ERR [SYS/TEMP] User database unavailable, try again later\r\n",
        ),
        (
            Reply::Failed(Failure::Disabled),
            "-ERR [AUTH] Login is disabled for this account\r\n",
        ),
    ] {
        let mut d = session(config(), conn());
        d.take_client();
        d.client_sends(b"USER alice\r\nPASS secret\r\n");
        let id = d.route_request("alice", b"secret");
        d.reply(id, reply);
        assert_eq!(d.take_client(), format!("+OK\r\n{expected}"));
        assert!(d.connects.is_empty());
        // The client stays and may try again.
        d.client_sends(b"QUIT\r\n");
        assert_eq!(d.take_client(), "+OK front.example.com POP3 closing\r\n");
    }
    // No answer at all.
    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"USER alice\r\nPASS secret\r\n");
    d.fire_next_timer();
    assert_eq!(
        d.take_client(),
        "+OK\r\n-ERR [SYS/TEMP] User database did not answer, try again later\r\n"
    );
}

#[test]
fn every_backend_address_refusing_is_a_temporary_failure() {
    let mut d = session(config(), conn());
    routed(&mut d, b"");
    d.take_client();
    d.connected(Err("connection refused".into()));
    assert_eq!(d.connects.len(), 2);
    assert_eq!(d.connects[1], BACKEND2.parse().unwrap());
    d.connected(Err("connection refused".into()));
    assert_eq!(
        d.take_client(),
        "-ERR [SYS/TEMP] Mail server unavailable, try again later\r\n"
    );
    assert_eq!(
        d.failures(),
        vec![
            ("b1".to_string(), BACKEND1.parse().unwrap()),
            ("b1".to_string(), BACKEND2.parse().unwrap())
        ]
    );
    assert!(d.closed.is_empty(), "{:?}", d.closed);
    // The host's answer to the report is not waited for.
    let (id, _) = d.requests.last().map(|(id, _)| (*id, ())).unwrap();
    d.reply(id, Reply::Done);
    d.client_sends(b"QUIT\r\n");
    assert_eq!(d.take_client(), "+OK front.example.com POP3 closing\r\n");
}

#[test]
fn second_address_is_used_when_the_first_refuses() {
    let mut d = session(config(), conn());
    routed(&mut d, b"");
    d.connected(Err("refused".into()));
    d.connected(Ok(()));
    assert_eq!(d.take_backend(), expected_proxy_header(false));
    d.backend_sends(b"+OK\r\n");
    d.backend_sends(b"+OK in\r\n");
    assert!(d.splice.is_some());
    assert_eq!(d.failures().len(), 1);
}

#[test]
fn backend_refusals_keep_only_the_response_code() {
    for (answer, expected) in [
        (
            &b"-ERR [IN-USE] pop3 lock held by pid 4711 on node7\r\n"[..],
            "-ERR [IN-USE] Mailbox is in use by another session\r\n",
        ),
        (
            b"-ERR [AUTH] Authentication failed\r\n",
            "-ERR [AUTH] Authentication failed\r\n",
        ),
        (
            b"-ERR [SYS/TEMP] /var/mail: I/O error\r\n",
            "-ERR [SYS/TEMP] Temporary failure, try again later\r\n",
        ),
        (b"-ERR nope\r\n", "-ERR [AUTH] Authentication failed\r\n"),
    ] {
        let mut d = session(config(), conn());
        routed(&mut d, b"");
        d.take_client();
        d.connected(Ok(()));
        d.backend_sends(b"+OK\r\n");
        d.backend_sends(answer);
        assert_eq!(d.take_client(), expected);
        assert_eq!(d.closed, vec![Peer::Backend]);
        assert!(d.splice.is_none());
        assert!(d.failures().is_empty());
    }
}

#[test]
fn backend_closing_mid_login() {
    let mut d = session(config(), conn());
    routed(&mut d, b"");
    d.take_client();
    d.connected(Ok(()));
    d.backend_sends(b"+OK\r\n");
    d.eof(Peer::Backend);
    assert_eq!(
        d.take_client(),
        "-ERR [SYS/TEMP] Mail server unavailable, try again later\r\n"
    );
    assert_eq!(d.closed, vec![Peer::Backend]);
    assert_eq!(d.failures().len(), 1);
    assert!(!d.s.wants_read(Peer::Backend));
    assert!(d.s.wants_read(Peer::Client));
}

#[test]
fn backend_not_speaking_pop3() {
    let mut d = session(config(), conn());
    routed(&mut d, b"");
    d.take_client();
    d.connected(Ok(()));
    d.backend_sends(b"220 smtp.example.com ESMTP\r\n");
    assert_eq!(
        d.take_client(),
        "-ERR [SYS/TEMP] Mail server unavailable, try again later\r\n"
    );
    assert_eq!(d.closed, vec![Peer::Backend]);
}

#[test]
fn connect_and_login_deadline() {
    let mut d = session(config(), conn());
    routed(&mut d, b"");
    d.take_client();
    d.advance(ProxyConfig::default().backend_timeout - Duration::from_millis(1));
    assert_eq!(d.take_client(), "");
    d.advance(Duration::from_millis(1));
    assert_eq!(
        d.take_client(),
        "-ERR [SYS/TEMP] Mail server unavailable, try again later\r\n"
    );
    // The pending connect is cancelled by closing the peer.
    assert_eq!(d.closed, vec![Peer::Backend]);
    assert_eq!(d.failures(), vec![("b1".into(), BACKEND1.parse().unwrap())]);
    // A late connect result is ignored.
    d.connected(Ok(()));
    assert_eq!(d.take_backend(), b"");
}

#[test]
fn overlong_lines_and_bad_commands() {
    let mut d = session(config(), conn());
    d.take_client();
    let mut long = vec![b'A'; 5000];
    long.extend_from_slice(b"\r\nNOOP\r\n");
    d.client_sends(&long);
    assert_eq!(
        d.take_client(),
        "-ERR Command line too long\r\n-ERR Command not valid in this state\r\n"
    );
    for _ in 0..17 {
        d.client_sends(b"XYZZY\r\n");
    }
    assert!(d.closed.is_empty());
    d.client_sends(b"XYZZY\r\n");
    assert!(
        d.take_client()
            .ends_with("-ERR Too many bad commands, closing connection\r\n")
    );
    assert_eq!(d.closed, vec![Peer::Client]);
}

#[test]
fn pipelined_input_is_bounded_during_login() {
    let mut d = session(config(), conn());
    routed(&mut d, b"");
    let chunk = vec![b'x'; 16 * 1024];
    let mut sent = 0;
    while d.s.wants_read(Peer::Client) {
        d.client_sends(&chunk);
        sent += chunk.len();
        assert!(sent <= 128 * 1024, "input not bounded");
    }
    assert!(sent >= ProxyConfig::default().limits.max_buffered_input);
}

#[test]
fn proxy_loop_is_refused() {
    let mut c = conn();
    c.hops = Some(0);
    let mut d = session(config(), c);
    d.take_client();
    d.client_sends(b"USER alice\r\nPASS secret\r\n");
    assert_eq!(
        d.take_client(),
        "+OK\r\n-ERR [SYS/PERM] Proxy loop: too many proxy hops\r\n"
    );
    assert!(d.requests.is_empty());

    // One hop left: the back-end is told zero.
    let mut c = conn();
    c.hops = Some(1);
    let mut d = session(config(), c);
    routed(&mut d, b"");
    d.connected(Ok(()));
    let header = d.take_backend();
    assert_eq!(&header[header.len() - 4..], &[0xE0, 0, 1, 0]);
}

#[test]
fn client_leaving_mid_login_closes_the_backend() {
    let mut d = session(config(), conn());
    routed(&mut d, b"");
    d.connected(Ok(()));
    d.eof(Peer::Client);
    assert_eq!(d.closed, vec![Peer::Backend, Peer::Client]);
    assert_eq!(d.s.poll_timeout(), None);
}

/// One complete scripted run with the client input split into the given pieces;
/// returns everything both peers were sent and the splice.
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
        d.backend_sends(b"+OK\r\n");
        d.backend_sends(b"+OK Logged in\r\n");
    }
    let client = d.take_client();
    (client, d.take_backend(), d.splice)
}

#[test]
fn chunking_does_not_change_the_result() {
    let input: &[u8] = b"CAPA\r\nNOOP\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\n";
    let whole = scripted_run(&[input]);
    assert_eq!(
        &whole.2.as_ref().expect("spliced").to_backend[..],
        b"STAT\r\nLIST\r\n"
    );
    for cut in 1..input.len() {
        assert_eq!(
            scripted_run(&[&input[..cut], &input[cut..]]),
            whole,
            "split at {cut}"
        );
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(scripted_run(&bytes), whole);
}

/// Moves TLS records between an in-memory rustls client and a session until neither
/// has anything more to say; returns the plaintext the client received.
fn client_tls_exchange<S: Session>(d: &mut Drive<S>, tls: &mut ClientConnection) -> Vec<u8> {
    let mut plain = Vec::new();
    for _ in 0..20 {
        let mut out = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut out).unwrap();
        }
        if !out.is_empty() {
            d.client_sends(&out);
        }
        let incoming = std::mem::take(&mut d.client);
        if incoming.is_empty() && out.is_empty() {
            break;
        }
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
    }
    plain
}

#[test]
fn stls_on_the_client_leg_then_relay() {
    let mut c = conn();
    c.starttls_available = true;
    c.plaintext_auth = false;
    let now = Instant::now();
    let inner = Pop3FrontSession::new(shared(config()), c, now);
    let mut d = Drive::new(Secured::plain(inner, Some(TLS.server.clone())), now);
    // Plaintext pipelined behind STLS is discarded.
    d.client_sends(b"STLS\r\nUSER evil\r\n");
    assert_eq!(
        d.take_client(),
        format!("{GREETING}+OK Begin TLS negotiation\r\n")
    );
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = ClientConnection::new(TLS.client.clone(), name).unwrap();
    client_tls_exchange(&mut d, &mut tls);
    tls.writer()
        .write_all(b"USER alice\r\nPASS secret\r\n")
        .unwrap();
    assert_eq!(client_tls_exchange(&mut d, &mut tls), b"+OK\r\n");
    let id = d.route_request("alice", b"secret");
    d.reply(id, remote("alice@example.com", "b1", &[BACKEND1]));
    d.connected(Ok(()));
    // The back-end learns the client used TLS.
    assert_eq!(d.take_backend(), expected_proxy_header(true));
    d.backend_sends(b"+OK\r\n");
    assert_eq!(d.take_backend(), BACKEND_AUTH);
    d.backend_sends(b"+OK Logged in\r\n");
    assert_eq!(client_tls_exchange(&mut d, &mut tls), b"+OK Logged in\r\n");
    // No splice past a TLS session that ends here: the session relays.
    assert!(d.splice.is_none());
    tls.writer().write_all(b"STAT\r\n").unwrap();
    client_tls_exchange(&mut d, &mut tls);
    assert_eq!(d.take_backend(), b"STAT\r\n");
    d.backend_sends(b"+OK 1 120\r\n");
    assert_eq!(client_tls_exchange(&mut d, &mut tls), b"+OK 1 120\r\n");
    // Backpressure: the relay stops reading the back-end while the client lags.
    let big = vec![b'y'; 300 * 1024];
    for chunk in big.chunks(16 * 1024) {
        if !d.s.wants_read(Peer::Backend) {
            break;
        }
        d.backend_sends(chunk);
    }
    assert!(!d.s.wants_read(Peer::Backend));
    d.drained(Peer::Client);
    assert!(d.s.wants_read(Peer::Backend));
    // Either side closing ends both.
    d.eof(Peer::Backend);
    assert!(d.closed.contains(&Peer::Client) && d.closed.contains(&Peer::Backend));
}

/// Moves TLS records between the session's back-end leg and an in-memory rustls
/// server; returns the plaintext the server received.
fn backend_tls_exchange<S: Session>(d: &mut Drive<S>, tls: &mut ServerConnection) -> Vec<u8> {
    let mut plain = Vec::new();
    for _ in 0..20 {
        let incoming = std::mem::take(&mut d.backend);
        let mut rest = &incoming[..];
        while !rest.is_empty() {
            tls.read_tls(&mut rest).unwrap();
            if tls.process_new_packets().is_err() {
                // The session refused us (an alert): nothing more to exchange.
                return plain;
            }
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

fn backend_tls_config(mode: BackendTlsMode) -> ProxyConfig {
    ProxyConfig {
        backend_tls: mode,
        backend_tls_config: Some(TLS.client.clone()),
        ..config()
    }
}

#[test]
fn implicit_tls_to_the_backend_then_relay() {
    let mut d = session(backend_tls_config(BackendTlsMode::Tls), conn());
    d.client_sends(b"USER alice\r\nPASS secret\r\n");
    let id = d.route_request("alice", b"secret");
    d.reply(id, remote("alice@example.com", "localhost", &[BACKEND1]));
    d.connected(Ok(()));
    // The PROXY header goes first, in the clear; the ClientHello follows.
    let sent = std::mem::take(&mut d.backend);
    let header = expected_proxy_header(false);
    assert_eq!(&sent[..header.len()], &header[..]);
    d.backend = sent[header.len()..].to_vec();
    let mut server = ServerConnection::new(TLS.server.clone()).unwrap();
    assert_eq!(backend_tls_exchange(&mut d, &mut server), b"");
    server.writer().write_all(b"+OK b1 ready\r\n").unwrap();
    assert_eq!(backend_tls_exchange(&mut d, &mut server), BACKEND_AUTH);
    d.take_client();
    server.writer().write_all(b"+OK Logged in\r\n").unwrap();
    backend_tls_exchange(&mut d, &mut server);
    assert_eq!(d.take_client(), "+OK Logged in\r\n");
    assert!(d.splice.is_none());
    d.client_sends(b"STAT\r\n");
    assert_eq!(backend_tls_exchange(&mut d, &mut server), b"STAT\r\n");
    server.writer().write_all(b"+OK 0 0\r\n").unwrap();
    backend_tls_exchange(&mut d, &mut server);
    assert_eq!(d.take_client(), "+OK 0 0\r\n");
}

#[test]
fn stls_to_the_backend() {
    let mut d = session(backend_tls_config(BackendTlsMode::StartTls), conn());
    d.client_sends(b"USER alice\r\nPASS secret\r\n");
    let id = d.route_request("alice", b"secret");
    d.reply(id, remote("alice@example.com", "localhost", &[BACKEND1]));
    d.connected(Ok(()));
    assert_eq!(d.take_backend(), expected_proxy_header(false));
    d.backend_sends(b"+OK ready\r\n");
    assert_eq!(d.take_backend(), b"STLS\r\n");
    d.backend_sends(b"+OK Begin TLS\r\n");
    let mut server = ServerConnection::new(TLS.server.clone()).unwrap();
    assert_eq!(backend_tls_exchange(&mut d, &mut server), BACKEND_AUTH);
    server.writer().write_all(b"+OK Logged in\r\n").unwrap();
    backend_tls_exchange(&mut d, &mut server);
    assert!(d.take_client().ends_with("+OK Logged in\r\n"));
}

#[test]
fn backend_certificate_for_another_name_is_refused() {
    let mut d = session(backend_tls_config(BackendTlsMode::Tls), conn());
    d.client_sends(b"USER alice\r\nPASS secret\r\n");
    let id = d.route_request("alice", b"secret");
    d.reply(
        id,
        remote("alice@example.com", "b1.example.com", &[BACKEND1]),
    );
    d.connected(Ok(()));
    let sent = std::mem::take(&mut d.backend);
    d.backend = sent[expected_proxy_header(false).len()..].to_vec();
    let mut server = ServerConnection::new(TLS.server.clone()).unwrap();
    d.take_client();
    backend_tls_exchange(&mut d, &mut server);
    assert_eq!(
        d.take_client(),
        "-ERR [SYS/TEMP] Mail server unavailable, try again later\r\n"
    );
    assert!(d.closed.contains(&Peer::Backend));
    assert_eq!(d.failures().len(), 1);
}

#[test]
fn a_client_that_never_logs_in_is_closed_at_the_login_timeout() {
    let mut d = session(config(), conn());
    d.take_client();
    // Busy but never logging in: a command every 10 s and a line that never ends.
    for _ in 0..5 {
        d.advance(Duration::from_secs(10));
        d.client_sends(b"CAPA\r\n");
    }
    d.client_sends(b"US");
    d.advance(Duration::from_secs(9));
    assert!(!d.ended());
    d.advance(ProxyConfig::default().login_timeout - Duration::from_secs(59));
    assert!(d.ended(), "still open after the login timeout");
    assert!(d.take_client().ends_with("\r\n"));
}
