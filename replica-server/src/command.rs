//! The commands of a partition's raft log and how a replica applies them.
//!
//! Commands are fully decided by the primary before they are proposed: keys are encoded, values
//! carry their header, and anything time-dependent (expiry checks, TTLs) uses the `now` the
//! primary stamped into the command, so every replica applies them to the same result.

use std::collections::HashMap;

use bytes::Bytes;
use rocksdb::{WriteBatch, DB};
use serde::{Deserialize, Serialize};
use wingkv_common::check::{parse_int, CheckType};
use wingkv_common::value::{decode_value, encode_value, expire_ts_for_ttl, is_expired};
use wingkv_common::WingError;

use crate::bulk_load::loader::BulkLoadSource;
use crate::store::data_cf;
use wingkv_common::bulk_load::FileMeta;

/// What `incr` does to the record's TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IncrTtl {
    /// Keep the existing record's expiry.
    Keep,
    /// Expire this many seconds after `now`.
    Set(u32),
    /// Never expire.
    Clear,
}

/// A write in a partition's raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Write one record (`value` carries the header).
    Put {
        /// Encoded key.
        key: Bytes,
        /// Stored value (header + user value).
        value: Bytes,
    },
    /// Delete one record.
    Delete {
        /// Encoded key.
        key: Bytes,
    },
    /// Write several records atomically.
    MultiPut {
        /// `(encoded key, stored value)` pairs.
        entries: Vec<(Bytes, Bytes)>,
    },
    /// Delete several records atomically; answers how many existed.
    MultiDelete {
        /// Encoded keys.
        keys: Vec<Bytes>,
        /// The primary's clock, to count only live records.
        now: u32,
    },
    /// Add `delta` to the integer stored at `key` (absent = 0).
    Incr {
        /// Encoded key.
        key: Bytes,
        /// Amount to add.
        delta: i64,
        /// What happens to the TTL.
        ttl: IncrTtl,
        /// The primary's clock.
        now: u32,
    },
    /// Set `set_key` to `set_value` if the check on `check_key` passes.
    CheckAndSet {
        /// Encoded key whose value is checked.
        check_key: Bytes,
        /// The check.
        check_type: CheckType,
        /// The check's operand.
        operand: Bytes,
        /// Encoded key to set.
        set_key: Bytes,
        /// Stored value to set (header + user value).
        set_value: Bytes,
        /// Whether to answer the checked value.
        return_check_value: bool,
        /// The primary's clock.
        now: u32,
    },
    /// Ingest a bulk-load job's verified SST files (DESIGN §5). Applied by the state machine
    /// itself, after everything before it in the log is written.
    IngestSst {
        /// Where the files come from (a replica that lacks them fetches them again).
        source: BulkLoadSource,
        /// The files, with the size and digest every replica verifies.
        files: Vec<FileMeta>,
        /// Ingest below existing data.
        ingest_behind: bool,
    },
    /// Several client writes proposed as one entry, applied in order as if they were
    /// consecutive entries; answered with one response each. Never holds an `IngestSst`, a
    /// `Batch` or a `Stamped`. Written by releases before [`Command::Stamped`]; still applied.
    Batch(Vec<Command>),
    /// The client writes of one entry (see [`crate::proposal`]), stamped with the primary's
    /// clock: applied like a `Batch`, and `now` advances the partition's log clock, by which
    /// every replica decides TTL expiry in compaction and snapshots (see [`crate::log_clock`]).
    Stamped {
        /// The primary's clock when it proposed the entry (seconds since 2016), never behind
        /// the log clock.
        now: u32,
        /// The writes, in order.
        cmds: Vec<Command>,
    },
}

impl Command {
    /// Whether the command may sit in a `Batch` or `Stamped` entry.
    fn batchable(&self) -> bool {
        !matches!(self, Command::IngestSst { .. } | Command::Batch(_) | Command::Stamped { .. })
    }
}

/// The result of applying one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CommandResponse {
    /// Nothing to report (puts, deletes, membership and blank entries).
    #[default]
    Done,
    /// Number of records a multi-delete removed.
    Deleted(u64),
    /// The value after `incr`.
    Incremented(i64),
    /// The outcome of `check_and_set`.
    CheckAndSet {
        /// Whether the check passed and the set happened.
        succeeded: bool,
        /// The checked user value, when asked for and present.
        check_value: Option<Bytes>,
    },
    /// The command was refused deterministically (e.g. `incr` of a non-integer); nothing was
    /// written.
    Refused(String),
    /// The responses of a [`Command::Batch`], in its order.
    Batch(Vec<CommandResponse>),
}

/// The records an applying batch sees: its own earlier writes first, then the DB.
pub struct BatchView<'a> {
    db: &'a DB,
    batch: WriteBatch,
    overlay: HashMap<Bytes, Option<Bytes>>,
}

impl<'a> BatchView<'a> {
    /// An empty batch over `db`.
    pub fn new(db: &'a DB) -> Self {
        Self { db, batch: WriteBatch::default(), overlay: HashMap::new() }
    }

    /// The stored value at `key` as this batch sees it.
    fn get(&self, key: &Bytes) -> Result<Option<Bytes>, WingError> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v.clone());
        }
        let cf = data_cf(self.db)?;
        Ok(self.db.get_cf(cf, key)?.map(Bytes::from))
    }

    /// The user value at `key` if it exists and is live at `now`.
    fn get_live(&self, key: &Bytes, now: u32) -> Result<Option<(u32, Bytes)>, WingError> {
        let Some(stored) = self.get(key)? else {
            return Ok(None);
        };
        let (ts, user) = decode_value(&stored)?;
        if is_expired(ts, now) {
            return Ok(None);
        }
        Ok(Some((ts, stored.slice(stored.len() - user.len()..))))
    }

    fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), WingError> {
        let cf = data_cf(self.db)?;
        self.batch.put_cf(cf, &key, &value);
        self.overlay.insert(key, Some(value));
        Ok(())
    }

    fn delete(&mut self, key: Bytes) -> Result<(), WingError> {
        let cf = data_cf(self.db)?;
        self.batch.delete_cf(cf, &key);
        self.overlay.insert(key, None);
        Ok(())
    }

    /// The write batch with every change so far, to be extended and written by the caller.
    pub fn into_batch(self) -> WriteBatch {
        self.batch
    }

    /// Applies one command. Deterministic refusals become [`CommandResponse::Refused`];
    /// storage failures are errors.
    pub fn apply(&mut self, cmd: &Command) -> Result<CommandResponse, WingError> {
        Ok(match cmd {
            Command::Put { key, value } => {
                self.put(key.clone(), value.clone())?;
                CommandResponse::Done
            }
            Command::Delete { key } => {
                self.delete(key.clone())?;
                CommandResponse::Done
            }
            Command::MultiPut { entries } => {
                for (k, v) in entries {
                    self.put(k.clone(), v.clone())?;
                }
                CommandResponse::Done
            }
            Command::MultiDelete { keys, now } => {
                let mut deleted = 0;
                for k in keys {
                    if self.get_live(k, *now)?.is_some() {
                        deleted += 1;
                    }
                    self.delete(k.clone())?;
                }
                CommandResponse::Deleted(deleted)
            }
            Command::Incr { key, delta, ttl, now } => {
                let current = self.get_live(key, *now)?;
                let (old_ts, old) = match &current {
                    Some((ts, v)) if v.is_empty() => (*ts, 0),
                    Some((ts, v)) => match parse_int(v, "stored value") {
                        Ok(n) => (*ts, n),
                        Err(e) => return Ok(CommandResponse::Refused(e.to_string())),
                    },
                    None => (0, 0),
                };
                let Some(new) = old.checked_add(*delta) else {
                    return Ok(CommandResponse::Refused(format!("incr overflows: {old} + {delta}")));
                };
                let expire_ts = match ttl {
                    IncrTtl::Keep => old_ts,
                    IncrTtl::Set(s) => expire_ts_for_ttl(*now, *s),
                    IncrTtl::Clear => 0,
                };
                self.put(key.clone(), Bytes::from(encode_value(expire_ts, new.to_string().as_bytes())))?;
                CommandResponse::Incremented(new)
            }
            Command::CheckAndSet { check_key, check_type, operand, set_key, set_value, return_check_value, now } => {
                let current = self.get_live(check_key, *now)?.map(|(_, v)| v);
                let passes = match check_type.passes(current.as_deref(), operand) {
                    Ok(p) => p,
                    Err(e) => return Ok(CommandResponse::Refused(e.to_string())),
                };
                if passes {
                    self.put(set_key.clone(), set_value.clone())?;
                }
                CommandResponse::CheckAndSet {
                    succeeded: passes,
                    check_value: if *return_check_value { current } else { None },
                }
            }
            Command::Batch(cmds) | Command::Stamped { cmds, .. } => {
                // The batcher never builds one; refused alike on every replica if it ever did.
                if !cmds.iter().all(Command::batchable) {
                    return Ok(CommandResponse::Refused("a batch of writes holds an IngestSst or a batch".into()));
                }
                CommandResponse::Batch(cmds.iter().map(|c| self.apply(c)).collect::<Result<_, _>>()?)
            }
            Command::IngestSst { .. } => {
                return Err(WingError::Internal("IngestSst is applied by the state machine, not a batch".into()))
            }
        })
    }
}

/// The largest `IngestSst` of `files` files: each with the longest name and the longest digest
/// in the log's layout (an md5), the longest source.
#[cfg(test)]
pub(crate) fn largest_ingestion(files: usize) -> Command {
    use wingkv_common::file_digest::{DigestKind, FileDigest};
    let digest = FileDigest::new(DigestKind::Md5, "f".repeat(32)).expect("32 hex digits");
    let files =
        (0..files).map(|i| FileMeta { name: format!("{i:0>255}"), size: u64::MAX, digest: digest.clone() }).collect();
    let source = BulkLoadSource { job_id: u64::MAX, provider: "s3".into(), partition_dir: "d".repeat(1024) };
    Command::IngestSst { source, files, ingest_behind: true }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use crate::store::SharedStorage;
    use wingkv_common::key::encode_key;

    fn key(sk: &str) -> Bytes {
        Bytes::from(encode_key(b"hk", sk.as_bytes()).unwrap())
    }

    fn val(ts: u32, v: &str) -> Bytes {
        Bytes::from(encode_value(ts, v.as_bytes()))
    }

    fn apply_all(db: &DB, cmds: &[Command]) -> Vec<CommandResponse> {
        let mut view = BatchView::new(db);
        let out = cmds.iter().map(|c| view.apply(c).unwrap()).collect();
        db.write(view.into_batch()).unwrap();
        out
    }

    #[test]
    fn a_batch_sees_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = SharedStorage::new(StorageConfig::default()).open(dir.path()).unwrap();
        let now = 1_000;
        let out = apply_all(
            &db,
            &[
                Command::Incr { key: key("n"), delta: 2, ttl: IncrTtl::Keep, now },
                Command::Incr { key: key("n"), delta: 3, ttl: IncrTtl::Set(10), now },
                Command::Put { key: key("a"), value: val(0, "x") },
                Command::CheckAndSet {
                    check_key: key("a"),
                    check_type: CheckType::ValueBytesEqual,
                    operand: Bytes::from_static(b"x"),
                    set_key: key("b"),
                    set_value: val(0, "y"),
                    return_check_value: true,
                    now,
                },
                Command::MultiDelete { keys: vec![key("a"), key("zz")], now },
            ],
        );
        assert_eq!(out[0], CommandResponse::Incremented(2));
        assert_eq!(out[1], CommandResponse::Incremented(5));
        assert_eq!(
            out[3],
            CommandResponse::CheckAndSet { succeeded: true, check_value: Some(Bytes::from_static(b"x")) }
        );
        assert_eq!(out[4], CommandResponse::Deleted(1));
        let cf = data_cf(&db).unwrap();
        let n = db.get_cf(cf, key("n")).unwrap().unwrap();
        assert_eq!(decode_value(&n).unwrap(), (1_010, &b"5"[..]));
        assert!(db.get_cf(cf, key("a")).unwrap().is_none());
        assert_eq!(decode_value(&db.get_cf(cf, key("b")).unwrap().unwrap()).unwrap().1, b"y");
    }

    #[test]
    fn expired_records_count_as_absent_and_refusals_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = SharedStorage::new(StorageConfig::default()).open(dir.path()).unwrap();
        apply_all(
            &db,
            &[
                Command::Put { key: key("old"), value: val(500, "41") },
                Command::Put { key: key("t"), value: val(0, "text") },
            ],
        );
        let out = apply_all(
            &db,
            &[
                Command::Incr { key: key("old"), delta: 1, ttl: IncrTtl::Keep, now: 1_000 },
                Command::Incr { key: key("t"), delta: 1, ttl: IncrTtl::Keep, now: 1_000 },
                Command::Incr { key: key("old"), delta: i64::MAX, ttl: IncrTtl::Keep, now: 1_000 },
            ],
        );
        assert_eq!(out[0], CommandResponse::Incremented(1), "an expired record counts as 0");
        assert!(matches!(out[1], CommandResponse::Refused(_)));
        assert!(matches!(out[2], CommandResponse::Refused(ref m) if m.contains("overflow")));
        let cf = data_cf(&db).unwrap();
        assert_eq!(decode_value(&db.get_cf(cf, key("t")).unwrap().unwrap()).unwrap().1, b"text");
    }

    /// A log entry written before format versions (a bare `Command` in the entry) decodes as
    /// an entry of today's log, and a bare command's bytes, written out by hand from bincode's
    /// layout, decode too: a node upgraded in place reads its old log and its old peers.
    #[test]
    fn entries_written_before_format_versions_still_decode() {
        use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId};
        use wingkv_common::raft::versioned::Versioned;
        use wingkv_common::raft::{decode, encode};

        use crate::raft_types::PartitionRaftConfig;

        openraft::declare_raft_types!(
            /// The partition type config of the releases before format versions.
            LegacyConfig:
                D = Command,
                R = CommandResponse,
                NodeId = u64,
                Node = BasicNode,
                Entry = openraft::Entry<LegacyConfig>,
                SnapshotData = tokio::fs::File,
                AsyncRuntime = openraft::TokioRuntime,
        );
        let commands = vec![
            Command::Put { key: key("a"), value: val(0, "x") },
            Command::Batch(vec![
                Command::Delete { key: key("b") },
                Command::Incr { key: key("n"), delta: -3, ttl: IncrTtl::Set(60), now: 7 },
            ]),
        ];
        for (i, cmd) in commands.into_iter().enumerate() {
            let log_id = LogId::new(CommittedLeaderId::new(3, 2), 40 + i as u64);
            let old = Entry::<LegacyConfig> { log_id, payload: EntryPayload::Normal(cmd.clone()) };
            let read: Entry<PartitionRaftConfig> = decode(&encode(&old).unwrap()).unwrap();
            assert_eq!(read.log_id, log_id);
            assert!(matches!(read.payload, EntryPayload::Normal(Versioned(ref c)) if *c == cmd), "{read:?}");
            // Today's entries carry the version tag and read back alike.
            let new: Entry<PartitionRaftConfig> = decode(&encode(&read).unwrap()).unwrap();
            assert!(matches!(new.payload, EntryPayload::Normal(Versioned(ref c)) if *c == cmd));
        }
        // Put { key: "k", value: "v" }: variant 0 (u32), then each field's length (u64) and bytes.
        let bare = [&[0u8, 0, 0, 0][..], &1u64.to_le_bytes(), b"k", &1u64.to_le_bytes(), b"v"].concat();
        let cmd: Versioned<Command> = decode(&bare).unwrap();
        assert_eq!(cmd.0, Command::Put { key: Bytes::from_static(b"k"), value: Bytes::from_static(b"v") });
    }

    /// The largest `IngestSst` the limits allow (every file of a partition at the default
    /// `max_files_per_partition`, each with the longest name) fits in one raft entry.
    #[test]
    fn the_largest_ingestion_fits_in_a_raft_entry() {
        let cmd = largest_ingestion(crate::config::BulkLoadConfig::default().max_files_per_partition);
        let bytes = wingkv_common::raft::encode(&cmd).unwrap().len();
        assert!(bytes < wingkv_common::raft::network::MAX_RAFT_MESSAGE_BYTES / 8, "{bytes} bytes");
    }
}
