//! [`Client`]: the connection to a cluster.

use std::sync::Arc;

use wingkv_common::WingError;
use wingkv_proto::meta::ClusterInfoResponse;

use crate::admin::Admin;
use crate::connection::{ClientConfig, ClientInner};
use crate::table::Table;

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
