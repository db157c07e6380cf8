//! Who may call what on a secure replica server.
//!
//! - The partition groups' raft transport: replica servers only.
//! - Replica administration (create, remove, membership, bulk load, checksum, and the bulk-load
//!   files peers fetch from each other): meta and replica servers only, never a user.
//! - Data: every certified peer; a table's `replica_access_controller.allowed_users` narrows it
//!   (checked with the table, in the data service).
//! - Health and reflection: every certified peer.

use wingkv_security::authorize::Policy;
use wingkv_security::{Identity, Role};

/// The replica server's [`Policy`].
pub struct ReplicaAccess;

impl Policy for ReplicaAccess {
    fn check(&self, method: &str, identity: &Identity) -> Result<(), String> {
        let service = method.trim_start_matches('/').split_once('/').map_or(method, |(s, _)| s);
        match (service, identity.role()) {
            ("wingkv.raft.RaftTransport", Some(Role::Replica)) => Ok(()),
            ("wingkv.raft.RaftTransport", _) => Err("only replica servers of the cluster may".into()),
            ("wingkv.replica_admin.ReplicaAdmin", Some(_)) => Ok(()),
            ("wingkv.replica_admin.ReplicaAdmin", None) => Err("only servers of the cluster may".into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_reach_data_only() {
        let user = Identity::User("admin".into());
        let meta = Identity::Server { role: Role::Meta, name: "m".into() };
        let replica = Identity::Server { role: Role::Replica, name: "r".into() };
        assert!(ReplicaAccess.check("/wingkv.data.Data/Get", &user).is_ok());
        assert!(ReplicaAccess.check("/wingkv.replica_admin.ReplicaAdmin/RemoveReplica", &user).is_err());
        assert!(ReplicaAccess.check("/wingkv.replica_admin.ReplicaAdmin/RemoveReplica", &meta).is_ok());
        assert!(ReplicaAccess.check("/wingkv.raft.RaftTransport/AppendEntries", &user).is_err());
        assert!(ReplicaAccess.check("/wingkv.raft.RaftTransport/AppendEntries", &meta).is_err());
        assert!(ReplicaAccess.check("/wingkv.raft.RaftTransport/AppendEntries", &replica).is_ok());
    }
}
