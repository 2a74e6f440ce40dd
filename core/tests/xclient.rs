//! Back-ends learn the real client from a trusted proxy: POP3 and SMTP `XCLIENT`, IMAP
//! `ID` fields. Exact bytes in and out, and the address that reaches
//! `Request::Authenticate`; a POP3 front-end session drives a POP3 server session.

#![allow(clippy::disallowed_methods)] // tests take one clock reading as their epoch

mod proxy_support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use tidegate_core::imap::{ImapConfig, ImapSession};
use tidegate_core::pop3::{ConnInfo, Pop3Config, Pop3Session};
use tidegate_core::proxy::{ClientAddressMode, Pop3FrontSession};
use tidegate_core::smtp::{SmtpConfig, SmtpConnInfo, SmtpRole, SmtpSession};
use tidegate_core::{Account, Action, Peer, Reply, Request, RequestId, Session};

const PEER: &str = "10.0.0.1:50000";

/// A server session under test with what it wrote and asked.
struct Server<S: Session> {
    session: S,
    now: Instant,
    out: Vec<u8>,
    requests: Vec<(RequestId, Request)>,
}

impl<S: Session> Server<S> {
    fn new(session: S, now: Instant) -> Self {
        let mut s = Server {
            session,
            now,
            out: Vec::new(),
            requests: Vec::new(),
        };
        s.pump();
        s
    }
    fn pump(&mut self) {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Write {
                    to: Peer::Client,
                    bytes,
                } => self.out.extend_from_slice(&bytes),
                Action::Request { id, request } => self.requests.push((id, request)),
                _ => {}
            }
        }
        self.session.handle_drained(self.now, Peer::Client);
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Write {
                    to: Peer::Client,
                    bytes,
                } => self.out.extend_from_slice(&bytes),
                Action::Request { id, request } => self.requests.push((id, request)),
                _ => {}
            }
        }
    }
    fn send(&mut self, bytes: &[u8]) {
        self.session.handle_input(self.now, Peer::Client, bytes);
        self.pump();
    }
    fn take(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.out)).into_owned()
    }
    /// The client address of the last `Authenticate`, answered with success.
    fn authenticated_client(&mut self) -> IpAddr {
        let (id, client) = self
            .requests
            .iter()
            .rev()
            .find_map(|(id, r)| match r {
                Request::Authenticate { client, .. } => Some((*id, *client)),
                _ => None,
            })
            .expect("an Authenticate request");
        self.session.handle_reply(
            self.now,
            id,
            Reply::Authenticated(Account("alice@example.com".into())),
        );
        self.pump();
        client
    }
}

fn pop3(trusted: bool, now: Instant) -> Server<Pop3Session> {
    let conn = ConnInfo {
        client: PEER.parse().unwrap(),
        implicit_tls: false,
        starttls_available: false,
        plaintext_auth: true,
        may_override_client: trusted,
    };
    let cfg = Pop3Config {
        hostname: "b1.example.com".into(),
        ..Pop3Config::default()
    };
    Server::new(Pop3Session::new(Arc::new(cfg), conn, now), now)
}

const POP3_GREETING: &str = "+OK b1.example.com POP3 ready\r\n";

#[test]
fn pop3_trusted_xclient_replaces_the_client() {
    let mut s = pop3(true, Instant::now());
    assert_eq!(s.take(), POP3_GREETING);
    s.send(b"CAPA\r\n");
    assert!(s.take().contains("\r\nXCLIENT\r\n"));
    s.send(b"XCLIENT ADDR=192.0.2.10 PORT=40000 TTL=4\r\n");
    assert_eq!(s.take(), "+OK\r\n");
    assert_eq!(s.session.client(), "192.0.2.10:40000".parse().unwrap());
    assert_eq!(s.session.proxy_ttl(), Some(4));
    s.send(b"USER alice\r\nPASS secret\r\n");
    assert_eq!(s.take(), "+OK\r\n");
    assert_eq!(
        s.authenticated_client(),
        "192.0.2.10".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn pop3_untrusted_xclient_is_an_unknown_command() {
    let mut s = pop3(false, Instant::now());
    s.take();
    s.send(b"CAPA\r\n");
    assert!(!s.take().contains("XCLIENT"));
    s.send(b"XCLIENT ADDR=192.0.2.10 PORT=40000\r\n");
    assert_eq!(s.take(), "-ERR Unknown command\r\n");
    s.send(b"USER alice\r\nPASS secret\r\n");
    s.take();
    assert_eq!(
        s.authenticated_client(),
        "10.0.0.1".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn pop3_malformed_or_late_xclient_is_refused() {
    let mut s = pop3(true, Instant::now());
    s.take();
    s.send(b"XCLIENT ADDR=300.1.1.1\r\nXCLIENT\r\nXCLIENT FOO=1\r\nXCLIENT HELO=+0\r\n");
    assert_eq!(
        s.take(),
        "-ERR Syntax error: invalid XCLIENT attributes\r\n".repeat(4)
    );
    s.send(b"USER alice\r\nXCLIENT ADDR=192.0.2.10\r\n");
    assert_eq!(s.take(), "+OK\r\n-ERR Command not valid in this state\r\n");
    assert_eq!(s.session.client(), PEER.parse().unwrap());
}

#[test]
fn pop3_xclient_split_at_every_byte() {
    let input: &[u8] = b"XCLIENT ADDR=IPV6:2001:db8::5 PORT=1 TTL=2\r\nUSER alice\r\nPASS x\r\n";
    let now = Instant::now();
    let mut whole = pop3(true, now);
    whole.send(input);
    let expected = whole.take();
    for cut in 1..input.len() {
        let mut s = pop3(true, now);
        s.send(&input[..cut]);
        s.send(&input[cut..]);
        assert_eq!(s.take(), expected, "split at {cut}");
        assert_eq!(
            s.authenticated_client(),
            "2001:db8::5".parse::<IpAddr>().unwrap()
        );
    }
}

fn smtp(trusted: bool, now: Instant) -> Server<SmtpSession> {
    let conn = SmtpConnInfo {
        client: PEER.parse().unwrap(),
        accepted_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        starttls_available: false,
        plaintext_auth: true,
        trusted,
        may_override_client: trusted,
    };
    let cfg = SmtpConfig {
        hostname: "b1.example.com".into(),
        role: SmtpRole::Submission,
        ..SmtpConfig::default()
    };
    Server::new(SmtpSession::new(Arc::new(cfg), conn, now), now)
}

const SMTP_GREETING: &str = "220 b1.example.com ESMTP tidegate\r\n";
const EHLO_TRUSTED: &str = "250-b1.example.com\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n\
250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n\
250-AUTH PLAIN LOGIN\r\n250-XCLIENT ADDR PORT HELO NAME PROTO TTL\r\n250 HELP\r\n";

#[test]
fn smtp_trusted_xclient_restarts_the_session_as_the_client() {
    let mut s = smtp(true, Instant::now());
    assert_eq!(s.take(), SMTP_GREETING);
    s.send(b"EHLO front.example.com\r\n");
    assert_eq!(s.take(), EHLO_TRUSTED);
    s.send(b"XCLIENT HELO=laptop.example.org PROTO=ESMTP ADDR=192.0.2.10 PORT=40000 TTL=4\r\n");
    assert_eq!(s.take(), SMTP_GREETING);
    assert_eq!(s.session.proxy_ttl(), Some(4));
    // Postfix semantics: the session starts over, MAIL before EHLO is out of sequence.
    s.send(b"MAIL FROM:<a@example.com>\r\n");
    assert!(s.take().starts_with("503 "));
    s.send(b"EHLO front.example.com\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    assert_eq!(s.take(), EHLO_TRUSTED);
    assert_eq!(
        s.authenticated_client(),
        "192.0.2.10".parse::<IpAddr>().unwrap()
    );
    assert!(s.take().starts_with("235 "));
    s.send(b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    let rcpt = s
        .requests
        .iter()
        .find_map(|(id, r)| matches!(r, Request::CheckRecipient { .. }).then_some(*id))
        .expect("a CheckRecipient request");
    s.session.handle_reply(
        s.now,
        rcpt,
        Reply::Recipient(tidegate_core::RecipientCheck::Local(Account(
            "bob@example.net".into(),
        ))),
    );
    s.pump();
    let header = s
        .requests
        .iter()
        .find_map(|(_, r)| match r {
            Request::BeginDelivery { header } => Some(header.clone()),
            _ => None,
        })
        .expect("a BeginDelivery request");
    let header = String::from_utf8_lossy(&header).into_owned();
    assert!(
        header.contains("Received: from laptop.example.org ([192.0.2.10]) by b1.example.com"),
        "{header}"
    );
}

#[test]
fn smtp_untrusted_xclient_is_not_authorized() {
    let mut s = smtp(false, Instant::now());
    s.take();
    s.send(b"EHLO front.example.com\r\n");
    assert!(!s.take().contains("XCLIENT"));
    s.send(b"XCLIENT ADDR=192.0.2.10 PORT=40000\r\nXCLIENT nonsense\r\n");
    assert_eq!(s.take(), "550 5.7.0 Not authorized\r\n".repeat(2));
    s.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    assert_eq!(
        s.authenticated_client(),
        "10.0.0.1".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn smtp_malformed_early_or_late_xclient_is_refused() {
    let mut s = smtp(true, Instant::now());
    s.take();
    s.send(b"XCLIENT ADDR=192.0.2.10\r\n");
    assert_eq!(
        s.take(),
        "503 5.5.1 XCLIENT is allowed only after EHLO, before AUTH and MAIL\r\n"
    );
    s.send(b"EHLO f\r\n");
    s.take();
    s.send(b"XCLIENT ADDR=1.2.3\r\nXCLIENT FOO=1\r\nXCLIENT HELO=a+0D+0Ab\r\n");
    assert_eq!(
        s.take(),
        "501 5.5.4 Invalid XCLIENT attributes\r\n".repeat(3)
    );
    s.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    s.authenticated_client();
    s.take();
    s.send(b"XCLIENT ADDR=192.0.2.10\r\n");
    assert_eq!(
        s.take(),
        "503 5.5.1 XCLIENT is allowed only after EHLO, before AUTH and MAIL\r\n"
    );
    assert_eq!(s.session.client(), PEER.parse().unwrap());
}

fn imap(trusted: bool, now: Instant) -> Server<ImapSession> {
    let conn = ConnInfo {
        client: PEER.parse().unwrap(),
        implicit_tls: false,
        starttls_available: false,
        plaintext_auth: true,
        may_override_client: trusted,
    };
    Server::new(
        ImapSession::new(Arc::new(ImapConfig::default()), conn, now),
        now,
    )
}

const IMAP_ID: &[u8] = b"a ID (\"x-originating-ip\" \"192.0.2.10\" \"x-originating-port\" \"40000\" \"x-proxy-ttl\" \"4\")\r\n";

#[test]
fn imap_id_fields_from_a_trusted_peer_name_the_client() {
    let mut s = imap(true, Instant::now());
    s.take();
    s.send(IMAP_ID);
    assert_eq!(
        s.take(),
        "* ID (\"name\" \"tidegate\")\r\na OK ID completed\r\n"
    );
    assert_eq!(s.session.client(), "192.0.2.10:40000".parse().unwrap());
    assert_eq!(s.session.proxy_ttl(), Some(4));
    s.send(b"b LOGIN alice secret\r\n");
    assert_eq!(
        s.authenticated_client(),
        "192.0.2.10".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn imap_id_fields_from_an_untrusted_peer_are_ignored() {
    let mut s = imap(false, Instant::now());
    s.take();
    s.send(IMAP_ID);
    assert_eq!(
        s.take(),
        "* ID (\"name\" \"tidegate\")\r\na OK ID completed\r\n"
    );
    s.send(b"b LOGIN alice secret\r\n");
    assert_eq!(
        s.authenticated_client(),
        "10.0.0.1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(s.session.proxy_ttl(), None);
}

/// The POP3 front-end in `xclient` mode against tidegate's own POP3 server, in memory.
#[test]
fn pop3_front_end_and_server_agree_on_xclient() {
    use proxy_support::*;
    let now = Instant::now();
    let cfg = ProxyConfigExt::xclient();
    let mut front = Drive::new(Pop3FrontSession::new(shared(cfg), conn(), now), now);
    front.take_client();
    front.client_sends(b"USER alice\r\nPASS secret\r\n");
    let id = front.route_request("alice", b"secret");
    front.reply(id, remote("alice@example.com", "b1", &[BACKEND1]));
    front.connected(Ok(()));
    let mut server = pop3(true, now);
    // Relay bytes both ways until neither side has anything new.
    for _ in 0..10 {
        let to_server = front.take_backend();
        if !to_server.is_empty() {
            server.send(&to_server);
        }
        let to_front = std::mem::take(&mut server.out);
        if !to_front.is_empty() {
            front.backend_sends(&to_front);
        }
    }
    let client: SocketAddr = CLIENT.parse().unwrap();
    assert_eq!(server.session.client(), client);
    assert_eq!(server.session.proxy_ttl(), Some(4));
    assert_eq!(server.authenticated_client(), client.ip());
}

/// Builds the proxy configuration for the xclient mode.
struct ProxyConfigExt;

impl ProxyConfigExt {
    fn xclient() -> tidegate_core::proxy::ProxyConfig {
        tidegate_core::proxy::ProxyConfig {
            client_address: ClientAddressMode::Xclient,
            ..proxy_support::config()
        }
    }
}
