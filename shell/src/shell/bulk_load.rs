//! The bulk-load commands: `start_bulk_load`, `query_bulk_load_status`, and `pause`, `restart`,
//! `cancel`, `clear` — each answering the job's status — plus the one-line progress bar of the
//! live display.

use anyhow::Result;
use serde::Serialize;
use wingkv_client::{Admin, BulkLoadSource, BulkLoadStatus, BulkLoadStatusResponse};

use super::format::{ms_to_time, rows, Col, View};

/// One replica's download of a partition's files.
#[derive(Serialize)]
struct ReplicaView {
    node_id: u64,
    status: String,
    downloaded_bytes: u64,
    total_bytes: u64,
    reason: String,
    /// Download tasks running on that replica now.
    live_tasks: u64,
    /// Transient download failures retried so far, and the current backoff.
    retries: u32,
    backoff_ms: u64,
}

/// One partition of a job.
#[derive(Serialize)]
struct PartitionView {
    partition_index: u32,
    status: String,
    #[serde(skip)]
    state: BulkLoadStatus,
    /// Downloaded share of the partition's bytes, over its replicas.
    progress_percent: u32,
    /// The meta's calls to the primary that failed transiently in a row, the backoff before
    /// the next one, and the last such error.
    drive_attempts: u32,
    drive_backoff_ms: u64,
    last_error: String,
    /// Unix ms since which nothing moved (0: not stalled).
    stalled_since_ms: u64,
    /// Per replica; filled only for a detailed query.
    replicas: Vec<ReplicaView>,
}

impl PartitionView {
    /// Where the driver is waiting, or stuck: shown always, since that is what needs eyes.
    fn note(&self) -> String {
        let mut note = Vec::new();
        if self.stalled_since_ms > 0 {
            note.push(format!("stalled since {}", ms_to_time(self.stalled_since_ms)));
        }
        if self.drive_attempts > 0 {
            note.push(format!(
                "retry {} (backoff {} ms): {}",
                self.drive_attempts, self.drive_backoff_ms, self.last_error
            ));
        }
        note.join("; ")
    }

    /// Each replica as `node1:STATUS:downloaded/total:tasks=N[:retries=N:backoff=Nms]`.
    fn replicas_line(&self) -> String {
        self.replicas
            .iter()
            .map(|x| {
                let mut r = format!(
                    "node{}:{}:{}/{}:tasks={}",
                    x.node_id, x.status, x.downloaded_bytes, x.total_bytes, x.live_tasks
                );
                if x.retries > 0 {
                    r.push_str(&format!(":retries={}:backoff={}ms", x.retries, x.backoff_ms));
                }
                r
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Which command a [`BulkLoadView`] answers, for its text.
#[derive(Clone, Copy)]
enum Shown {
    Started,
    /// A status query; `true`: with each replica's progress.
    Status(bool),
    /// A control action, by name (`pause`, `cancel`, ...).
    Controlled(&'static str),
}

/// A table's bulk-load job, as every bulk-load command answers it.
#[derive(Serialize)]
pub struct BulkLoadView {
    app_name: String,
    /// 0 when the table has no job.
    job_id: u64,
    /// The status's name; `BLS_INVALID` when the table has no job.
    pub status: String,
    #[serde(skip)]
    state: BulkLoadStatus,
    reason: String,
    /// `provider://root/cluster/table`.
    source: String,
    partitions: Vec<PartitionView>,
    #[serde(skip)]
    shown: Shown,
}

impl BulkLoadView {
    fn new(r: BulkLoadStatusResponse, shown: Shown) -> Self {
        let state = r.status();
        let partitions = r
            .partitions
            .into_iter()
            .map(|p| PartitionView {
                partition_index: p.partition_index,
                status: p.status().as_str_name().to_string(),
                state: p.status(),
                progress_percent: p.progress_percent,
                drive_attempts: p.drive_attempts,
                drive_backoff_ms: p.drive_backoff_ms,
                last_error: p.last_error,
                stalled_since_ms: p.stalled_since_ms,
                replicas: p
                    .replicas
                    .into_iter()
                    .map(|x| ReplicaView {
                        node_id: x.node_id,
                        status: x.status().as_str_name().to_string(),
                        downloaded_bytes: x.downloaded_bytes,
                        total_bytes: x.total_bytes,
                        reason: x.reason,
                        live_tasks: x.live_tasks,
                        retries: x.retries,
                        backoff_ms: x.backoff_ms,
                    })
                    .collect(),
            })
            .collect();
        Self {
            app_name: r.app_name,
            job_id: r.job_id,
            status: state.as_str_name().to_string(),
            state,
            reason: r.reason,
            source: r.source,
            partitions,
            shown,
        }
    }

    /// Whether the job is still moving (the live display keeps refreshing it).
    pub fn running(&self) -> bool {
        use BulkLoadStatus::{BlsDownloaded, BlsDownloading, BlsIngesting, BlsPausing};
        matches!(self.state, BlsDownloading | BlsDownloaded | BlsIngesting | BlsPausing)
    }

    /// One line: a bar of `width` cells for the job's overall progress (the mean of its
    /// partitions'), the status, and how many partitions are done.
    pub fn progress_bar(&self, width: usize) -> String {
        let parts = &self.partitions;
        let percent = if parts.is_empty() {
            0
        } else {
            parts.iter().map(|p| u64::from(p.progress_percent)).sum::<u64>() / parts.len() as u64
        };
        let done = parts
            .iter()
            .filter(|p| {
                matches!(
                    p.state,
                    BulkLoadStatus::BlsDownloaded | BulkLoadStatus::BlsIngesting | BulkLoadStatus::BlsSucceed
                )
            })
            .count();
        let filled = (percent.min(100) as usize * width) / 100;
        format!(
            "[{}{}] {percent:>3}%  {}  {done}/{} partitions downloaded",
            "#".repeat(filled),
            "-".repeat(width - filled),
            self.status,
            parts.len()
        )
    }

    /// `r` as `query_bulk_load_status` shows it (`detailed`: with each replica's progress).
    /// Also the load of a restore, which `query_restore_status` shows.
    pub(crate) fn status_view(r: BulkLoadStatusResponse, detailed: bool) -> Self {
        Self::new(r, Shown::Status(detailed))
    }

    fn status_text(&self, detailed: bool) -> String {
        let mut out = format!("table: {}  job: {}  status: {}", self.app_name, self.job_id, self.status);
        if !self.reason.is_empty() {
            out.push_str(&format!("\nreason: {}", self.reason));
        }
        if !self.source.is_empty() {
            out.push_str(&format!("\nsource: {}", self.source));
        }
        let partitions = self.partitions_text(detailed);
        if partitions.is_empty() {
            return out;
        }
        out.push_str("\n\n");
        out.push_str(&partitions);
        out
    }

    /// The job's partitions as a table (with each replica's progress when `detailed`), or
    /// nothing when it has none. `query_restore_status` shows its load's with it.
    pub(crate) fn partitions_text(&self, detailed: bool) -> String {
        if self.partitions.is_empty() {
            return String::new();
        }
        let mut cols = vec![
            Col::plain("partition_index"),
            Col::plain("status"),
            Col::percent("progress_percent"),
            // Only when some partition has something to say.
            Col::derived("note", PartitionView::note).omit_empty(),
        ];
        if detailed {
            cols.push(Col::derived("replicas", PartitionView::replicas_line));
        }
        rows(&self.partitions, &cols)
    }
}

impl View for BulkLoadView {
    fn text(&self) -> String {
        match self.shown {
            Shown::Started => {
                format!("start bulk load succeed: table \"{}\" job {} from {}", self.app_name, self.job_id, self.source)
            }
            Shown::Status(detailed) => self.status_text(detailed),
            Shown::Controlled(what) => {
                format!("{what} bulk load succeed: table \"{}\" is {}", self.app_name, self.status)
            }
        }
    }
}

/// Runs `start_bulk_load`.
pub async fn start(admin: &Admin, table: &str, source: &BulkLoadSource, ingest_behind: bool) -> Result<BulkLoadView> {
    let r = admin.start_bulk_load(table, source, ingest_behind).await?;
    Ok(BulkLoadView::new(r, Shown::Started))
}

/// Runs `query_bulk_load_status`.
pub async fn status(admin: &Admin, table: &str, partition: Option<u32>, detailed: bool) -> Result<BulkLoadView> {
    let r = admin.bulk_load_status(table, partition, detailed).await?;
    Ok(BulkLoadView::new(r, Shown::Status(detailed)))
}

/// A control action on a job.
#[derive(Clone, Copy)]
pub enum Control {
    /// `pause_bulk_load`: stop downloading, keep what was downloaded.
    Pause,
    /// `restart_bulk_load`: resume a paused job.
    Restart,
    /// `cancel_bulk_load`; `true` (`-f`): forced, from any live status.
    Cancel(bool),
    /// `clear_bulk_load`: remove a finished job's record.
    Clear,
}

/// Runs `pause_bulk_load`, `restart_bulk_load`, `cancel_bulk_load` or `clear_bulk_load`.
pub async fn control(admin: &Admin, table: &str, action: Control) -> Result<BulkLoadView> {
    let (r, what) = match action {
        Control::Pause => (admin.pause_bulk_load(table).await?, "pause"),
        Control::Restart => (admin.restart_bulk_load(table).await?, "restart"),
        Control::Cancel(forced) => (admin.cancel_bulk_load(table, forced).await?, "cancel"),
        Control::Clear => (admin.clear_bulk_load(table).await?, "clear"),
    };
    Ok(BulkLoadView::new(r, Shown::Controlled(what)))
}

#[cfg(test)]
mod tests {
    use wingkv_proto::meta::PartitionBulkLoadStatus;

    use super::*;

    fn by_name(name: &str) -> i32 {
        BulkLoadStatus::from_str_name(name).map_or(-1, i32::from)
    }

    fn job(status: &str, partitions: &[(&str, u32)]) -> BulkLoadView {
        let r = BulkLoadStatusResponse {
            app_name: "t".into(),
            job_id: 1,
            status: by_name(status),
            partitions: partitions
                .iter()
                .enumerate()
                .map(|(i, (s, p))| PartitionBulkLoadStatus {
                    partition_index: i as u32,
                    status: by_name(s),
                    progress_percent: *p,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        BulkLoadView::new(r, Shown::Status(false))
    }

    #[test]
    fn progress_bar_shows_the_mean_of_the_partitions() {
        let view = job("BLS_DOWNLOADING", &[("BLS_DOWNLOADED", 100), ("BLS_DOWNLOADING", 0)]);
        assert_eq!(view.progress_bar(10), "[#####-----]  50%  BLS_DOWNLOADING  1/2 partitions downloaded");
        assert!(job("BLS_INVALID", &[]).progress_bar(4).starts_with("[----]   0%"));
        assert!(job("BLS_INGESTING", &[]).running() && !job("BLS_SUCCEED", &[]).running());
    }

    #[test]
    fn the_note_column_shows_only_when_a_partition_has_one() {
        let mut view = job("BLS_DOWNLOADING", &[("BLS_DOWNLOADING", 10), ("BLS_DOWNLOADING", 20)]);
        assert_eq!(
            view.text(),
            "table: t  job: 1  status: BLS_DOWNLOADING\n\n\
             partition_index  status           progress\n\
             0                BLS_DOWNLOADING  10%\n\
             1                BLS_DOWNLOADING  20%"
        );
        view.partitions[1].drive_attempts = 2;
        view.partitions[1].drive_backoff_ms = 400;
        view.partitions[1].last_error = "busy".into();
        assert!(view.text().ends_with("progress  note\n0                BLS_DOWNLOADING  10%\n1                BLS_DOWNLOADING  20%       retry 2 (backoff 400 ms): busy"), "{}", view.text());
    }
}
