//! A client of the meta server group that follows its leader: a follower's `NotLeader` answer
//! names the leader, and unreachable or unavailable metas are retried on the next address with
//! exponential backoff, all within one deadline.
//!
//! Each attempt has its own short timeout: a frozen or cut-off meta accepts TCP connections (or
//! keeps an old one) and then never answers, and waiting on it would spend the whole deadline
//! there. The client remembers the meta that last answered as leader and starts there.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use wingkv_proto::meta::meta_client::MetaClient as GrpcMetaClient;

use crate::backoff::BackoffPolicy;
use crate::channel::ChannelPool;
use crate::sync::MutexExt;
use crate::{ErrorCode, WingError};

/// Attempt timeout of the meta calls that wait on a live leader for long: a table creation
/// (which waits for every partition's primary, `create_table_timeout_ms`) and the start of a
/// bulk load (which reads the provider).
pub const LONG_META_CALL: Duration = Duration::from_secs(40);

/// Leader-following client of the meta servers.
pub struct MetaClient {
    addrs: Vec<String>,
    pool: ChannelPool,
    current: Mutex<usize>,
    /// Deadline of one call, retries included.
    pub deadline: Duration,
    /// Timeout of one attempt of [`Self::call`] (one meta); then the next meta is tried.
    pub attempt_timeout: Duration,
    /// Backoff between retries.
    pub backoff: BackoffPolicy,
}

impl MetaClient {
    /// A client of the metas at `addrs` (`host:port`).
    pub fn new(addrs: Vec<String>, pool: ChannelPool) -> Result<Self, WingError> {
        if addrs.is_empty() {
            return Err(WingError::InvalidArgument("no meta server address given".into()));
        }
        Ok(Self {
            addrs,
            pool,
            current: Mutex::new(0),
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(2),
            backoff: BackoffPolicy::new(Duration::from_millis(50), Duration::from_secs(1)),
        })
    }

    /// The meta addresses this client knows.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    fn current_addr(&self) -> String {
        let i = *self.current.locked();
        self.addrs[i % self.addrs.len()].clone()
    }

    fn point_at(&self, addr: &str) {
        let mut cur = self.current.locked();
        match self.addrs.iter().position(|a| a == addr) {
            Some(i) => *cur = i,
            None => *cur = (*cur + 1) % self.addrs.len(),
        }
    }

    /// Moves to the next meta that is not in `skip` (to the next one at all when every meta
    /// is in it).
    fn rotate_past(&self, skip: &[String]) {
        let mut cur = self.current.locked();
        let n = self.addrs.len();
        let next = (1..=n).map(|k| (*cur + k) % n).find(|i| !skip.contains(&self.addrs[*i]));
        *cur = next.unwrap_or((*cur + 1) % n);
    }

    /// Runs `f` once against the meta at `addr` (leader or not), within `timeout`.
    pub async fn call_at<T, F, Fut>(&self, addr: &str, timeout: Duration, f: F) -> Result<T, WingError>
    where
        F: FnOnce(GrpcMetaClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let channel =
            self.pool.get(addr).map_err(|e| WingError::InvalidArgument(format!("bad meta address {addr}: {e}")))?;
        match tokio::time::timeout(timeout, f(GrpcMetaClient::new(channel))).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(WingError::from_status(&status)),
            Err(_) => Err(WingError::Timeout(format!("meta {addr} did not answer within {timeout:?}"))),
        }
    }

    /// Runs `f` against the meta leader, retrying `NotLeader`, `Unavailable`, timeouts and
    /// transport failures until the deadline, each attempt within `attempt_timeout`. Other
    /// errors are returned at once.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, WingError>
    where
        F: FnMut(GrpcMetaClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_within(self.attempt_timeout, self.deadline, f).await
    }

    /// [`Self::call`] for a request that legitimately takes long on a live leader (a table
    /// creation waits for its primaries): each attempt may take up to `attempt`.
    pub async fn call_long<T, F, Fut>(&self, attempt: Duration, f: F) -> Result<T, WingError>
    where
        F: FnMut(GrpcMetaClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_within(attempt, self.deadline.max(attempt), f).await
    }

    async fn call_within<T, F, Fut>(&self, attempt: Duration, total: Duration, mut f: F) -> Result<T, WingError>
    where
        F: FnMut(GrpcMetaClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + total;
        let mut backoff = self.backoff.start();
        let mut followed_hint = false;
        // Metas that did not answer in this call: a follower's hint may still name one (the
        // old leader, frozen or cut off, until an election ends), and it is not asked again.
        let mut silent: Vec<String> = Vec::new();
        loop {
            let addr = self.current_addr();
            let channel = self
                .pool
                .get(&addr)
                .map_err(|e| WingError::InvalidArgument(format!("bad meta address {addr}: {e}")))?;
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            let err = match tokio::time::timeout(attempt.min(left), f(GrpcMetaClient::new(channel))).await {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                // No wingkv code: the meta did not answer itself (a reset connection, a refused
                // one): another meta may.
                Ok(Err(status))
                    if !status.metadata().contains_key(crate::error::ERROR_CODE_HEADER)
                        && matches!(
                            status.code(),
                            tonic::Code::Unknown
                                | tonic::Code::Unavailable
                                | tonic::Code::Cancelled
                                | tonic::Code::Internal
                        ) =>
                {
                    WingError::Unavailable(format!("meta {addr}: {}", status.message()))
                }
                Ok(Err(status)) => WingError::from_status(&status),
                Err(_) => WingError::Timeout(format!("meta {addr} did not answer within {:?}", attempt.min(left))),
            };
            if matches!(err.code(), ErrorCode::Timeout | ErrorCode::Unavailable) && !silent.contains(&addr) {
                silent.push(addr.clone());
            }
            match err.code() {
                ErrorCode::NotLeader => match err.leader() {
                    Some(leader) if leader != addr && !silent.iter().any(|s| s == leader) => {
                        self.point_at(leader);
                        // Follow a fresh hint at once; a chain of hints (an election in
                        // progress) backs off like any other retry.
                        if !followed_hint && Instant::now() < deadline {
                            followed_hint = true;
                            continue;
                        }
                    }
                    _ => self.rotate_past(&silent),
                },
                ErrorCode::Unavailable | ErrorCode::Timeout => self.rotate_past(&silent),
                _ => return Err(err),
            }
            followed_hint = false;
            let delay = backoff.next_delay();
            if Instant::now() + delay >= deadline {
                return Err(WingError::Unavailable(format!(
                    "no meta leader answered within {total:?} (metas: {}; last error: {err})",
                    self.addrs.join(",")
                )));
            }
            tokio::time::sleep(delay).await;
        }
    }
}
