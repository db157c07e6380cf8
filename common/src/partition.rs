//! [`PartitionId`]: one partition of one table.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::WingError;

/// One partition of one table, printed `app_id.partition_index` (e.g. `3.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionId {
    /// The table's numeric id (never reused).
    pub app_id: u32,
    /// Index of the partition within the table.
    pub partition_index: u32,
}

impl PartitionId {
    /// Builds a partition id.
    pub fn new(app_id: u32, partition_index: u32) -> Self {
        Self { app_id, partition_index }
    }

    /// Converts from the wire type; a missing partition is an invalid argument.
    pub fn from_proto(p: Option<&wingkv_proto::common::PartitionId>) -> Result<Self, WingError> {
        let p = p.ok_or_else(|| WingError::InvalidArgument("request has no partition".into()))?;
        Ok(Self::new(p.app_id, p.partition_index))
    }

    /// The wire form.
    pub fn to_proto(self) -> wingkv_proto::common::PartitionId {
        wingkv_proto::common::PartitionId { app_id: self.app_id, partition_index: self.partition_index }
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.app_id, self.partition_index)
    }
}

impl FromStr for PartitionId {
    type Err = WingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || WingError::InvalidArgument(format!("'{s}' is not a partition id (APP_ID.INDEX)"));
        let (a, p) = s.split_once('.').ok_or_else(bad)?;
        Ok(Self::new(a.parse().map_err(|_| bad())?, p.parse().map_err(|_| bad())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse() {
        let p = PartitionId::new(3, 7);
        assert_eq!(p.to_string(), "3.7");
        assert_eq!("3.7".parse::<PartitionId>().unwrap(), p);
        assert!("3".parse::<PartitionId>().is_err());
        assert!("a.b".parse::<PartitionId>().is_err());
        assert!("1.-1".parse::<PartitionId>().is_err());
    }
}
