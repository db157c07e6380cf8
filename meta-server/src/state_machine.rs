//! The meta group's state machine: the [`Catalog`] in memory, made durable by snapshots kept in
//! the meta RocksDB plus the raft log after them (openraft re-applies the committed log on
//! start).

use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StoredMembership,
};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use wingkv_common::raft::{decode, encode, read_err, write_err, NodeId, CF_RAFT_LOG, CF_RAFT_META};
use wingkv_common::WingError;

use crate::backup::BackupCatalog;
use crate::catalog::{Catalog, ClusterSettings, MetaResponse, MetaValue};
use crate::raft_types::MetaRaftConfig;

/// Column family of the state machine's persisted snapshot.
pub const CF_SNAPSHOT: &str = "sm_snapshot";
const KEY_SNAPSHOT: &[u8] = b"current";

type SmResult<T> = Result<T, StorageError<NodeId>>;

/// The applied state of the meta group.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetaData {
    /// Last applied log id.
    pub last_applied: Option<LogId<NodeId>>,
    /// Last applied membership of the meta group.
    pub membership: StoredMembership<NodeId, BasicNode>,
    /// Tables, nodes and bulk-load jobs: what every meta agrees on.
    pub catalog: Catalog,
}

impl MetaData {
    /// The snapshot encoding: the struct (bincode), then what was added since the first
    /// releases as one JSON object: `Catalog::settings`' fields, and `backups` (backups,
    /// restores, policies). Fields may grow with defaults; an older build reads the struct and
    /// the fields it knows, and ignores the others.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let mut bytes = encode(self).map_err(|e| e.to_string())?;
        let after = SectionsRef { settings: &self.catalog.settings, backups: &self.catalog.backups };
        bytes.extend(serde_json::to_vec(&after).map_err(|e| e.to_string())?);
        Ok(bytes)
    }

    /// Reads [`Self::to_bytes`]'s encoding, or an older build's (defaults for what it lacks).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let mut rest = bytes;
        let mut data: MetaData = bincode::deserialize_from(&mut rest).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            let after: Sections =
                serde_json::from_slice(rest).map_err(|e| format!("the sections after the catalog: {e}"))?;
            data.catalog.settings = after.settings;
            data.catalog.backups = after.backups;
        }
        Ok(data)
    }
}

/// What a snapshot stores after the catalog's struct (written).
#[derive(Serialize)]
struct SectionsRef<'a> {
    #[serde(flatten)]
    settings: &'a ClusterSettings,
    backups: &'a BackupCatalog,
}

/// What a snapshot stores after the catalog's struct (read).
#[derive(Deserialize)]
struct Sections {
    #[serde(flatten)]
    settings: ClusterSettings,
    #[serde(default)]
    backups: BackupCatalog,
}

/// The catalog as every part of the meta server reads it.
pub type SharedMeta = Arc<RwLock<MetaData>>;

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// Opens the meta RocksDB (raft log, raft meta, snapshot).
pub fn open_meta_db(path: &Path) -> Result<Arc<DB>, WingError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = [CF_RAFT_LOG, CF_RAFT_META, CF_SNAPSHOT].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    let db = DB::open_cf_descriptors(&opts, path, cfs)
        .map_err(|e| WingError::Storage(format!("cannot open {}: {}", path.display(), e.into_string())))?;
    Ok(Arc::new(db))
}

/// The state machine of the meta group.
pub struct MetaStateMachine {
    data: SharedMeta,
    db: Arc<DB>,
}

impl MetaStateMachine {
    /// Loads the last persisted snapshot (if any) into memory.
    pub fn open(db: Arc<DB>) -> Result<(Self, SharedMeta), WingError> {
        let data = match load_snapshot(&db)? {
            Some(s) => {
                MetaData::from_bytes(&s.data).map_err(|e| WingError::Corruption(format!("meta snapshot: {e}")))?
            }
            None => MetaData::default(),
        };
        let shared = Arc::new(RwLock::new(data));
        Ok((Self { data: shared.clone(), db }, shared))
    }
}

fn load_snapshot(db: &DB) -> Result<Option<StoredSnapshot>, WingError> {
    let cf =
        db.cf_handle(CF_SNAPSHOT).ok_or_else(|| WingError::Storage("column family sm_snapshot is missing".into()))?;
    match db.get_cf(cf, KEY_SNAPSHOT)? {
        Some(b) => Ok(Some(decode(&b).map_err(|e| WingError::Corruption(format!("meta snapshot: {e}")))?)),
        None => Ok(None),
    }
}

// openraft's StorageError is large by design; it is what the state machine traits return.
#[allow(clippy::result_large_err)]
fn save_snapshot(db: &DB, snap: &StoredSnapshot) -> SmResult<()> {
    let cf = db.cf_handle(CF_SNAPSHOT).ok_or_else(|| write_err("column family sm_snapshot is missing"))?;
    let mut o = WriteOptions::default();
    o.set_sync(true);
    db.put_cf_opt(cf, KEY_SNAPSHOT, encode(snap).map_err(write_err)?, &o).map_err(write_err)
}

/// Builds meta snapshots.
pub struct MetaSnapshotBuilder {
    data: SharedMeta,
    db: Arc<DB>,
}

impl RaftSnapshotBuilder<MetaRaftConfig> for MetaSnapshotBuilder {
    async fn build_snapshot(&mut self) -> SmResult<Snapshot<MetaRaftConfig>> {
        let (bytes, meta) = {
            let d = self.data.read().map_err(|_| read_err("meta state lock poisoned"))?;
            let bytes = d.to_bytes().map_err(read_err)?;
            let id = match d.last_applied {
                Some(l) => format!("{}-{}", l.leader_id.term, l.index),
                None => "0-0".into(),
            };
            (
                bytes,
                SnapshotMeta { last_log_id: d.last_applied, last_membership: d.membership.clone(), snapshot_id: id },
            )
        };
        let stored = StoredSnapshot { meta: meta.clone(), data: bytes };
        save_snapshot(&self.db, &stored)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<MetaRaftConfig> for MetaStateMachine {
    type SnapshotBuilder = MetaSnapshotBuilder;

    async fn applied_state(&mut self) -> SmResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let d = self.data.read().map_err(|_| read_err("meta state lock poisoned"))?;
        Ok((d.last_applied, d.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> SmResult<Vec<MetaResponse>>
    where
        I: IntoIterator<Item = Entry<MetaRaftConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut d = self.data.write().map_err(|_| write_err("meta state lock poisoned"))?;
        let mut out = Vec::new();
        for entry in entries {
            d.last_applied = Some(entry.log_id);
            out.push(match entry.payload {
                EntryPayload::Blank => Ok(MetaValue::Done),
                EntryPayload::Normal(cmd) => d.catalog.apply(&cmd.0),
                EntryPayload::Membership(m) => {
                    d.membership = StoredMembership::new(Some(entry.log_id), m);
                    Ok(MetaValue::Done)
                }
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        MetaSnapshotBuilder { data: self.data.clone(), db: self.db.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> SmResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> SmResult<()> {
        let bytes = snapshot.into_inner();
        let data = MetaData::from_bytes(&bytes).map_err(read_err)?;
        save_snapshot(&self.db, &StoredSnapshot { meta: meta.clone(), data: bytes })?;
        *self.data.write().map_err(|_| write_err("meta state lock poisoned"))? = data;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SmResult<Option<Snapshot<MetaRaftConfig>>> {
        Ok(load_snapshot(&self.db)
            .map_err(read_err)?
            .map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::MetaLevel;

    #[test]
    fn snapshots_of_earlier_builds_load_and_later_sections_round_trip() {
        let mut data = MetaData::default();
        data.catalog.next_app_id = 7;
        // An earlier build's snapshot: the struct alone.
        let earlier = encode(&data).unwrap();
        let read = MetaData::from_bytes(&earlier).unwrap();
        assert_eq!(read.catalog, data.catalog);
        assert_eq!(read.catalog.settings.meta_level, MetaLevel::Steady);

        data.catalog.settings.meta_level = MetaLevel::Lively;
        let bytes = data.to_bytes().unwrap();
        let read = MetaData::from_bytes(&bytes).unwrap();
        assert_eq!(read.catalog.settings.meta_level, MetaLevel::Lively);
        assert_eq!(read.catalog.next_app_id, 7);
        // The settings-only encoding of the build before backups still loads.
        let mut settings_only = encode(&data).unwrap();
        settings_only.extend(serde_json::to_vec(&data.catalog.settings).unwrap());
        let read = MetaData::from_bytes(&settings_only).unwrap();
        assert_eq!(read.catalog.settings.meta_level, MetaLevel::Lively);
        assert_eq!(read.catalog.backups, Default::default());
        data.catalog.backups.last_backup_id = 42;
        let bytes = data.to_bytes().unwrap();
        let read = MetaData::from_bytes(&bytes).unwrap();
        assert_eq!(read.catalog.backups.last_backup_id, 42);
        assert_eq!(read.catalog.settings.meta_level, MetaLevel::Lively);
        // The build before backups reads its settings from the same bytes.
        let rest = &bytes[encode(&data).unwrap().len()..];
        let settings: ClusterSettings = serde_json::from_slice(rest).unwrap();
        assert_eq!(settings.meta_level, MetaLevel::Lively);
        // An earlier build reads the struct and ignores the sections after it.
        let by_earlier: MetaData = decode(&bytes).unwrap();
        assert_eq!(by_earlier.catalog.next_app_id, 7);
    }
}
