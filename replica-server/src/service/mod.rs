//! The gRPC services of a replica server.

pub mod admin;
pub mod data;
pub mod raft;
