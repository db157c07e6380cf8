//! Table-level write throttling and client-request denial (DESIGN §6), with Pegasus semantics.
//!
//! The policy lives in a table's envs as strings. This module parses them (the meta calls
//! [`validate_envs`] so a bad `set_app_envs` is refused before it reaches any replica), splits the
//! table-wide limits over the partitions, and counts one primary's writes in one-second windows to
//! decide pass / delay / reject (the replica server's `WriteThrottle`).
//!
//! Syntax of the two throttling keys: comma-separated `UNITS*KIND*DELAY_MS` entries, KIND being
//! `delay` or `reject`, at most one of each, e.g. `1000*delay*100,2000*reject*200`. In
//! [`WRITE_THROTTLING`] UNITS counts requests per second; in [`WRITE_THROTTLING_BY_SIZE`] it counts
//! bytes per second and may end in `K` (×1024) or `M` (×1048576). Only the upper-case suffixes are
//! accepted, as in Pegasus: a lower-case `m` reads like "milli", so it is refused rather than guessed.

use std::collections::BTreeMap;

/// Env key of the requests-per-second write limit of a table.
pub const WRITE_THROTTLING: &str = "replica.write_throttling";
/// Env key of the bytes-per-second write limit of a table.
pub const WRITE_THROTTLING_BY_SIZE: &str = "replica.write_throttling_by_size";
/// Env key that makes replicas refuse client requests (`timeout*all`, `reconfig*write`, ...).
pub const DENY_CLIENT_REQUEST: &str = "replica.deny_client_request";
/// Older boolean env key; `true` is an alias of `reconfig*write`.
pub const DENY_CLIENT_WRITE: &str = "replica.deny_client_write";

/// The values [`DENY_CLIENT_REQUEST`] accepts, for error messages.
const DENY_REQUEST_VALUES: &str = "timeout*all|timeout*write|timeout*read|reconfig*all|reconfig*write|reconfig*read";

/// Why a throttling or deny env value was refused. Every message names the env key and the text
/// at fault, since it goes straight back to the operator who ran `set_app_envs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThrottlingError {
    /// The whole value is empty or blank.
    #[error("{key}: value is empty, expected UNITS*delay|reject*MS[,UNITS*delay|reject*MS]")]
    Empty {
        /// The env key.
        key: String,
    },
    /// Two commas with nothing between them, or a leading/trailing comma.
    #[error("{key}: empty entry in '{value}' (stray comma?)")]
    EmptyEntry {
        /// The env key.
        key: String,
        /// The whole env value.
        value: String,
    },
    /// An entry that does not have exactly three `*`-separated parts.
    #[error("{key}: entry '{entry}' needs UNITS*delay|reject*MS")]
    Malformed {
        /// The env key.
        key: String,
        /// The offending entry.
        entry: String,
    },
    /// The middle part is neither `delay` nor `reject`.
    #[error("{key}: entry '{entry}' has unknown kind '{kind}', expected 'delay' or 'reject'")]
    UnknownKind {
        /// The env key.
        key: String,
        /// The offending entry.
        entry: String,
        /// The unknown kind.
        kind: String,
    },
    /// The UNITS part is not a usable positive number.
    #[error("{key}: entry '{entry}' has bad units '{units}': {reason}")]
    BadUnits {
        /// The env key.
        key: String,
        /// The offending entry.
        entry: String,
        /// The UNITS part as written.
        units: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The DELAY_MS part is not a non-negative integer.
    #[error("{key}: entry '{entry}' has bad delay '{delay}': {reason}")]
    BadDelay {
        /// The env key.
        key: String,
        /// The offending entry.
        entry: String,
        /// The DELAY_MS part as written.
        delay: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A second `delay` or `reject` entry.
    #[error("{key}: more than one '{kind}' entry in '{value}'")]
    DuplicateKind {
        /// The env key.
        key: String,
        /// `delay` or `reject`.
        kind: &'static str,
        /// The whole env value.
        value: String,
    },
    /// A deny key with a value outside its fixed set.
    #[error("{key}: invalid value '{value}', expected {expected}")]
    BadValue {
        /// The env key.
        key: String,
        /// The offending value.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },
}

/// One threshold: once more than `units_per_sec` units arrive within a second, requests are held
/// `delay_ms` (and, for a reject rule, then refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRule {
    /// Requests (or bytes) per second allowed before the rule trips.
    pub units_per_sec: u64,
    /// How long a tripped request is held, in milliseconds (before the client-timeout cap).
    pub delay_ms: u64,
}

/// The parsed value of one throttling key. The default (no rules) throttles nothing, which is what
/// an absent key means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThrottlingPolicy {
    /// The `delay` entry, if any.
    pub delay: Option<ThrottleRule>,
    /// The `reject` entry, if any.
    pub reject: Option<ThrottleRule>,
}

impl ThrottlingPolicy {
    /// Parses the value of `key` (used only in error messages). `by_size` allows the `K`/`M`
    /// suffixes of [`WRITE_THROTTLING_BY_SIZE`]. Entries and parts are trimmed of whitespace.
    pub fn parse(key: &str, value: &str, by_size: bool) -> Result<Self, ThrottlingError> {
        if value.trim().is_empty() {
            return Err(ThrottlingError::Empty { key: key.to_owned() });
        }
        let mut policy = Self::default();
        for raw in value.split(',') {
            let entry = raw.trim();
            if entry.is_empty() {
                return Err(ThrottlingError::EmptyEntry { key: key.to_owned(), value: value.to_owned() });
            }
            let mut parts = entry.split('*').map(str::trim);
            let (Some(units), Some(kind), Some(delay), None) = (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(ThrottlingError::Malformed { key: key.to_owned(), entry: entry.to_owned() });
            };
            let (slot, kind_name) = match kind {
                "delay" => (&mut policy.delay, "delay"),
                "reject" => (&mut policy.reject, "reject"),
                _ => {
                    return Err(ThrottlingError::UnknownKind {
                        key: key.to_owned(),
                        entry: entry.to_owned(),
                        kind: kind.to_owned(),
                    })
                }
            };
            let units_per_sec = parse_units(units, by_size).map_err(|reason| ThrottlingError::BadUnits {
                key: key.to_owned(),
                entry: entry.to_owned(),
                units: units.to_owned(),
                reason,
            })?;
            let delay_ms = parse_u64(delay).map_err(|reason| ThrottlingError::BadDelay {
                key: key.to_owned(),
                entry: entry.to_owned(),
                delay: delay.to_owned(),
                reason,
            })?;
            if slot.is_some() {
                return Err(ThrottlingError::DuplicateKind {
                    key: key.to_owned(),
                    kind: kind_name,
                    value: value.to_owned(),
                });
            }
            *slot = Some(ThrottleRule { units_per_sec, delay_ms });
        }
        Ok(policy)
    }

    /// True when no rule is set, i.e. nothing is ever throttled.
    pub fn is_unlimited(&self) -> bool {
        self.delay.is_none() && self.reject.is_none()
    }

    /// The share of one partition: `units / partition_count + 1` (Pegasus; the `+ 1` keeps a small
    /// table-wide limit from rounding down to zero). A count of 0 is treated as 1 rather than
    /// dividing by zero.
    pub fn per_partition(&self, partition_count: u32) -> ThrottlingPolicy {
        let count = u64::from(partition_count.max(1));
        let split = |rule: ThrottleRule| ThrottleRule {
            units_per_sec: (rule.units_per_sec / count).saturating_add(1),
            delay_ms: rule.delay_ms,
        };
        ThrottlingPolicy { delay: self.delay.map(split), reject: self.reject.map(split) }
    }
}

/// Parses a plain non-negative decimal integer. `str::parse` alone would also take `+5`, which is
/// not valid in Pegasus, so digits are checked first.
fn parse_u64(text: &str) -> Result<u64, &'static str> {
    if text.is_empty() {
        return Err("missing number");
    }
    if text.starts_with('-') {
        return Err("must not be negative");
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a non-negative integer");
    }
    text.parse::<u64>().map_err(|_| "too large for 64 bits")
}

/// Parses UNITS: a positive integer, with a `K`/`M` suffix when `by_size`.
fn parse_units(text: &str, by_size: bool) -> Result<u64, &'static str> {
    // The suffix is one ASCII byte, so slicing it off stays on a char boundary.
    let (digits, multiplier) = match text.as_bytes().last() {
        Some(b'K') => (&text[..text.len() - 1], 1u64 << 10),
        Some(b'M') => (&text[..text.len() - 1], 1u64 << 20),
        Some(b'k' | b'm') if by_size => return Err("size suffix must be upper-case K or M"),
        _ => (text, 1),
    };
    if multiplier != 1 && !by_size {
        return Err("a K/M suffix is only allowed in replica.write_throttling_by_size");
    }
    let number = parse_u64(digits)?;
    if number == 0 {
        return Err("must be at least 1");
    }
    number.checked_mul(multiplier).ok_or("overflows 64 bits")
}

/// How a denied request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    /// `timeout*...`: Pegasus drops such requests so its client times out; wingkv's replicas
    /// answer `OperationDisabled` at once for both kinds (the kind shows in the message).
    Timeout,
    /// `reconfig*...`: answered `OperationDisabled` at once.
    Reconfig,
}

/// Which client requests a table's replicas refuse, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenyPolicy {
    /// Reads are refused.
    pub reads: bool,
    /// Writes are refused.
    pub writes: bool,
    /// How refused requests are answered.
    pub kind: DenyKind,
}

impl DenyPolicy {
    /// Parses a [`DENY_CLIENT_REQUEST`] value such as `reconfig*write` (parts trimmed).
    pub fn parse_request(value: &str) -> Result<Self, ThrottlingError> {
        let bad = || ThrottlingError::BadValue {
            key: DENY_CLIENT_REQUEST.to_owned(),
            value: value.to_owned(),
            expected: DENY_REQUEST_VALUES,
        };
        let mut parts = value.split('*').map(str::trim);
        let (Some(kind), Some(scope), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let kind = match kind {
            "timeout" => DenyKind::Timeout,
            "reconfig" => DenyKind::Reconfig,
            _ => return Err(bad()),
        };
        let (reads, writes) = match scope {
            "all" => (true, true),
            "read" => (true, false),
            "write" => (false, true),
            _ => return Err(bad()),
        };
        Ok(Self { reads, writes, kind })
    }

    /// Parses a [`DENY_CLIENT_WRITE`] value: `true` is `reconfig*write`, `false` denies nothing
    /// (case-insensitive, trimmed).
    pub fn parse_write(value: &str) -> Result<Option<Self>, ThrottlingError> {
        let value_trimmed = value.trim();
        if value_trimmed.eq_ignore_ascii_case("true") {
            Ok(Some(Self { reads: false, writes: true, kind: DenyKind::Reconfig }))
        } else if value_trimmed.eq_ignore_ascii_case("false") {
            Ok(None)
        } else {
            Err(ThrottlingError::BadValue {
                key: DENY_CLIENT_WRITE.to_owned(),
                value: value.to_owned(),
                expected: "true or false",
            })
        }
    }

    /// The deny policy of a table's envs, `None` when nothing is denied. Both keys are validated;
    /// when both are set, [`DENY_CLIENT_REQUEST`] wins since it is the newer, more precise key
    /// (one policy has a single [`DenyKind`], so the two cannot always be merged).
    pub fn from_envs(envs: &BTreeMap<String, String>) -> Result<Option<Self>, ThrottlingError> {
        let request = envs.get(DENY_CLIENT_REQUEST).map(|v| Self::parse_request(v)).transpose()?;
        let write = match envs.get(DENY_CLIENT_WRITE) {
            Some(v) => Self::parse_write(v)?,
            None => None,
        };
        Ok(request.or(write))
    }
}

/// Everything a replica needs from a table's envs about throttling and denial, with the limits
/// already split to one partition's share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableThrottling {
    /// Per-partition requests-per-second limits ([`WRITE_THROTTLING`]).
    pub write_qps: ThrottlingPolicy,
    /// Per-partition bytes-per-second limits ([`WRITE_THROTTLING_BY_SIZE`]).
    pub write_bytes: ThrottlingPolicy,
    /// Requests to refuse ([`DENY_CLIENT_REQUEST`] / [`DENY_CLIENT_WRITE`]).
    pub deny: Option<DenyPolicy>,
}

impl TableThrottling {
    /// Reads the keys this module knows from `envs` (absent keys mean no limit, no denial) and
    /// splits the limits over `partition_count` partitions. Other keys are ignored.
    pub fn from_envs(envs: &BTreeMap<String, String>, partition_count: u32) -> Result<Self, ThrottlingError> {
        let policy = |key: &str, by_size: bool| -> Result<ThrottlingPolicy, ThrottlingError> {
            match envs.get(key) {
                Some(value) => Ok(ThrottlingPolicy::parse(key, value, by_size)?.per_partition(partition_count)),
                None => Ok(ThrottlingPolicy::default()),
            }
        };
        Ok(Self {
            write_qps: policy(WRITE_THROTTLING, false)?,
            write_bytes: policy(WRITE_THROTTLING_BY_SIZE, true)?,
            deny: DenyPolicy::from_envs(envs)?,
        })
    }

    /// How reads are refused, `None` when they are served.
    pub fn deny_read(&self) -> Option<DenyKind> {
        self.deny.filter(|d| d.reads).map(|d| d.kind)
    }

    /// How writes are refused, `None` when they are served.
    pub fn deny_write(&self) -> Option<DenyKind> {
        self.deny.filter(|d| d.writes).map(|d| d.kind)
    }
}

/// Checks the throttling/deny keys of `envs` for the meta's `set_app_envs`; keys this module does
/// not know pass unchecked.
pub fn validate_envs(envs: &BTreeMap<String, String>) -> Result<(), ThrottlingError> {
    TableThrottling::from_envs(envs, 1).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(units_per_sec: u64, delay_ms: u64) -> Option<ThrottleRule> {
        Some(ThrottleRule { units_per_sec, delay_ms })
    }

    fn qps(value: &str) -> Result<ThrottlingPolicy, ThrottlingError> {
        ThrottlingPolicy::parse(WRITE_THROTTLING, value, false)
    }

    fn size(value: &str) -> Result<ThrottlingPolicy, ThrottlingError> {
        ThrottlingPolicy::parse(WRITE_THROTTLING_BY_SIZE, value, true)
    }

    fn envs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_design_example() {
        let p = qps("1000*delay*100,2000*reject*200").unwrap();
        assert_eq!(p, ThrottlingPolicy { delay: rule(1000, 100), reject: rule(2000, 200) });
        assert!(!p.is_unlimited());
        // Order of the entries does not matter.
        assert_eq!(qps("2000*reject*200,1000*delay*100").unwrap(), p);
    }

    #[test]
    fn parses_single_delay_and_single_reject() {
        assert_eq!(qps("500*delay*10").unwrap(), ThrottlingPolicy { delay: rule(500, 10), reject: None });
        assert_eq!(qps("500*reject*10").unwrap(), ThrottlingPolicy { delay: None, reject: rule(500, 10) });
    }

    #[test]
    fn parses_size_suffixes() {
        let p = size("10K*delay*100,2M*reject*200").unwrap();
        assert_eq!(p, ThrottlingPolicy { delay: rule(10 * 1024, 100), reject: rule(2 * 1024 * 1024, 200) });
        assert_eq!(size("4096*delay*1").unwrap().delay, rule(4096, 1));
    }

    #[test]
    fn trims_whitespace() {
        let p = qps("  1000 * delay * 100 ,\t2000*reject*200  ").unwrap();
        assert_eq!(p, ThrottlingPolicy { delay: rule(1000, 100), reject: rule(2000, 200) });
        assert_eq!(size(" 1M * reject * 5 ").unwrap().reject, rule(1 << 20, 5));
    }

    #[test]
    fn edge_values() {
        assert_eq!(qps("1*delay*0").unwrap().delay, rule(1, 0));
        let max = u64::MAX.to_string();
        assert_eq!(qps(&format!("{max}*reject*{max}")).unwrap().reject, rule(u64::MAX, u64::MAX));
        // The largest M value that fits, and the first that does not.
        let fits = u64::MAX >> 20;
        assert_eq!(size(&format!("{fits}M*delay*1")).unwrap().delay, rule(fits << 20, 1));
        let err = size(&format!("{}M*delay*1", fits + 1)).unwrap_err().to_string();
        assert!(err.contains("overflows"), "{err}");
        let err = size("18446744073709551615K*delay*1").unwrap_err().to_string();
        assert!(err.contains("overflows"), "{err}");
    }

    #[test]
    fn rejects_malformed_values() {
        // (value, by_size, text the message must contain)
        let cases: &[(&str, bool, &str)] = &[
            ("", false, "value is empty"),
            ("   ", false, "value is empty"),
            ("1000*delay*100,", false, "empty entry"),
            (",1000*delay*100", false, "empty entry"),
            ("1000*delay*100,,2000*reject*1", false, "empty entry"),
            ("2000*reject", false, "entry '2000*reject' needs UNITS*delay|reject*MS"),
            ("1000", false, "entry '1000' needs UNITS*delay|reject*MS"),
            ("1000*delay*100*5", false, "entry '1000*delay*100*5' needs UNITS"),
            ("1000*slow*100", false, "unknown kind 'slow'"),
            ("1000*DELAY*100", false, "unknown kind 'DELAY'"),
            ("1000**100", false, "unknown kind ''"),
            ("abc*delay*100", false, "bad units 'abc': not a non-negative integer"),
            ("-5*delay*100", false, "bad units '-5': must not be negative"),
            ("+5*delay*100", false, "bad units '+5'"),
            ("0*delay*100", false, "bad units '0': must be at least 1"),
            ("0K*delay*100", true, "must be at least 1"),
            ("*delay*100", false, "bad units '': missing number"),
            ("1.5*delay*100", false, "not a non-negative integer"),
            ("18446744073709551616*delay*1", false, "too large for 64 bits"),
            ("10K*delay*100", false, "only allowed in replica.write_throttling_by_size"),
            ("10k*delay*100", true, "upper-case K or M"),
            ("10m*delay*100", true, "upper-case K or M"),
            ("K*delay*100", true, "bad units 'K': missing number"),
            ("10G*delay*100", true, "bad units '10G'"),
            ("1000*delay*abc", false, "bad delay 'abc'"),
            ("1000*delay*-1", false, "bad delay '-1': must not be negative"),
            ("1000*delay*", false, "bad delay '': missing number"),
            ("1000*delay*10ms", false, "bad delay '10ms'"),
            ("1000*delay*1,2000*delay*2", false, "more than one 'delay' entry"),
            ("1000*reject*1,2000*reject*2", false, "more than one 'reject' entry"),
        ];
        for (value, by_size, needle) in cases {
            let key = if *by_size { WRITE_THROTTLING_BY_SIZE } else { WRITE_THROTTLING };
            let err = match ThrottlingPolicy::parse(key, value, *by_size) {
                Ok(p) => panic!("'{value}' parsed as {p:?}"),
                Err(e) => e.to_string(),
            };
            assert!(err.starts_with(&format!("{key}: ")), "'{value}': {err}");
            assert!(err.contains(needle), "'{value}': expected '{needle}' in: {err}");
        }
    }

    #[test]
    fn per_partition_math() {
        let p = qps("1000*delay*100,2000*reject*200").unwrap();
        assert_eq!(p.per_partition(8), ThrottlingPolicy { delay: rule(126, 100), reject: rule(251, 200) });
        assert_eq!(p.per_partition(1), ThrottlingPolicy { delay: rule(1001, 100), reject: rule(2001, 200) });
        // Count 0 behaves like 1 instead of dividing by zero.
        assert_eq!(p.per_partition(0), p.per_partition(1));
        // A limit smaller than the partition count still lets one request through per partition.
        assert_eq!(qps("1*delay*5").unwrap().per_partition(16).delay, rule(1, 5));
        // No overflow at the top.
        assert_eq!(qps(&format!("{}*reject*1", u64::MAX)).unwrap().per_partition(1).reject, rule(u64::MAX, 1));
        assert_eq!(ThrottlingPolicy::default().per_partition(4), ThrottlingPolicy::default());
    }

    #[test]
    fn parses_deny_request() {
        let cases = [
            ("timeout*all", true, true, DenyKind::Timeout),
            ("timeout*write", false, true, DenyKind::Timeout),
            ("timeout*read", true, false, DenyKind::Timeout),
            ("reconfig*all", true, true, DenyKind::Reconfig),
            ("reconfig*write", false, true, DenyKind::Reconfig),
            (" reconfig * read ", true, false, DenyKind::Reconfig),
        ];
        for (value, reads, writes, kind) in cases {
            assert_eq!(DenyPolicy::parse_request(value).unwrap(), DenyPolicy { reads, writes, kind }, "{value}");
        }
        for bad in ["", "timeout", "timeout*", "timeout*none", "drop*all", "reconfig*write*1", "true"] {
            let err = DenyPolicy::parse_request(bad).unwrap_err().to_string();
            assert!(err.starts_with("replica.deny_client_request: invalid value"), "{bad}: {err}");
            assert!(err.contains(&format!("'{bad}'")) && err.contains("reconfig*write"), "{bad}: {err}");
        }
    }

    #[test]
    fn deny_client_write_alias() {
        let alias = DenyPolicy::parse_write("true").unwrap();
        assert_eq!(alias, Some(DenyPolicy::parse_request("reconfig*write").unwrap()));
        assert_eq!(DenyPolicy::parse_write(" TRUE ").unwrap(), alias);
        assert_eq!(DenyPolicy::parse_write("false").unwrap(), None);
        let err = DenyPolicy::parse_write("yes").unwrap_err().to_string();
        assert_eq!(err, "replica.deny_client_write: invalid value 'yes', expected true or false");

        assert_eq!(DenyPolicy::from_envs(&envs(&[])).unwrap(), None);
        assert_eq!(DenyPolicy::from_envs(&envs(&[(DENY_CLIENT_WRITE, "true")])).unwrap(), alias);
        // The newer key wins when both are set.
        let both = envs(&[(DENY_CLIENT_WRITE, "true"), (DENY_CLIENT_REQUEST, "timeout*read")]);
        assert_eq!(
            DenyPolicy::from_envs(&both).unwrap(),
            Some(DenyPolicy { reads: true, writes: false, kind: DenyKind::Timeout })
        );
        // ...but the older one is still validated.
        let bad = envs(&[(DENY_CLIENT_WRITE, "maybe"), (DENY_CLIENT_REQUEST, "timeout*read")]);
        assert!(DenyPolicy::from_envs(&bad).is_err());
    }

    #[test]
    fn table_throttling_from_envs() {
        let none = TableThrottling::from_envs(&envs(&[("other.key", "x")]), 4).unwrap();
        assert_eq!(none, TableThrottling::default());
        assert!(none.write_qps.is_unlimited() && none.write_bytes.is_unlimited());
        assert_eq!((none.deny_read(), none.deny_write()), (None, None));

        let t = TableThrottling::from_envs(
            &envs(&[
                (WRITE_THROTTLING, "1000*delay*100,2000*reject*200"),
                (WRITE_THROTTLING_BY_SIZE, "4M*reject*50"),
                (DENY_CLIENT_REQUEST, "timeout*write"),
            ]),
            4,
        )
        .unwrap();
        assert_eq!(t.write_qps, ThrottlingPolicy { delay: rule(251, 100), reject: rule(501, 200) });
        assert_eq!(t.write_bytes, ThrottlingPolicy { delay: None, reject: rule((1 << 20) + 1, 50) });
        assert_eq!((t.deny_read(), t.deny_write()), (None, Some(DenyKind::Timeout)));
    }

    #[test]
    fn validate_envs_checks_only_known_keys() {
        assert!(validate_envs(&envs(&[("rocksdb.usage_scenario", "bulk_load"), ("x", "")])).is_ok());
        assert!(validate_envs(&envs(&[(WRITE_THROTTLING, "1000*delay*100"), (DENY_CLIENT_WRITE, "false")])).is_ok());
        let err = validate_envs(&envs(&[(WRITE_THROTTLING_BY_SIZE, "1000*delay")])).unwrap_err();
        assert_eq!(err.to_string(), "replica.write_throttling_by_size: entry '1000*delay' needs UNITS*delay|reject*MS");
        // Suffixes are a by-size feature only.
        assert!(validate_envs(&envs(&[(WRITE_THROTTLING, "1K*delay*100")])).is_err());
        assert!(validate_envs(&envs(&[(DENY_CLIENT_REQUEST, "all")])).is_err());
    }
}
