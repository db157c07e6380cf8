//! Rules for table names and table shapes, checked by the meta server and the shell alike.

use crate::WingError;

/// Longest table name.
pub const MAX_TABLE_NAME_LEN: usize = 128;
/// Largest partition count of a table.
pub const MAX_PARTITION_COUNT: u32 = 65_536;
/// Largest replica count of a table.
pub const MAX_REPLICA_COUNT: u32 = 5;
/// Partitions of a table created without a count.
pub const DEFAULT_PARTITION_COUNT: u32 = 4;
/// Replicas of a table created without a count.
pub const DEFAULT_REPLICA_COUNT: u32 = 3;

/// Checks a table name: 1..=128 characters from `A-Z a-z 0-9 _ . -`, starting with a letter,
/// digit or underscore.
pub fn validate_table_name(name: &str) -> Result<(), WingError> {
    let bad = |why: &str| Err(WingError::InvalidArgument(format!("invalid table name '{name}': {why}")));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_TABLE_NAME_LEN {
        return bad(&format!("longer than {MAX_TABLE_NAME_LEN} characters"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return bad(&format!("'{}' is not allowed (use letters, digits, '_', '.', '-')", c.escape_default()));
    }
    if name.starts_with(['.', '-']) {
        return bad("it must start with a letter, digit or '_'");
    }
    Ok(())
}

/// Checks a partition count: a power of two in `1..=65536`.
pub fn validate_partition_count(count: u32) -> Result<(), WingError> {
    if count == 0 || count > MAX_PARTITION_COUNT || !count.is_power_of_two() {
        return Err(WingError::InvalidArgument(format!(
            "partition count {count} must be a power of two between 1 and {MAX_PARTITION_COUNT}"
        )));
    }
    Ok(())
}

/// Checks a replica count: `1..=5`.
pub fn validate_replica_count(count: u32) -> Result<(), WingError> {
    if count == 0 || count > MAX_REPLICA_COUNT {
        return Err(WingError::InvalidArgument(format!(
            "replica count {count} must be between 1 and {MAX_REPLICA_COUNT}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["t", "temp", "user_profile", "a.b-c", "_x", "9lives"] {
            validate_table_name(ok).unwrap();
        }
        for bad in ["", ".hidden", "-x", "a b", "a/b", "名前", "x\n"] {
            assert!(validate_table_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_table_name(&"a".repeat(129)).is_err());
        assert!(validate_table_name(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn counts() {
        for ok in [1, 2, 8, 65_536] {
            validate_partition_count(ok).unwrap();
        }
        for bad in [0, 3, 12, 131_072] {
            assert!(validate_partition_count(bad).is_err(), "{bad}");
        }
        assert!(validate_replica_count(0).is_err());
        assert!(validate_replica_count(6).is_err());
        validate_replica_count(5).unwrap();
    }
}
