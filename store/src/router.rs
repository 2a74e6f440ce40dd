//! Where a proxy front-end sends each user (design.md §1, `[proxy]`): the host side of
//! [`tidegate_core::Request::Route`].
//!
//! The user database checks the password; the user's `tohost` field names the back-end,
//! else `default_host` does (so a single server becomes a cluster without touching any
//! account), else the login is refused. A node that is front-end and back-end at once
//! (during a migration) serves its own users by running its back-end listeners on the
//! `backend_ports` and naming itself in `tohost`. Back-end names are resolved here (DNS is I/O, so not in core), with the
//! protocol's port from `backend_ports`. A back-end that failed recently is skipped for
//! a while (the circuit breaker), so one dead back-end does not slow every login.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tidegate_core::user::UserRecord;
use tidegate_core::{Account, Backend, Failure, Reply, Route, Service};

/// The back-end port of each protocol (`[proxy] backend_ports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendPorts {
    /// POP3, default 110.
    pub pop3: u16,
    /// IMAP, default 143.
    pub imap: u16,
    /// Submission, default 587.
    pub submission: u16,
    /// LMTP, default 24.
    pub lmtp: u16,
}

impl Default for BackendPorts {
    fn default() -> Self {
        BackendPorts {
            pop3: 110,
            imap: 143,
            submission: 587,
            lmtp: 24,
        }
    }
}

impl BackendPorts {
    /// The port for `service`.
    pub fn port(&self, service: Service) -> u16 {
        match service {
            Service::Pop3 => self.pop3,
            Service::Imap => self.imap,
            Service::Submission => self.submission,
            Service::Lmtp => self.lmtp,
        }
    }
}

/// Routing rules of one front-end.
#[derive(Debug, Clone, Default)]
pub struct RouterConfig {
    /// The back-end of users without `tohost` (SurgeMail's `g_proxy_default`); `None`
    /// refuses them.
    pub default_host: Option<String>,
    /// Ports per protocol.
    pub ports: BackendPorts,
    /// How long a back-end that failed is skipped (0: never skipped).
    pub down_for: Duration,
    /// Names of this node (its `hostname`): inbound mail for a user whose `tohost` is
    /// one of them is delivered here rather than relayed (compared without regard to
    /// case).
    pub local_names: Vec<String>,
}

/// Where inbound mail for a user goes on a front-end ([`Router::mail_route`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailRoute {
    /// This node holds the mailbox.
    Local,
    /// Relay to this back-end over LMTP.
    Backend(String),
    /// Neither `tohost` nor `default_host`: no node is known to hold the mailbox.
    Unroutable,
}

/// The routing rule: `tohost`, else `default_host`; `None` when neither is set.
pub fn choose_host<'a>(record: &'a UserRecord, config: &'a RouterConfig) -> Option<&'a str> {
    record.tohost().or(config.default_host.as_deref())
}

/// The host side of proxy routing: host choice, resolution, circuit breaker.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    down: Mutex<HashMap<SocketAddr, Instant>>,
}

/// The most back-ends remembered as down; more are forgotten oldest first (a bound on
/// memory when a misconfiguration names many hosts).
const MAX_DOWN: usize = 4096;

impl Router {
    /// A router with these rules.
    pub fn new(config: RouterConfig) -> Router {
        Router {
            config,
            down: Mutex::new(HashMap::new()),
        }
    }

    /// Answers [`tidegate_core::Request::Route`] for a user whose password was checked.
    pub fn route(&self, record: &UserRecord, client: IpAddr, service: Service) -> Reply {
        let host = match choose_host(record, &self.config) {
            Some(host) => host.to_owned(),
            None => {
                log::warn!(
                    "route for {} from {client}: no tohost and no [proxy] default_host",
                    record.address
                );
                return Reply::Failed(Failure::Temporary("no server for this account".into()));
            }
        };
        let port = self.config.ports.port(service);
        let addrs = match resolve(&host, port) {
            Ok(addrs) if !addrs.is_empty() => addrs,
            Ok(_) | Err(_) => {
                log::error!(
                    "route for {}: cannot resolve back-end {host:?}",
                    record.address
                );
                return Reply::Failed(Failure::Temporary("server unavailable".into()));
            }
        };
        self.route_to(record, client, service, host, addrs)
    }

    /// [`Router::route`] when it needs no name lookup, so an event loop may answer it:
    /// the user's back-end is an IP address. `None` when it is a name (DNS blocks) or
    /// when there is no back-end at all (the refusal is logged on the worker).
    pub fn route_without_dns(
        &self,
        record: &UserRecord,
        client: IpAddr,
        service: Service,
    ) -> Option<Reply> {
        let host = choose_host(record, &self.config)?;
        let ip = literal_ip(host)?;
        let addrs = vec![SocketAddr::new(ip, self.config.ports.port(service))];
        Some(self.route_to(record, client, service, host.to_owned(), addrs))
    }

    /// The end of routing once `host` is resolved to `addrs`: the circuit breaker,
    /// the log line and the metrics.
    fn route_to(
        &self,
        record: &UserRecord,
        client: IpAddr,
        service: Service,
        host: String,
        addrs: Vec<SocketAddr>,
    ) -> Reply {
        let account = Account(record.address.clone());
        let addrs = self.without_down(addrs);
        if addrs.is_empty() {
            crate::metrics::global().backend_up(&host, false);
            log::warn!(
                "route for {}: back-end {host} is marked down",
                record.address
            );
            return Reply::Failed(Failure::Temporary("server unavailable".into()));
        }
        log::info!(
            "route {} from {client}: {service:?} -> {host} ({})",
            record.address,
            addrs[0]
        );
        let metrics = crate::metrics::global();
        metrics.handover(&host);
        metrics.backend_up(&host, true);
        Reply::Routed(Route {
            account,
            backend: Backend { host, addrs },
        })
    }

    /// Where inbound mail for `record` goes: its back-end (`tohost`, else
    /// `default_host`), unless that names this node. The circuit breaker does not apply:
    /// the queue's retry schedule spaces the attempts.
    pub fn mail_route(&self, record: &UserRecord) -> MailRoute {
        match choose_host(record, &self.config) {
            None => MailRoute::Unroutable,
            Some(host)
                if self
                    .config
                    .local_names
                    .iter()
                    .any(|name| name.eq_ignore_ascii_case(host)) =>
            {
                MailRoute::Local
            }
            Some(host) => MailRoute::Backend(host.to_owned()),
        }
    }

    /// The LMTP port of the back-ends (`backend_ports.lmtp`).
    pub fn lmtp_port(&self) -> u16 {
        self.config.ports.lmtp
    }

    /// The circuit breaker: `addr` failed (refused, timed out); skip it for
    /// `down_for`.
    pub fn mark_down(&self, addr: SocketAddr, now: Instant) {
        if self.config.down_for.is_zero() {
            return;
        }
        let Ok(mut down) = self.down.lock() else {
            return;
        };
        if down.len() >= MAX_DOWN {
            down.retain(|_, until| *until > now);
            if down.len() >= MAX_DOWN
                && let Some(oldest) = down
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(a, _)| *a)
            {
                down.remove(&oldest);
            }
        }
        log::warn!(
            "back-end {addr} marked down for {} s",
            self.config.down_for.as_secs()
        );
        down.insert(addr, now + self.config.down_for);
    }

    fn without_down(&self, addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
        let Ok(mut down) = self.down.lock() else {
            return addrs;
        };
        if down.is_empty() {
            return addrs;
        }
        let now = Instant::now();
        down.retain(|_, until| *until > now);
        addrs
            .into_iter()
            .filter(|addr| !down.contains_key(addr))
            .collect()
    }
}

/// Resolves `host` (a name, an IPv4 address or an IPv6 address with or without
/// brackets) with `port`.
pub(crate) fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    if let Some(ip) = literal_ip(host) {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Ok((bare, port).to_socket_addrs()?.collect())
}

/// `host` as an IP address when it is one (an IPv6 address with or without brackets).
fn literal_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(tohost: Option<&str>) -> UserRecord {
        let mut user = UserRecord::new("alice@example.com");
        if let Some(host) = tohost {
            user.fields.insert("tohost".into(), host.into());
        }
        user
    }

    fn client() -> IpAddr {
        IpAddr::from([192, 0, 2, 7])
    }

    #[test]
    fn tohost_wins_over_default_and_gets_the_service_port() {
        let router = Router::new(RouterConfig {
            default_host: Some("127.0.0.9".into()),
            ..RouterConfig::default()
        });
        let reply = router.route(&alice(Some("127.0.0.2")), client(), Service::Imap);
        let Reply::Routed(Route { account, backend }) = reply else {
            panic!("{reply:?}");
        };
        assert_eq!(account.0, "alice@example.com");
        assert_eq!(backend.host, "127.0.0.2");
        assert_eq!(backend.addrs, ["127.0.0.2:143".parse().unwrap()]);
    }

    #[test]
    fn default_host_serves_users_without_tohost_and_none_refuses() {
        let router = Router::new(RouterConfig {
            default_host: Some("[::1]".into()),
            ..RouterConfig::default()
        });
        let reply = router.route(&alice(None), client(), Service::Pop3);
        let Reply::Routed(Route { backend, .. }) = reply else {
            panic!("{reply:?}");
        };
        assert_eq!(backend.addrs, ["[::1]:110".parse().unwrap()]);
        let reply =
            Router::new(RouterConfig::default()).route(&alice(None), client(), Service::Pop3);
        assert!(
            matches!(reply, Reply::Failed(Failure::Temporary(_))),
            "{reply:?}"
        );
    }

    #[test]
    fn mail_routes_follow_tohost_then_default_and_stay_local_for_this_node() {
        let router = Router::new(RouterConfig {
            default_host: Some("127.0.0.9".into()),
            local_names: vec!["front.test".into()],
            ..RouterConfig::default()
        });
        assert_eq!(
            router.mail_route(&alice(Some("127.0.0.2"))),
            MailRoute::Backend("127.0.0.2".into())
        );
        assert_eq!(
            router.mail_route(&alice(None)),
            MailRoute::Backend("127.0.0.9".into())
        );
        assert_eq!(
            router.mail_route(&alice(Some("FRONT.test"))),
            MailRoute::Local
        );
        let bare = Router::new(RouterConfig::default());
        assert_eq!(bare.mail_route(&alice(None)), MailRoute::Unroutable);
    }

    #[test]
    fn a_backend_marked_down_is_skipped_until_its_time_is_up() {
        let router = Router::new(RouterConfig {
            down_for: Duration::from_secs(30),
            ..RouterConfig::default()
        });
        let user = alice(Some("127.0.0.2"));
        let now = Instant::now();
        router.mark_down("127.0.0.2:110".parse().unwrap(), now);
        let reply = router.route(&user, client(), Service::Pop3);
        assert!(
            matches!(reply, Reply::Failed(Failure::Temporary(_))),
            "{reply:?}"
        );
        let imap = router.route(&user, client(), Service::Imap);
        assert!(matches!(imap, Reply::Routed(Route { .. })), "{imap:?}");
        router.mark_down(
            "127.0.0.2:110".parse().unwrap(),
            now - Duration::from_secs(60),
        );
        let reply = router.route(&user, client(), Service::Pop3);
        assert!(matches!(reply, Reply::Routed(Route { .. })), "{reply:?}");
    }
}
