//! The IMAP front-end driven byte by byte against a scripted IMAP back-end.

#![allow(clippy::disallowed_methods)] // tests take one clock reading as their epoch

mod proxy_support;

use std::time::Instant;

use proxy_support::*;
use tidegate_core::proxy::{ClientAddressMode, FrontConn, ImapFrontSession, ProxyConfig};
use tidegate_core::{Failure, Peer, Reply, Request, Session};

const GREETING: &str = "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN] \
                        front.example.com IMAP4rev1 proxy ready\r\n";
const BACKEND_LOGIN: &[u8] = b"S3 LOGIN \"alice@example.com\" \"secret\"\r\n";

fn session(cfg: ProxyConfig, conn: FrontConn) -> Drive<ImapFrontSession> {
    let now = Instant::now();
    Drive::new(ImapFrontSession::new(shared(cfg), conn, now), now)
}

fn id_config() -> ProxyConfig {
    ProxyConfig {
        client_address: ClientAddressMode::ImapId,
        ..config()
    }
}

fn route(d: &mut Drive<impl Session>) {
    d.route_alice();
}

#[test]
fn login_with_imap_id_then_splice() {
    let mut d = session(id_config(), conn());
    assert_eq!(d.take_client(), GREETING);
    d.client_sends(b"a1 LOGIN alice \"secret\"\r\na2 SELECT INBOX\r\n");
    route(&mut d);
    d.connected(Ok(()));
    assert_eq!(d.take_backend(), b"");
    d.backend_sends(b"* OK [CAPABILITY IMAP4rev1 ID] b1 ready\r\n");
    assert_eq!(
        d.take_backend(),
        b"S2 ID (\"x-originating-ip\" \"192.0.2.10\" \"x-originating-port\" \"40000\" \
          \"x-proxy-ttl\" \"4\")\r\n"
    );
    d.backend_sends(b"* ID (\"name\" \"b1\")\r\nS2 OK ID completed\r\n");
    assert_eq!(d.take_backend(), BACKEND_LOGIN);
    d.backend_sends(b"S3 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in\r\n");
    assert_eq!(
        d.take_client(),
        "a1 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in\r\n"
    );
    let splice = d.splice.clone().expect("spliced");
    assert_eq!(&splice.to_backend[..], b"a2 SELECT INBOX\r\n");
    assert!(d.s.is_finished());
}

#[test]
fn proxy_v2_login_relays_untagged_capability() {
    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"a1 LOGIN alice secret\r\n");
    route(&mut d);
    d.connected(Ok(()));
    assert_eq!(d.take_backend(), expected_proxy_header(false));
    d.backend_sends(b"* OK ready\r\n");
    assert_eq!(d.take_backend(), BACKEND_LOGIN);
    d.backend_sends(b"* CAPABILITY IMAP4rev1 IDLE\r\nS3 OK Logged in\r\n");
    assert_eq!(
        d.take_client(),
        "* CAPABILITY IMAP4rev1 IDLE\r\na1 OK Logged in\r\n"
    );
    assert!(d.splice.is_some());
}

/// The default: the login goes out right behind the PROXY header, before the
/// greeting; the greeting is not mistaken for the login's untagged data.
#[test]
fn pipelined_login_goes_out_with_the_proxy_header() {
    let cfg = ProxyConfig {
        pipelined_login: true,
        ..config()
    };
    let mut d = session(cfg, conn());
    d.take_client();
    d.client_sends(b"a1 LOGIN alice secret\r\n");
    route(&mut d);
    d.connected(Ok(()));
    assert_eq!(
        d.take_backend(),
        [expected_proxy_header(false).as_slice(), BACKEND_LOGIN].concat()
    );
    d.backend_sends(b"* OK [CAPABILITY IMAP4rev1] ready\r\n* CAPABILITY IMAP4rev1 IDLE\r\n");
    assert!(d.splice.is_none());
    d.backend_sends(b"S3 OK Logged in\r\n");
    assert_eq!(d.take_backend(), b"", "nothing sent twice");
    assert_eq!(
        d.take_client(),
        "* CAPABILITY IMAP4rev1 IDLE\r\na1 OK Logged in\r\n"
    );
    assert!(d.splice.is_some());

    // IMAP ID must come first: no pipelining then.
    let mut d = session(
        ProxyConfig {
            pipelined_login: true,
            ..id_config()
        },
        conn(),
    );
    d.client_sends(b"a1 LOGIN alice secret\r\n");
    route(&mut d);
    d.connected(Ok(()));
    assert_eq!(d.take_backend(), b"");
}

#[test]
fn literals_in_login() {
    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"a1 LOGIN {5}\r\n");
    assert_eq!(d.take_client(), "+ Ready for literal data\r\n");
    d.client_sends(b"alice {6+}\r\nsecret\r\n");
    assert_eq!(d.take_client(), "");
    d.route_request("alice", b"secret");

    // A password that cannot be a quoted string is replayed as SASL PLAIN.
    let mut d = session(config(), conn());
    d.client_sends(b"a1 LOGIN alice {4+}\r\np\"\r\n\r\n");
    let id = d.route_request("alice", b"p\"\r\n");
    d.reply(id, remote("alice@example.com", "b1", &[BACKEND1]));
    d.connected(Ok(()));
    d.take_backend();
    d.backend_sends(b"* OK\r\n");
    assert_eq!(
        d.take_backend(),
        b"S3 AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHAiDQo=\r\n"
    );

    // An oversized synchronising literal is refused before its bytes come.
    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"a1 LOGIN {5000}\r\na2 NOOP\r\n");
    assert_eq!(
        d.take_client(),
        "* BAD Literal too large\r\na2 OK NOOP completed\r\n"
    );
    // A non-synchronising one ends the connection.
    d.client_sends(b"a3 LOGIN {5000+}\r\n");
    assert_eq!(d.take_client(), "* BYE Literal too large\r\n");
    assert_eq!(d.closed, vec![Peer::Client]);
}

#[test]
fn authenticate_plain() {
    let mut d = session(config(), conn());
    d.client_sends(b"a1 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    d.route_request("alice", b"secret");

    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"a1 AUTHENTICATE PLAIN\r\n");
    assert_eq!(d.take_client(), "+ \r\n");
    d.client_sends(b"AGFsaWNlAHNlY3JldA==\r\n");
    d.route_request("alice", b"secret");

    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"a1 AUTHENTICATE PLAIN\r\n*\r\na2 AUTHENTICATE CRAM-MD5\r\n");
    assert_eq!(
        d.take_client(),
        "+ \r\na1 BAD Authentication cancelled\r\na2 NO Unsupported authentication mechanism\r\n"
    );
}

#[test]
fn not_authenticated_commands() {
    let mut c = conn();
    c.plaintext_auth = false;
    c.starttls_available = true;
    let mut d = session(config(), c);
    d.take_client();
    d.client_sends(
        b"a1 CAPABILITY\r\na2 NOOP\r\na3 ID (\"name\" \"mutt\")\r\na4 LOGIN alice secret\r\n\
          a5 SELECT INBOX\r\n+bad NOOP\r\na6 LOGOUT\r\n",
    );
    assert_eq!(
        d.take_client(),
        "* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID STARTTLS LOGINDISABLED\r\n\
         a1 OK CAPABILITY completed\r\na2 OK NOOP completed\r\n\
         * ID (\"name\" \"tidegate\")\r\na3 OK ID completed\r\n\
         a4 NO [PRIVACYREQUIRED] Login disabled until TLS is active\r\n\
         a5 BAD Command not valid before login\r\n* BAD Invalid tag\r\n\
         * BYE Logging out\r\na6 OK LOGOUT completed\r\n"
    );
    assert!(d.requests.is_empty());
    assert_eq!(d.closed, vec![Peer::Client]);

    let mut c = conn();
    c.starttls_available = true;
    let mut d = session(config(), c);
    d.take_client();
    d.client_sends(b"a1 STARTTLS\r\na2 LOGIN injected x\r\n");
    assert_eq!(d.take_client(), "a1 OK Begin TLS negotiation now\r\n");
    assert_eq!(d.starttls, vec![Peer::Client]);
    assert!(d.requests.is_empty());
}

#[test]
fn failures() {
    // Wrong password: after the delay.
    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"a1 LOGIN alice wrong\r\n");
    let id = d.route_request("alice", b"wrong");
    d.reply(id, Reply::Failed(Failure::Denied));
    assert_eq!(d.take_client(), "");
    d.fire_next_timer();
    assert_eq!(
        d.take_client(),
        "a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    );

    // User database down.
    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"a1 LOGIN alice secret\r\n");
    let id = d.route_request("alice", b"secret");
    d.reply(id, Reply::Failed(Failure::Temporary("x".into())));
    assert_eq!(
        d.take_client(),
        "a1 NO [UNAVAILABLE] User database unavailable, try again later\r\n"
    );

    // Every address refuses.
    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"a1 LOGIN alice secret\r\n");
    route(&mut d);
    d.connected(Err("refused".into()));
    d.connected(Err("refused".into()));
    assert_eq!(
        d.take_client(),
        "a1 NO [UNAVAILABLE] Mail server unavailable, try again later\r\n"
    );
    assert_eq!(d.failures().len(), 2);

    // The back-end refuses the login: its code, our text.
    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"a1 LOGIN alice secret\r\n");
    route(&mut d);
    d.connected(Ok(()));
    d.backend_sends(b"* OK\r\n");
    d.backend_sends(b"S3 NO [UNAVAILABLE] /srv/mail on nfs3 is stale\r\n");
    assert_eq!(
        d.take_client(),
        "a1 NO [UNAVAILABLE] Mailbox temporarily unavailable, try again later\r\n"
    );
    assert_eq!(d.closed, vec![Peer::Backend]);
    assert!(d.failures().is_empty());

    // A back-end that greets with BYE.
    let mut d = session(config(), conn());
    d.take_client();
    d.client_sends(b"a1 LOGIN alice secret\r\n");
    route(&mut d);
    d.connected(Ok(()));
    d.backend_sends(b"* BYE overloaded\r\n");
    assert_eq!(
        d.take_client(),
        "a1 NO [UNAVAILABLE] Mail server unavailable, try again later\r\n"
    );
    assert_eq!(d.failures().len(), 1);
}

fn scripted_run(pieces: &[&[u8]]) -> (String, Vec<u8>, Option<Splice>) {
    let mut d = session(id_config(), conn());
    for piece in pieces {
        if d.s.wants_read(Peer::Client) {
            d.client_sends(piece);
        }
    }
    if let Some(id) = d
        .requests
        .iter()
        .find_map(|(id, r)| matches!(r, Request::Route { .. }).then_some(*id))
    {
        d.reply(id, remote("alice@example.com", "b1", &[BACKEND1]));
        d.connected(Ok(()));
        d.backend_sends(b"* OK\r\nS2 OK\r\nS3 OK done\r\n");
    }
    (d.take_client(), d.take_backend(), d.splice)
}

#[test]
fn chunking_does_not_change_the_result() {
    let input: &[u8] =
        b"a0 CAPABILITY\r\na1 LOGIN {5}\r\nalice {6+}\r\nsecret\r\na2 SELECT {5+}\r\nINBOX\r\n";
    let whole = scripted_run(&[input]);
    assert_eq!(
        &whole.2.as_ref().expect("spliced").to_backend[..],
        b"a2 SELECT {5+}\r\nINBOX\r\n"
    );
    assert!(whole.0.ends_with("a1 OK done\r\n"), "{}", whole.0);
    for cut in 1..input.len() {
        assert_eq!(
            scripted_run(&[&input[..cut], &input[cut..]]),
            whole,
            "split at {cut}"
        );
    }
}
