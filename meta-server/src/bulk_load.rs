//! Bulk-load jobs in the meta state: one per table at a time, with Pegasus's status names and
//! preconditions (DESIGN §5). The transitions here are pure; the leader's driver
//! ([`crate::bulk_driver`]) moves jobs forward by proposing them.

use serde::{Deserialize, Serialize};
use wingkv_common::WingError;
use wingkv_proto::common::BulkLoadStatus as WireStatus;

/// Status of a job or of one of its partitions (Pegasus's `BLS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum BulkLoadStatus {
    Invalid,
    Downloading,
    Downloaded,
    Ingesting,
    Succeed,
    Failed,
    Pausing,
    Paused,
    Canceled,
}

impl BulkLoadStatus {
    /// The `BLS_*` name (the proto enum's).
    pub fn as_str(self) -> &'static str {
        WireStatus::from(self).as_str_name()
    }

    /// Whether a job in this status is over (it can be cleared, and a new one started).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            BulkLoadStatus::Succeed | BulkLoadStatus::Failed | BulkLoadStatus::Canceled | BulkLoadStatus::Invalid
        )
    }
}

/// The meta's own enum is what its state persists (serde); on the wire it is the proto's.
impl From<BulkLoadStatus> for WireStatus {
    fn from(s: BulkLoadStatus) -> Self {
        match s {
            BulkLoadStatus::Invalid => WireStatus::BlsInvalid,
            BulkLoadStatus::Downloading => WireStatus::BlsDownloading,
            BulkLoadStatus::Downloaded => WireStatus::BlsDownloaded,
            BulkLoadStatus::Ingesting => WireStatus::BlsIngesting,
            BulkLoadStatus::Succeed => WireStatus::BlsSucceed,
            BulkLoadStatus::Failed => WireStatus::BlsFailed,
            BulkLoadStatus::Pausing => WireStatus::BlsPausing,
            BulkLoadStatus::Paused => WireStatus::BlsPaused,
            BulkLoadStatus::Canceled => WireStatus::BlsCanceled,
        }
    }
}

/// What an operator asks of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BulkLoadControlAction {
    /// Pause downloading.
    Pause,
    /// Resume a paused job.
    Restart,
    /// Cancel a downloading or paused job; `force` cancels from any live state.
    Cancel {
        /// Cancel from any live state.
        force: bool,
    },
    /// Remove a finished job's record.
    Clear,
}

/// One table's bulk-load job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkLoadJob {
    /// Never reused; replicas key local state by it.
    pub job_id: u64,
    /// Cluster name in the remote layout.
    pub cluster: String,
    /// Provider name.
    pub provider: String,
    /// Root on the provider.
    pub root: String,
    /// Ingest below existing data.
    pub ingest_behind: bool,
    /// Job status.
    pub status: BulkLoadStatus,
    /// Why it failed or was canceled.
    pub reason: String,
    /// Status of each partition.
    pub partitions: Vec<BulkLoadStatus>,
    /// Unix ms of the start.
    pub start_time_ms: u64,
}

impl BulkLoadJob {
    /// Object path of partition `pidx`'s directory.
    pub fn partition_dir(&self, table: &str, pidx: u32) -> Result<String, WingError> {
        let dir = wingkv_common::bulk_load::table_dir(&self.root, &self.cluster, table)?;
        Ok(dir.child(pidx.to_string()).to_string())
    }

    /// Applies an operator's action, with Pegasus's preconditions.
    pub fn control(&mut self, table: &str, action: BulkLoadControlAction) -> Result<(), WingError> {
        use BulkLoadStatus::*;
        let refuse = |what: &str, s: BulkLoadStatus| {
            Err(WingError::InvalidState(format!(
                "cannot {what} the bulk load of table '{table}': it is {}",
                s.as_str()
            )))
        };
        match action {
            BulkLoadControlAction::Pause => match self.status {
                Downloading => self.status = Pausing,
                s => return refuse("pause", s),
            },
            BulkLoadControlAction::Restart => match self.status {
                Paused | Pausing => {
                    self.status = Downloading;
                    for p in self.partitions.iter_mut().filter(|p| **p != Downloaded) {
                        *p = Downloading;
                    }
                }
                s => return refuse("restart", s),
            },
            BulkLoadControlAction::Cancel { force } => match self.status {
                Downloading | Paused | Pausing => self.cancel("canceled by the operator"),
                s if force && !s.is_terminal() => self.cancel("force-canceled by the operator"),
                s => return refuse(if force { "force-cancel" } else { "cancel (use -f from this state)" }, s),
            },
            BulkLoadControlAction::Clear => return refuse("clear", self.status),
        }
        Ok(())
    }

    /// Cancels the job with `reason`.
    pub fn cancel(&mut self, reason: &str) {
        self.status = BulkLoadStatus::Canceled;
        self.reason = reason.to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::BulkLoadControlAction::*;
    use super::BulkLoadStatus::*;
    use super::*;

    fn job(status: BulkLoadStatus) -> BulkLoadJob {
        BulkLoadJob {
            job_id: 1,
            cluster: "onebox".into(),
            provider: "local".into(),
            root: "/r".into(),
            ingest_behind: false,
            status,
            reason: String::new(),
            partitions: vec![Downloaded, Downloading],
            start_time_ms: 0,
        }
    }

    #[test]
    fn preconditions_as_pegasus() {
        assert!(job(Downloading).control("t", Pause).is_ok());
        assert!(job(Ingesting).control("t", Pause).unwrap_err().to_string().contains("BLS_INGESTING"));
        let mut j = job(Paused);
        j.control("t", Restart).unwrap();
        assert_eq!(j.status, Downloading);
        assert_eq!(j.partitions, vec![Downloaded, Downloading]);
        assert!(job(Downloading).control("t", Restart).is_err());
        assert!(job(Paused).control("t", Cancel { force: false }).is_ok());
        assert!(job(Ingesting).control("t", Cancel { force: false }).is_err());
        assert!(job(Ingesting).control("t", Cancel { force: true }).is_ok());
        assert!(job(Succeed).control("t", Cancel { force: true }).is_err());
        assert!(job(Downloading).control("t", Clear).is_err());
    }

    #[test]
    fn partition_dirs() {
        assert_eq!(job(Downloading).partition_dir("t", 3).unwrap(), "r/onebox/t/3");
    }
}
