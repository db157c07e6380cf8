//! [`Table`]: the data operations, routed to partition primaries with retries.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tonic::codegen::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use wingkv_common::error::ERROR_CODE_HEADER;
use wingkv_common::hash::partition_index;
use wingkv_common::sync::RwLockExt;
use wingkv_common::{ErrorCode, PartitionId, WingError};
use wingkv_proto::data::data_client::DataClient;
use wingkv_proto::data::*;
use wingkv_proto::meta::{NodeAddress, TableConfiguration};

use crate::batch::MAX_BATCHED_OP_BYTES;
use crate::connection::ClientInner;
use wingkv_proto::data::batch_op::Op as BatchedOp;
use wingkv_proto::data::batch_result::Result as Answer;

pub use wingkv_proto::data::CheckType;

/// Remaining time-to-live of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The record never expires.
    Infinite,
    /// Seconds until it expires.
    Seconds(u32),
}

/// One record of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Hash key.
    pub hash_key: Bytes,
    /// Sort key.
    pub sort_key: Bytes,
    /// Value (empty with `no_value`).
    pub value: Bytes,
    /// Seconds since 2016-01-01 when the record expires; 0 = never.
    pub expire_ts: u32,
}

/// Bounds and limits of a scan or a range `multi_get`.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// First sort key (empty = from the start).
    pub start_sort_key: Bytes,
    /// Last sort key (empty = to the end).
    pub stop_sort_key: Bytes,
    /// Whether `start_sort_key` itself is included (always, when it is empty).
    pub start_exclusive: bool,
    /// Whether `stop_sort_key` itself is included.
    pub stop_inclusive: bool,
    /// Records per server batch (0 = server default).
    pub batch_size: u32,
    /// Most records in all (0 = no limit; per partition for a full scan).
    pub limit: u64,
    /// Leave values out.
    pub no_value: bool,
}

/// Limits of [`Table::multi_get_opts`].
#[derive(Debug, Clone, Default)]
pub struct MultiGetOptions {
    /// Sort-key range when no list of sort keys is given.
    pub range: ScanOptions,
    /// Most records (0 = no limit).
    pub max_count: u32,
    /// Most bytes of keys and values (0 = no limit).
    pub max_bytes: u64,
}

/// What `check_and_set` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the check passed and the value was set.
    pub set: bool,
    /// The checked value, when asked for and present.
    pub check_value: Option<Bytes>,
}

/// Whether repeating an operation is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idempotence {
    /// Applying it twice is applying it once (get, set, del, multi_*).
    Idempotent,
    /// Applying it twice differs (incr, check_and_set): retried only when surely not applied.
    NotIdempotent,
}

/// The data-service client of one attempt: every request carries the attempt's deadline.
type Data = DataClient<InterceptedService<Channel, Deadline>>;

/// Sets `grpc-timeout` on each request to what is left of the caller's deadline.
#[derive(Debug, Clone, Copy)]
struct Deadline(Duration);

impl Interceptor for Deadline {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.set_timeout(self.0);
        Ok(req)
    }
}

/// Whether a server's answer says the request surely did not take effect: it was refused
/// before being proposed (NotLeader — a leadership lost mid-write answers Unavailable instead —,
/// Busy, NotFound, WrongPartition). Timeouts and lost connections are ambiguous.
fn surely_not_applied(err: &WingError) -> bool {
    matches!(
        err,
        WingError::NotLeader { .. }
            | WingError::Busy(_)
            | WingError::DiskFull(_)
            | WingError::NotFound(_)
            | WingError::WrongPartition(_)
    )
}

/// `op` as its unary call, answered as the `Batch` stream would answer it.
async fn unary(mut client: Data, op: BatchedOp) -> Result<Answer, tonic::Status> {
    Ok(match op {
        BatchedOp::Get(r) => Answer::Get(client.get(r).await?.into_inner()),
        BatchedOp::Set(r) => Answer::Write(client.set(r).await?.into_inner()),
        BatchedOp::Del(r) => Answer::Write(client.del(r).await?.into_inner()),
    })
}

/// A request's answer that is not of its kind (a server bug): said, not guessed.
fn mismatched(op: &str, answer: &Answer) -> WingError {
    WingError::Internal(format!("a {op} was answered as another request: {answer:?}"))
}

/// A table of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Table {
    client: Arc<ClientInner>,
    name: String,
    config: Arc<RwLock<Arc<TableConfiguration>>>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, WingError>> + Send>>;

fn bytes(b: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(b.as_ref())
}

fn ttl_seconds(ttl: Option<Duration>) -> u32 {
    ttl.map(|d| d.as_secs().clamp(1, u32::MAX as u64) as u32).unwrap_or(0)
}

impl Table {
    pub(crate) fn new(client: Arc<ClientInner>, name: String, cfg: TableConfiguration) -> Self {
        Self { client, name, config: Arc::new(RwLock::new(Arc::new(cfg))) }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The routing the client holds now.
    pub fn configuration(&self) -> Arc<TableConfiguration> {
        self.config.read_locked().clone()
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.configuration().partition_count
    }

    /// Asks the meta for the table's routing, within `within`. A partition the meta names no
    /// primary for (a new meta leader that has not heard from its replicas yet) keeps the
    /// primary known before: the data plane must not depend on the meta's liveness view, and a
    /// stale primary answers `NotLeader` with the right one anyway.
    async fn refresh(&self, within: Duration) -> Result<(), WingError> {
        let query = self.client.query_table(&self.name);
        let mut cfg = tokio::time::timeout(within, query)
            .await
            .map_err(|_| WingError::Timeout(format!("the meta did not answer within {within:?}")))??;
        let old = self.configuration();
        if old.app_id == cfg.app_id {
            for (new, old) in cfg.partitions.iter_mut().zip(old.partitions.iter()) {
                if new.primary.is_none() {
                    new.primary = old.primary.clone();
                }
            }
        }
        *self.config.write_locked() = Arc::new(cfg);
        Ok(())
    }

    /// Forgets the primary of partition `pidx`.
    fn forget_primary(&self, pidx: u32) {
        let mut guard = self.config.write_locked();
        if guard.partitions.get(pidx as usize).is_some_and(|p| p.primary.is_some()) {
            let mut cfg = TableConfiguration::clone(&guard);
            cfg.partitions[pidx as usize].primary = None;
            *guard = Arc::new(cfg);
        }
    }

    /// Points partition `pidx` at `leader`, the primary a replica named in its `NotLeader`
    /// answer: the replicas know their leader better than any meta.
    fn follow_leader_hint(&self, pidx: u32, leader: &str) {
        let mut guard = self.config.write_locked();
        let mut cfg = TableConfiguration::clone(&guard);
        if let Some(p) = cfg.partitions.get_mut(pidx as usize) {
            let node_id = p.members.iter().find(|m| m.address == leader).map(|m| m.node_id).unwrap_or(0);
            p.primary = Some(NodeAddress { node_id, address: leader.to_string() });
        }
        *guard = Arc::new(cfg);
    }

    /// Runs `op` on the primary of partition `pidx`, retrying retryable failures (with a
    /// routing refresh) until the request deadline.
    async fn on_partition<T, F, Fut>(&self, pidx: u32, op: F) -> Result<T, WingError>
    where
        F: FnMut(Data, PartitionId) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.on_partition_with(pidx, Idempotence::Idempotent, op).await
    }

    /// [`Self::on_partition`] for an operation of the given idempotence: one that is not
    /// idempotent (incr, check_and_set) is retried only after failures that say it was not
    /// applied; after an ambiguous one (timeout, lost connection) the caller gets that error.
    async fn on_partition_with<T, F, Fut>(&self, pidx: u32, idempotence: Idempotence, mut op: F) -> Result<T, WingError>
    where
        F: FnMut(Data, PartitionId) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.route(pidx, idempotence, |_, channel, pid, left| {
            // The server learns the deadline too (grpc-timeout), so a throttling hold stays
            // within half of what is left.
            let call = op(DataClient::with_interceptor(channel, Deadline(left)), pid);
            async move { call.await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// The get, set or del `request(pid)` on the primary of partition `pidx`: on the server's
    /// `Batch` stream (many requests per message) when batching is on, the request is small and
    /// the server serves the stream; as a unary call otherwise. Retried like
    /// [`Self::on_partition`] (all three are idempotent).
    async fn one_record(&self, pidx: u32, request: impl Fn(PartitionId) -> BatchedOp) -> Result<Answer, WingError> {
        let batchers = &self.client.batchers;
        self.route(pidx, Idempotence::Idempotent, |address, channel, pid, left| {
            let op = request(pid);
            let on_stream = self.client.config.batching
                && op.encoded_len() <= MAX_BATCHED_OP_BYTES
                && batchers.serves_batches(&address);
            async move {
                if on_stream {
                    batchers.call(&address, channel, op, left).await
                } else {
                    unary(DataClient::with_interceptor(channel, Deadline(left)), op).await
                }
            }
        })
        .await
    }

    /// Runs `call(primary address, its channel, partition, time left)` on the primary of
    /// partition `pidx`, retrying retryable failures (with a routing refresh) until the
    /// request deadline; a non-idempotent one only after failures that say it was not applied.
    async fn route<T, A, Fut>(&self, pidx: u32, idempotence: Idempotence, mut call: A) -> Result<T, WingError>
    where
        A: FnMut(String, Channel, PartitionId, Duration) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let timeout = self.client.config.request_timeout;
        let deadline = Instant::now() + timeout;
        let mut backoff = self.client.config.backoff.start();
        // The last answer of a server itself: what explains a retry the deadline ended.
        let mut last_answer: Option<WingError> = None;
        let mut attempt = 0usize;
        loop {
            let cfg = self.configuration();
            let pid = PartitionId::new(cfg.app_id, pidx);
            // No primary known at all: ask the members in turn; a secondary names its leader.
            let primary = cfg
                .partitions
                .get(pidx as usize)
                .and_then(|p| p.primary.clone().or_else(|| p.members.get(attempt % p.members.len().max(1)).cloned()));
            attempt += 1;
            // `sent`: whether the request may have reached a server.
            let mut server_answered = false;
            let (err, sent) = match primary {
                None => (WingError::Unavailable(format!("partition {pid} of '{}' has no primary", self.name)), false),
                Some(primary) => match self.client.pool.get(&primary.address) {
                    Err(e) => (WingError::Unavailable(format!("bad primary address {}: {e}", primary.address)), false),
                    Ok(channel) => {
                        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
                        let err = match tokio::time::timeout(left, call(primary.address, channel, pid, left)).await {
                            Ok(Ok(resp)) => return Ok(resp),
                            Ok(Err(status)) => {
                                // Only an answer of the server itself says what happened to the request.
                                server_answered = status.metadata().contains_key(ERROR_CODE_HEADER);
                                WingError::from_status(&status)
                            }
                            Err(_) => WingError::Timeout(format!("partition {pid} did not answer within {timeout:?}")),
                        };
                        (err, true)
                    }
                },
            };
            // NotFound: the replica moved (stale routing); the others say "try again". A replica's
            // TableDropped is its view as of the last heartbeat (a recall reaches it within one):
            // the meta, asked below before the next attempt, is the one that decides.
            let replica_says_dropped = server_answered && err.code() == ErrorCode::TableDropped;
            let retry = replica_says_dropped
                || match idempotence {
                    Idempotence::Idempotent => err.code().is_retryable() || err.code() == ErrorCode::NotFound,
                    Idempotence::NotIdempotent => !sent || (server_answered && surely_not_applied(&err)),
                };
            if !retry {
                return Err(err);
            }
            if server_answered {
                last_answer = Some(err.clone());
            }
            // Retries go on until the deadline itself (the last wait is cut to fit it), so a
            // throttled write fails only once its whole deadline is spent.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(match err {
                    busy @ WingError::Busy(_) => busy,
                    // The deadline cut the last attempt (no answer of the server's own) of an
                    // idempotent request the server was holding back: its Busy says why. (A
                    // non-idempotent one may have passed admission then: its fate is unknown.)
                    _ if !server_answered
                        && idempotence == Idempotence::Idempotent
                        && matches!(last_answer, Some(WingError::Busy(_))) =>
                    {
                        last_answer.take().unwrap_or(err)
                    }
                    timeout @ WingError::Timeout(_) => timeout,
                    other => WingError::Timeout(format!("gave up after {timeout:?}: {other}")),
                });
            }
            match &err {
                WingError::NotLeader { leader: Some(leader), .. } => {
                    // The replica named the primary: go there, without asking the meta.
                    self.follow_leader_hint(pidx, leader);
                    tokio::time::sleep(backoff.next_delay().min(left).min(Duration::from_millis(20))).await;
                    continue;
                }
                WingError::NotLeader { leader: None, .. } => {
                    // No primary there and no name: the members, in turn, know better than a meta
                    // that may not have heard of the new primary yet.
                    self.forget_primary(pidx);
                    tokio::time::sleep(backoff.next_delay().min(left)).await;
                    continue;
                }
                // That primary is gone: the meta's routing, or the members in turn, find the next.
                _ if !server_answered => self.forget_primary(pidx),
                _ => {}
            }
            let delay = backoff.next_delay().min(left);
            tracing::debug!(partition = %pid, "retrying after {err}");
            tokio::time::sleep(delay).await;
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            if let Err(e) = self.refresh(left).await {
                if matches!(e.code(), ErrorCode::TableNotFound | ErrorCode::TableDropped) {
                    // The meta confirms the table is not live; a replica's TableDropped says more.
                    return Err(if replica_says_dropped { err } else { e });
                }
            }
        }
    }

    async fn on_key<T, F, Fut>(&self, hk: &[u8], sk: &[u8], op: F) -> Result<T, WingError>
    where
        F: FnMut(Data, PartitionId) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.on_key_with(hk, sk, Idempotence::Idempotent, op).await
    }

    async fn on_key_with<T, F, Fut>(
        &self,
        hk: &[u8],
        sk: &[u8],
        idempotence: Idempotence,
        op: F,
    ) -> Result<T, WingError>
    where
        F: FnMut(Data, PartitionId) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let pidx = self.partition_of(hk, sk)?;
        self.on_partition_with(pidx, idempotence, op).await
    }

    /// The partition of a record, once its hash key is found valid.
    fn partition_of(&self, hk: &[u8], sk: &[u8]) -> Result<u32, WingError> {
        wingkv_common::key::validate_hash_key(hk)?;
        Ok(partition_index(hk, sk, self.partition_count()))
    }

    /// The value of `(hash_key, sort_key)`, or `None`.
    pub async fn get(
        &self,
        hash_key: impl AsRef<[u8]>,
        sort_key: impl AsRef<[u8]>,
    ) -> Result<Option<Bytes>, WingError> {
        let (hk, sk) = (bytes(hash_key), bytes(sort_key));
        let pidx = self.partition_of(&hk, &sk)?;
        let get = |p: PartitionId| {
            BatchedOp::Get(GetRequest { partition: Some(p.to_proto()), hash_key: hk.clone(), sort_key: sk.clone() })
        };
        match self.one_record(pidx, get).await? {
            Answer::Get(r) => Ok(r.found.then_some(r.value)),
            other => Err(mismatched("get", &other)),
        }
    }

    /// Sets `(hash_key, sort_key)` to `value`, with no TTL.
    pub async fn set(
        &self,
        hash_key: impl AsRef<[u8]>,
        sort_key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<(), WingError> {
        self.set_with_ttl(hash_key, sort_key, value, None).await
    }

    /// Sets `(hash_key, sort_key)` to `value`, expiring after `ttl` (whole seconds).
    pub async fn set_with_ttl(
        &self,
        hash_key: impl AsRef<[u8]>,
        sort_key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Option<Duration>,
    ) -> Result<(), WingError> {
        let (hk, sk, v) = (bytes(hash_key), bytes(sort_key), bytes(value));
        let ttl_seconds = ttl_seconds(ttl);
        let pidx = self.partition_of(&hk, &sk)?;
        let set = |p: PartitionId| {
            BatchedOp::Set(SetRequest {
                partition: Some(p.to_proto()),
                hash_key: hk.clone(),
                sort_key: sk.clone(),
                value: v.clone(),
                ttl_seconds,
            })
        };
        match self.one_record(pidx, set).await? {
            Answer::Write(_) => Ok(()),
            other => Err(mismatched("set", &other)),
        }
    }

    /// Deletes `(hash_key, sort_key)` (no error when it does not exist).
    pub async fn del(&self, hash_key: impl AsRef<[u8]>, sort_key: impl AsRef<[u8]>) -> Result<(), WingError> {
        let (hk, sk) = (bytes(hash_key), bytes(sort_key));
        let pidx = self.partition_of(&hk, &sk)?;
        let del = |p: PartitionId| {
            BatchedOp::Del(DelRequest { partition: Some(p.to_proto()), hash_key: hk.clone(), sort_key: sk.clone() })
        };
        match self.one_record(pidx, del).await? {
            Answer::Write(_) => Ok(()),
            other => Err(mismatched("del", &other)),
        }
    }

    /// Whether `(hash_key, sort_key)` exists.
    pub async fn exist(&self, hash_key: impl AsRef<[u8]>, sort_key: impl AsRef<[u8]>) -> Result<bool, WingError> {
        let (hk, sk) = (bytes(hash_key), bytes(sort_key));
        let r = self
            .on_key(&hk, &sk, |mut c, p| {
                let req = KeyRequest { partition: Some(p.to_proto()), hash_key: hk.clone(), sort_key: sk.clone() };
                async move { c.exist(req).await }
            })
            .await?;
        Ok(r.exists)
    }

    /// The remaining TTL of `(hash_key, sort_key)`, or `None` when it does not exist.
    pub async fn ttl(&self, hash_key: impl AsRef<[u8]>, sort_key: impl AsRef<[u8]>) -> Result<Option<Ttl>, WingError> {
        let (hk, sk) = (bytes(hash_key), bytes(sort_key));
        let r = self
            .on_key(&hk, &sk, |mut c, p| {
                let req = KeyRequest { partition: Some(p.to_proto()), hash_key: hk.clone(), sort_key: sk.clone() };
                async move { c.ttl(req).await }
            })
            .await?;
        Ok(match r.ttl_seconds {
            -2 => None,
            -1 => Some(Ttl::Infinite),
            s => Some(Ttl::Seconds(s.clamp(0, u32::MAX as i64) as u32)),
        })
    }

    /// The records of `hash_key`: all of them (`sort_keys` = `None`) or the listed ones that
    /// exist, as `(sort_key, value)` in sort-key order.
    pub async fn multi_get(
        &self,
        hash_key: impl AsRef<[u8]>,
        sort_keys: Option<Vec<Bytes>>,
    ) -> Result<Vec<(Bytes, Bytes)>, WingError> {
        Ok(self.multi_get_opts(hash_key, sort_keys, MultiGetOptions::default()).await?.0)
    }

    /// [`multi_get`](Self::multi_get) with a range and limits; also answers whether a limit
    /// cut the result short.
    pub async fn multi_get_opts(
        &self,
        hash_key: impl AsRef<[u8]>,
        sort_keys: Option<Vec<Bytes>>,
        opts: MultiGetOptions,
    ) -> Result<(Vec<(Bytes, Bytes)>, bool), WingError> {
        let hk = bytes(hash_key);
        let sort_keys = sort_keys.unwrap_or_default();
        let r = self
            .on_key(&hk, b"", |mut c, p| {
                let req = MultiGetRequest {
                    partition: Some(p.to_proto()),
                    hash_key: hk.clone(),
                    sort_keys: sort_keys.clone(),
                    start_sort_key: opts.range.start_sort_key.clone(),
                    stop_sort_key: opts.range.stop_sort_key.clone(),
                    start_inclusive: !opts.range.start_exclusive,
                    stop_inclusive: opts.range.stop_inclusive,
                    max_kv_count: opts.max_count,
                    max_kv_size: opts.max_bytes,
                    no_value: opts.range.no_value,
                };
                async move { c.multi_get(req).await }
            })
            .await?;
        Ok((r.kvs.into_iter().map(|kv| (kv.sort_key, kv.value)).collect(), r.incomplete))
    }

    /// Sets several sort keys of `hash_key` atomically.
    pub async fn multi_set(
        &self,
        hash_key: impl AsRef<[u8]>,
        kvs: Vec<(Bytes, Bytes)>,
        ttl: Option<Duration>,
    ) -> Result<(), WingError> {
        let hk = bytes(hash_key);
        let kvs: Vec<KeyValue> = kvs.into_iter().map(|(sort_key, value)| KeyValue { sort_key, value }).collect();
        let ttl_seconds = ttl_seconds(ttl);
        self.on_key(&hk, b"", |mut c, p| {
            let req =
                MultiSetRequest { partition: Some(p.to_proto()), hash_key: hk.clone(), kvs: kvs.clone(), ttl_seconds };
            async move { c.multi_set(req).await }
        })
        .await?;
        Ok(())
    }

    /// Deletes several sort keys of `hash_key` atomically; answers how many existed.
    pub async fn multi_del(&self, hash_key: impl AsRef<[u8]>, sort_keys: Vec<Bytes>) -> Result<u64, WingError> {
        let hk = bytes(hash_key);
        let r = self
            .on_key(&hk, b"", |mut c, p| {
                let req = MultiDelRequest {
                    partition: Some(p.to_proto()),
                    hash_key: hk.clone(),
                    sort_keys: sort_keys.clone(),
                };
                async move { c.multi_del(req).await }
            })
            .await?;
        Ok(r.deleted)
    }

    /// Adds `delta` to the integer at `(hash_key, sort_key)` (absent = 0); answers the new
    /// value. The record's TTL is kept.
    pub async fn incr(
        &self,
        hash_key: impl AsRef<[u8]>,
        sort_key: impl AsRef<[u8]>,
        delta: i64,
    ) -> Result<i64, WingError> {
        let (hk, sk) = (bytes(hash_key), bytes(sort_key));
        let r = self
            .on_key_with(&hk, &sk, Idempotence::NotIdempotent, |mut c, p| {
                let req = IncrRequest {
                    partition: Some(p.to_proto()),
                    hash_key: hk.clone(),
                    sort_key: sk.clone(),
                    increment: delta,
                    ttl_seconds: 0,
                };
                async move { c.incr(req).await }
            })
            .await?;
        Ok(r.new_value)
    }

    /// Sets `(hash_key, set_sort_key)` to `value` if `check_type` holds for the value at
    /// `(hash_key, check_sort_key)` and `operand`; always answers the checked value.
    #[allow(clippy::too_many_arguments)]
    pub async fn check_and_set(
        &self,
        hash_key: impl AsRef<[u8]>,
        check_sort_key: impl AsRef<[u8]>,
        check_type: CheckType,
        operand: impl AsRef<[u8]>,
        set_sort_key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome, WingError> {
        let (hk, csk, op, ssk, v) =
            (bytes(hash_key), bytes(check_sort_key), bytes(operand), bytes(set_sort_key), bytes(value));
        let set_ttl_seconds = ttl_seconds(ttl);
        let r = self
            .on_key_with(&hk, b"", Idempotence::NotIdempotent, |mut c, p| {
                let req = CheckAndSetRequest {
                    partition: Some(p.to_proto()),
                    hash_key: hk.clone(),
                    check_sort_key: csk.clone(),
                    check_type: check_type as i32,
                    check_operand: op.clone(),
                    set_diff_sort_key: ssk != csk,
                    set_sort_key: ssk.clone(),
                    set_value: v.clone(),
                    set_ttl_seconds,
                    return_check_value: true,
                };
                async move { c.check_and_set(req).await }
            })
            .await?;
        Ok(CasOutcome { set: r.set_succeeded, check_value: r.check_value_exist.then_some(r.check_value) })
    }

    /// Number of live sort keys of `hash_key`.
    pub async fn sortkey_count(&self, hash_key: impl AsRef<[u8]>) -> Result<u64, WingError> {
        let hk = bytes(hash_key);
        let r = self
            .on_key(&hk, b"", |mut c, p| {
                let req = SortKeyCountRequest { partition: Some(p.to_proto()), hash_key: hk.clone() };
                async move { c.sort_key_count(req).await }
            })
            .await?;
        Ok(r.count)
    }

    fn scan_request(p: PartitionId, hash_key: Option<Bytes>, opts: &ScanOptions) -> ScanRequest {
        ScanRequest {
            partition: Some(p.to_proto()),
            hash_key,
            start_sort_key: opts.start_sort_key.clone(),
            stop_sort_key: opts.stop_sort_key.clone(),
            start_inclusive: !opts.start_exclusive,
            stop_inclusive: opts.stop_inclusive,
            batch_size: opts.batch_size,
            limit: opts.limit,
            no_value: opts.no_value,
        }
    }

    /// Streams one partition's records (of `hash_key`, or all of them).
    fn scan_partition(&self, pidx: u32, hash_key: Option<Bytes>, opts: ScanOptions) -> BoxStream<Record> {
        let table = self.clone();
        let open = async move {
            let stream = table
                .on_partition(pidx, |mut c, p| {
                    let req = Self::scan_request(p, hash_key.clone(), &opts);
                    async move { c.scan(req).await }
                })
                .await;
            match stream {
                Ok(s) => s
                    .map(|batch| match batch {
                        Ok(b) => futures::stream::iter(
                            b.records
                                .into_iter()
                                .map(|r| {
                                    Ok(Record {
                                        hash_key: r.hash_key,
                                        sort_key: r.sort_key,
                                        value: r.value,
                                        expire_ts: r.expire_ts,
                                    })
                                })
                                .collect::<Vec<_>>(),
                        )
                        .left_stream(),
                        Err(s) => futures::stream::iter(vec![Err(WingError::from_status(&s))]).right_stream(),
                    })
                    .flatten()
                    .boxed(),
                Err(e) => futures::stream::iter(vec![Err(e)]).boxed(),
            }
        };
        futures::stream::once(open).flatten().boxed()
    }

    /// Streams the records of `hash_key` in sort-key order.
    pub fn scan(&self, hash_key: impl AsRef<[u8]>, opts: ScanOptions) -> BoxStream<Record> {
        let hk = bytes(hash_key);
        if let Err(e) = wingkv_common::key::validate_hash_key(&hk) {
            return futures::stream::iter(vec![Err(e)]).boxed();
        }
        let pidx = partition_index(&hk, b"", self.partition_count());
        self.scan_partition(pidx, Some(hk), opts)
    }

    /// Streams every record of the table, partition after partition (each record exactly once).
    pub fn full_scan(&self, opts: ScanOptions) -> BoxStream<Record> {
        let table = self.clone();
        futures::stream::iter(0..self.partition_count())
            .map(move |pidx| table.scan_partition(pidx, None, opts.clone()))
            .flatten()
            .boxed()
    }
}
