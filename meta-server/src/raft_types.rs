//! The openraft type configuration of the meta group.

use std::io::Cursor;

use openraft::BasicNode;

use wingkv_common::raft::versioned::Versioned;

use crate::catalog::{MetaCommand, MetaResponse};

openraft::declare_raft_types!(
    /// Types of the meta group: catalog commands (with their format version) in, their answers
    /// out; the snapshot is the serialized catalog (small), held in memory.
    pub MetaRaftConfig:
        D = Versioned<MetaCommand>,
        R = MetaResponse,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<MetaRaftConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The meta group's raft handle.
pub type MetaRaft = openraft::Raft<MetaRaftConfig>;
