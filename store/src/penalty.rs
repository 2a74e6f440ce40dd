//! The login penalty: clients that keep failing to log in are slowed down, then refused
//! for a while, before their password guesses reach the user database.
//!
//! Failures are counted per client address (an IPv6 client by its /64, which one host
//! usually owns whole). The n-th failure in a row is answered after
//! `base_delay · 2^(n-2)` (0 s, 1 s, 2 s, 4 s, 8 s, then [`PenaltyConfig::max_delay`]);
//! the count is forgotten after [`PenaltyConfig::forget_after`] without failures. With
//! [`PenaltyConfig::max_failures`] failures within [`PenaltyConfig::window`], further
//! attempts are refused without checking the password until the window ends. A
//! successful login clears the address. Dovecot's `auth_penalty` works alike.
//!
//! Memory is bounded by [`PenaltyConfig::capacity`] addresses; beyond it the addresses
//! idle longest are forgotten first. Time is a parameter (`now`), so the rules are
//! tested without sleeping.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tidegate_core::net::Cidr;

/// The rules of a [`LoginPenalty`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PenaltyConfig {
    /// Delay after the second failure in a row; it doubles with each further one.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// Failures within [`PenaltyConfig::window`] after which attempts are refused.
    pub max_failures: u32,
    /// The span over which [`PenaltyConfig::max_failures`] counts.
    pub window: Duration,
    /// Quiet time after which an address's failures are forgotten.
    pub forget_after: Duration,
    /// Most addresses remembered at once.
    pub capacity: usize,
    /// Clients never penalised: front-ends that log in on their users' behalf without
    /// passing the client address on, webmail hosts. Typically `[trust] networks`.
    pub exempt: Vec<Cidr>,
}

impl Default for PenaltyConfig {
    /// 1 s doubling to 15 s; 10 failures in 15 minutes refuse until the 15 minutes
    /// end; forgotten after 15 quiet minutes; 100,000 addresses (about 6 MB).
    fn default() -> Self {
        PenaltyConfig {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15),
            max_failures: 10,
            window: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(15 * 60),
            capacity: 100_000,
            exempt: Vec::new(),
        }
    }
}

/// What to do with a login attempt before checking its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Check the password.
    Check,
    /// Too many failures from this address lately: refuse without checking.
    Refuse,
}

/// One address's recent failures.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Failures in a row (the delay's exponent).
    streak: u32,
    /// Start of the current counting window.
    window_start: Instant,
    /// Failures since `window_start`.
    in_window: u32,
    /// The latest failure.
    last: Instant,
}

/// Login failures by client address; shared by every session of the process.
#[derive(Debug)]
pub struct LoginPenalty {
    config: PenaltyConfig,
    records: Mutex<HashMap<IpAddr, Record>>,
}

impl Default for LoginPenalty {
    fn default() -> Self {
        LoginPenalty::new(PenaltyConfig::default())
    }
}

impl LoginPenalty {
    /// A penalty with these rules and no failures yet.
    pub fn new(config: PenaltyConfig) -> LoginPenalty {
        LoginPenalty {
            config,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// The rules.
    pub fn config(&self) -> &PenaltyConfig {
        &self.config
    }

    /// Whether an attempt from `client` at `now` may have its password checked.
    pub fn admit(&self, client: IpAddr, now: Instant) -> Admission {
        if self.is_exempt(client) {
            return Admission::Check;
        }
        let key = penalty_key(client);
        let mut records = self.lock();
        match records.get(&key).copied() {
            Some(record) if self.forgotten(&record, now) => {
                records.remove(&key);
                Admission::Check
            }
            Some(record)
                if record.in_window >= self.config.max_failures
                    && now.saturating_duration_since(record.window_start) < self.config.window =>
            {
                Admission::Refuse
            }
            _ => Admission::Check,
        }
    }

    /// Records a failed login from `client` at `now`; returns how long after the
    /// attempt the refusal should be answered.
    pub fn failure(&self, client: IpAddr, now: Instant) -> Duration {
        if self.is_exempt(client) {
            return Duration::ZERO;
        }
        let key = penalty_key(client);
        let mut records = self.lock();
        let existing = records
            .get(&key)
            .copied()
            .filter(|record| !self.forgotten(record, now));
        let record = match existing {
            Some(mut record) => {
                record.streak = record.streak.saturating_add(1);
                if now.saturating_duration_since(record.window_start) >= self.config.window {
                    record.window_start = now;
                    record.in_window = 0;
                }
                record.in_window = record.in_window.saturating_add(1);
                record.last = now;
                record
            }
            None => {
                if records.len() >= self.config.capacity {
                    self.make_room(&mut records, now);
                }
                Record {
                    streak: 1,
                    window_start: now,
                    in_window: 1,
                    last: now,
                }
            }
        };
        if self.config.capacity > 0 {
            records.insert(key, record);
        }
        self.delay(record.streak)
    }

    /// A successful login from `client`: its failures are forgotten.
    pub fn success(&self, client: IpAddr) {
        self.lock().remove(&penalty_key(client));
    }

    /// How many addresses are remembered now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The delay after the `streak`-th failure in a row: none for the first, then
    /// `base_delay` doubling up to `max_delay`.
    fn delay(&self, streak: u32) -> Duration {
        if streak <= 1 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(streak - 2).unwrap_or(u32::MAX);
        self.config
            .base_delay
            .saturating_mul(factor)
            .min(self.config.max_delay)
    }

    fn is_exempt(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.config.exempt.iter().any(|net| net.contains(client))
    }

    fn forgotten(&self, record: &Record, now: Instant) -> bool {
        now.saturating_duration_since(record.last) >= self.config.forget_after
    }

    /// Drops forgotten records; if the map is still full, the eighth idle longest.
    fn make_room(&self, records: &mut HashMap<IpAddr, Record>, now: Instant) {
        records.retain(|_, record| !self.forgotten(record, now));
        if records.len() < self.config.capacity || records.is_empty() {
            return;
        }
        let evict = (records.len() / 8).max(1);
        let mut lasts: Vec<Instant> = records.values().map(|r| r.last).collect();
        let (_, cutoff, _) = lasts.select_nth_unstable(evict - 1);
        let cutoff = *cutoff;
        let mut removed = 0;
        records.retain(|_, record| {
            let drop = record.last <= cutoff && removed < evict;
            removed += usize::from(drop);
            !drop
        });
        log::warn!("login penalty table full: forgot the {removed} addresses idle longest");
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The key of a client: an IPv4 address as is (also when IPv4-mapped), an IPv6 one by
/// its /64.
fn penalty_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn delays_grow_and_are_capped() {
        let penalty = LoginPenalty::new(PenaltyConfig {
            max_failures: 100,
            ..PenaltyConfig::default()
        });
        let t0 = Instant::now();
        let client = ip("192.0.2.7");
        let delays: Vec<u64> = (0..8)
            .map(|i| penalty.failure(client, t0 + SEC * i).as_secs())
            .collect();
        assert_eq!(delays, [0, 1, 2, 4, 8, 15, 15, 15]);
        assert_eq!(
            penalty.failure(ip("192.0.2.8"), t0),
            Duration::ZERO,
            "per address"
        );
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_period() {
        let penalty = LoginPenalty::default();
        let t0 = Instant::now();
        let client = ip("192.0.2.7");
        for i in 0..4 {
            penalty.failure(client, t0 + SEC * i);
        }
        let later = t0 + SEC * 3 + penalty.config().forget_after;
        assert_eq!(penalty.failure(client, later), Duration::ZERO);
        assert_eq!(penalty.failure(client, later + SEC), SEC);
    }

    #[test]
    fn too_many_failures_refuse_until_the_window_ends() {
        let penalty = LoginPenalty::default();
        let t0 = Instant::now();
        let client = ip("198.51.100.1");
        for i in 0..9 {
            assert_eq!(penalty.admit(client, t0 + SEC * i), Admission::Check);
            penalty.failure(client, t0 + SEC * i);
        }
        assert_eq!(penalty.admit(client, t0 + SEC * 9), Admission::Check);
        penalty.failure(client, t0 + SEC * 9);
        assert_eq!(penalty.admit(client, t0 + SEC * 10), Admission::Refuse);
        assert_eq!(penalty.admit(ip("198.51.100.2"), t0), Admission::Check);
        let window_end = t0 + penalty.config().window;
        assert_eq!(penalty.admit(client, window_end - SEC), Admission::Refuse);
        assert_eq!(penalty.admit(client, window_end), Admission::Check);
        // A failure then opens a new window; the delay stays at its height.
        assert_eq!(penalty.failure(client, window_end), Duration::from_secs(15));
        assert_eq!(penalty.admit(client, window_end + SEC), Admission::Check);
    }

    #[test]
    fn success_clears_the_address() {
        let penalty = LoginPenalty::default();
        let t0 = Instant::now();
        let client = ip("192.0.2.7");
        for i in 0..10 {
            penalty.failure(client, t0 + SEC * i);
        }
        assert_eq!(penalty.admit(client, t0 + SEC * 10), Admission::Refuse);
        penalty.success(client);
        assert_eq!(penalty.admit(client, t0 + SEC * 10), Admission::Check);
        assert_eq!(penalty.failure(client, t0 + SEC * 11), Duration::ZERO);
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let penalty = LoginPenalty::default();
        let t0 = Instant::now();
        penalty.failure(ip("2001:db8:1:2::1"), t0);
        assert_eq!(penalty.failure(ip("2001:db8:1:2:ffff::9"), t0), SEC);
        assert_eq!(penalty.failure(ip("2001:db8:1:3::1"), t0), Duration::ZERO);
        penalty.failure(ip("192.0.2.1"), t0);
        assert_eq!(penalty.failure(ip("::ffff:192.0.2.1"), t0), SEC);
        assert_eq!(penalty.len(), 3);
    }

    #[test]
    fn exempt_networks_are_never_penalised() {
        let penalty = LoginPenalty::new(PenaltyConfig {
            exempt: vec!["10.0.0.0/8".parse().unwrap()],
            ..PenaltyConfig::default()
        });
        let t0 = Instant::now();
        for i in 0..20 {
            assert_eq!(
                penalty.failure(ip("10.1.2.3"), t0 + SEC * i),
                Duration::ZERO
            );
        }
        assert_eq!(
            penalty.admit(ip("10.1.2.3"), t0 + SEC * 20),
            Admission::Check
        );
        assert!(penalty.is_empty());
    }

    #[test]
    fn memory_is_bounded_and_the_longest_idle_go_first() {
        let penalty = LoginPenalty::new(PenaltyConfig {
            capacity: 16,
            ..PenaltyConfig::default()
        });
        let t0 = Instant::now();
        for i in 0..16u32 {
            let client = IpAddr::from([10, 0, 0, i as u8]);
            penalty.failure(client, t0 + SEC * i);
        }
        // The newest address keeps its count while the table is full.
        penalty.failure(IpAddr::from([10, 0, 0, 15]), t0 + SEC * 16);
        for i in 0..100u32 {
            penalty.failure(IpAddr::from([10, 1, 0, i as u8]), t0 + SEC * (20 + i));
            assert!(penalty.len() <= 16);
        }
        assert_eq!(penalty.len(), 16);
        // The oldest addresses were forgotten: a failure starts from zero again.
        assert_eq!(
            penalty.failure(IpAddr::from([10, 0, 0, 0]), t0 + SEC * 200),
            Duration::ZERO
        );
        let unbounded = LoginPenalty::new(PenaltyConfig {
            capacity: 0,
            ..PenaltyConfig::default()
        });
        unbounded.failure(ip("192.0.2.1"), t0);
        assert!(unbounded.is_empty(), "capacity 0 remembers nothing");
    }
}
