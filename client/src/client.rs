//! [`Client`]: the connection to a cluster.

use std::sync::Arc;
use std::time::Duration;

use wingkv_common::backoff::BackoffPolicy;
use wingkv_common::channel::ChannelPool;
use wingkv_common::meta_client::MetaClient;
use wingkv_common::WingError;
use wingkv_proto::meta::{ClusterInfoResponse, QueryTableRequest, TableConfiguration};

use crate::admin::Admin;
use crate::table::Table;

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Meta server addresses (`host:port`).
    pub meta_addrs: Vec<String>,
    /// Deadline of one request, retries included.
    pub request_timeout: Duration,
    /// Backoff between retries.
    pub backoff: BackoffPolicy,
}

impl ClientConfig {
    /// Defaults (5 s per request; backoff from 20 ms to 1 s) for the given metas.
    pub fn new(meta_addrs: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            meta_addrs: meta_addrs.into_iter().map(Into::into).collect(),
            request_timeout: Duration::from_secs(5),
            backoff: BackoffPolicy::new(Duration::from_millis(20), Duration::from_secs(1)),
        }
    }
}

pub(crate) struct ClientInner {
    pub(crate) config: ClientConfig,
    pub(crate) meta: MetaClient,
    pub(crate) pool: ChannelPool,
}

impl ClientInner {
    /// The connections of `config`, made lazily: nothing is asked yet.
    pub(crate) fn new(config: ClientConfig) -> Result<Self, WingError> {
        let pool = ChannelPool::default();
        let mut meta = MetaClient::new(config.meta_addrs.clone(), pool.clone())?;
        meta.deadline = config.request_timeout;
        meta.backoff = config.backoff;
        Ok(Self { config, meta, pool })
    }

    pub(crate) async fn query_table(&self, name: &str) -> Result<TableConfiguration, WingError> {
        let req = QueryTableRequest { name: name.to_string() };
        self.meta
            .call(|mut c| {
                let req = req.clone();
                async move { c.query_table(req).await }
            })
            .await
    }
}

/// A connection to a wingkv cluster. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl Client {
    /// Connects to the cluster whose meta servers are `meta_addrs`, with default settings.
    pub async fn connect(meta_addrs: impl IntoIterator<Item = impl Into<String>>) -> Result<Self, WingError> {
        Self::with_config(ClientConfig::new(meta_addrs)).await
    }

    /// Connects with `config`; fails when no meta answers within the request timeout.
    pub async fn with_config(config: ClientConfig) -> Result<Self, WingError> {
        let client = Self { inner: Arc::new(ClientInner::new(config)?) };
        client.cluster_info().await?;
        Ok(client)
    }

    /// Opens the table `name` (fails with `TableNotFound` when there is none).
    pub async fn open_table(&self, name: &str) -> Result<Table, WingError> {
        let cfg = self.inner.query_table(name).await?;
        Ok(Table::new(self.inner.clone(), name.to_string(), cfg))
    }

    /// The cluster's summary (the same as [`Admin::cluster_info`]).
    pub async fn cluster_info(&self) -> Result<ClusterInfoResponse, WingError> {
        self.admin().cluster_info().await
    }

    /// Typed administrative calls (tables, envs, nodes, bulk loads) over this client's
    /// connections and settings.
    pub fn admin(&self) -> Admin {
        Admin::from_inner(self.inner.clone())
    }

    /// The client's settings.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }
}
