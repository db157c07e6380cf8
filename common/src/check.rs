//! The check of `check_and_set`, with Pegasus's `cas_check_type` semantics.

use serde::{Deserialize, Serialize};

use crate::error::WingError;

/// Longest `check_and_set` operand accepted: the check runs inside raft apply on every replica,
/// so its cost must stay small whatever the stored value. Match checks are linear in the value
/// and the operand ([`memchr::memmem`]), comparisons in the shorter of the two.
pub const MAX_CHECK_OPERAND_BYTES: usize = 64 * 1024;

/// What `check_and_set` checks about the current value (Pegasus's `cas_check_type`, same
/// numbering as the wire enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum CheckType {
    NoCheck = 0,
    ValueNotExist = 1,
    ValueNotExistOrEmpty = 2,
    ValueExist = 3,
    ValueNotEmpty = 4,
    ValueMatchAnywhere = 5,
    ValueMatchPrefix = 6,
    ValueMatchPostfix = 7,
    ValueBytesLess = 8,
    ValueBytesLessOrEqual = 9,
    ValueBytesEqual = 10,
    ValueBytesGreaterOrEqual = 11,
    ValueBytesGreater = 12,
    ValueIntLess = 13,
    ValueIntLessOrEqual = 14,
    ValueIntEqual = 15,
    ValueIntGreaterOrEqual = 16,
    ValueIntGreater = 17,
}

impl CheckType {
    /// Converts the wire value; unknown values are invalid arguments.
    pub fn from_i32(v: i32) -> Result<Self, WingError> {
        use CheckType::*;
        const ALL: [CheckType; 18] = [
            NoCheck,
            ValueNotExist,
            ValueNotExistOrEmpty,
            ValueExist,
            ValueNotEmpty,
            ValueMatchAnywhere,
            ValueMatchPrefix,
            ValueMatchPostfix,
            ValueBytesLess,
            ValueBytesLessOrEqual,
            ValueBytesEqual,
            ValueBytesGreaterOrEqual,
            ValueBytesGreater,
            ValueIntLess,
            ValueIntLessOrEqual,
            ValueIntEqual,
            ValueIntGreaterOrEqual,
            ValueIntGreater,
        ];
        usize::try_from(v)
            .ok()
            .and_then(|i| ALL.get(i).copied())
            .ok_or_else(|| WingError::InvalidArgument(format!("unknown check type {v}")))
    }

    /// Refuses an operand longer than [`MAX_CHECK_OPERAND_BYTES`] (checked by the primary
    /// before the command is proposed).
    pub fn validate_operand(operand: &[u8]) -> Result<(), WingError> {
        if operand.len() > MAX_CHECK_OPERAND_BYTES {
            return Err(WingError::InvalidArgument(format!(
                "check operand is {} bytes; the limit is {MAX_CHECK_OPERAND_BYTES}",
                operand.len()
            )));
        }
        Ok(())
    }

    /// Whether the check passes for the current value (`None` = no such record) and the
    /// operand. Integer checks fail with `InvalidArgument` when either side is not an integer.
    pub fn passes(self, current: Option<&[u8]>, operand: &[u8]) -> Result<bool, WingError> {
        use CheckType::*;
        Ok(match (self, current) {
            (NoCheck, _) => true,
            (ValueNotExist, v) => v.is_none(),
            (ValueNotExistOrEmpty, v) => v.is_none_or(|v| v.is_empty()),
            (ValueExist, v) => v.is_some(),
            (ValueNotEmpty, v) => v.is_some_and(|v| !v.is_empty()),
            (_, None) => false,
            (ValueMatchAnywhere, Some(v)) => contains(v, operand),
            (ValueMatchPrefix, Some(v)) => v.starts_with(operand),
            (ValueMatchPostfix, Some(v)) => v.ends_with(operand),
            (ValueBytesLess, Some(v)) => v < operand,
            (ValueBytesLessOrEqual, Some(v)) => v <= operand,
            (ValueBytesEqual, Some(v)) => v == operand,
            (ValueBytesGreaterOrEqual, Some(v)) => v >= operand,
            (ValueBytesGreater, Some(v)) => v > operand,
            (int_check, Some(v)) => {
                let value = parse_int(v, "check value")?;
                let operand = parse_int(operand, "check operand")?;
                match int_check {
                    ValueIntLess => value < operand,
                    ValueIntLessOrEqual => value <= operand,
                    ValueIntEqual => value == operand,
                    ValueIntGreaterOrEqual => value >= operand,
                    _ => value > operand,
                }
            }
        })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// Parses a decimal i64 as Pegasus stores integers (used by `incr` and the int checks).
pub fn parse_int(bytes: &[u8], what: &str) -> Result<i64, WingError> {
    std::str::from_utf8(bytes).ok().and_then(|s| s.parse::<i64>().ok()).ok_or_else(|| {
        WingError::InvalidArgument(format!("{what} '{}' is not a 64-bit integer", String::from_utf8_lossy(bytes)))
    })
}

#[cfg(test)]
mod tests {
    use super::CheckType::*;
    use super::*;

    #[test]
    fn existence_checks() {
        assert!(NoCheck.passes(None, b"").unwrap());
        assert!(ValueNotExist.passes(None, b"").unwrap());
        assert!(!ValueNotExist.passes(Some(b""), b"").unwrap());
        assert!(ValueNotExistOrEmpty.passes(Some(b""), b"").unwrap());
        assert!(!ValueNotExistOrEmpty.passes(Some(b"x"), b"").unwrap());
        assert!(ValueExist.passes(Some(b""), b"").unwrap());
        assert!(!ValueNotEmpty.passes(Some(b""), b"").unwrap());
    }

    #[test]
    fn byte_and_match_checks() {
        assert!(ValueMatchAnywhere.passes(Some(b"hello"), b"ell").unwrap());
        assert!(!ValueMatchAnywhere.passes(None, b"").unwrap());
        assert!(ValueMatchPrefix.passes(Some(b"hello"), b"he").unwrap());
        assert!(ValueMatchPostfix.passes(Some(b"hello"), b"lo").unwrap());
        assert!(ValueBytesLess.passes(Some(b"a"), b"b").unwrap());
        assert!(ValueBytesEqual.passes(Some(b"b"), b"b").unwrap());
        assert!(!ValueBytesGreater.passes(Some(b"b"), b"b").unwrap());
    }

    /// The case a naive search makes quadratic: a long run of one byte, an operand of that byte
    /// and one other at its end. Linear here, so a 32 MiB value is checked at memory speed; a
    /// naive search (2·10¹² comparisons) runs into the test runner's timeout.
    #[test]
    fn match_anywhere_is_linear_in_the_worst_case() {
        let value = vec![b'a'; 32 << 20];
        let mut operand = vec![b'a'; MAX_CHECK_OPERAND_BYTES - 1];
        operand.push(b'b');
        assert!(!ValueMatchAnywhere.passes(Some(&value), &operand).unwrap());
        let mut hit = value.clone();
        hit.extend_from_slice(&operand);
        assert!(ValueMatchAnywhere.passes(Some(&hit), &operand).unwrap());
        assert!(ValueMatchAnywhere.passes(Some(b"x"), b"").unwrap(), "the empty operand is everywhere");
    }

    #[test]
    fn operands_are_capped() {
        CheckType::validate_operand(&vec![0; MAX_CHECK_OPERAND_BYTES]).unwrap();
        let e = CheckType::validate_operand(&vec![0; MAX_CHECK_OPERAND_BYTES + 1]).unwrap_err();
        assert!(e.to_string().contains("limit is 65536"), "{e}");
    }

    #[test]
    fn int_checks() {
        assert!(ValueIntLess.passes(Some(b"-5"), b"3").unwrap());
        assert!(ValueIntEqual.passes(Some(b"10"), b"10").unwrap());
        assert!(ValueIntGreater.passes(Some(b"11"), b"10").unwrap());
        assert!(ValueIntLess.passes(Some(b"x"), b"3").is_err());
        assert!(ValueIntLess.passes(Some(b"1"), b"").is_err());
    }

    #[test]
    fn wire_values() {
        assert_eq!(CheckType::from_i32(0).unwrap(), NoCheck);
        assert_eq!(CheckType::from_i32(17).unwrap(), ValueIntGreater);
        assert!(CheckType::from_i32(18).is_err());
        assert!(CheckType::from_i32(-1).is_err());
    }
}
