//! An in-memory shell for front-end sessions: it carries out every action, records
//! what each peer was sent, and lets a test play the client and a scripted back-end.

#![allow(dead_code, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidegate_core::proxy::{FrontConn, ProxyConfig};
use tidegate_core::{Action, Backend, Peer, Reply, Request, RequestId, Route, Session};

/// The hand-over the session asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    pub to_client: Bytes,
    pub to_backend: Bytes,
    pub idle_timeout: Duration,
}

/// A session and everything it asked the shell to do so far.
pub struct Drive<S: Session> {
    pub s: S,
    pub now: Instant,
    /// Bytes written to the client, not yet taken by the test.
    pub client: Vec<u8>,
    /// Bytes written to the back-end, not yet taken by the test.
    pub backend: Vec<u8>,
    pub requests: Vec<(RequestId, Request)>,
    pub connects: Vec<SocketAddr>,
    pub closed: Vec<Peer>,
    pub starttls: Vec<Peer>,
    pub splice: Option<Splice>,
    /// Actions after a Splice or a client Close: the contract says none may come.
    pub after_end: usize,
}

impl<S: Session> Drive<S> {
    pub fn new(s: S, now: Instant) -> Self {
        let mut d = Drive {
            s,
            now,
            client: Vec::new(),
            backend: Vec::new(),
            requests: Vec::new(),
            connects: Vec::new(),
            closed: Vec::new(),
            starttls: Vec::new(),
            splice: None,
            after_end: 0,
        };
        d.pump();
        d
    }

    pub fn ended(&self) -> bool {
        self.splice.is_some() || self.closed.contains(&Peer::Client)
    }

    pub fn pump(&mut self) {
        while let Some(action) = self.s.poll_action() {
            if self.ended() {
                self.after_end += 1;
            }
            match action {
                Action::Write {
                    to: Peer::Client,
                    bytes,
                } => self.client.extend_from_slice(&bytes),
                Action::Write {
                    to: Peer::Backend,
                    bytes,
                } => self.backend.extend_from_slice(&bytes),
                Action::Request { id, request } => self.requests.push((id, request)),
                Action::Connect { to, addr, .. } => {
                    assert_eq!(to, Peer::Backend);
                    self.connects.push(addr);
                }
                Action::Close { to } => self.closed.push(to),
                Action::StartTls { with } => self.starttls.push(with),
                Action::Splice {
                    to_client,
                    to_backend,
                    idle_timeout,
                } => {
                    self.splice = Some(Splice {
                        to_client,
                        to_backend,
                        idle_timeout,
                    })
                }
            }
        }
    }

    pub fn client_sends(&mut self, bytes: &[u8]) {
        assert!(
            self.s.wants_read(Peer::Client),
            "session does not want client input"
        );
        self.s.handle_input(self.now, Peer::Client, bytes);
        self.pump();
    }

    pub fn backend_sends(&mut self, bytes: &[u8]) {
        assert!(
            self.s.wants_read(Peer::Backend),
            "session does not want back-end input"
        );
        self.s.handle_input(self.now, Peer::Backend, bytes);
        self.pump();
    }

    pub fn eof(&mut self, from: Peer) {
        self.s.handle_eof(self.now, from);
        self.pump();
    }

    pub fn connected(&mut self, result: Result<(), String>) {
        self.s.handle_connected(self.now, Peer::Backend, result);
        self.pump();
    }

    pub fn reply(&mut self, id: RequestId, reply: Reply) {
        self.s.handle_reply(self.now, id, reply);
        self.pump();
    }

    pub fn drained(&mut self, to: Peer) {
        self.s.handle_drained(self.now, to);
        self.pump();
    }

    /// Moves the clock and fires what is due.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.s.handle_timeout(self.now);
        self.pump();
    }

    /// Moves the clock to the session's next deadline and fires it.
    pub fn fire_next_timer(&mut self) {
        let at = self.s.poll_timeout().expect("a deadline is armed");
        self.now = self.now.max(at);
        self.s.handle_timeout(self.now);
        self.pump();
    }

    pub fn take_client(&mut self) -> String {
        String::from_utf8(std::mem::take(&mut self.client)).expect("UTF-8 replies")
    }

    pub fn take_backend(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.backend)
    }

    /// The id of the one outstanding Route request, checking its fields.
    /// Takes alice's route request (password `secret`) and answers it with the
    /// account alice@example.com on host b1 at both back-end addresses.
    pub fn route_alice(&mut self) {
        let id = self.route_request("alice", b"secret");
        self.reply(id, remote("alice@example.com", "b1", &[BACKEND1, BACKEND2]));
    }

    pub fn route_request(&mut self, user: &str, password: &[u8]) -> RequestId {
        let (id, request) = self
            .requests
            .iter()
            .rev()
            .find(|(_, r)| matches!(r, Request::Route { .. }))
            .expect("a Route request");
        let Request::Route {
            user: u,
            password: p,
            ..
        } = request
        else {
            unreachable!()
        };
        assert_eq!(u, user);
        assert_eq!(p.expose(), password);
        *id
    }

    /// The BackendFailed reports, as (host, addr).
    pub fn failures(&self) -> Vec<(String, SocketAddr)> {
        self.requests
            .iter()
            .filter_map(|(_, r)| match r {
                Request::BackendFailed { host, addr, .. } => Some((host.clone(), *addr)),
                _ => None,
            })
            .collect()
    }
}

pub const CLIENT: &str = "192.0.2.10:40000";
pub const LOCAL: &str = "198.51.100.1:110";
pub const BACKEND1: &str = "10.0.0.2:110";
pub const BACKEND2: &str = "10.0.0.3:110";

pub fn conn() -> FrontConn {
    FrontConn {
        client: CLIENT.parse().unwrap(),
        local: LOCAL.parse().unwrap(),
        implicit_tls: false,
        starttls_available: false,
        plaintext_auth: true,
        hops: None,
    }
}

/// The step-by-step back-end dialogue (each command after the reply before it);
/// the tests of the pipelined login turn `pipelined_login` back on.
pub fn config() -> ProxyConfig {
    ProxyConfig {
        hostname: "front.example.com".into(),
        pipelined_login: false,
        ..ProxyConfig::default()
    }
}

pub fn shared(cfg: ProxyConfig) -> Arc<ProxyConfig> {
    Arc::new(cfg)
}

/// A route to the back-end `host` at these addresses, for `account`.
pub fn remote(account: &str, host: &str, addrs: &[&str]) -> Reply {
    Reply::Routed(Route {
        account: tidegate_core::Account(account.into()),
        backend: Backend {
            host: host.into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        },
    })
}

/// The PROXY v2 header the front-end sends for the default client (hops 4).
pub fn expected_proxy_header(tls: bool) -> Vec<u8> {
    use tidegate_core::proxy::{ProxiedAddresses, ProxiedTls, ProxyHeader, haproxy};
    haproxy::encode_v2(&ProxyHeader {
        addresses: Some(ProxiedAddresses {
            source: CLIENT.parse().unwrap(),
            destination: LOCAL.parse().unwrap(),
        }),
        tls: tls.then(|| ProxiedTls {
            version: String::new(),
        }),
        hops: Some(4),
    })
}
