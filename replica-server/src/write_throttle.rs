//! One primary's write counter: fixed one-second windows that decide pass / delay / reject for
//! each write from the table's throttling policy (parsed in `wingkv_common::throttling`, DESIGN §6).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use wingkv_common::sync::MutexExt;
use wingkv_common::throttling::ThrottlingPolicy;

/// What to do with one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottlingDecision {
    /// Process it now.
    Pass,
    /// Hold it this long, then process it.
    Delay(Duration),
    /// Hold it this long, then answer Busy (the hold slows down clients that retry at once).
    Reject(Duration),
}

/// An uncapped decision of one policy, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Delay(u64),
    Reject(u64),
}

impl Verdict {
    /// Merges the verdicts of the QPS and the by-size policy: reject wins over delay, and when both
    /// agree the longer hold is kept, so that neither limit is undercut.
    fn combine(self, other: Verdict) -> Verdict {
        use Verdict::{Delay, Pass, Reject};
        match (self, other) {
            (Reject(a), Reject(b)) => Reject(a.max(b)),
            (Reject(a), _) | (_, Reject(a)) => Reject(a),
            (Delay(a), Delay(b)) => Delay(a.max(b)),
            (Delay(a), Pass) | (Pass, Delay(a)) => Delay(a),
            (Pass, Pass) => Pass,
        }
    }
}

/// The limits and the counts of the current window, behind one lock.
#[derive(Debug, Default)]
struct WindowState {
    qps: ThrottlingPolicy,
    by_size: ThrottlingPolicy,
    /// Start of the current one-second window; `None` before the first request.
    window_start: Option<Instant>,
    requests: u64,
    bytes: u64,
}

/// The write counter of one partition's primary: fixed one-second windows, one uncontended-cheap
/// lock per write, no allocation.
///
/// Windows lie on a one-second grid anchored at the first request, the `Instant` analogue of
/// Pegasus' wall-clock seconds. As in Pegasus, a rejected write is taken back out of the counts (it
/// costs the partition nothing), while a delayed one stays counted.
#[derive(Debug, Default)]
pub struct WriteThrottle {
    state: Mutex<WindowState>,
}

impl WriteThrottle {
    /// A throttle with per-partition limits (see [`ThrottlingPolicy::per_partition`]); pass
    /// [`ThrottlingPolicy::default`] for a limit that is not set.
    pub fn new(qps: ThrottlingPolicy, by_size: ThrottlingPolicy) -> Self {
        Self { state: Mutex::new(WindowState { qps, by_size, ..WindowState::default() }) }
    }

    /// Replaces the per-partition limits live, keeping the current window's counts so that a
    /// change of envs does not hand out a fresh second of budget.
    pub fn set_policy(&self, qps: ThrottlingPolicy, by_size: ThrottlingPolicy) {
        let mut state = self.lock();
        state.qps = qps;
        state.by_size = by_size;
    }

    /// The per-partition limits in force, `(qps, by_size)` (what the tests check a live change by).
    #[cfg(test)]
    pub fn policy(&self) -> (ThrottlingPolicy, ThrottlingPolicy) {
        let state = self.lock();
        (state.qps, state.by_size)
    }

    /// Counts one write of `request_bytes` arriving at `now` and decides its fate. Delays are capped
    /// at `client_timeout / 2` so the client still gets an answer in time; a zero `client_timeout`
    /// means the client sent none, and the configured delay is used as is (Pegasus).
    pub fn check(&self, now: Instant, request_bytes: u64, client_timeout: Duration) -> ThrottlingDecision {
        let verdict = {
            let mut state = self.lock();
            state.roll_window(now);
            state.requests = state.requests.saturating_add(1);
            state.bytes = state.bytes.saturating_add(request_bytes);
            let verdict = verdict(&state.qps, state.requests).combine(verdict(&state.by_size, state.bytes));
            if let Verdict::Reject(_) = verdict {
                state.requests -= 1;
                state.bytes = state.bytes.saturating_sub(request_bytes);
            }
            verdict
        };
        let cap = |delay_ms: u64| {
            let delay = Duration::from_millis(delay_ms);
            if client_timeout.is_zero() {
                delay
            } else {
                delay.min(client_timeout / 2)
            }
        };
        match verdict {
            Verdict::Pass => ThrottlingDecision::Pass,
            Verdict::Delay(ms) => ThrottlingDecision::Delay(cap(ms)),
            Verdict::Reject(ms) => ThrottlingDecision::Reject(cap(ms)),
        }
    }

    /// The state is plain counters that are consistent after every statement, so a panic in
    /// another holder leaves nothing to repair: poisoning is ignored.
    fn lock(&self) -> std::sync::MutexGuard<'_, WindowState> {
        self.state.locked()
    }
}

impl WindowState {
    /// Starts a new window when `now` is a second or more past the current one. An `Instant` that
    /// is older than the window (threads racing for the lock) counts into the current one.
    fn roll_window(&mut self, now: Instant) {
        match self.window_start {
            None => self.window_start = Some(now),
            Some(start) => {
                let elapsed = now.saturating_duration_since(start);
                if elapsed >= Duration::from_secs(1) {
                    let whole = Duration::from_secs(elapsed.as_secs());
                    self.window_start = Some(start.checked_add(whole).unwrap_or(now));
                    self.requests = 0;
                    self.bytes = 0;
                }
            }
        }
    }
}

/// The uncapped verdict of `policy` for `count` units seen so far in the current second. A rule
/// trips when the count *exceeds* its threshold; reject is checked first because it wins.
fn verdict(policy: &ThrottlingPolicy, count: u64) -> Verdict {
    match (policy.reject, policy.delay) {
        (Some(rule), _) if count > rule.units_per_sec => Verdict::Reject(rule.delay_ms),
        (_, Some(rule)) if count > rule.units_per_sec => Verdict::Delay(rule.delay_ms),
        _ => Verdict::Pass,
    }
}

#[cfg(test)]
mod tests {
    use wingkv_common::throttling::ThrottleRule;

    use super::*;

    fn rule(units_per_sec: u64, delay_ms: u64) -> Option<ThrottleRule> {
        Some(ThrottleRule { units_per_sec, delay_ms })
    }

    const NO_TIMEOUT: Duration = Duration::ZERO;

    #[test]
    fn window_delays_after_threshold() {
        let policy = ThrottlingPolicy { delay: rule(3, 100), reject: None };
        let throttle = WriteThrottle::new(policy, ThrottlingPolicy::default());
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(throttle.check(t0, 10, NO_TIMEOUT), ThrottlingDecision::Pass, "request {i}");
        }
        let delayed = ThrottlingDecision::Delay(Duration::from_millis(100));
        assert_eq!(throttle.check(t0 + Duration::from_millis(999), 10, NO_TIMEOUT), delayed);
        // Delayed requests stay counted.
        assert_eq!(throttle.check(t0 + Duration::from_millis(999), 10, NO_TIMEOUT), delayed);
    }

    #[test]
    fn window_rejects_after_threshold() {
        let policy = ThrottlingPolicy { delay: None, reject: rule(2, 300) };
        let throttle = WriteThrottle::new(policy, ThrottlingPolicy::default());
        let t0 = Instant::now();
        assert_eq!(throttle.check(t0, 0, NO_TIMEOUT), ThrottlingDecision::Pass);
        assert_eq!(throttle.check(t0, 0, NO_TIMEOUT), ThrottlingDecision::Pass);
        let rejected = ThrottlingDecision::Reject(Duration::from_millis(300));
        assert_eq!(throttle.check(t0, 0, NO_TIMEOUT), rejected);
        assert_eq!(throttle.check(t0, 0, NO_TIMEOUT), rejected);
    }

    #[test]
    fn window_reject_wins_over_delay() {
        let policy = ThrottlingPolicy { delay: rule(1, 100), reject: rule(2, 300) };
        let throttle = WriteThrottle::new(policy, ThrottlingPolicy::default());
        let t0 = Instant::now();
        assert_eq!(throttle.check(t0, 0, NO_TIMEOUT), ThrottlingDecision::Pass);
        assert_eq!(throttle.check(t0, 0, NO_TIMEOUT), ThrottlingDecision::Delay(Duration::from_millis(100)));
        // Both rules trip now; reject wins.
        assert_eq!(throttle.check(t0, 0, NO_TIMEOUT), ThrottlingDecision::Reject(Duration::from_millis(300)));
        // A rejected request is taken back out, so the count stays at the reject threshold.
        assert_eq!(throttle.check(t0, 0, NO_TIMEOUT), ThrottlingDecision::Reject(Duration::from_millis(300)));
    }

    #[test]
    fn window_by_size_and_qps_combine() {
        let by_qps = ThrottlingPolicy { delay: rule(2, 50), reject: None };
        let by_size = ThrottlingPolicy { delay: rule(100, 80), reject: rule(150, 20) };
        let throttle = WriteThrottle::new(by_qps, by_size);
        let t0 = Instant::now();
        assert_eq!(throttle.check(t0, 60, NO_TIMEOUT), ThrottlingDecision::Pass);
        // 120 bytes > 100: the size delay trips; the QPS count (2) does not.
        assert_eq!(throttle.check(t0, 60, NO_TIMEOUT), ThrottlingDecision::Delay(Duration::from_millis(80)));
        // 180 bytes > 150: the size reject wins over the QPS delay (3 > 2).
        assert_eq!(throttle.check(t0, 60, NO_TIMEOUT), ThrottlingDecision::Reject(Duration::from_millis(20)));
        // The rejected write was taken back out: 130 bytes and 3 requests both delay; the longer hold is kept.
        assert_eq!(throttle.check(t0, 10, NO_TIMEOUT), ThrottlingDecision::Delay(Duration::from_millis(80)));
    }

    #[test]
    fn window_starts_over_after_one_second() {
        let policy = ThrottlingPolicy { delay: rule(1, 100), reject: rule(2, 300) };
        let throttle = WriteThrottle::new(policy, ThrottlingPolicy::default());
        let t0 = Instant::now();
        assert_eq!(throttle.check(t0, 0, NO_TIMEOUT), ThrottlingDecision::Pass);
        assert_eq!(throttle.check(t0, 0, NO_TIMEOUT), ThrottlingDecision::Delay(Duration::from_millis(100)));
        assert!(matches!(throttle.check(t0, 0, NO_TIMEOUT), ThrottlingDecision::Reject(_)));

        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(throttle.check(t1, 0, NO_TIMEOUT), ThrottlingDecision::Pass);
        assert_eq!(throttle.check(t1, 0, NO_TIMEOUT), ThrottlingDecision::Delay(Duration::from_millis(100)));
        // Still inside the window [t1, t1 + 1s).
        assert!(matches!(
            throttle.check(t1 + Duration::from_millis(900), 0, NO_TIMEOUT),
            ThrottlingDecision::Reject(_)
        ));
        // The grid stays anchored: t1 + 2.5s falls into [t1 + 2s, t1 + 3s), a fresh window...
        let t3 = t1 + Duration::from_millis(2500);
        assert_eq!(throttle.check(t3, 0, NO_TIMEOUT), ThrottlingDecision::Pass);
        // ...which ends at t1 + 3s, not at t3 + 1s.
        assert_eq!(throttle.check(t1 + Duration::from_secs(3), 0, NO_TIMEOUT), ThrottlingDecision::Pass);
        // An Instant older than the window (a racing thread) counts into the current window.
        assert_eq!(throttle.check(t0, 0, NO_TIMEOUT), ThrottlingDecision::Delay(Duration::from_millis(100)));
    }

    #[test]
    fn delay_is_capped_at_half_the_client_timeout() {
        let policy = ThrottlingPolicy { delay: rule(1, 1000), reject: rule(2, 5000) };
        let throttle = WriteThrottle::new(policy, ThrottlingPolicy::default());
        let t0 = Instant::now();
        let timeout = Duration::from_millis(600);
        assert_eq!(throttle.check(t0, 0, timeout), ThrottlingDecision::Pass);
        assert_eq!(throttle.check(t0, 0, timeout), ThrottlingDecision::Delay(Duration::from_millis(300)));
        assert_eq!(throttle.check(t0, 0, timeout), ThrottlingDecision::Reject(Duration::from_millis(300)));
        // A long timeout does not lengthen the configured delay.
        assert_eq!(throttle.check(t0, 0, Duration::from_secs(60)), ThrottlingDecision::Reject(Duration::from_secs(5)));
        // Zero means the client sent no timeout: no cap (Pegasus).
        assert_eq!(throttle.check(t0, 0, NO_TIMEOUT), ThrottlingDecision::Reject(Duration::from_secs(5)));
    }

    #[test]
    fn set_policy_keeps_the_window() {
        let throttle = WriteThrottle::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(throttle.check(t0, 1, NO_TIMEOUT), ThrottlingDecision::Pass);
        }
        let policy = ThrottlingPolicy { delay: None, reject: rule(5, 10) };
        throttle.set_policy(policy, ThrottlingPolicy::default());
        assert_eq!(throttle.policy(), (policy, ThrottlingPolicy::default()));
        // The five writes already seen this second still count against the new limit.
        assert_eq!(throttle.check(t0, 1, NO_TIMEOUT), ThrottlingDecision::Reject(Duration::from_millis(10)));
        throttle.set_policy(ThrottlingPolicy::default(), ThrottlingPolicy::default());
        assert_eq!(throttle.check(t0, 1, NO_TIMEOUT), ThrottlingDecision::Pass);
    }

    #[test]
    fn write_throttle_is_shared_across_threads() {
        let policy = ThrottlingPolicy { delay: None, reject: rule(100, 0) };
        let throttle = std::sync::Arc::new(WriteThrottle::new(policy, ThrottlingPolicy::default()));
        let t0 = Instant::now();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let throttle = throttle.clone();
                std::thread::spawn(move || {
                    (0..50).filter(|_| throttle.check(t0, 1, NO_TIMEOUT) == ThrottlingDecision::Pass).count()
                })
            })
            .collect();
        let passed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(passed, 100);
    }

    #[test]
    fn extreme_sizes_and_limits_do_not_overflow() {
        let huge = ThrottlingPolicy { delay: rule(u64::MAX, u64::MAX), reject: rule(u64::MAX - 1, u64::MAX) };
        let throttle = WriteThrottle::new(huge, huge);
        let t0 = Instant::now();
        for i in 0..64u64 {
            let at = t0 + Duration::from_millis(i * 37);
            let _ = throttle.check(at, u64::MAX / 3, Duration::from_millis(i));
        }
        let decision = throttle.check(t0 + Duration::from_secs(5), u64::MAX, NO_TIMEOUT);
        assert!(matches!(decision, ThrottlingDecision::Reject(_) | ThrottlingDecision::Delay(_)));
    }
}
