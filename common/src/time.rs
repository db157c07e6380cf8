//! Wall-clock time since the Unix epoch, for what is stored or shown (TTL expiry, trash and
//! snapshot names, creation stamps). Durations and timeouts use `Instant` instead. A clock set
//! before 1970 reads as 0 rather than failing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Whole seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    since_epoch().as_secs()
}

/// Milliseconds since the Unix epoch (saturating at `u64::MAX`).
pub fn unix_millis() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Nanoseconds since the Unix epoch.
pub fn unix_nanos() -> u128 {
    since_epoch().as_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_agree() {
        let (s, ms, ns) = (unix_secs(), unix_millis(), unix_nanos());
        assert!(s > 1_700_000_000, "the clock reads after 2023");
        assert!(ms / 1000 >= s && ms / 1000 - s <= 1);
        assert!(ns / 1_000_000 >= u128::from(ms));
    }
}
