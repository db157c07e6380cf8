//! The gRPC services of a replica server.

pub mod admin;
mod batch;
pub mod data;
pub mod raft;
