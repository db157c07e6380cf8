//! The wingkv replica server: hosts partition replicas, each one openraft group member with its
//! own RocksDB, and serves the data, raft transport and replica admin gRPC services.

pub mod admission;
pub mod bulk_load;
pub mod command;
pub mod config;
pub mod durable;
pub mod heartbeat;
pub mod manager;
pub mod metrics;
pub mod proposal;
pub mod raft_log;
pub mod raft_types;
pub mod range;
pub mod replica;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod state_machine;
pub mod store;
pub mod trash;
pub mod write_throttle;
