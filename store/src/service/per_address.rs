//! The per-address connection cap (`[server] max_connections_per_ip`).
//!
//! One client address may hold at most `max` sessions at a time; the next connection
//! from it gets the listener's busy session (POP3 `-ERR [SYS/TEMP]`, SMTP `421`, IMAP
//! `* BYE [UNAVAILABLE]`) and is closed. IPv4 addresses count one by one, IPv6 addresses per /64 (one
//! subnet, RFC 4291 §2.5.4: a host picks its own interface identifier inside it). Addresses
//! in the exempt networks (`[trust] networks`: front-ends, webmail) are never counted,
//! since a whole cluster's clients arrive from a few of them; so are listeners whose
//! clients are tidegate nodes with connection pools (authd, LMTP: see
//! [`CappedFactory::uncapped`]). On implicit-TLS ports the busy session closes without
//! a reply, as for `max_connections`.
//!
//! The cap is applied where sessions are made: [`CappedFactory`] wraps the binary's
//! [`SessionFactory`] and gives every admitted session an [`AddressGuard`] that
//! gives the slot back when the session is dropped, so it works the same in every shell.
//! A proxy session that hands its sockets to a splice drops its own state at once but
//! keeps the guard; the shells keep the finished session until the splice ends.
//!
//! Memory: the table holds one entry per address that has an open counted session
//! (an entry is removed with its last session), so it never has more entries than there
//! are open connections, which the shells bound by `max_connections`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tidegate_core::net::Cidr;
use tidegate_core::{Action, Peer, Reply, RequestId, Session};

use super::{BoxedSession, SessionFactory};

/// What one client address is counted as: an IPv4 address, or the /64 prefix of an
/// IPv6 address (IPv4-mapped IPv6 addresses count as the IPv4 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    /// One IPv4 address.
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl AddressKey {
    /// The key `addr` is counted under.
    pub fn of(addr: IpAddr) -> AddressKey {
        match addr {
            IpAddr::V4(v4) => AddressKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(u32::from(v4)),
                // The shift keeps the network half; it cannot lose a set bit we want.
                None => AddressKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Counts open sessions per client address and refuses those over the cap.
#[derive(Debug)]
pub struct AddressLimit {
    max: u32,
    exempt: Vec<Cidr>,
    open: Mutex<HashMap<AddressKey, u32>>,
}

/// The outcome of [`AddressLimit::admit`].
#[derive(Debug)]
pub enum Admission {
    /// The address is in an exempt network: not counted.
    Exempt,
    /// Counted; the slot is given back when the guard is dropped.
    Counted(AddressGuard),
    /// The address already holds the maximum number of sessions.
    Refused,
}

impl AddressLimit {
    /// A limit of `max` open sessions per address (at least 1), not applied to
    /// addresses inside `exempt`.
    pub fn new(max: u32, exempt: Vec<Cidr>) -> Arc<AddressLimit> {
        Arc::new(AddressLimit {
            max: max.max(1),
            exempt,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a slot for a new session from `addr`, unless it is exempt or full.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Admission {
        if self.exempt.iter().any(|net| net.contains(addr)) {
            return Admission::Exempt;
        }
        let key = AddressKey::of(addr);
        let mut open = self.table();
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return Admission::Refused;
        }
        *count += 1;
        Admission::Counted(AddressGuard {
            limit: self.clone(),
            key,
        })
    }

    /// Open counted sessions from `addr` (its /64 for IPv6).
    pub fn open_from(&self, addr: IpAddr) -> u32 {
        self.table()
            .get(&AddressKey::of(addr))
            .copied()
            .unwrap_or(0)
    }

    /// Addresses that currently hold at least one counted session.
    pub fn tracked(&self) -> usize {
        self.table().len()
    }

    fn release(&self, key: AddressKey) {
        let mut open = self.table();
        if let Some(count) = open.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&key);
            }
        }
    }

    fn table(&self) -> MutexGuard<'_, HashMap<AddressKey, u32>> {
        // The table stays consistent under a panic elsewhere: every change is one step.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One counted session's slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct AddressGuard {
    limit: Arc<AddressLimit>,
    key: AddressKey,
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        self.limit.release(self.key);
    }
}

/// A [`SessionFactory`] that applies an [`AddressLimit`] to another one: admitted
/// sessions carry their guard, refused connections get the busy session.
pub struct CappedFactory<F> {
    inner: F,
    limit: Option<Arc<AddressLimit>>,
    uncapped: Vec<usize>,
    /// Listeners left out of the cap by a rule, for listener sets that change.
    uncapped_rule: Option<UncappedRule>,
}

/// Tells whether the listener with an index is left out of the cap.
type UncappedRule = Box<dyn Fn(usize) -> bool + Send + Sync>;

impl<F: SessionFactory> CappedFactory<F> {
    /// Applies `limit` to the sessions `inner` makes; `None` counts nothing but still
    /// frees a proxy session's state when it hands over to a splice.
    pub fn new(inner: F, limit: Option<Arc<AddressLimit>>) -> CappedFactory<F> {
        CappedFactory {
            inner,
            limit,
            uncapped: Vec::new(),
            uncapped_rule: None,
        }
    }

    /// Leaves the listeners for which `rule` is true out of the cap; for a factory whose
    /// listeners a reload adds or removes, so that a fixed list of indices cannot say.
    pub fn uncapped_if(mut self, rule: impl Fn(usize) -> bool + Send + Sync + 'static) -> Self {
        self.uncapped_rule = Some(Box::new(rule));
        self
    }

    /// Leaves the listeners with these indices out of the cap (services whose clients
    /// are other nodes with connection pools: authd, LMTP).
    pub fn uncapped(mut self, listeners: impl IntoIterator<Item = usize>) -> Self {
        self.uncapped.extend(listeners);
        self
    }

    /// The limit applied, if any.
    pub fn limit(&self) -> Option<&Arc<AddressLimit>> {
        self.limit.as_ref()
    }
}

impl<F: SessionFactory> SessionFactory for CappedFactory<F> {
    fn open(&self, listener: usize, peer: SocketAddr, now: Instant) -> BoxedSession {
        let limit = self
            .limit
            .as_ref()
            .filter(|_| !self.uncapped.contains(&listener))
            .filter(|_| {
                !self
                    .uncapped_rule
                    .as_ref()
                    .is_some_and(|rule| rule(listener))
            });
        let guard = match limit.map(|l| l.admit(peer.ip())) {
            None | Some(Admission::Exempt) => None,
            Some(Admission::Counted(guard)) => Some(guard),
            Some(Admission::Refused) => {
                log::info!("{peer}: refused: too many connections from this address");
                return self.inner.busy(listener, peer, now);
            }
        };
        Box::new(Guarded {
            session: Some(self.inner.open(listener, peer, now)),
            _guard: guard,
            spliced_account: None,
        })
    }

    fn busy(&self, listener: usize, peer: SocketAddr, now: Instant) -> BoxedSession {
        self.inner.busy(listener, peer, now)
    }
}

/// A session with its address slot. When the session hands over to a splice it is
/// dropped at once; what remains (the slot) lives as long as the shell keeps this.
struct Guarded {
    session: Option<BoxedSession>,
    _guard: Option<AddressGuard>,
    /// The account of a session freed at its splice, still reported by `account()`.
    spliced_account: Option<String>,
}

impl Session for Guarded {
    fn handle_input(&mut self, now: Instant, from: Peer, bytes: &[u8]) {
        if let Some(s) = &mut self.session {
            s.handle_input(now, from, bytes);
        }
    }
    fn handle_eof(&mut self, now: Instant, from: Peer) {
        if let Some(s) = &mut self.session {
            s.handle_eof(now, from);
        }
    }
    fn handle_reply(&mut self, now: Instant, id: RequestId, reply: Reply) {
        if let Some(s) = &mut self.session {
            s.handle_reply(now, id, reply);
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        if let Some(s) = &mut self.session {
            s.handle_timeout(now);
        }
    }
    fn handle_drained(&mut self, now: Instant, to: Peer) {
        if let Some(s) = &mut self.session {
            s.handle_drained(now, to);
        }
    }
    fn handle_connected(&mut self, now: Instant, to: Peer, result: Result<(), String>) {
        if let Some(s) = &mut self.session {
            s.handle_connected(now, to, result);
        }
    }
    fn poll_action(&mut self) -> Option<Action> {
        let action = self.session.as_mut()?.poll_action();
        if matches!(action, Some(Action::Splice { .. })) {
            // Nothing follows a splice: free the session's buffers and state now.
            self.spliced_account = self.account().map(str::to_owned);
            self.session = None;
        }
        action
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.session.as_ref()?.poll_timeout()
    }
    fn wants_read(&self, from: Peer) -> bool {
        self.session.as_ref().is_some_and(|s| s.wants_read(from))
    }
    fn handle_abort(&mut self, now: Instant) {
        if let Some(s) = &mut self.session {
            s.handle_abort(now);
        }
    }
    fn account(&self) -> Option<&str> {
        match &self.session {
            Some(s) => s.account(),
            None => self.spliced_account.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn an_address_gets_max_slots_and_each_drop_gives_one_back() {
        let limit = AddressLimit::new(2, Vec::new());
        let a = v4(192, 0, 2, 1);
        let first = limit.admit(a);
        let second = limit.admit(a);
        assert!(matches!(first, Admission::Counted(_)));
        assert!(matches!(second, Admission::Counted(_)));
        assert!(matches!(limit.admit(a), Admission::Refused));
        assert_eq!(limit.open_from(a), 2);
        // Another address is not affected.
        let other = limit.admit(v4(192, 0, 2, 2));
        assert!(matches!(other, Admission::Counted(_)));
        drop(first);
        assert_eq!(limit.open_from(a), 1);
        assert!(matches!(limit.admit(a), Admission::Counted(_)));
        // The temporary guard above was dropped at the end of its statement.
        assert_eq!(limit.open_from(a), 1);
    }

    #[test]
    fn entries_go_away_with_their_last_session() {
        let limit = AddressLimit::new(100, Vec::new());
        let guards: Vec<_> = (0..50u8)
            .map(|i| limit.admit(v4(198, 51, 100, i)))
            .collect();
        assert_eq!(limit.tracked(), 50);
        drop(guards);
        assert_eq!(limit.tracked(), 0);
        assert_eq!(limit.open_from(v4(198, 51, 100, 7)), 0);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_counts_as_ipv4() {
        let limit = AddressLimit::new(2, Vec::new());
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _g1 = limit.admit(a);
        let _g2 = limit.admit(b);
        assert!(matches!(limit.admit(a), Admission::Refused));
        assert!(matches!(limit.admit(other_64), Admission::Counted(_)));

        let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 9).to_ipv6_mapped());
        let _g3 = limit.admit(v4(203, 0, 113, 9));
        let _g4 = limit.admit(mapped);
        assert!(matches!(
            limit.admit(v4(203, 0, 113, 9)),
            Admission::Refused
        ));
        assert_eq!(
            AddressKey::of(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            AddressKey::V6Prefix(0)
        );
    }

    #[test]
    fn exempt_networks_are_never_counted_or_refused() {
        let limit = AddressLimit::new(1, vec!["10.0.0.0/8".parse().unwrap()]);
        let front = v4(10, 1, 2, 3);
        let held: Vec<_> = (0..10).map(|_| limit.admit(front)).collect();
        assert!(held.iter().all(|a| matches!(a, Admission::Exempt)));
        assert_eq!(limit.tracked(), 0);
        let _client = limit.admit(v4(11, 0, 0, 1));
        assert!(matches!(limit.admit(v4(11, 0, 0, 1)), Admission::Refused));
    }

    /// A factory whose sessions greet with a fixed line, or say "busy".
    struct Greeter;

    struct Line(Option<&'static [u8]>, Option<Action>);

    impl Session for Line {
        fn handle_input(&mut self, _: Instant, _: Peer, _: &[u8]) {
            self.1 = Some(Action::Splice {
                to_client: bytes::Bytes::new(),
                to_backend: bytes::Bytes::new(),
                idle_timeout: std::time::Duration::from_secs(1),
            });
        }
        fn handle_eof(&mut self, _: Instant, _: Peer) {}
        fn handle_reply(&mut self, _: Instant, _: RequestId, _: Reply) {}
        fn handle_timeout(&mut self, _: Instant) {}
        fn handle_drained(&mut self, _: Instant, _: Peer) {}
        fn poll_action(&mut self) -> Option<Action> {
            if let Some(line) = self.0.take() {
                return Some(Action::Write {
                    to: Peer::Client,
                    bytes: bytes::Bytes::from_static(line),
                });
            }
            self.1.take()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn wants_read(&self, _: Peer) -> bool {
            true
        }
    }

    impl SessionFactory for Greeter {
        fn open(&self, _: usize, _: SocketAddr, _: Instant) -> BoxedSession {
            Box::new(Line(Some(b"+OK hello\r\n"), None))
        }
        fn busy(&self, _: usize, _: SocketAddr, _: Instant) -> BoxedSession {
            Box::new(Line(Some(b"-ERR [SYS/TEMP] busy\r\n"), None))
        }
    }

    fn first_write(session: &mut BoxedSession) -> Vec<u8> {
        match session.poll_action() {
            Some(Action::Write { bytes, .. }) => bytes.to_vec(),
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn the_factory_refuses_with_the_busy_session_and_a_splice_keeps_the_slot() {
        let limit = AddressLimit::new(1, Vec::new());
        let factory = CappedFactory::new(Greeter, Some(limit.clone()));
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let now = Instant::now();
        let mut first = factory.open(0, peer, now);
        assert_eq!(first_write(&mut first), b"+OK hello\r\n");
        let mut second = factory.open(0, peer, now);
        assert_eq!(first_write(&mut second), b"-ERR [SYS/TEMP] busy\r\n");
        drop(second);
        assert_eq!(limit.open_from(peer.ip()), 1);

        // The session asks for a splice: it is gone, the slot is still held.
        first.handle_input(now, Peer::Client, b"x");
        assert!(matches!(first.poll_action(), Some(Action::Splice { .. })));
        assert!(first.poll_action().is_none());
        assert!(!first.wants_read(Peer::Client));
        assert_eq!(limit.open_from(peer.ip()), 1);
        drop(first);
        assert_eq!(limit.open_from(peer.ip()), 0);
        let mut third = factory.open(0, peer, now);
        assert_eq!(first_write(&mut third), b"+OK hello\r\n");
    }

    #[test]
    fn uncapped_listeners_are_not_counted() {
        let limit = AddressLimit::new(1, Vec::new());
        let factory = CappedFactory::new(Greeter, Some(limit.clone())).uncapped([1]);
        let peer: SocketAddr = "192.0.2.8:40000".parse().unwrap();
        let now = Instant::now();
        let mut held: Vec<_> = (0..3).map(|_| factory.open(1, peer, now)).collect();
        for session in &mut held {
            assert_eq!(first_write(session), b"+OK hello\r\n");
        }
        assert_eq!(limit.open_from(peer.ip()), 0);
        let _capped = factory.open(0, peer, now);
        let mut refused = factory.open(0, peer, now);
        assert_eq!(first_write(&mut refused), b"-ERR [SYS/TEMP] busy\r\n");
    }

    #[test]
    fn listeners_a_rule_names_are_not_counted() {
        let limit = AddressLimit::new(1, Vec::new());
        // Odd listeners stand for authd and LMTP, whose ids a reload may hand out.
        let factory =
            CappedFactory::new(Greeter, Some(limit.clone())).uncapped_if(|id| id % 2 == 1);
        let peer: SocketAddr = "192.0.2.9:40000".parse().unwrap();
        let now = Instant::now();
        let mut held: Vec<_> = (0..3).map(|_| factory.open(5, peer, now)).collect();
        for session in &mut held {
            assert_eq!(first_write(session), b"+OK hello\r\n");
        }
        assert_eq!(limit.open_from(peer.ip()), 0);
        let _capped = factory.open(4, peer, now);
        let mut refused = factory.open(4, peer, now);
        assert_eq!(first_write(&mut refused), b"-ERR [SYS/TEMP] busy\r\n");
    }
}
