//! The retry policy: when to try a destination again, when to warn the sender, when to
//! give up. Pure: times are Unix seconds passed in, and the jitter comes from a random
//! value the caller draws, so every rule is unit-tested without a clock.
//!
//! RFC 5321 §4.5.4.1 asks for a retry interval of at least 30 minutes and a give-up
//! time of at least 4–5 days; tidegate's defaults are a 5-minute first retry doubling
//! up to 4 hours (a first retry soon after a greylisting `450` is what senders do
//! today) and 5 days. Recipients of one domain are tried together, so their attempt
//! counts, and with them their backoff, move together: the backoff is per destination.

use std::time::Duration;

/// The settings of the schedule (`[relay] retry_min_secs`, `retry_max_secs`,
/// `max_age_secs`, `delay_warning_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt.
    pub retry_min: Duration,
    /// The longest wait between two attempts.
    pub retry_max: Duration,
    /// Age after which a message still not delivered is bounced.
    pub max_age: Duration,
    /// Age after which the sender gets one delay warning; zero turns warnings off.
    pub delay_warning: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retry_min: Duration::from_secs(300),
            retry_max: Duration::from_secs(4 * 3600),
            max_age: Duration::from_secs(5 * 24 * 3600),
            delay_warning: Duration::from_secs(4 * 3600),
        }
    }
}

impl RetryPolicy {
    /// Seconds to wait after the `attempts`-th failed attempt (1 for the first):
    /// `retry_min` doubled per earlier failure, at most `retry_max`, then shortened by
    /// up to a quarter by `random` so queues of many messages to one destination do not
    /// retry in lockstep. At least one second.
    pub fn retry_delay(&self, attempts: u32, random: u64) -> u64 {
        let min = self.retry_min.as_secs().max(1);
        let max = self.retry_max.as_secs().max(min);
        let doublings = attempts.saturating_sub(1).min(63);
        let base = min.saturating_mul(1u64 << doublings).min(max);
        let spread = base / 4;
        let jitter = if spread == 0 {
            0
        } else {
            random % (spread + 1)
        };
        (base - jitter).max(1)
    }

    /// The time of the next attempt after a temporary failure at `now`.
    pub fn next_attempt(&self, now: u64, attempts: u32, random: u64) -> u64 {
        now.saturating_add(self.retry_delay(attempts, random))
    }

    /// True when a message that arrived at `arrived` is too old to try again at `now`.
    pub fn expired(&self, arrived: u64, now: u64) -> bool {
        now.saturating_sub(arrived) >= self.max_age.as_secs()
    }

    /// True when the sender of a message still pending at `now` should get its delay
    /// warning (once: `warned` says whether it went already).
    pub fn warning_due(&self, arrived: u64, warned: bool, now: u64) -> bool {
        !warned
            && !self.delay_warning.is_zero()
            && now.saturating_sub(arrived) >= self.delay_warning.as_secs()
            && !self.expired(arrived, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let p = RetryPolicy::default();
        assert_eq!(p.retry_delay(1, 0), 300);
        assert_eq!(p.retry_delay(2, 0), 600);
        assert_eq!(p.retry_delay(3, 0), 1200);
        assert_eq!(p.retry_delay(6, 0), 9600);
        assert_eq!(p.retry_delay(7, 0), 14_400);
        assert_eq!(p.retry_delay(1000, 0), 14_400);
        // Attempt 0 (never tried) is treated as the first.
        assert_eq!(p.retry_delay(0, 0), 300);
    }

    #[test]
    fn jitter_shortens_by_at_most_a_quarter() {
        let p = RetryPolicy::default();
        assert_eq!(p.retry_delay(1, 75), 225);
        assert_eq!(p.retry_delay(1, 76), 300);
        for random in [1u64, 7, 12345, u64::MAX] {
            let d = p.retry_delay(3, random);
            assert!((900..=1200).contains(&d), "{d}");
        }
        let tiny = RetryPolicy {
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(1),
            ..p
        };
        assert_eq!(tiny.retry_delay(5, u64::MAX), 1);
        let zero = RetryPolicy {
            retry_min: Duration::ZERO,
            retry_max: Duration::ZERO,
            ..p
        };
        assert_eq!(zero.retry_delay(1, 3), 1);
    }

    #[test]
    fn expiry_and_one_warning() {
        let p = RetryPolicy::default();
        let arrived = 1_000_000;
        assert_eq!(p.next_attempt(arrived, 1, 0), arrived + 300);
        assert!(!p.expired(arrived, arrived + 5 * 86_400 - 1));
        assert!(p.expired(arrived, arrived + 5 * 86_400));
        assert!(!p.warning_due(arrived, false, arrived + 4 * 3600 - 1));
        assert!(p.warning_due(arrived, false, arrived + 4 * 3600));
        assert!(!p.warning_due(arrived, true, arrived + 4 * 3600));
        assert!(!p.warning_due(arrived, false, arrived + 5 * 86_400));
        let off = RetryPolicy {
            delay_warning: Duration::ZERO,
            ..p
        };
        assert!(!off.warning_due(arrived, false, arrived + 86_400));
        // A clock that went backwards is not an expiry.
        assert!(!p.expired(arrived, arrived - 10));
    }
}
