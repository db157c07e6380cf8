//! The wingkv meta server: the table catalog with unique names, partition placement, replica
//! server liveness and re-replication, all kept in an openraft state machine persisted in
//! RocksDB.

pub mod bulk_driver;
pub mod bulk_load;
pub mod catalog;
pub mod config;
pub mod heartbeat;
pub mod liveness;
pub mod metrics;
pub mod node;
pub mod placement;
pub mod raft_types;
pub mod reconcile;
pub mod server;
pub mod service;
pub mod state_machine;
