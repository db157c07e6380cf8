//! Partition snapshots: one SST file of the user data at a consistent point plus its raft
//! metadata, kept in the replica's `snapshot/` directory.
//!
//! A snapshot is built from a RocksDB snapshot (a consistent point-in-time view, cheap like a
//! checkpoint) by writing the live records into an SST file with `SstFileWriter`; openraft
//! streams that file to followers in chunks of `snapshot_chunk_bytes`, so a snapshot is never
//! held in memory. A follower installs it by clearing its data column family and ingesting the
//! file — the same path bulk load ingestion takes. Only the data travels: a full checkpoint
//! would also carry the sender's raft log and vote, which must never replace the receiver's.
//!
//! Install is crash-safe: an `installing` marker is written before the data is touched and
//! removed in the same synced write that records the new applied state; a replica that opens
//! with the marker present redoes the install from the kept snapshot file.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use openraft::{BasicNode, LogId, SnapshotMeta, StoredMembership};
use rocksdb::{IngestExternalFileOptions, IteratorMode, Options, SstFileWriter, WriteBatch, WriteOptions, DB};
use tokio_util::sync::CancellationToken;
use wingkv_common::raft::{decode, encode, NodeId};
use wingkv_common::sync::MutexExt;
use wingkv_common::time::unix_nanos;
use wingkv_common::value::{is_expired, stored_expire_ts};
use wingkv_common::WingError;

use crate::durable::{sync_dir, write_synced};
use crate::store::{cf, data_cf, CF_APPLIED};

/// Applied-state key: last applied log id (`Option<LogId>`).
pub const KEY_LAST_APPLIED: &[u8] = b"last_applied";
/// Applied-state key: last applied membership (`StoredMembership`).
pub const KEY_MEMBERSHIP: &[u8] = b"membership";
/// Applied-state key: id of a snapshot whose install has not finished.
pub const KEY_INSTALLING: &[u8] = b"installing";
/// Applied-state key: the newest bulk-load job ingested (u64 big-endian). Job ids only grow, so
/// one number tells every job that is ingested (or superseded) here. It is part of the replicated
/// state: snapshots carry it (in their id, the one field openraft sends along with the data), so
/// a replica that catches up by snapshot still refuses a duplicate `IngestSst`.
pub const KEY_INGESTED_JOB: &[u8] = b"ingested_job";

/// Applied-state key: the partition's log clock (u32 big-endian, see [`crate::log_clock`]),
/// carried by snapshots in their id like [`KEY_INGESTED_JOB`].
pub const KEY_LOG_CLOCK: &[u8] = b"log_clock";

/// Decodes the fixed-size big-endian number stored under `name` (absent: all zeroes).
fn decode_be<const N: usize>(name: &str, value: Option<Vec<u8>>) -> Result<[u8; N], WingError> {
    match value {
        None => Ok([0; N]),
        Some(b) => {
            b.as_slice().try_into().map_err(|_| WingError::Corruption(format!("{name} is {} bytes, not {N}", b.len())))
        }
    }
}

/// Decodes a stored [`KEY_LOG_CLOCK`] (absent: 0, nothing stamped applied yet).
pub fn decode_log_clock(value: Option<Vec<u8>>) -> Result<u32, WingError> {
    decode_be("log_clock", value).map(u32::from_be_bytes)
}

/// The log clock stored in `db`.
pub fn log_clock(db: &DB) -> Result<u32, WingError> {
    decode_log_clock(db.get_cf(cf(db, CF_APPLIED)?, KEY_LOG_CLOCK)?)
}

/// The log clock a snapshot id carries (`...-c{clock}-...`), 0 when it carries none.
pub fn log_clock_of_snapshot(snapshot_id: &str) -> u32 {
    snapshot_id.split('-').find_map(|part| part.strip_prefix('c')?.parse().ok()).unwrap_or(0)
}

/// Decodes a stored [`KEY_INGESTED_JOB`] (absent: 0).
fn decode_ingested_job(value: Option<Vec<u8>>) -> Result<u64, WingError> {
    decode_be("ingested_job", value).map(u64::from_be_bytes)
}

/// The newest bulk-load job ingested into `db` (0: none).
pub fn ingested_job(db: &DB) -> Result<u64, WingError> {
    decode_ingested_job(db.get_cf(cf(db, CF_APPLIED)?, KEY_INGESTED_JOB)?)
}

/// The ingested-job mark a snapshot id carries (`...-j{job}`), 0 when it carries none.
fn ingested_job_of_snapshot(snapshot_id: &str) -> u64 {
    snapshot_id.rsplit_once("-j").and_then(|(_, n)| n.parse().ok()).unwrap_or(0)
}

/// Last applied log id and membership of a state machine.
pub type AppliedState = (Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>);

/// Raft metadata of a partition snapshot.
pub type PartitionSnapshotMeta = SnapshotMeta<NodeId, BasicNode>;

/// The `snapshot/` directory of one replica. Clones share one lock: a build (view + commit)
/// and an install (commit + load) never interleave, so a build never sees a half-installed DB
/// and never makes an older snapshot current after an install.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
    lock: std::sync::Arc<std::sync::Mutex<()>>,
}

/// Seconds an expired record is kept, by the log clock, before compaction or a snapshot drops
/// it: a write queued before the latest stamp (its own `now` a little older) still sees the
/// records it would have seen when it was decided.
pub const EXPIRY_GRACE_SECONDS: u32 = 3_600;

/// Whether a record with `expire_ts` may be physically dropped at log clock `clock` (never at
/// clock 0: nothing stamped applied yet).
pub fn droppable(expire_ts: u32, clock: u32) -> bool {
    clock > EXPIRY_GRACE_SECONDS && is_expired(expire_ts, clock - EXPIRY_GRACE_SECONDS)
}

fn storage_err(what: &str, e: impl std::fmt::Display) -> WingError {
    WingError::Storage(format!("{what}: {e}"))
}

/// Decodes the applied state from the stored `last_applied` and `membership` values.
pub(crate) fn decode_applied(last: Option<Vec<u8>>, membership: Option<Vec<u8>>) -> Result<AppliedState, WingError> {
    let last = match last {
        Some(b) => {
            decode::<Option<LogId<NodeId>>>(&b).map_err(|e| WingError::Corruption(format!("last_applied: {e}")))?
        }
        None => None,
    };
    let membership = match membership {
        Some(b) => decode(&b).map_err(|e| WingError::Corruption(format!("membership: {e}")))?,
        None => StoredMembership::default(),
    };
    Ok((last, membership))
}

/// Reads the applied state (`last applied`, `membership`) from `db`.
pub fn read_applied(db: &DB) -> Result<AppliedState, WingError> {
    let applied = cf(db, CF_APPLIED)?;
    decode_applied(db.get_cf(applied, KEY_LAST_APPLIED)?, db.get_cf(applied, KEY_MEMBERSHIP)?)
}

impl SnapshotDir {
    /// Opens (creates) the directory and removes leftovers of interrupted builds and transfers.
    pub fn open(dir: PathBuf) -> Result<Self, WingError> {
        fs::create_dir_all(&dir).map_err(|e| storage_err("create snapshot dir", e))?;
        let this = Self { dir, lock: Default::default() };
        for entry in fs::read_dir(&this.dir).map_err(|e| storage_err("list snapshot dir", e))? {
            let entry = entry.map_err(|e| storage_err("list snapshot dir", e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("building-") || name.starts_with("receiving-") || name.starts_with("ingest-") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(this)
    }

    /// Holds off builds and installs while a bulk-load ingestion and its applied-state mark
    /// are written: a snapshot never holds ingested rows with the applied index before them
    /// (a replica installing it would replay the ingestion).
    pub fn exclusive(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.locked()
    }

    fn sst_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.sst"))
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.meta"))
    }

    /// A fresh path for a snapshot being received from the leader.
    pub fn receiving_path(&self) -> PathBuf {
        self.dir.join(format!("receiving-{}.sst", unix_nanos()))
    }

    /// The current snapshot: its metadata and SST path.
    pub fn current(&self) -> Result<Option<(PartitionSnapshotMeta, PathBuf)>, WingError> {
        let _guard = self.lock.locked();
        let id = match fs::read_to_string(self.dir.join("CURRENT")) {
            Ok(id) => id.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(storage_err("read snapshot CURRENT", e)),
        };
        Ok(Some((self.read_meta(&id)?, self.sst_path(&id))))
    }

    fn read_meta(&self, id: &str) -> Result<PartitionSnapshotMeta, WingError> {
        let text = fs::read(self.meta_path(id)).map_err(|e| storage_err("read snapshot meta", e))?;
        serde_json::from_slice(&text).map_err(|e| WingError::Corruption(format!("snapshot meta {id}: {e}")))
    }

    /// Puts the SST at `sst` (in this directory) and `meta` in place under the snapshot's id.
    fn stage(&self, meta: &PartitionSnapshotMeta, sst: &Path) -> Result<(), WingError> {
        let id = &meta.snapshot_id;
        File::open(sst).and_then(|f| f.sync_all()).map_err(|e| storage_err("sync snapshot file", e))?;
        fs::rename(sst, self.sst_path(id)).map_err(|e| storage_err("rename snapshot file", e))?;
        let meta_json = serde_json::to_vec(meta).map_err(|e| storage_err("encode snapshot meta", e))?;
        write_synced(&self.meta_path(id), &meta_json)?;
        sync_dir(&self.dir)
    }

    /// Makes the staged snapshot `id` current and removes every other snapshot.
    fn make_current(&self, id: &str) -> Result<(), WingError> {
        let tmp = self.dir.join("CURRENT.tmp");
        write_synced(&tmp, id.as_bytes())?;
        fs::rename(&tmp, self.dir.join("CURRENT")).map_err(|e| storage_err("update snapshot CURRENT", e))?;
        sync_dir(&self.dir)?;
        for entry in fs::read_dir(&self.dir).map_err(|e| storage_err("list snapshot dir", e))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let keep = name == "CURRENT" || name == format!("{id}.sst") || name == format!("{id}.meta");
            // Files of an ongoing transfer, build or ingestion are not ours to remove here.
            let in_flight =
                name.starts_with("receiving-") || name.starts_with("building-") || name.starts_with("ingest-");
            if !keep && !in_flight {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Builds a snapshot of `db` (blocking: call from a blocking thread) and makes it current.
    pub fn build(&self, db: &DB) -> Result<(PartitionSnapshotMeta, PathBuf), WingError> {
        let _guard = self.lock.locked();
        let view = db.snapshot();
        let applied = cf(db, CF_APPLIED)?;
        let (last_log_id, last_membership) =
            decode_applied(view.get_cf(applied, KEY_LAST_APPLIED)?, view.get_cf(applied, KEY_MEMBERSHIP)?)?;
        let ingested = decode_ingested_job(view.get_cf(applied, KEY_INGESTED_JOB)?)?;
        // Expiry by the log clock of this very view: every replica builds the same contents
        // from the same applied state.
        let clock = decode_log_clock(view.get_cf(applied, KEY_LOG_CLOCK)?)?;
        let tmp = self.dir.join(format!("building-{}.sst", unix_nanos()));
        let mut opts = Options::default();
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let mut writer: Option<SstFileWriter> = None;
        for item in view.iterator_cf(data_cf(db)?, IteratorMode::Start) {
            let (k, v) = item?;
            if stored_expire_ts(&v).is_some_and(|ts| droppable(ts, clock)) {
                continue;
            }
            if writer.is_none() {
                let w = SstFileWriter::create(&opts);
                w.open(&tmp)?;
                writer = Some(w);
            }
            if let Some(w) = writer.as_mut() {
                w.put(&k, &v)?;
            }
        }
        match writer.as_mut() {
            Some(w) => w.finish()?,
            // No live records: an empty file stands for an empty partition.
            None => drop(File::create(&tmp).map_err(|e| storage_err("create snapshot file", e))?),
        }
        drop(writer);
        let id = match &last_log_id {
            Some(l) => format!("{}-{}-{}-c{clock}-j{ingested}", l.leader_id.term, l.index, unix_nanos()),
            None => format!("0-0-{}-c{clock}-j{ingested}", unix_nanos()),
        };
        let meta = PartitionSnapshotMeta { last_log_id, last_membership, snapshot_id: id.clone() };
        self.stage(&meta, &tmp)?;
        self.make_current(&id)?;
        Ok((meta, self.sst_path(&id)))
    }

    /// Replaces the contents of `db` with the snapshot `meta` whose SST is `sst` (blocking).
    pub fn install(&self, db: &DB, meta: &PartitionSnapshotMeta, sst: &Path) -> Result<(), WingError> {
        let _guard = self.lock.locked();
        self.stage(meta, sst)?;
        // The marker goes down before anything is deleted or replaced: from here on, a crash
        // makes the next open finish this install from the staged files.
        let applied = cf(db, CF_APPLIED)?;
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        db.put_cf_opt(applied, KEY_INSTALLING, meta.snapshot_id.as_bytes(), &synced)?;
        self.make_current(&meta.snapshot_id)?;
        self.load_into(db, meta)
    }

    /// Finishes an install that a crash interrupted, if any (called when a replica opens).
    pub fn recover_interrupted_install(&self, db: &DB) -> Result<(), WingError> {
        let applied = cf(db, CF_APPLIED)?;
        let Some(id) = db.get_cf(applied, KEY_INSTALLING)? else {
            return Ok(());
        };
        let id = String::from_utf8_lossy(&id).to_string();
        tracing::warn!(snapshot = %id, "redoing a snapshot install interrupted by a crash");
        let meta = self.read_meta(&id)?;
        self.load_into(db, &meta)
    }

    /// Clears the data column family, ingests the snapshot's SST and records the applied
    /// state, removing the `installing` marker in the same synced write.
    fn load_into(&self, db: &DB, meta: &PartitionSnapshotMeta) -> Result<(), WingError> {
        let data = data_cf(db)?;
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        // Every encoded key starts with a u16 length; keys of 65535-byte hash keys may sort
        // after the range end, so they are deleted one by one.
        let mut clear = WriteBatch::default();
        clear.delete_range_cf(data, &[][..], &[0xFFu8, 0xFF][..]);
        for item in db.iterator_cf(data, IteratorMode::From(&[0xFF, 0xFF], rocksdb::Direction::Forward)) {
            let (k, _) = item?;
            clear.delete_cf(data, k);
        }
        db.write_opt(clear, &synced)?;
        let sst = self.sst_path(&meta.snapshot_id);
        let len = fs::metadata(&sst).map_err(|e| storage_err("stat snapshot file", e))?.len();
        if len > 0 {
            // Ingest a link so the snapshot file itself stays to be sent to other followers.
            let link = self.dir.join(format!("ingest-{}.sst", unix_nanos()));
            fs::hard_link(&sst, &link).map_err(|e| storage_err("link snapshot file", e))?;
            let mut opts = IngestExternalFileOptions::default();
            opts.set_move_files(true);
            let res = db.ingest_external_file_cf_opts(data, &opts, vec![&link]);
            let _ = fs::remove_file(&link);
            res?;
        }
        let applied = cf(db, CF_APPLIED)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(applied, KEY_LAST_APPLIED, encode(&meta.last_log_id).map_err(|e| storage_err("encode", e))?);
        batch.put_cf(applied, KEY_MEMBERSHIP, encode(&meta.last_membership).map_err(|e| storage_err("encode", e))?);
        match ingested_job_of_snapshot(&meta.snapshot_id) {
            0 => batch.delete_cf(applied, KEY_INGESTED_JOB),
            job => batch.put_cf(applied, KEY_INGESTED_JOB, job.to_be_bytes()),
        }
        batch.put_cf(applied, KEY_LOG_CLOCK, log_clock_of_snapshot(&meta.snapshot_id).to_be_bytes());
        batch.delete_cf(applied, KEY_INSTALLING);
        db.write_opt(batch, &synced)?;
        Ok(())
    }
}

/// Applied index, record count and an order-sensitive digest of every live record, all read
/// from one consistent view (blocking). Replicas at the same applied index must agree. Stops
/// with `Unavailable` once `stop` is cancelled (its request was abandoned).
pub fn checksum(db: &DB, stop: &CancellationToken) -> Result<(u64, u64, u64), WingError> {
    let view = db.snapshot();
    let applied = cf(db, CF_APPLIED)?;
    let (last, _) = decode_applied(view.get_cf(applied, KEY_LAST_APPLIED)?, None)?;
    let mut count = 0u64;
    let mut digest = 0u64;
    // Live by the log clock of this view, the same on every replica at this applied index.
    let now = decode_log_clock(view.get_cf(applied, KEY_LOG_CLOCK)?)?;
    for (i, item) in view.iterator_cf(data_cf(db)?, IteratorMode::Start).enumerate() {
        if i % 4096 == 0 && stop.is_cancelled() {
            return Err(WingError::Unavailable("checksum abandoned by its caller".into()));
        }
        let (k, v) = item?;
        // Expired records are invisible; whether one is still on disk depends on compaction.
        if stored_expire_ts(&v).is_some_and(|ts| is_expired(ts, now)) {
            continue;
        }
        count += 1;
        let mut rec = Vec::with_capacity(k.len() + v.len() + 16);
        rec.extend_from_slice(&digest.to_be_bytes());
        rec.extend_from_slice(&(k.len() as u64).to_be_bytes());
        rec.extend_from_slice(&k);
        rec.extend_from_slice(&v);
        digest = wingkv_common::hash::crc64(&rec);
    }
    Ok((last.map(|l| l.index).unwrap_or(0), count, digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use crate::store::SharedStorage;
    use openraft::{CommittedLeaderId, Membership};
    use std::collections::BTreeSet;
    use wingkv_common::value::encode_value;

    fn fill(db: &DB, n: usize, applied: u64) {
        let data = data_cf(db).unwrap();
        for i in 0..n {
            let k = wingkv_common::key::encode_key(format!("h{i}").as_bytes(), b"s").unwrap();
            db.put_cf(data, k, encode_value(0, format!("v{i}").as_bytes())).unwrap();
        }
        // One expired record that a snapshot leaves out.
        let k = wingkv_common::key::encode_key(b"expired", b"s").unwrap();
        db.put_cf(data, k, encode_value(1, b"gone")).unwrap();
        let log_id = LogId::new(CommittedLeaderId::new(3, 1), applied);
        let membership: StoredMembership<NodeId, BasicNode> =
            StoredMembership::new(Some(log_id), Membership::new(vec![BTreeSet::from([1u64])], None));
        let ap = cf(db, CF_APPLIED).unwrap();
        db.put_cf(ap, KEY_LAST_APPLIED, encode(&Some(log_id)).unwrap()).unwrap();
        db.put_cf(ap, KEY_MEMBERSHIP, encode(&membership).unwrap()).unwrap();
        // A log clock far past the expired record's time and grace.
        db.put_cf(ap, KEY_LOG_CLOCK, CLOCK.to_be_bytes()).unwrap();
    }

    const CLOCK: u32 = 100_000;

    #[test]
    fn build_then_install_reproduces_the_data() {
        let storage = SharedStorage::new(StorageConfig::default());
        let src_dir = tempfile::tempdir().unwrap();
        let src = storage.open(&src_dir.path().join("db")).unwrap();
        fill(&src, 500, 42);
        src.put_cf(cf(&src, CF_APPLIED).unwrap(), KEY_INGESTED_JOB, 7u64.to_be_bytes()).unwrap();
        let snaps = SnapshotDir::open(src_dir.path().join("snapshot")).unwrap();
        let (meta, path) = snaps.build(&src).unwrap();
        assert_eq!(meta.last_log_id.map(|l| l.index), Some(42));
        assert_eq!(snaps.current().unwrap().unwrap().0, meta);

        let dst_dir = tempfile::tempdir().unwrap();
        let dst = storage.open(&dst_dir.path().join("db")).unwrap();
        // Stale data on the receiver must disappear.
        let stale = wingkv_common::key::encode_key(b"stale", b"").unwrap();
        dst.put_cf(data_cf(&dst).unwrap(), &stale, encode_value(0, b"x")).unwrap();
        let dst_snaps = SnapshotDir::open(dst_dir.path().join("snapshot")).unwrap();
        let received = dst_snaps.receiving_path();
        std::fs::copy(&path, &received).unwrap();
        dst_snaps.install(&dst, &meta, &received).unwrap();

        let (applied, count, _) = checksum(&dst, &CancellationToken::new()).unwrap();
        assert_eq!((applied, count), (42, 500));
        assert_eq!(checksum(&src, &CancellationToken::new()).unwrap().1, 500, "expired records do not count");
        assert!(dst.get_cf(data_cf(&dst).unwrap(), &stale).unwrap().is_none());
        let (last, membership) = read_applied(&dst).unwrap();
        assert_eq!(last, meta.last_log_id);
        assert_eq!(membership, meta.last_membership);
        assert_eq!(ingested_job(&dst).unwrap(), 7, "the ingested-job mark travels with the snapshot");
        assert_eq!(log_clock(&dst).unwrap(), CLOCK, "the log clock travels with the snapshot");
        // The installed snapshot is kept to be served to other followers.
        assert_eq!(dst_snaps.current().unwrap().unwrap().0, meta);
    }

    #[test]
    fn an_interrupted_install_is_redone_on_open() {
        let storage = SharedStorage::new(StorageConfig::default());
        let dir = tempfile::tempdir().unwrap();
        let db = storage.open(&dir.path().join("db")).unwrap();
        fill(&db, 10, 7);
        let snaps = SnapshotDir::open(dir.path().join("snapshot")).unwrap();
        let (meta, _) = snaps.build(&db).unwrap();
        // Simulate a crash after the marker was written and the data half cleared.
        let ap = cf(&db, CF_APPLIED).unwrap();
        db.put_cf(ap, KEY_INSTALLING, meta.snapshot_id.as_bytes()).unwrap();
        let first = wingkv_common::key::encode_key(b"h0", b"s").unwrap();
        db.delete_cf(data_cf(&db).unwrap(), first).unwrap();
        snaps.recover_interrupted_install(&db).unwrap();
        assert_eq!(checksum(&db, &CancellationToken::new()).unwrap().1, 10);
        let abandoned = CancellationToken::new();
        abandoned.cancel();
        assert_eq!(checksum(&db, &abandoned).unwrap_err().code(), wingkv_common::ErrorCode::Unavailable);
        assert!(db.get_cf(ap, KEY_INSTALLING).unwrap().is_none());
    }

    #[test]
    fn an_empty_partition_snapshots_to_an_empty_file() {
        let storage = SharedStorage::new(StorageConfig::default());
        let dir = tempfile::tempdir().unwrap();
        let db = storage.open(&dir.path().join("db")).unwrap();
        let snaps = SnapshotDir::open(dir.path().join("snapshot")).unwrap();
        let (meta, path) = snaps.build(&db).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        let received = snaps.receiving_path();
        std::fs::copy(&path, &received).unwrap();
        snaps.install(&db, &meta, &received).unwrap();
        assert_eq!(checksum(&db, &CancellationToken::new()).unwrap(), (0, 0, 0));
    }
}
