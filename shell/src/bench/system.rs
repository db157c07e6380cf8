//! The system a YCSB phase runs against: wingkv through its SDK, or etcd v3 through its gRPC KV
//! service, so both are measured with the same workers, keys, values and pacing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::ValueEnum;
use tonic::transport::{Channel, Endpoint};
use wingkv_client::{MultiGetOptions, ScanOptions, Table};
use wingkv_proto::etcd::kv_client::KvClient;
use wingkv_proto::etcd::{PutRequest, RangeRequest};

/// Which system `wingkv bench ycsb` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemKind {
    /// A wingkv cluster (`--meta`), through the SDK.
    Wingkv,
    /// An etcd v3 cluster (`--meta` lists its client endpoints), linearizable ranges and puts.
    Etcd,
}

/// One client of the measured system, shared by the workers given it.
#[derive(Clone)]
pub enum System {
    Wingkv(Table),
    Etcd(EtcdKv),
}

impl System {
    /// A linearizable read of one record; true when it was found.
    pub async fn get(&self, hash_key: &str, sort_key: &str) -> Result<bool> {
        match self {
            System::Wingkv(t) => Ok(t.get(hash_key, sort_key).await?.is_some()),
            System::Etcd(e) => e.get(hash_key, sort_key).await,
        }
    }

    /// A replicated write of one record.
    pub async fn set(&self, hash_key: &str, sort_key: &str, value: &[u8]) -> Result<()> {
        match self {
            System::Wingkv(t) => {
                t.set(hash_key, sort_key, value).await?;
                Ok(())
            }
            System::Etcd(e) => e.put(hash_key, sort_key, value).await,
        }
    }

    /// Up to `count` records of `hash_key` from `sort_key` on; true when any was found.
    pub async fn scan(&self, hash_key: &str, sort_key: &str, count: u32) -> Result<bool> {
        match self {
            System::Wingkv(t) => {
                let opts = MultiGetOptions {
                    range: ScanOptions { start_sort_key: Bytes::from(sort_key.to_owned()), ..Default::default() },
                    max_count: count,
                    ..Default::default()
                };
                Ok(!t.multi_get_opts(hash_key, None, opts).await?.0.is_empty())
            }
            System::Etcd(e) => e.scan(hash_key, sort_key, count).await,
        }
    }
}

/// A client of etcd's KV service over several connections, used in turn (etcd's own client
/// balances the same way over its endpoints). Record `(hash_key, sort_key)` is the etcd key
/// `hash_key \0 sort_key`, so a hash key's records are one key range, as in wingkv.
#[derive(Clone)]
pub struct EtcdKv {
    clients: Arc<Vec<KvClient<Channel>>>,
    next: Arc<AtomicUsize>,
}

impl EtcdKv {
    /// Opens `connections` HTTP/2 connections spread over `endpoints` (`host:port`, plaintext).
    pub async fn connect(endpoints: &[String], connections: usize) -> Result<Self> {
        if endpoints.is_empty() {
            bail!("no etcd endpoint given (--meta HOST:PORT,...)");
        }
        let mut clients = Vec::with_capacity(connections);
        for i in 0..connections.max(1) {
            let ep = &endpoints[i % endpoints.len()];
            let channel = Endpoint::from_shared(format!("http://{ep}"))
                .with_context(|| format!("etcd endpoint '{ep}'"))?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .connect()
                .await
                .with_context(|| format!("connect to etcd at {ep}"))?;
            clients.push(KvClient::new(channel));
        }
        Ok(Self { clients: Arc::new(clients), next: Arc::default() })
    }

    fn client(&self) -> KvClient<Channel> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].clone()
    }

    fn key(hash_key: &str, sort_key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(hash_key.len() + 1 + sort_key.len());
        k.extend_from_slice(hash_key.as_bytes());
        k.push(0);
        k.extend_from_slice(sort_key.as_bytes());
        k
    }

    async fn get(&self, hash_key: &str, sort_key: &str) -> Result<bool> {
        let req = RangeRequest { key: Self::key(hash_key, sort_key).into(), ..Default::default() };
        let resp = self.client().range(req).await.map_err(|s| anyhow!("etcd range: {}", s.message()))?;
        Ok(!resp.into_inner().kvs.is_empty())
    }

    async fn put(&self, hash_key: &str, sort_key: &str, value: &[u8]) -> Result<()> {
        let req = PutRequest { key: Self::key(hash_key, sort_key).into(), value: Bytes::copy_from_slice(value) };
        self.client().put(req).await.map_err(|s| anyhow!("etcd put: {}", s.message()))?;
        Ok(())
    }

    async fn scan(&self, hash_key: &str, sort_key: &str, count: u32) -> Result<bool> {
        // The hash key's range ends where `hash_key \1` begins.
        let mut end = hash_key.as_bytes().to_vec();
        end.push(1);
        let req = RangeRequest {
            key: Self::key(hash_key, sort_key).into(),
            range_end: end.into(),
            limit: i64::from(count),
            ..Default::default()
        };
        let resp = self.client().range(req).await.map_err(|s| anyhow!("etcd range: {}", s.message()))?;
        Ok(!resp.into_inner().kvs.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::EtcdKv;

    #[test]
    fn a_hash_keys_records_are_one_etcd_range_and_no_other_hash_key_is_in_it() {
        let (start, mut end) = (EtcdKv::key("user1", ""), b"user1".to_vec());
        end.push(1);
        for sk in ["", "f000000", "\u{7f}"] {
            let k = EtcdKv::key("user1", sk);
            assert!(k >= start && k < end, "{k:?}");
        }
        for other in [EtcdKv::key("user10", ""), EtcdKv::key("user", "1"), EtcdKv::key("user2", "")] {
            assert!(!(other >= start && other < end), "{other:?} falls in user1's range");
        }
    }
}
