//! What the wingkv servers and the client share: the key encoding and partition hash of
//! DESIGN §2, the value header, error codes, backoff and the meta client. Server-side parts sit
//! behind features so the SDK builds without them (`cargo tree -p wingkv-client`): `raft` (the
//! openraft glue: gRPC network, read barrier), `storage` (the RocksDB log store), `bulk-load`
//! (the bulk-load layout and object-store providers), `sst-writer` (writing that layout), `config` (TOML loading), `telemetry`
//! (tracing setup) and `server` (metrics, health, the frontend listener).

pub mod backoff;
#[cfg(feature = "bulk-load")]
pub mod bulk_load;
#[cfg(feature = "sst-writer")]
pub mod bulk_writer;
pub mod channel;
pub mod check;
#[cfg(feature = "config")]
pub mod config;
pub mod error;
#[cfg(feature = "bulk-load")]
pub mod file_digest;
#[cfg(feature = "server")]
pub mod frontend;
pub mod hash;
pub mod key;
pub mod meta_client;
#[cfg(feature = "server")]
pub mod metrics;
pub mod naming;
pub mod net;
pub mod partition;
pub mod process;
#[cfg(feature = "bulk-load")]
pub mod provider;
#[cfg(feature = "raft")]
pub mod raft;
pub mod report;
pub mod sync;
pub mod table_acl;
#[cfg(feature = "telemetry")]
pub mod telemetry;
pub mod throttling;
pub mod time;
pub mod value;

pub use error::{ErrorCode, WingError};
pub use partition::PartitionId;
