//! What a [`Client`](crate::Client), its [`Table`](crate::Table)s and its
//! [`Admin`](crate::Admin) share: the settings and the connections (meta client, channel pool).

use std::time::Duration;

use wingkv_common::backoff::BackoffPolicy;
use wingkv_common::channel::ChannelPool;
use wingkv_common::meta_client::MetaClient;
use wingkv_common::WingError;
use wingkv_proto::meta::{QueryTableRequest, TableConfiguration};

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Meta server addresses (`host:port`).
    pub meta_addrs: Vec<String>,
    /// Deadline of one request, retries included.
    pub request_timeout: Duration,
    /// Backoff between retries.
    pub backoff: BackoffPolicy,
    /// Mutual TLS for a secure cluster: the cluster's CA and this user's certificate and key
    /// (`wingkv cert issue-client`). `None`: plaintext, for a cluster without TLS.
    pub tls: Option<wingkv_security::TlsConfig>,
    /// Send gets, sets and dels of up to 64 KiB on one `Batch` stream per replica server, many
    /// per message (default), instead of one unary call each. Servers that do not serve
    /// `Batch` get unary calls either way.
    pub batching: bool,
}

impl ClientConfig {
    /// Defaults (5 s per request; backoff from 20 ms to 1 s; batching on) for the given metas.
    pub fn new(meta_addrs: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            meta_addrs: meta_addrs.into_iter().map(Into::into).collect(),
            request_timeout: Duration::from_secs(5),
            backoff: BackoffPolicy::new(Duration::from_millis(20), Duration::from_secs(1)),
            tls: None,
            batching: true,
        }
    }
}

pub(crate) struct ClientInner {
    pub(crate) config: ClientConfig,
    pub(crate) meta: MetaClient,
    pub(crate) pool: ChannelPool,
    pub(crate) batchers: std::sync::Arc<crate::batch::Batchers>,
}

impl ClientInner {
    /// The connections of `config`, made lazily: nothing is asked yet (TLS files are read now:
    /// a missing or bad one is an `InvalidArgument` naming it).
    pub(crate) fn new(config: ClientConfig) -> Result<Self, WingError> {
        let tls = match &config.tls {
            Some(files) => Some(
                wingkv_security::client::ClientTls::new(files)
                    .map_err(|e| WingError::InvalidArgument(format!("TLS settings: {e}")))?,
            ),
            None => None,
        };
        let pool = ChannelPool::new(tls);
        let mut meta = MetaClient::new(config.meta_addrs.clone(), pool.clone())?;
        meta.deadline = config.request_timeout;
        meta.backoff = config.backoff;
        Ok(Self { config, meta, pool, batchers: Default::default() })
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
