//! The RocksDB value layout of DESIGN §2: `u32 BE expire_ts ++ user value`, with `expire_ts` in
//! seconds since 2016-01-01T00:00:00Z and 0 meaning "never expires".

use std::sync::atomic::{AtomicI64, Ordering};

use crate::error::WingError;

/// Unix time of the epoch of `expire_ts` (2016-01-01T00:00:00Z).
pub const EPOCH_BEGIN: u64 = 1_451_606_400;

/// Length of the value header.
pub const HEADER_LEN: usize = 4;

/// Seconds added to this process's clock by [`set_clock_offset_secs`] (tests only).
static CLOCK_OFFSET_SECS: AtomicI64 = AtomicI64::new(0);

/// Shifts this process's notion of now by `secs`, as if its machine's clock were that far off.
/// Only tests set it (a replica server's `test_clock_offset_secs`), to show that replicas agree
/// on TTL expiry whatever their clocks.
pub fn set_clock_offset_secs(secs: i64) {
    CLOCK_OFFSET_SECS.store(secs, Ordering::Relaxed);
}

/// Seconds since [`EPOCH_BEGIN`] now (0 on a clock set before 2016), shifted by the test offset.
pub fn now_epoch_seconds() -> u32 {
    let unix = crate::time::unix_secs();
    let since = unix.saturating_sub(EPOCH_BEGIN).min(u32::MAX as u64) as i64;
    since.saturating_add(CLOCK_OFFSET_SECS.load(Ordering::Relaxed)).clamp(0, u32::MAX as i64) as u32
}

/// The `expire_ts` of a record written at `now` with a TTL of `ttl_seconds` (0 = no TTL).
pub fn expire_ts_for_ttl(now: u32, ttl_seconds: u32) -> u32 {
    if ttl_seconds == 0 {
        0
    } else {
        now.saturating_add(ttl_seconds)
    }
}

/// Whether a record with `expire_ts` is expired at `now`: iff `0 < expire_ts <= now`.
pub fn is_expired(expire_ts: u32, now: u32) -> bool {
    expire_ts > 0 && expire_ts <= now
}

/// Remaining TTL in seconds, `None` when the record never expires.
pub fn remaining_ttl(expire_ts: u32, now: u32) -> Option<u32> {
    (expire_ts > 0).then(|| expire_ts.saturating_sub(now))
}

/// Builds a stored value from its expire time and user bytes.
pub fn encode_value(expire_ts: u32, user_value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + user_value.len());
    out.extend_from_slice(&expire_ts.to_be_bytes());
    out.extend_from_slice(user_value);
    out
}

/// Splits a stored value into `(expire_ts, user value)`.
pub fn decode_value(stored: &[u8]) -> Result<(u32, &[u8]), WingError> {
    if stored.len() < HEADER_LEN {
        return Err(WingError::Corruption(format!(
            "stored value of {} bytes is shorter than its {HEADER_LEN}-byte header",
            stored.len()
        )));
    }
    let ts = u32::from_be_bytes([stored[0], stored[1], stored[2], stored[3]]);
    Ok((ts, &stored[HEADER_LEN..]))
}

/// The `expire_ts` of a stored value, or `None` when it is too short to carry one.
pub fn stored_expire_ts(stored: &[u8]) -> Option<u32> {
    decode_value(stored).ok().map(|(ts, _)| ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let v = encode_value(0x0102_0304, b"value");
        assert_eq!(&v[..4], &[1, 2, 3, 4]);
        assert_eq!(decode_value(&v).unwrap(), (0x0102_0304, &b"value"[..]));
        assert_eq!(decode_value(&encode_value(0, b"")).unwrap(), (0, &b""[..]));
        assert!(decode_value(&[1, 2, 3]).is_err());
    }

    #[test]
    fn expiry_rules() {
        assert!(!is_expired(0, 1_000));
        assert!(!is_expired(1_001, 1_000));
        assert!(is_expired(1_000, 1_000));
        assert!(is_expired(999, 1_000));
        assert_eq!(expire_ts_for_ttl(1_000, 0), 0);
        assert_eq!(expire_ts_for_ttl(1_000, 60), 1_060);
        assert_eq!(expire_ts_for_ttl(u32::MAX - 1, 60), u32::MAX);
        assert_eq!(remaining_ttl(0, 5), None);
        assert_eq!(remaining_ttl(65, 5), Some(60));
        assert_eq!(remaining_ttl(3, 5), Some(0));
    }

    #[test]
    fn now_is_after_the_epoch() {
        // 2026 is roughly 10 years after 2016.
        let now = now_epoch_seconds();
        assert!(now > 9 * 365 * 86_400, "{now}");
    }
}
