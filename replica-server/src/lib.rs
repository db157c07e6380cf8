//! The wingkv replica server: hosts partition replicas, each one openraft group member with its
//! own RocksDB, and serves the data, raft transport and replica admin gRPC services.
//!
//! Only what the `replica-server` binary uses is public (`config`, `server`), and the decoders
//! the fuzz targets drive (`wire`); everything else is internal to the crate.

mod access;
mod admission;
mod backup;
mod bulk_load;
mod command;
pub mod config;
mod disk_space;
mod durable;
mod export;
mod heartbeat;
mod load_shed;
mod log_clock;
mod manager;
mod membership;
mod meta_fence;
mod metrics;
mod proposal;
mod raft_log;
mod raft_types;
mod range;
mod replica;
mod report_clock;
mod restart;
pub mod server;
mod service;
mod snapshot;
mod state_machine;
mod store;
mod trash;
pub mod wire;
mod write_throttle;
