//! One loop's deadlines: at most one entry per connection, ordered by time.

use std::collections::BTreeSet;
use std::time::Instant;

/// Deadlines of the connections of one event loop, keyed by connection token.
///
/// Each connection remembers the deadline it has in the table, so an entry is replaced
/// only when the deadline actually changed (quinn's `drive_timer` rule) and is removed
/// with the connection; the table never holds stale entries.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    entries: BTreeSet<(Instant, usize)>,
}

impl Timers {
    /// Moves the entry of connection `key` from `*current` to `next`.
    pub(crate) fn update(
        &mut self,
        key: usize,
        current: &mut Option<Instant>,
        next: Option<Instant>,
    ) {
        if *current == next {
            return;
        }
        if let Some(at) = current.take() {
            self.entries.remove(&(at, key));
        }
        if let Some(at) = next {
            self.entries.insert((at, key));
        }
        *current = next;
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.entries.first().map(|&(at, _)| at)
    }

    /// Removes and returns one connection whose deadline is at or before `now`; the
    /// caller must clear that connection's remembered deadline.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<usize> {
        let &(at, key) = self.entries.first()?;
        if at > now {
            return None;
        }
        self.entries.pop_first();
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::Timers;
    use std::time::{Duration, Instant};

    #[test]
    fn updates_only_on_change_and_pops_in_order() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let (mut a, mut b) = (None, None);
        timers.update(1, &mut a, Some(t0 + Duration::from_secs(5)));
        timers.update(2, &mut b, Some(t0 + Duration::from_secs(1)));
        timers.update(1, &mut a, Some(t0 + Duration::from_secs(5)));
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_expired(t0), None);
        assert_eq!(timers.pop_expired(t0 + Duration::from_secs(2)), Some(2));
        assert_eq!(timers.pop_expired(t0 + Duration::from_secs(2)), None);
        timers.update(1, &mut a, None);
        assert_eq!(timers.next(), None);
        assert_eq!(a, None);
    }
}
