//! What the wingkv servers and the client share: the key encoding and partition hash of
//! DESIGN §2, the value header, error codes, typed config loading, backoff, tracing setup and the
//! openraft glue (RocksDB log store, gRPC network).

pub mod backoff;
pub mod bulk_load;
pub mod check;
pub mod config;
pub mod error;
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
pub mod provider;
pub mod raft;
pub mod report;
pub mod telemetry;
pub mod throttling;
pub mod value;

pub use error::{ErrorCode, WingError};
pub use partition::PartitionId;
