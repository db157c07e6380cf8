//! The raft state machine of a partition: applies committed commands to the replica's RocksDB
//! (one WriteBatch per applied batch of entries) and manages its snapshots.

use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder,
    StorageError, StorageIOError, StoredMembership,
};
use rocksdb::DB;
use wingkv_common::raft::{encode, read_err, write_err, NodeId};
use wingkv_common::WingError;

use crate::command::{BatchView, CommandResponse};
use crate::raft_types::PartitionRaftConfig;
use crate::snapshot::{
    read_applied, PartitionSnapshotMeta, SnapshotDir, KEY_LAST_APPLIED, KEY_MEMBERSHIP,
};
use crate::store::{cf, CF_APPLIED};

type SmResult<T> = Result<T, StorageError<NodeId>>;

/// State machine of one partition replica.
pub struct PartitionStateMachine {
    db: Arc<DB>,
    snapshots: SnapshotDir,
    receiving: Option<PathBuf>,
}

impl PartitionStateMachine {
    /// The state machine over `db`, with snapshots in `snapshots`.
    pub fn new(db: Arc<DB>, snapshots: SnapshotDir) -> Self {
        Self {
            db,
            snapshots,
            receiving: None,
        }
    }
}

async fn blocking<T, F>(f: F) -> Result<T, WingError>
where
    F: FnOnce() -> Result<T, WingError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WingError::Internal(format!("blocking task failed: {e}")))?
}

async fn open_snapshot(
    meta: PartitionSnapshotMeta,
    path: PathBuf,
) -> SmResult<Snapshot<PartitionRaftConfig>> {
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| read_err(format!("open {}: {e}", path.display())))?;
    Ok(Snapshot {
        meta,
        snapshot: Box::new(file),
    })
}

/// Builds snapshots from a consistent view of the replica's RocksDB.
pub struct PartitionSnapshotBuilder {
    db: Arc<DB>,
    snapshots: SnapshotDir,
}

impl RaftSnapshotBuilder<PartitionRaftConfig> for PartitionSnapshotBuilder {
    async fn build_snapshot(&mut self) -> SmResult<Snapshot<PartitionRaftConfig>> {
        let (db, dir) = (self.db.clone(), self.snapshots.clone());
        let (meta, path) = blocking(move || dir.build(&db)).await.map_err(write_err)?;
        tracing::info!(snapshot = %meta.snapshot_id, "built snapshot");
        open_snapshot(meta, path).await
    }
}

impl RaftStateMachine<PartitionRaftConfig> for PartitionStateMachine {
    type SnapshotBuilder = PartitionSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> SmResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        read_applied(&self.db).map_err(read_err)
    }

    async fn apply<I>(&mut self, entries: I) -> SmResult<Vec<CommandResponse>>
    where
        I: IntoIterator<Item = Entry<PartitionRaftConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut view = BatchView::new(&self.db);
        let mut responses = Vec::new();
        let mut last = None;
        let mut membership = None;
        for entry in entries {
            last = Some(entry.log_id);
            let resp = match entry.payload {
                EntryPayload::Blank => CommandResponse::Done,
                EntryPayload::Normal(cmd) => view
                    .apply(&cmd)
                    .map_err(|e| StorageIOError::apply(entry.log_id, AnyError::error(e)))?,
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    CommandResponse::Done
                }
            };
            responses.push(resp);
        }
        let mut batch = view.into_batch();
        let applied = cf(&self.db, CF_APPLIED).map_err(write_err)?;
        if let Some(l) = last {
            batch.put_cf(
                applied,
                KEY_LAST_APPLIED,
                encode(&Some(l)).map_err(write_err)?,
            );
        }
        if let Some(m) = membership {
            batch.put_cf(applied, KEY_MEMBERSHIP, encode(&m).map_err(write_err)?);
        }
        // Not synced: the raft log is durable, and RocksDB recovers a prefix of the WAL, so a
        // crash loses at most applied state that is re-applied from the log.
        self.db.write(batch).map_err(write_err)?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        PartitionSnapshotBuilder {
            db: self.db.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> SmResult<Box<tokio::fs::File>> {
        if let Some(old) = self.receiving.take() {
            let _ = tokio::fs::remove_file(old).await;
        }
        let path = self.snapshots.receiving_path();
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| write_err(format!("create {}: {e}", path.display())))?;
        self.receiving = Some(path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &PartitionSnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> SmResult<()> {
        let path = self
            .receiving
            .take()
            .ok_or_else(|| write_err("install_snapshot without a received snapshot"))?;
        snapshot.sync_all().await.map_err(write_err)?;
        drop(snapshot);
        let (db, dir, meta2) = (self.db.clone(), self.snapshots.clone(), meta.clone());
        blocking(move || dir.install(&db, &meta2, &path))
            .await
            .map_err(write_err)?;
        tracing::info!(snapshot = %meta.snapshot_id, last = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SmResult<Option<Snapshot<PartitionRaftConfig>>> {
        match self.snapshots.current().map_err(read_err)? {
            Some((meta, path)) => Ok(Some(open_snapshot(meta, path).await?)),
            None => Ok(None),
        }
    }
}
