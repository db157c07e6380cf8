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

/// Parses a UTC time of day, `HH:MM` (00:00 to 23:59; one-digit fields allowed), into the
/// minute of the day; anything else is refused, naming the text.
pub fn parse_time_of_day(s: &str) -> Result<u32, crate::WingError> {
    let bad =
        || crate::WingError::InvalidArgument(format!("'{s}' is not HH:MM, a UTC time of day from 00:00 to 23:59"));
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let field = |x: &str, max: u32| -> Result<u32, crate::WingError> {
        if x.is_empty() || x.len() > 2 || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        x.parse::<u32>().ok().filter(|v| *v <= max).ok_or_else(bad)
    };
    Ok(field(h, 23)? * 60 + field(m, 59)?)
}

/// Renders a minute of the day as `HH:MM`.
pub fn format_time_of_day(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60 % 24, minute % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_day_parse_strictly_and_render_with_two_digits() {
        assert_eq!(parse_time_of_day("02:05").unwrap(), 125);
        assert_eq!(format_time_of_day(parse_time_of_day("2:5").unwrap()), "02:05");
        assert_eq!(format_time_of_day(parse_time_of_day("23:59").unwrap()), "23:59");
        for bad in ["24:00", "12:60", "1:60", "12", "x:00", "+1:00", "-1:00", "123:00", ""] {
            assert!(parse_time_of_day(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn units_agree() {
        let (s, ms, ns) = (unix_secs(), unix_millis(), unix_nanos());
        assert!(s > 1_700_000_000, "the clock reads after 2023");
        assert!(ms / 1000 >= s && ms / 1000 - s <= 1);
        assert!(ns / 1_000_000 >= u128::from(ms));
    }
}
