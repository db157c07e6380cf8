//! Where a loader reads a job's files from: the provider (the job's own download), or the
//! other members of the partition's group (a replica that must ingest a job it lacks: raft
//! apply never depends on the provider).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::ObjectStore;
use wingkv_common::channel::ChannelPool;
use wingkv_common::{PartitionId, WingError};
use wingkv_proto::replica_admin::replica_admin_client::ReplicaAdminClient;
use wingkv_proto::replica_admin::FetchBulkLoadFileRequest;

/// The content of one file, chunk by chunk.
pub type FileStream = BoxStream<'static, Result<Bytes, WingError>>;

/// The chunks of a verified bulk-load file a replica streams to a member that lacks it.
pub type FileChunks = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<wingkv_proto::replica_admin::BulkLoadFileChunk, tonic::Status>> + Send>,
>;

/// A place that holds a job's files.
#[tonic::async_trait]
pub trait FileSource: Send + Sync {
    /// Names the file for logs and errors.
    fn describe(&self, name: &str) -> String;

    /// Opens file `name` of the job. A missing file is `NotFound`; a source that may answer
    /// later (unreachable, throttled) answers a retryable error.
    async fn open(&self, name: &str) -> Result<FileStream, WingError>;

    /// The job's `bulk_load_metadata`, read whole up to `max_bytes` (a larger one is refused
    /// without being read).
    async fn metadata(&self, max_bytes: u64) -> Result<Bytes, WingError>;
}

/// A partition directory on the provider: `{root}/{cluster}/{table}/{pidx}`.
pub struct ProviderFiles {
    store: Arc<dyn ObjectStore>,
    dir: object_store::path::Path,
}

impl ProviderFiles {
    /// The files under `partition_dir` in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, partition_dir: &str) -> Result<Self, WingError> {
        let dir = object_store::path::Path::parse(partition_dir)
            .map_err(|e| WingError::InvalidArgument(format!("bad partition dir '{partition_dir}': {e}")))?;
        Ok(Self { store, dir })
    }

    /// The files under `dir` in `store`.
    pub fn from_path(store: Arc<dyn ObjectStore>, dir: object_store::path::Path) -> Self {
        Self { store, dir }
    }
}

#[tonic::async_trait]
impl FileSource for ProviderFiles {
    fn describe(&self, name: &str) -> String {
        self.dir.child(name).to_string()
    }

    async fn open(&self, name: &str) -> Result<FileStream, WingError> {
        let path = self.dir.child(name);
        let got = self.store.get(&path).await.map_err(|e| remote_error(&path, e))?;
        Ok(got.into_stream().map(move |c| c.map_err(|e| remote_error(&path, e))).boxed())
    }

    async fn metadata(&self, max_bytes: u64) -> Result<Bytes, WingError> {
        let path = self.dir.child(wingkv_common::bulk_load::BULK_LOAD_METADATA);
        let head = self.store.head(&path).await.map_err(|e| remote_error(&path, e))?;
        if head.size > max_bytes {
            return Err(WingError::InvalidArgument(format!(
                "{path} is {} bytes, over the limit of {max_bytes} (bulk_load.max_metadata_bytes)",
                head.size
            )));
        }
        let bytes = self.store.get(&path).await.map_err(|e| remote_error(&path, e))?;
        let bytes = bytes.bytes().await.map_err(|e| remote_error(&path, e))?;
        // The object may have grown between the two calls.
        if bytes.len() as u64 > max_bytes {
            return Err(WingError::InvalidArgument(format!(
                "{path} is over the limit of {max_bytes} bytes (bulk_load.max_metadata_bytes)"
            )));
        }
        Ok(bytes)
    }
}

/// The other members of a partition's group, asked in turn (starting after the last one that
/// answered something other than a file).
pub struct PeerFiles {
    partition: PartitionId,
    job_id: u64,
    peers: Vec<String>,
    pool: ChannelPool,
    next: AtomicUsize,
}

/// How long a peer may take to start answering.
const PEER_CONNECT: Duration = Duration::from_secs(5);

impl PeerFiles {
    /// Job `job_id`'s files held by the members at `peers` (addresses) of `partition`.
    pub fn new(partition: PartitionId, job_id: u64, peers: Vec<String>, pool: ChannelPool) -> Self {
        Self { partition, job_id, peers, pool, next: AtomicUsize::new(0) }
    }

    async fn open_at(&self, addr: &str, name: &str) -> Result<FileStream, WingError> {
        let channel = self.pool.get(addr).map_err(|e| WingError::Unavailable(format!("{addr}: {e}")))?;
        let req = FetchBulkLoadFileRequest {
            partition: Some(self.partition.to_proto()),
            job_id: self.job_id,
            name: name.to_string(),
        };
        let mut client = ReplicaAdminClient::new(channel);
        let resp = tokio::time::timeout(PEER_CONNECT, client.fetch_bulk_load_file(req))
            .await
            .map_err(|_| WingError::Unavailable(format!("{addr} did not answer within {PEER_CONNECT:?}")))?
            .map_err(|s| WingError::from_status(&s))?;
        let addr = addr.to_string();
        Ok(resp
            .into_inner()
            .map(move |c| c.map(|c| c.data).map_err(|s| WingError::Unavailable(format!("{addr}: {}", s.message()))))
            .boxed())
    }
}

#[tonic::async_trait]
impl FileSource for PeerFiles {
    fn describe(&self, name: &str) -> String {
        format!("{name} of job {} from the members of {}", self.job_id, self.partition)
    }

    async fn open(&self, name: &str) -> Result<FileStream, WingError> {
        let mut last = None;
        for i in 0..self.peers.len() {
            let at = (self.next.load(Ordering::Relaxed) + i) % self.peers.len();
            match self.open_at(&self.peers[at], name).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    self.next.store(at + 1, Ordering::Relaxed);
                    last = Some(e);
                }
            }
        }
        // No member holds it now; one may later (it is restarting, or still downloading): the
        // caller retries with backoff for as long as the replica is open.
        Err(WingError::Unavailable(format!(
            "no member of {} holds {name} of job {} now ({} asked; last answer: {})",
            self.partition,
            self.job_id,
            self.peers.len(),
            last.map(|e| e.to_string()).unwrap_or_else(|| "no members to ask".into())
        )))
    }

    async fn metadata(&self, _max_bytes: u64) -> Result<Bytes, WingError> {
        Err(WingError::Internal("the file list of a fetch from peers comes from the raft log, not metadata".into()))
    }
}

/// Maps a provider error: a missing object, refused credentials, a bad path or an unsupported
/// request are permanent (retrying cannot help: the job fails with the reason); the rest
/// (network, server errors, throttling) may pass and are retried.
pub fn remote_error(path: &object_store::path::Path, e: object_store::Error) -> WingError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => WingError::NotFound(format!("{path} does not exist on the provider")),
        e @ (E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented
        | E::UnknownConfigurationKey { .. }) => WingError::InvalidArgument(format!("{path}: {e}")),
        other => WingError::Unavailable(format!("{path}: {other}")),
    }
}
