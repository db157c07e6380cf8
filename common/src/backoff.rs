//! Exponential backoff with jitter, used by every retry loop in wingkv.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Base and cap of an exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackoffPolicy {
    /// Delay before the first retry (the ceiling of attempt 0), in milliseconds.
    pub base_ms: u64,
    /// The largest delay, in milliseconds.
    pub cap_ms: u64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self { base_ms: 100, cap_ms: 10_000 }
    }
}

impl BackoffPolicy {
    /// A policy with the given base and cap.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base_ms: base.as_millis() as u64, cap_ms: cap.as_millis() as u64 }
    }

    /// Starts a fresh sequence of delays.
    pub fn start(&self) -> Backoff {
        Backoff { policy: *self, attempt: 0 }
    }

    /// The ceiling of the delay after `attempt` failures: `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u64.checked_shl(attempt.min(63)).unwrap_or(u64::MAX);
        // A base of 0 would retry in a tight loop: 1 ms is the least delay.
        let base = self.base_ms.max(1);
        Duration::from_millis(base.saturating_mul(factor).min(self.cap_ms.max(base)))
    }
}

/// One sequence of retry delays ("equal jitter": each delay is uniformly drawn from
/// `[ceiling/2, ceiling]`, so retries spread out but still grow).
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
}

impl Backoff {
    /// Number of delays handed out so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The ceiling the next delay is drawn under.
    pub fn current_ceiling(&self) -> Duration {
        self.policy.ceiling(self.attempt)
    }

    /// The next delay to wait before retrying.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current_ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let jitter_ms = rand::thread_rng().gen_range(0..=(ceiling - half).as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_bounds_and_reach_the_cap() {
        let policy = BackoffPolicy::new(Duration::from_millis(100), Duration::from_millis(2_000));
        let mut b = policy.start();
        let mut max_seen = Duration::ZERO;
        for attempt in 0..40u32 {
            let ceiling = policy.ceiling(attempt);
            assert!(ceiling <= Duration::from_millis(2_000));
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?} vs {ceiling:?}");
            max_seen = max_seen.max(d);
        }
        assert_eq!(b.attempts(), 40);
        assert_eq!(policy.ceiling(39), Duration::from_millis(2_000));
        assert!(max_seen >= Duration::from_millis(1_000));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn ceilings_double_until_the_cap() {
        let policy = BackoffPolicy::new(Duration::from_millis(10), Duration::from_millis(75));
        let ceilings: Vec<u64> = (0..6).map(|a| policy.ceiling(a).as_millis() as u64).collect();
        assert_eq!(ceilings, vec![10, 20, 40, 75, 75, 75]);
        // Huge attempt counts neither overflow nor exceed the cap.
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_millis(75));
    }

    #[test]
    fn jitter_spreads_delays() {
        let policy = BackoffPolicy::new(Duration::from_millis(1_000), Duration::from_millis(1_000));
        let delays: std::collections::HashSet<Duration> = (0..50).map(|_| policy.start().next_delay()).collect();
        assert!(delays.len() > 5, "delays are not jittered: {delays:?}");
    }
}
