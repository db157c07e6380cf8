//! The openraft type configuration of a partition group.

use openraft::BasicNode;

use wingkv_common::raft::versioned::Versioned;

use crate::command::{Command, CommandResponse};

openraft::declare_raft_types!(
    /// Types of a partition's raft group: commands (with their format version) in, responses
    /// out, snapshots as files.
    pub PartitionRaftConfig:
        D = Versioned<Command>,
        R = CommandResponse,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<PartitionRaftConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A partition's raft handle.
pub type PartitionRaft = openraft::Raft<PartitionRaftConfig>;
