//! The session observer: wraps every protocol session (inside its TLS layer, so it
//! sees plaintext) to count sessions and logins for the metrics registry and to write
//! the one login log line of every protocol (see [`super::login`]).
//!
//! It forwards every call unchanged; it only watches the client's command lines until
//! a login succeeds (to name the method), the `StartTls` action (TLS yes/no), the
//! password-checking request and its reply.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use tidegate_core::listener::{Protocol as CoreProtocol, secure};
use tidegate_core::pop3::ConnInfo;
use tidegate_core::smtp::{SmtpConnInfo, SmtpListener, SmtpRole, SmtpSession};
use tidegate_core::tls::Secured;
use tidegate_core::{Action, Failure, Peer, Reply, Request, RequestId, Session};
use tidegate_store::Listener;
use tidegate_store::metrics::{self, LoginResult, Protocol};
use tidegate_store::service::BoxedSession;

use super::login::{LoginLine, Method};

/// Session ids: one process-wide counter, so an id names one session in the log.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// The longest start of a command line kept to recognise a login command: enough for
/// an IMAP tag of 40 characters plus `AUTHENTICATE SCRAM-SHA-256`.
const LINE_START: usize = 80;

/// Where a session was accepted and what it speaks: what the observer needs besides
/// the session itself.
#[derive(Debug, Clone, Copy)]
pub struct Tap {
    /// The protocol label.
    pub protocol: Protocol,
    /// The listener's address (the client's destination).
    pub local: SocketAddr,
    /// TLS from the first byte (an implicit-TLS port).
    pub implicit_tls: bool,
}

/// A protocol session with its observer (see the module documentation). It adds 96
/// bytes to every session, plus about 130 bytes on the heap until a login succeeds.
pub struct Observed<S> {
    inner: S,
    tap: Tap,
    session: u64,
    client: SocketAddr,
    tls: bool,
    /// Boxed so that an authenticated (idle) session keeps 8 bytes of it, not 100.
    sniffer: Option<Box<Sniffer>>,
    /// Boxed: present only between the password request and its reply.
    pending: Option<Box<PendingLogin>>,
}

/// A password check that was asked for and not yet answered.
struct PendingLogin {
    id: RequestId,
    user: String,
    client: IpAddr,
    method: Method,
}

impl<S: Session> Observed<S> {
    /// Observes `inner`, a session for `client` accepted on the listener `tap`
    /// describes; counts it as open until it is dropped.
    pub fn new(inner: S, tap: Tap, client: SocketAddr) -> Observed<S> {
        metrics::global().session_opened(tap.protocol);
        let logs_in = matches!(
            tap.protocol,
            Protocol::Pop3 | Protocol::Imap | Protocol::Submission
        );
        Observed {
            inner,
            tap,
            session: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            client,
            tls: tap.implicit_tls,
            sniffer: logs_in.then(|| Box::new(Sniffer::new(tap.protocol))),
            pending: None,
        }
    }

    fn watch_action(&mut self, action: &Action) {
        match action {
            Action::StartTls { with: Peer::Client } => self.tls = true,
            Action::Request {
                id,
                request:
                    Request::Authenticate { user, client, .. } | Request::Route { user, client, .. },
            } => {
                let method = self
                    .sniffer
                    .as_ref()
                    .map_or(Method::Unknown, |s| s.method.clone());
                self.pending = Some(Box::new(PendingLogin {
                    id: *id,
                    user: user.clone(),
                    client: *client,
                    method,
                }));
            }
            _ => {}
        }
    }

    fn watch_reply(&mut self, id: RequestId, reply: &Reply) {
        let Some(pending) = self.pending.take_if(|p| p.id == id) else {
            return;
        };
        let (result, user) = match reply {
            Reply::Authenticated(account) => (LoginResult::Success, account.0.as_str()),
            Reply::Routed(route) => (LoginResult::Success, route.account.0.as_str()),
            Reply::Failed(Failure::Denied | Failure::Throttled(_) | Failure::Disabled) => {
                (LoginResult::Failure, pending.user.as_str())
            }
            _ => (LoginResult::TempFail, pending.user.as_str()),
        };
        metrics::global().login(self.tap.protocol, result);
        let line = LoginLine {
            user,
            method: &pending.method,
            result,
            protocol: self.tap.protocol,
            client: self.client,
            client_ip: pending.client,
            local: self.tap.local,
            tls: self.tls,
            session: self.session,
        };
        log::info!("{line}");
        if result == LoginResult::Success {
            // One login per session: nothing more to recognise.
            self.sniffer = None;
        }
    }
}

impl<S> Drop for Observed<S> {
    fn drop(&mut self) {
        metrics::global().session_closed(self.tap.protocol);
    }
}

impl<S: Session> Session for Observed<S> {
    fn handle_input(&mut self, now: Instant, from: Peer, bytes: &[u8]) {
        if from == Peer::Client
            && let Some(sniffer) = &mut self.sniffer
        {
            sniffer.feed(bytes);
        }
        self.inner.handle_input(now, from, bytes)
    }
    fn handle_eof(&mut self, now: Instant, from: Peer) {
        self.inner.handle_eof(now, from)
    }
    fn handle_reply(&mut self, now: Instant, id: RequestId, reply: Reply) {
        self.watch_reply(id, &reply);
        self.inner.handle_reply(now, id, reply)
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now)
    }
    fn handle_drained(&mut self, now: Instant, to: Peer) {
        self.inner.handle_drained(now, to)
    }
    fn poll_action(&mut self) -> Option<Action> {
        let action = self.inner.poll_action()?;
        self.watch_action(&action);
        Some(action)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
    fn wants_read(&self, from: Peer) -> bool {
        self.inner.wants_read(from)
    }
    fn handle_connected(&mut self, now: Instant, to: Peer, result: Result<(), String>) {
        self.inner.handle_connected(now, to, result)
    }
    fn account(&self) -> Option<&str> {
        self.inner.account()
    }
    fn handle_abort(&mut self, now: Instant) {
        self.inner.handle_abort(now)
    }
}

/// Recognises the login command among the client's lines from the first
/// [`LINE_START`] bytes of each line: POP3 `USER`/`PASS`, `APOP` and `AUTH mech`
/// (RFC 1939 §7, RFC 5034), IMAP `LOGIN` and `AUTHENTICATE mech` (RFC 3501 §6.2),
/// SMTP `AUTH mech` (RFC 4954). The session's own parser stays the judge of what the
/// line means; this only names the method in the log.
struct Sniffer {
    protocol: Protocol,
    line: [u8; LINE_START],
    len: usize,
    method: Method,
}

impl Sniffer {
    fn new(protocol: Protocol) -> Sniffer {
        Sniffer {
            protocol,
            line: [0; LINE_START],
            len: 0,
            method: Method::Unknown,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                if let Some(method) = Method::recognise(self.protocol, &self.line[..self.len]) {
                    self.method = method;
                }
                self.len = 0;
            } else if self.len < LINE_START {
                self.line[self.len] = b;
                self.len += 1;
            }
        }
    }
}

/// The session for a connection accepted on `listener` (bound to `local`), observed.
/// Listeners of other kinds (authd, front-ends, which observe themselves) open as
/// usual.
pub fn open(
    listener: &Listener,
    local: SocketAddr,
    client: SocketAddr,
    now: Instant,
) -> BoxedSession {
    match listener {
        Listener::Pop3(pop3) => open_mailbox(pop3, Protocol::Pop3, local, client, now),
        Listener::Imap(imap) => open_mailbox(imap, Protocol::Imap, local, client, now),
        Listener::Smtp(smtp) => open_smtp(smtp, local, client, now),
        Listener::Custom(accept) => accept.open(client, now),
        _ => Box::new(tidegate_core::refusal::Refusal::new(b"")),
    }
}

/// POP3 and IMAP: what `tidegate_core::listener::Listener::open` does, with the
/// observer between the TLS layer and the protocol session.
fn open_mailbox<P: CoreProtocol>(
    listener: &tidegate_core::listener::Listener<P>,
    protocol: Protocol,
    local: SocketAddr,
    client: SocketAddr,
    now: Instant,
) -> BoxedSession {
    let conn = ConnInfo {
        client,
        implicit_tls: listener.implicit_tls,
        starttls_available: listener.tls.is_some() && !listener.implicit_tls,
        plaintext_auth: listener.plaintext_auth.allows(client.ip()),
        may_override_client: listener.trusted.iter().any(|n| n.contains(client.ip())),
    };
    let tap = Tap {
        protocol,
        local,
        implicit_tls: listener.implicit_tls,
    };
    let session = Observed::new(P::session(listener.config.clone(), conn, now), tap, client);
    secure(
        session,
        listener.tls.as_ref(),
        listener.implicit_tls,
        P::BUSY_REPLY,
    )
}

/// SMTP: inbound and LMTP sessions have no login, so they are observed from outside
/// (counted only) through the listener's own `open`; submission sessions are built
/// here with the observer inside the STARTTLS layer.
fn open_smtp(
    listener: &SmtpListener,
    local: SocketAddr,
    client: SocketAddr,
    now: Instant,
) -> BoxedSession {
    let protocol = match listener.config.role {
        SmtpRole::Inbound => Protocol::Smtp,
        SmtpRole::Submission => Protocol::Submission,
        SmtpRole::Lmtp => Protocol::Lmtp,
    };
    let tap = Tap {
        protocol,
        local,
        implicit_tls: false,
    };
    if protocol != Protocol::Submission {
        let session = listener.open(client, SystemTime::now(), now);
        return Box::new(Observed::new(session, tap, client));
    }
    let ip = client.ip();
    let trusted = listener.trusted.iter().any(|n| n.contains(ip));
    let conn = SmtpConnInfo {
        client,
        accepted_at: SystemTime::now(),
        starttls_available: listener.tls.is_some(),
        plaintext_auth: listener.plaintext_auth.allows(ip),
        trusted: ip.is_loopback() || ip.to_canonical().is_loopback() || trusted,
        may_override_client: trusted,
    };
    let session = SmtpSession::new(listener.config.clone(), conn, now);
    let observed = Observed::new(session, tap, client);
    Box::new(Secured::plain(observed, listener.tls.clone()))
}

/// Wraps a front-end (proxy) session accepted on `local` for `client`.
pub fn front<S: Session + Send + 'static>(
    session: S,
    protocol: Protocol,
    local: SocketAddr,
    implicit_tls: bool,
    client: SocketAddr,
) -> Observed<S> {
    let tap = Tap {
        protocol,
        local,
        implicit_tls,
    };
    Observed::new(session, tap, client)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Instant;

    use tidegate_core::{Account, Secret};

    use super::*;

    /// A session that asks for a password check whenever the client sends a line, and
    /// remembers the replies it gets.
    #[derive(Default)]
    struct Asking {
        actions: VecDeque<Action>,
        next: u64,
        replies: Vec<RequestId>,
    }

    impl Session for Asking {
        fn handle_input(&mut self, _: Instant, _: Peer, _: &[u8]) {
            self.next += 1;
            self.actions.push_back(Action::Request {
                id: RequestId(self.next),
                request: Request::Authenticate {
                    user: "carol@example.com".into(),
                    password: Secret::new(b"pw".to_vec()),
                    client: "192.0.2.9".parse().unwrap(),
                },
            });
        }
        fn handle_eof(&mut self, _: Instant, _: Peer) {}
        fn handle_reply(&mut self, _: Instant, id: RequestId, _: Reply) {
            self.replies.push(id);
        }
        fn handle_timeout(&mut self, _: Instant) {}
        fn handle_drained(&mut self, _: Instant, _: Peer) {}
        fn poll_action(&mut self) -> Option<Action> {
            self.actions.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn wants_read(&self, _: Peer) -> bool {
            true
        }
    }

    /// The value of one sample line of the global registry.
    fn sample(line: &str) -> u64 {
        let text = metrics::global().render(Instant::now());
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
    }

    // LMTP has no logins in real sessions, so no other test in this binary moves these
    // counters of the process-wide registry.
    const LOGIN: &str = "tidegate_logins_total{protocol=\"lmtp\",result=";

    #[test]
    fn replies_are_counted_by_result_and_sessions_while_alive() {
        let results = ["success", "failure", "tempfail"];
        let before: Vec<u64> = results
            .iter()
            .map(|r| sample(&format!("{LOGIN}\"{r}\"}}")))
            .collect();
        let open_before = sample("tidegate_sessions{protocol=\"lmtp\"}");
        let tap = Tap {
            protocol: Protocol::Lmtp,
            local: "127.0.0.1:24".parse().unwrap(),
            implicit_tls: false,
        };
        let mut session = Observed::new(Asking::default(), tap, "192.0.2.9:4000".parse().unwrap());
        assert_eq!(
            sample("tidegate_sessions{protocol=\"lmtp\"}"),
            open_before + 1
        );
        let now = Instant::now();
        let replies = [
            Reply::Authenticated(Account("carol@example.com".into())),
            Reply::Failed(Failure::Denied),
            Reply::Failed(Failure::Throttled(std::time::Duration::from_secs(1))),
            Reply::Failed(Failure::Temporary("directory down".into())),
        ];
        for reply in replies {
            session.handle_input(now, Peer::Client, b"x\r\n");
            let Some(Action::Request { id, .. }) = session.poll_action() else {
                panic!("no request");
            };
            // A reply to another id is not a login result.
            session.handle_reply(now, RequestId(id.0 + 100), Reply::Done);
            session.handle_reply(now, id, reply);
        }
        assert_eq!(session.inner.replies.len(), 8, "every reply is passed on");
        let after: Vec<u64> = results
            .iter()
            .map(|r| sample(&format!("{LOGIN}\"{r}\"}}")))
            .collect();
        assert_eq!(after[0] - before[0], 1);
        assert_eq!(after[1] - before[1], 2);
        assert_eq!(after[2] - before[2], 1);
        drop(session);
        assert_eq!(sample("tidegate_sessions{protocol=\"lmtp\"}"), open_before);
    }

    #[test]
    fn starttls_and_the_login_command_are_seen() {
        let tap = Tap {
            protocol: Protocol::Imap,
            local: "127.0.0.1:143".parse().unwrap(),
            implicit_tls: false,
        };
        let mut session = Observed::new(Asking::default(), tap, "192.0.2.9:4000".parse().unwrap());
        assert!(!session.tls);
        session.watch_action(&Action::StartTls { with: Peer::Client });
        assert!(session.tls);
        session.handle_input(Instant::now(), Peer::Client, b"a1 AUTHENTICATE PLAIN\r\n");
        let Some(action) = session.poll_action() else {
            panic!("no request");
        };
        assert!(matches!(action, Action::Request { .. }));
        let pending = session.pending.as_ref().map(|p| p.method.clone());
        assert_eq!(pending, Some(Method::Authenticate("PLAIN".into())));
    }
}
