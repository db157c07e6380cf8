//! The wingkv meta server: the table catalog with unique names, partition placement, replica
//! server liveness and re-replication, all kept in an openraft state machine persisted in
//! RocksDB.
//!
//! Only what the `meta-server` binary uses is public (`config`, `server`), and the decoders the
//! fuzz targets drive (`wire`); everything else is internal to the crate.

mod access;
mod backup;
mod backup_driver;
mod balance;
mod balancer;
mod bulk_driver;
mod bulk_load;
mod call_retry;
mod catalog;
pub mod config;
mod heartbeat;
mod liveness;
mod metrics;
mod node;
mod placement;
mod raft_types;
mod reconcile;
pub mod server;
mod service;
mod state_machine;
pub mod wire;
