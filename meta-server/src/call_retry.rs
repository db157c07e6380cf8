//! [`CallRetry`]: the retry state of one kind of call a driver makes again and again (a bulk
//! load's or a backup's call to a partition's primary): an exponential backoff with jitter
//! after each failure, reset by a success, with the last failure kept for the status RPCs.

use std::time::{Duration, Instant};

use wingkv_common::backoff::{Backoff, BackoffPolicy};

/// When a call may be made again, and how the last ones went.
#[derive(Debug, Clone)]
pub struct CallRetry {
    backoff: Backoff,
    /// No call before this instant (the backoff after a failure).
    next_at: Instant,
    /// The delay before `next_at` (0 after a success).
    delay: Duration,
    /// The last failure, cleared by a success.
    last_error: String,
}

impl CallRetry {
    /// A state whose first call is due now.
    pub fn new(policy: &BackoffPolicy) -> Self {
        Self { backoff: policy.start(), next_at: Instant::now(), delay: Duration::ZERO, last_error: String::new() }
    }

    /// Whether a call may be made now.
    pub fn due(&self) -> bool {
        Instant::now() >= self.next_at
    }

    /// Makes the next call due now (a stalled partition re-driven); the attempt count stays.
    pub fn due_now(&mut self) {
        self.next_at = Instant::now();
    }

    /// Records a success: the backoff starts over.
    pub fn succeeded(&mut self) {
        self.backoff.reset();
        self.delay = Duration::ZERO;
        self.last_error.clear();
    }

    /// Records a failure: the next call waits a longer backoff; answers it.
    pub fn failed(&mut self, error: String) -> Duration {
        self.delay = self.backoff.next_delay();
        self.next_at = Instant::now() + self.delay;
        self.last_error = error;
        self.delay
    }

    /// Failures in a row.
    pub fn attempts(&self) -> u32 {
        self.backoff.attempts()
    }

    /// The backoff before the next call (0 when none is pending).
    pub fn backoff_ms(&self) -> u64 {
        if self.due() {
            0
        } else {
            self.delay.as_millis() as u64
        }
    }

    /// The last failure ("" after a success).
    pub fn last_error(&self) -> &str {
        &self.last_error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_and_a_success_starts_over() {
        let mut r = CallRetry::new(&BackoffPolicy::new(Duration::from_secs(60), Duration::from_secs(600)));
        assert!(r.due());
        let d = r.failed("no primary".into());
        assert!(d > Duration::ZERO && !r.due());
        assert_eq!((r.attempts(), r.last_error()), (1, "no primary"));
        assert!(r.backoff_ms() > 0);
        r.due_now();
        assert!(r.due());
        assert_eq!(r.attempts(), 1, "re-driving keeps the count");
        r.succeeded();
        assert_eq!((r.attempts(), r.last_error(), r.backoff_ms()), (0, "", 0));
    }
}
