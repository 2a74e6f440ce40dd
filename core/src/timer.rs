//! A fixed table of named deadlines (quinn's `TimerTable` pattern).

use std::time::Instant;

/// Deadlines a session may arm. Each session uses the subset it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// No command for too long: RFC 1939 §3 autologout (at least 10 minutes for POP3).
    Idle,
    /// The shell has not answered a request in time; the session answers a temporary failure.
    StoreReply,
    /// A failed login is answered only after this delay, the same for unknown users and
    /// wrong passwords, which slows password guessing.
    AuthDelay,
}

impl Timer {
    const COUNT: usize = 3;
    fn index(self) -> usize {
        match self {
            Timer::Idle => 0,
            Timer::StoreReply => 1,
            Timer::AuthDelay => 2,
        }
    }
    const ALL: [Timer; Timer::COUNT] = [Timer::Idle, Timer::StoreReply, Timer::AuthDelay];
}

/// The armed deadlines of one session.
#[derive(Debug, Default, Clone)]
pub struct TimerTable {
    deadlines: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    /// Arms (or re-arms) `timer` to fire at `at`.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer.index()] = Some(at);
    }
    /// Disarms `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.deadlines[timer.index()] = None;
    }
    /// Whether `timer` is armed.
    pub fn is_set(&self, timer: Timer) -> bool {
        self.deadlines[timer.index()].is_some()
    }
    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }
    /// Disarms and returns the first timer whose deadline is at or before `now`.
    pub fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        let timer = Timer::ALL
            .into_iter()
            .find(|t| self.deadlines[t.index()].is_some_and(|at| at <= now))?;
        self.stop(timer);
        Some(timer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_deadline_and_expiry_order() {
        #[allow(clippy::disallowed_methods)] // tests need a base instant
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        assert_eq!(table.next_deadline(), None);
        table.set(Timer::Idle, t0 + Duration::from_secs(600));
        table.set(Timer::StoreReply, t0 + Duration::from_secs(30));
        assert_eq!(table.next_deadline(), Some(t0 + Duration::from_secs(30)));
        assert_eq!(table.take_expired(t0 + Duration::from_secs(29)), None);
        assert_eq!(
            table.take_expired(t0 + Duration::from_secs(30)),
            Some(Timer::StoreReply)
        );
        assert!(!table.is_set(Timer::StoreReply));
        assert_eq!(table.take_expired(t0 + Duration::from_secs(30)), None);
        assert_eq!(table.next_deadline(), Some(t0 + Duration::from_secs(600)));
    }
}
