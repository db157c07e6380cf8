//! A client of the meta server group that follows its leader: a follower's `NotLeader` answer
//! names the leader, and unreachable or unavailable metas are retried on the next address with
//! exponential backoff, all within one deadline.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use wingkv_proto::meta::meta_client::MetaClient as GrpcMetaClient;

use crate::backoff::BackoffPolicy;
use crate::raft::network::ChannelPool;
use crate::{ErrorCode, WingError};

/// Leader-following client of the meta servers.
pub struct MetaClient {
    addrs: Vec<String>,
    pool: ChannelPool,
    current: Mutex<usize>,
    /// Deadline of one call, retries included.
    pub deadline: Duration,
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
            backoff: BackoffPolicy::new(Duration::from_millis(50), Duration::from_secs(1)),
        })
    }

    /// The meta addresses this client knows.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    fn current_addr(&self) -> String {
        let i = *self.current.lock().unwrap_or_else(|p| p.into_inner());
        self.addrs[i % self.addrs.len()].clone()
    }

    fn point_at(&self, addr: &str) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match self.addrs.iter().position(|a| a == addr) {
            Some(i) => *cur = i,
            None => *cur = (*cur + 1) % self.addrs.len(),
        }
    }

    fn rotate(&self) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        *cur = (*cur + 1) % self.addrs.len();
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

    /// Runs `f` against the meta leader, retrying `NotLeader`, `Unavailable` and transport
    /// failures until the deadline. Other errors are returned at once.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, WingError>
    where
        F: FnMut(GrpcMetaClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.deadline;
        let mut backoff = self.backoff.start();
        let mut followed_hint = false;
        loop {
            let addr = self.current_addr();
            let channel = self
                .pool
                .get(&addr)
                .map_err(|e| WingError::InvalidArgument(format!("bad meta address {addr}: {e}")))?;
            let err = match f(GrpcMetaClient::new(channel)).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) => WingError::from_status(&status),
            };
            match err.code() {
                ErrorCode::NotLeader => match err.leader() {
                    Some(leader) if leader != addr => {
                        self.point_at(leader);
                        // Follow a fresh hint at once; a chain of hints (an election in
                        // progress) backs off like any other retry.
                        if !followed_hint && Instant::now() < deadline {
                            followed_hint = true;
                            continue;
                        }
                    }
                    _ => self.rotate(),
                },
                ErrorCode::Unavailable | ErrorCode::Timeout => self.rotate(),
                _ => return Err(err),
            }
            followed_hint = false;
            let delay = backoff.next_delay();
            if Instant::now() + delay >= deadline {
                return Err(WingError::Unavailable(format!(
                    "no meta leader answered within {:?} (metas: {}; last error: {err})",
                    self.deadline,
                    self.addrs.join(",")
                )));
            }
            tokio::time::sleep(delay).await;
        }
    }
}
