//! The data service: the key-value operations, served by partition primaries.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use rocksdb::DB;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use wingkv_common::check::CheckType;
use wingkv_common::hash::partition_index;
use wingkv_common::key::{decode_key, encode_key, validate_hash_key};
use wingkv_common::metrics::{record_partition, ServerMetrics};
use wingkv_common::value::{decode_value, encode_value, expire_ts_for_ttl, is_expired, remaining_ttl};
use wingkv_common::{PartitionId, WingError};
use wingkv_proto::common::PartitionId as ProtoPartitionId;
use wingkv_proto::data::data_server::Data;
use wingkv_proto::data::*;

use crate::admission::client_timeout;
use crate::command::{Command, CommandResponse, IncrTtl};
use crate::disk_space::DiskGuard;
use crate::load_shed::{InFlight, LoadShedder};
use crate::manager::ReplicaManager;
use crate::range::{KeyRange, RangeRecord, ReadLimits};
use crate::replica::Replica;
use crate::store::data_cf;

/// Records per streamed scan batch when the request does not say.
const DEFAULT_SCAN_BATCH: usize = 1_000;
/// Most records per streamed scan batch.
const MAX_SCAN_BATCH: usize = 10_000;
/// Bytes of keys and values one `multi_get` answer or scan batch carries at most (plus the one
/// record that crosses the limit): far under the 4 MiB a stock gRPC client accepts. A larger
/// answer is `incomplete` (multi_get) or goes on in the next batch (scan).
const MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// Records one slice of a scan or count examines (expired ones included) before it yields, so a
/// cancelled request stops within one slice and other tasks run in between.
const SLICE_STEPS: usize = 10_000;
/// Records a range `multi_get` examines at most; past it the answer is `incomplete`.
const MULTI_GET_STEPS: usize = 100_000;
/// Most sort keys one `multi_get`, `multi_set` or `multi_del` names.
pub const MAX_SORT_KEYS_PER_REQUEST: usize = 100_000;

/// Refuses a request naming more than [`MAX_SORT_KEYS_PER_REQUEST`] sort keys.
fn check_sort_key_count(op: &str, n: usize) -> Result<(), WingError> {
    if n > MAX_SORT_KEYS_PER_REQUEST {
        return Err(WingError::InvalidArgument(format!(
            "{op} names {n} sort keys; the limit is {MAX_SORT_KEYS_PER_REQUEST} per request"
        )));
    }
    Ok(())
}

/// Reads one slice of `replica`'s `range` on a blocking thread: RocksDB iteration never runs on
/// the runtime threads that drive every partition's raft. The slice holds the replica (its
/// close waits for it) even if the request is dropped meanwhile.
async fn read_slice(
    replica: &Replica,
    mut range: KeyRange,
    limits: ReadLimits,
    now: u32,
    with_values: bool,
) -> Result<(KeyRange, Vec<RangeRecord>), WingError> {
    let (db, hold) = (replica.db().clone(), replica.hold());
    tokio::task::spawn_blocking(move || {
        let _hold = hold;
        let records = range.read(&db, limits, now, with_values)?;
        Ok((range, records))
    })
    .await
    .map_err(|e| WingError::Internal(format!("range read task failed: {e}")))?
}

/// Records a `multi_get` reads on the runtime before it moves to a blocking thread: a few
/// reads hit the memtable or the block cache and cost less than the thread hop.
const INLINE_STEPS: usize = 64;

/// The point reads of a `multi_get` of `sort_keys` (blocking): the live records, in request
/// order, each sort key once, until `max_count` records or `max_bytes`; and whether a limit
/// cut the answer short.
fn point_reads(
    db: &DB,
    hash_key: &[u8],
    sort_keys: &[Bytes],
    max_count: usize,
    max_bytes: u64,
    now: u32,
    no_value: bool,
) -> Result<(Vec<KeyValue>, bool), WingError> {
    let mut kvs = Vec::new();
    let mut seen = HashSet::with_capacity(sort_keys.len());
    let mut bytes = 0u64;
    for sk in sort_keys {
        if !seen.insert(sk) {
            continue;
        }
        if kvs.len() >= max_count || bytes >= max_bytes {
            return Ok((kvs, true));
        }
        let key = encode_key(hash_key, sk)?;
        if let Some((_, v)) = read_live(db, &key, now)? {
            bytes += (sk.len() + v.len()) as u64;
            let value = if no_value { Bytes::new() } else { v.into() };
            kvs.push(KeyValue { sort_key: sk.clone(), value });
        }
    }
    Ok((kvs, false))
}

/// The byte limit of one answer: the request's, within [`MAX_RESPONSE_BYTES`] (0 = the cap).
fn response_bytes(requested: u64) -> u64 {
    if requested == 0 {
        MAX_RESPONSE_BYTES
    } else {
        requested.min(MAX_RESPONSE_BYTES)
    }
}

/// Serves key-value requests for every hosted replica. Cheap to clone (a `Batch` stream holds
/// a clone while it is served).
#[derive(Clone)]
pub struct DataService {
    manager: Arc<ReplicaManager>,
    shed: Arc<LoadShedder>,
    disk: Arc<DiskGuard>,
    /// Where the requests of a `Batch` stream are counted one by one, like unary calls.
    metrics: Arc<ServerMetrics>,
    /// Fires when the server stops: a `Batch` stream then takes no more requests and ends once
    /// those it took are answered, as a unary call in progress would (graceful stop waits for
    /// open streams, and the client's stream would never end by itself).
    stopping: CancellationToken,
}

impl DataService {
    /// The service over `manager`'s replicas, admitting requests within `shed`'s limits and
    /// writes while `disk` has room.
    pub fn new(
        manager: Arc<ReplicaManager>,
        shed: Arc<LoadShedder>,
        disk: Arc<DiskGuard>,
        metrics: Arc<ServerMetrics>,
        stopping: CancellationToken,
    ) -> Self {
        Self { manager, shed, disk, metrics, stopping }
    }

    /// Fires when the server stops taking requests.
    pub(super) fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Admits `req`'s bytes among those held, or refuses it with `Busy` (the count of requests
    /// in progress is checked before decoding, by [`crate::load_shed::ShedService`]).
    fn admit<M: prost::Message + Routed>(&self, req: &Request<M>) -> Result<InFlight, WingError> {
        self.admit_routed(req.get_ref(), &wingkv_security::identity::peer_of(req))
    }

    /// [`Self::admit`] of a request that came in a `Batch` stream of `peer`.
    pub(super) fn admit_routed<M: prost::Message + Routed>(
        &self,
        req: &M,
        peer: &wingkv_security::Peer,
    ) -> Result<InFlight, WingError> {
        // The table's access list first: a refused user costs no budget. A request without a
        // readable partition is refused right after, for what it is.
        if let Ok(id) = PartitionId::from_proto(req.partition()) {
            self.manager.check_access(id.app_id, peer)?;
        }
        self.shed.admit_bytes(req.encoded_len())
    }

    /// [`Self::admit_routed`] of a request of a `Batch` stream, which also takes a place among
    /// the requests in progress, as its unary call would (the stream's own place is given back
    /// once it answers its headers).
    pub(super) fn admit_batched<M: prost::Message + Routed>(
        &self,
        req: &M,
        peer: &wingkv_security::Peer,
    ) -> Result<(InFlight, InFlight), WingError> {
        let place = self.shed.admit_request()?;
        Ok((place, self.admit_routed(req, peer)?))
    }

    /// Counts one request of a `Batch` stream as the unary call would have been counted.
    pub(super) fn observe(&self, method: &str, outcome: Result<(), &WingError>, elapsed: Duration) {
        let code = match outcome {
            Ok(()) => "OK".to_string(),
            // As the unary calls are counted: by the wingkv error code.
            Err(e) => e.code().as_str().to_string(),
        };
        self.metrics.observe("Data", method, &code, elapsed);
    }

    /// A get: the record's live value, read on a primary that may serve a linearizable read.
    pub(super) async fn serve_get(&self, r: GetRequest) -> Result<GetResponse, WingError> {
        let key = encode_key(&r.hash_key, &r.sort_key)?;
        let replica = self.read_replica(r.partition.as_ref(), Keys::one(&r.hash_key, &r.sort_key)).await?;
        Ok(match read_live(replica.db(), &key, replica.now())? {
            Some((_, v)) => GetResponse { found: true, value: v.into() },
            None => GetResponse { found: false, value: Bytes::new() },
        })
    }

    /// A set, once write admission let it through.
    pub(super) async fn serve_set(&self, r: SetRequest, admit: WriteAdmission) -> Result<WriteResponse, WingError> {
        let key = encode_key(&r.hash_key, &r.sort_key)?;
        // Validated first: a bad request is refused for what it is, wherever it lands.
        let write = self.write_replica(r.partition.as_ref(), Keys::one(&r.hash_key, &r.sort_key), admit).await?;
        // Stamped once admitted (throttling may have held it): the primary's time of the write.
        let value = stored_value(write.replica.now(), r.ttl_seconds, &r.value);
        let (_, log_index) = write.propose(Command::Put { key: key.into(), value }).await?;
        Ok(WriteResponse { log_index })
    }

    /// A del, once write admission let it through.
    pub(super) async fn serve_del(&self, r: DelRequest, admit: WriteAdmission) -> Result<WriteResponse, WingError> {
        let key = encode_key(&r.hash_key, &r.sort_key)?;
        // Validated first: a bad request is refused for what it is, wherever it lands.
        let write = self.write_replica(r.partition.as_ref(), Keys::one(&r.hash_key, &r.sort_key), admit).await?;
        let (_, log_index) = write.propose(Command::Delete { key: key.into() }).await?;
        Ok(WriteResponse { log_index })
    }

    /// The replica of `p`, once the request's keys are found to belong to it.
    fn replica(&self, p: Option<&ProtoPartitionId>, keys: Keys<'_>) -> Result<Arc<Replica>, WingError> {
        let id = PartitionId::from_proto(p)?;
        record_partition(id);
        self.manager.check_table_serves(id)?;
        let replica = self.manager.get(id)?;
        self.check_owner(&replica, keys)?;
        Ok(replica)
    }

    /// Refuses a request whose keys hash to another partition (DESIGN §2: the hash key's, or
    /// the sort key's when the hash key is empty): stored there, a record would be invisible to
    /// every correctly routed read. Operations on a whole hash key need a non-empty one, since
    /// the records of the empty hash key are spread over the partitions by their sort keys.
    fn check_owner(&self, replica: &Replica, keys: Keys<'_>) -> Result<(), WingError> {
        let (hash_key, sort_key) = match keys {
            Keys::Whole => return Ok(()),
            Keys::One { hash_key, sort_key } => (hash_key, sort_key),
            Keys::HashKey { hash_key, op } => {
                if hash_key.is_empty() {
                    return Err(WingError::InvalidArgument(format!(
                        "{op} needs a non-empty hash key: the records of the empty hash key are spread over \
                         the partitions by their sort keys"
                    )));
                }
                (hash_key, &[][..])
            }
        };
        // Unknown only for a replica created by an older meta, until its first heartbeat.
        let Some(count) = self.manager.partition_count(replica) else { return Ok(()) };
        let id = replica.id();
        let owner = partition_index(hash_key, sort_key, count);
        if owner != id.partition_index {
            return Err(WingError::WrongPartition(format!(
                "the key belongs to partition {}.{owner} of {count}, not to {id}: refresh the routing",
                id.app_id
            )));
        }
        Ok(())
    }

    /// A primary that has confirmed it may serve a linearizable read now (unless the table's
    /// envs deny reads).
    async fn read_replica(&self, p: Option<&ProtoPartitionId>, keys: Keys<'_>) -> Result<Arc<Replica>, WingError> {
        let replica = self.replica(p, keys)?;
        replica.admission().check_read(replica.id())?;
        replica.linearizable_read().await?;
        Ok(replica)
    }

    /// The replica a write `req` goes to, once the table's envs admit it (it may be held by
    /// write throttling, or refused with `Busy` or `OperationDisabled`). Only a primary counts
    /// writes: a stale client's request to a secondary is turned away first.
    async fn write_replica(&self, p: Option<&ProtoPartitionId>, keys: Keys<'_>, admit: WriteAdmission) -> WriteTarget {
        let replica = self.replica(p, keys)?;
        replica.check_primary()?;
        self.disk.check_write()?;
        // Without a client deadline, the server's own write timeout bounds the hold.
        let timeout = admit.timeout.unwrap_or(replica.write_timeout());
        replica.admission().admit_write(replica.id(), admit.bytes, Some(timeout)).await?;
        Ok(Write { replica, deadline: admit.arrived + timeout })
    }
}

/// A data request, by the partition it is sent to (whose table's access list applies).
pub(super) trait Routed {
    fn partition(&self) -> Option<&ProtoPartitionId>;
}

macro_rules! routed {
    ($($request:ty),* $(,)?) => {
        $(impl Routed for $request {
            fn partition(&self) -> Option<&ProtoPartitionId> {
                self.partition.as_ref()
            }
        })*
    };
}

routed!(
    GetRequest,
    SetRequest,
    DelRequest,
    KeyRequest,
    MultiGetRequest,
    MultiSetRequest,
    MultiDelRequest,
    IncrRequest,
    CheckAndSetRequest,
    ScanRequest,
    SortKeyCountRequest,
);

/// The live `(expire_ts, user value)` stored at `key`.
fn read_live(db: &DB, key: &[u8], now: u32) -> Result<Option<(u32, Vec<u8>)>, WingError> {
    let Some(stored) = db.get_pinned_cf(data_cf(db)?, key)? else {
        return Ok(None);
    };
    let (ts, user) = decode_value(&stored)?;
    Ok((!is_expired(ts, now)).then(|| (ts, user.to_vec())))
}

fn stored_value(now: u32, ttl_seconds: u32, user: &[u8]) -> Bytes {
    Bytes::from(encode_value(expire_ts_for_ttl(now, ttl_seconds), user))
}

fn refused(resp: CommandResponse) -> WingError {
    match resp {
        CommandResponse::Refused(msg) => WingError::InvalidArgument(msg),
        other => WingError::Internal(format!("unexpected apply result {other:?}")),
    }
}

type WriteTarget = Result<Write, WingError>;

/// An admitted write: the primary it goes to and when its client stops waiting.
struct Write {
    replica: Arc<Replica>,
    /// A write still queued for raft at this time is dropped unproposed.
    deadline: Instant,
}

impl Write {
    async fn propose(&self, cmd: Command) -> Result<(CommandResponse, u64), WingError> {
        self.replica.propose(cmd, self.deadline).await
    }
}

/// What write admission needs of a request, taken before the request is consumed.
pub(super) struct WriteAdmission {
    /// Its size on the wire (what `replica.write_throttling_by_size` counts).
    bytes: u64,
    /// The client's timeout (`grpc-timeout`), if it sent one.
    timeout: Option<Duration>,
    /// When the request arrived: its deadline counts from here.
    arrived: Instant,
}

impl WriteAdmission {
    fn of<M: prost::Message>(req: &Request<M>) -> Self {
        Self { bytes: req.get_ref().encoded_len() as u64, timeout: client_timeout(req), arrived: Instant::now() }
    }

    /// A request of a `Batch` stream, read just now, whose client waits `timeout` (if it said).
    pub(super) fn batched<M: prost::Message>(req: &M, timeout: Option<Duration>) -> Self {
        Self { bytes: req.encoded_len() as u64, timeout, arrived: Instant::now() }
    }
}

/// The keys a request touches, for the partition check.
#[derive(Clone, Copy)]
enum Keys<'a> {
    /// One record.
    One { hash_key: &'a [u8], sort_key: &'a [u8] },
    /// Records of one hash key (`op` names the operation in errors).
    HashKey { hash_key: &'a [u8], op: &'static str },
    /// Every record of the partition (a full scan).
    Whole,
}

impl<'a> Keys<'a> {
    fn one(hash_key: &'a [u8], sort_key: &'a [u8]) -> Self {
        Keys::One { hash_key, sort_key }
    }

    fn hash_key(hash_key: &'a [u8], op: &'static str) -> Self {
        Keys::HashKey { hash_key, op }
    }
}

type ScanStream = Pin<Box<dyn Stream<Item = Result<ScanBatch, Status>> + Send>>;

#[tonic::async_trait]
impl Data for DataService {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let _in_flight = self.admit(&req)?;
        Ok(Response::new(self.serve_get(req.into_inner()).await?))
    }

    async fn set(&self, req: Request<SetRequest>) -> Result<Response<WriteResponse>, Status> {
        let _in_flight = self.admit(&req)?;
        let admit = WriteAdmission::of(&req);
        Ok(Response::new(self.serve_set(req.into_inner(), admit).await?))
    }

    async fn del(&self, req: Request<DelRequest>) -> Result<Response<WriteResponse>, Status> {
        let _in_flight = self.admit(&req)?;
        let admit = WriteAdmission::of(&req);
        Ok(Response::new(self.serve_del(req.into_inner(), admit).await?))
    }

    type BatchStream = super::batch::BatchStream;

    async fn batch(&self, req: Request<tonic::Streaming<BatchRequest>>) -> Result<Response<Self::BatchStream>, Status> {
        Ok(Response::new(super::batch::serve(self.clone(), req)))
    }

    async fn exist(&self, req: Request<KeyRequest>) -> Result<Response<ExistResponse>, Status> {
        let _in_flight = self.admit(&req)?;
        let r = req.into_inner();
        let key = encode_key(&r.hash_key, &r.sort_key)?;
        let replica = self.read_replica(r.partition.as_ref(), Keys::one(&r.hash_key, &r.sort_key)).await?;
        let exists = read_live(replica.db(), &key, replica.now())?.is_some();
        Ok(Response::new(ExistResponse { exists }))
    }

    async fn ttl(&self, req: Request<KeyRequest>) -> Result<Response<TtlResponse>, Status> {
        let _in_flight = self.admit(&req)?;
        let r = req.into_inner();
        let key = encode_key(&r.hash_key, &r.sort_key)?;
        let replica = self.read_replica(r.partition.as_ref(), Keys::one(&r.hash_key, &r.sort_key)).await?;
        let now = replica.now();
        let ttl_seconds = match read_live(replica.db(), &key, now)? {
            None => -2,
            Some((ts, _)) => remaining_ttl(ts, now).map(i64::from).unwrap_or(-1),
        };
        Ok(Response::new(TtlResponse { ttl_seconds }))
    }

    async fn multi_get(&self, req: Request<MultiGetRequest>) -> Result<Response<MultiGetResponse>, Status> {
        let _in_flight = self.admit(&req)?;
        let r = req.into_inner();
        validate_hash_key(&r.hash_key)?;
        check_sort_key_count("multi_get", r.sort_keys.len())?;
        let replica = self.read_replica(r.partition.as_ref(), Keys::hash_key(&r.hash_key, "multi_get")).await?;
        let now = replica.now();
        let max_count = if r.max_kv_count == 0 { usize::MAX } else { r.max_kv_count as usize };
        let max_bytes = response_bytes(r.max_kv_size);
        let (kvs, incomplete) = if !r.sort_keys.is_empty() {
            // A few point reads on the runtime (a memtable or block-cache hit costs less than a
            // thread hop); more, up to MAX_SORT_KEYS_PER_REQUEST, on a blocking thread.
            let (db, hold) = (replica.db().clone(), replica.hold());
            let (no_value, inline) = (r.no_value, r.sort_keys.len() <= INLINE_STEPS);
            let read = move || {
                let _hold = hold;
                point_reads(&db, &r.hash_key, &r.sort_keys, max_count, max_bytes, now, no_value)
            };
            if inline {
                read()?
            } else {
                tokio::task::spawn_blocking(read)
                    .await
                    .map_err(|e| WingError::Internal(format!("multi_get task failed: {e}")))??
            }
        } else {
            let start_inclusive = r.start_inclusive || r.start_sort_key.is_empty();
            let mut range = KeyRange::hash_key(
                &r.hash_key,
                &r.start_sort_key,
                start_inclusive,
                &r.stop_sort_key,
                r.stop_inclusive,
            )?;
            // The first INLINE_STEPS records on the runtime (most multi_gets end there); the
            // rest of the budget on a blocking thread.
            let limits = ReadLimits { records: max_count, bytes: max_bytes, steps: INLINE_STEPS };
            let mut records = range.read(replica.db(), limits, now, !r.no_value)?;
            let used: u64 = records.iter().map(|rec| (rec.key.len() + rec.value.len()) as u64).sum();
            if !range.is_exhausted() && records.len() < max_count && used < max_bytes {
                let rest = ReadLimits {
                    records: max_count - records.len(),
                    bytes: max_bytes - used,
                    steps: MULTI_GET_STEPS - INLINE_STEPS,
                };
                let (rest_range, more) = read_slice(&replica, range, rest, now, !r.no_value).await?;
                range = rest_range;
                records.extend(more);
            }
            let mut kvs = Vec::with_capacity(records.len());
            for rec in records {
                let (_, sk) = decode_key(&rec.key)?;
                kvs.push(KeyValue { sort_key: Bytes::copy_from_slice(sk), value: rec.value.into() });
            }
            // Not exhausted: a limit stopped the read (PROTOCOL.md: with no records, a run of
            // expired records filled the step budget).
            (kvs, !range.is_exhausted())
        };
        Ok(Response::new(MultiGetResponse { kvs, incomplete }))
    }

    async fn multi_set(&self, req: Request<MultiSetRequest>) -> Result<Response<WriteResponse>, Status> {
        let _in_flight = self.admit(&req)?;
        let admit = WriteAdmission::of(&req);
        let r = req.into_inner();
        if r.kvs.is_empty() {
            return Err(WingError::InvalidArgument("multi_set needs at least one sort key".into()).into());
        }
        check_sort_key_count("multi_set", r.kvs.len())?;
        let keys = r
            .kvs
            .iter()
            .map(|kv| encode_key(&r.hash_key, &kv.sort_key).map(Bytes::from))
            .collect::<Result<Vec<_>, _>>()?;
        // Validated first: a bad request is refused for what it is, wherever it lands.
        let write = self.write_replica(r.partition.as_ref(), Keys::hash_key(&r.hash_key, "multi_set"), admit).await?;
        let now = write.replica.now();
        let entries =
            keys.into_iter().zip(&r.kvs).map(|(k, kv)| (k, stored_value(now, r.ttl_seconds, &kv.value))).collect();
        let (_, log_index) = write.propose(Command::MultiPut { entries }).await?;
        Ok(Response::new(WriteResponse { log_index }))
    }

    async fn multi_del(&self, req: Request<MultiDelRequest>) -> Result<Response<MultiDelResponse>, Status> {
        let _in_flight = self.admit(&req)?;
        let admit = WriteAdmission::of(&req);
        let r = req.into_inner();
        if r.sort_keys.is_empty() {
            return Err(WingError::InvalidArgument("multi_del needs at least one sort key".into()).into());
        }
        check_sort_key_count("multi_del", r.sort_keys.len())?;
        let keys =
            r.sort_keys.iter().map(|sk| encode_key(&r.hash_key, sk).map(Bytes::from)).collect::<Result<Vec<_>, _>>()?;
        // Validated first: a bad request is refused for what it is, wherever it lands.
        let write = self.write_replica(r.partition.as_ref(), Keys::hash_key(&r.hash_key, "multi_del"), admit).await?;
        let (resp, log_index) = write.propose(Command::MultiDelete { keys, now: write.replica.now() }).await?;
        match resp {
            CommandResponse::Deleted(deleted) => Ok(Response::new(MultiDelResponse { log_index, deleted })),
            other => Err(refused(other).into()),
        }
    }

    async fn incr(&self, req: Request<IncrRequest>) -> Result<Response<IncrResponse>, Status> {
        let _in_flight = self.admit(&req)?;
        let admit = WriteAdmission::of(&req);
        let r = req.into_inner();
        let key = encode_key(&r.hash_key, &r.sort_key)?;
        let ttl = match r.ttl_seconds {
            0 => IncrTtl::Keep,
            -1 => IncrTtl::Clear,
            s if s > 0 => IncrTtl::Set(s as u32),
            s => {
                return Err(WingError::InvalidArgument(format!(
                    "incr ttl_seconds {s}: 0 keeps the TTL, -1 clears it, a positive number sets it"
                ))
                .into())
            }
        };
        // Validated first: a bad request is refused for what it is, wherever it lands.
        let write = self.write_replica(r.partition.as_ref(), Keys::one(&r.hash_key, &r.sort_key), admit).await?;
        let cmd = Command::Incr { key: key.into(), delta: r.increment, ttl, now: write.replica.now() };
        match write.propose(cmd).await? {
            (CommandResponse::Incremented(new_value), log_index) => {
                Ok(Response::new(IncrResponse { new_value, log_index }))
            }
            (other, _) => Err(refused(other).into()),
        }
    }

    async fn check_and_set(&self, req: Request<CheckAndSetRequest>) -> Result<Response<CheckAndSetResponse>, Status> {
        let _in_flight = self.admit(&req)?;
        let admit = WriteAdmission::of(&req);
        let r = req.into_inner();
        let check_type = CheckType::from_i32(r.check_type)?;
        CheckType::validate_operand(&r.check_operand)?;
        let check_key = encode_key(&r.hash_key, &r.check_sort_key)?;
        let set_sk = if r.set_diff_sort_key { &r.set_sort_key } else { &r.check_sort_key };
        let set_key = encode_key(&r.hash_key, set_sk)?;
        // Validated first: a bad request is refused for what it is, wherever it lands.
        let keys = Keys::hash_key(&r.hash_key, "check_and_set");
        let write = self.write_replica(r.partition.as_ref(), keys, admit).await?;
        let now = write.replica.now();
        let cmd = Command::CheckAndSet {
            check_key: check_key.into(),
            check_type,
            operand: r.check_operand.clone(),
            set_key: set_key.into(),
            set_value: stored_value(now, r.set_ttl_seconds, &r.set_value),
            return_check_value: r.return_check_value,
            now,
        };
        match write.propose(cmd).await? {
            (CommandResponse::CheckAndSet { succeeded, check_value }, log_index) => {
                Ok(Response::new(CheckAndSetResponse {
                    set_succeeded: succeeded,
                    check_value_returned: r.return_check_value,
                    check_value_exist: check_value.is_some(),
                    check_value: check_value.unwrap_or_default(),
                    log_index,
                }))
            }
            (other, _) => Err(refused(other).into()),
        }
    }

    async fn sort_key_count(
        &self,
        req: Request<SortKeyCountRequest>,
    ) -> Result<Response<SortKeyCountResponse>, Status> {
        let _in_flight = self.admit(&req)?;
        let r = req.into_inner();
        let mut range = KeyRange::hash_key(&r.hash_key, b"", true, b"", false)?;
        let replica = self.read_replica(r.partition.as_ref(), Keys::hash_key(&r.hash_key, "sort_key_count")).await?;
        let now = replica.now();
        // Counted in slices on blocking threads: a cancelled request (its future dropped)
        // stops after the slice in progress.
        let limits = ReadLimits { records: usize::MAX, bytes: 0, steps: SLICE_STEPS };
        let mut count = 0u64;
        while !range.is_exhausted() {
            let (rest, records) = read_slice(&replica, range, limits, now, false).await?;
            range = rest;
            count += records.len() as u64;
        }
        Ok(Response::new(SortKeyCountResponse { count }))
    }

    type ScanStream = ScanStream;

    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanStream>, Status> {
        let in_flight = self.admit(&req)?;
        let r = req.into_inner();
        let range = match &r.hash_key {
            Some(hk) => {
                let start_inclusive = r.start_inclusive || r.start_sort_key.is_empty();
                KeyRange::hash_key(hk, &r.start_sort_key, start_inclusive, &r.stop_sort_key, r.stop_inclusive)?
            }
            None => KeyRange::whole(),
        };
        let keys = match &r.hash_key {
            Some(hk) => Keys::hash_key(hk, "a scan of one hash key"),
            None => Keys::Whole,
        };
        let replica = self.read_replica(r.partition.as_ref(), keys).await?;
        let batch = match r.batch_size as usize {
            0 => DEFAULT_SCAN_BATCH,
            n => n.min(MAX_SCAN_BATCH),
        };
        let limit = if r.limit == 0 { u64::MAX } else { r.limit };
        let now = replica.now();
        let with_values = !r.no_value;
        // Each poll reads slices until one yields records; the stream owns nothing that outlives
        // the request, and a cancelled request stops within one slice.
        // The scan's bytes count among those held until its first batch: after that it waits
        // on its client between batches, and one that stops reading holds nothing.
        let stream = futures::stream::unfold(Some((replica, range, limit, Some(in_flight))), move |state| async move {
            let (replica, mut range, left, _in_flight) = state?;
            while !range.is_exhausted() && left > 0 {
                let want = batch.min(left.min(usize::MAX as u64) as usize);
                let limits = ReadLimits { records: want, bytes: MAX_RESPONSE_BYTES, steps: SLICE_STEPS };
                let records = match read_slice(&replica, range, limits, now, with_values).await {
                    Ok((rest, records)) => {
                        range = rest;
                        records
                    }
                    Err(e) => return Some((Err(Status::from(e)), None)),
                };
                if records.is_empty() {
                    continue; // a run of expired records filled the slice
                }
                let left = left - records.len() as u64;
                return match scan_batch(records) {
                    Ok(b) => Some((Ok(b), Some((replica, range, left, None)))),
                    Err(e) => Some((Err(Status::from(e)), None)),
                };
            }
            None
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The wire form of records read from a range.
fn scan_batch(records: Vec<RangeRecord>) -> Result<ScanBatch, WingError> {
    let mut out = Vec::with_capacity(records.len());
    for rec in records {
        let (hk, sk) = decode_key(&rec.key)?;
        out.push(ScanRecord {
            hash_key: Bytes::copy_from_slice(hk),
            sort_key: Bytes::copy_from_slice(sk),
            value: rec.value.into(),
            expire_ts: rec.expire_ts,
        });
    }
    Ok(ScanBatch { records: out })
}
