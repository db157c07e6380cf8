//! The openraft type configuration of a partition group.

use openraft::BasicNode;

use crate::command::{Command, CommandResponse};

openraft::declare_raft_types!(
    /// Types of a partition's raft group: commands in, responses out, snapshots as files.
    pub PartitionRaftConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<PartitionRaftConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A partition's raft handle.
pub type PartitionRaft = openraft::Raft<PartitionRaftConfig>;
