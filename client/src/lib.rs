//! The wingkv Rust SDK.
//!
//! Connect to the meta servers, open a table, and read and write records addressed by
//! `(hash_key, sort_key)`. The SDK finds each record's partition with the same hash as the
//! servers, sends the request to that partition's primary, and on `NotLeader`, `Busy`,
//! unavailability or timeouts refreshes its routing and retries with exponential backoff and
//! jitter — all within one deadline per request (default 5 s). A missing record is `Ok(None)`,
//! not an error.
//!
//! ```no_run
//! use std::time::Duration;
//! use wingkv_client::Client;
//!
//! # async fn example() -> Result<(), wingkv_client::Error> {
//! let client = Client::connect(["127.0.0.1:34601"]).await?;
//! let table = client.open_table("temp").await?;
//! table.set("user1", "name", "alice").await?;
//! table.set_with_ttl("user1", "session", "x", Some(Duration::from_secs(60))).await?;
//! assert_eq!(table.get("user1", "name").await?.as_deref(), Some(&b"alice"[..]));
//! assert_eq!(table.incr("user1", "visits", 1).await?, 1);
//! table.del("user1", "session").await?;
//! # Ok(())
//! # }
//! ```
//!
//! Scans are async streams:
//!
//! ```no_run
//! use futures::StreamExt;
//! use wingkv_client::{Client, ScanOptions};
//!
//! # async fn example() -> Result<(), wingkv_client::Error> {
//! let table = Client::connect(["127.0.0.1:34601"]).await?.open_table("temp").await?;
//! let mut rows = table.scan("user1", ScanOptions::default());
//! while let Some(row) = rows.next().await {
//!     let row = row?;
//!     println!("{:?} => {:?}", row.sort_key, row.value);
//! }
//! let total = table.full_scan(ScanOptions::default()).count().await;
//! # Ok(())
//! # }
//! ```
//!
//! Administration (tables, envs, nodes, bulk loads) goes through [`Admin`]:
//!
//! ```no_run
//! use wingkv_client::{Client, CreateTableOptions};
//!
//! # async fn example() -> Result<(), wingkv_client::Error> {
//! let admin = Client::connect(["127.0.0.1:34601"]).await?.admin();
//! let options = CreateTableOptions { partition_count: Some(8), ..Default::default() };
//! admin.create_table("temp", options).await?;
//! admin.set_envs("temp", [("replica.write_throttling", "1000*delay*100")]).await?;
//! for t in admin.list_tables(false).await? {
//!     println!("{} {} {}", t.app_id, t.name, t.status);
//! }
//! # Ok(())
//! # }
//! ```

mod admin;
mod batch;
mod client;
mod connection;
mod table;

pub use admin::{Admin, BulkLoadSource, CreateTableOptions};
pub use client::Client;
pub use connection::ClientConfig;
pub use table::{CasOutcome, CheckType, MultiGetOptions, Record, ScanOptions, Table, Ttl};
/// Errors of the SDK: a typed enum whose [`code`](WingError::code) says what went wrong.
pub use wingkv_common::WingError as Error;
pub use wingkv_common::{ErrorCode, PartitionId};
/// The status of a backup, a partition of it or a replica's export (`BK_*`).
pub use wingkv_proto::common::BackupStatus;
/// The status of a bulk-load job, a partition of it or a replica's part (`BLS_*`).
pub use wingkv_proto::common::BulkLoadStatus;
/// The meta's answers that [`Admin`] returns as they are.
pub use wingkv_proto::meta::{
    BackupPolicy, BackupStatusResponse, BalanceStatus, BulkLoadStatusResponse, ClusterInfoResponse, DropTableResponse,
    ModifyBackupPolicyRequest, NodeInfo, NodeStatus, PartitionBackupStatus, ReplicaCountResponse, RestoreStatus,
    RestoreStatusResponse, ServerInfoResponse, TableConfiguration, TableStatus, TableSummary,
};
