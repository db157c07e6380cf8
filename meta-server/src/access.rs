//! Who may call what on a secure meta server.
//!
//! - The meta group's raft transport: meta servers only.
//! - Registration and heartbeats: replica servers only (a user could otherwise re-point a
//!   node's address or report replicas that do not exist).
//! - Reads of the catalog and cluster state (what the SDK's routing and the shell's listings
//!   use): every certified peer.
//! - Everything else, the control plane (create, drop, recall, envs, bulk-load control): users
//!   named in `admin_users`.
//! - Health and reflection: every certified peer.

use std::collections::BTreeSet;

use wingkv_security::authorize::Policy;
use wingkv_security::{Identity, Role};

/// Meta methods every certified peer may call: they read, never change.
const READ_METHODS: &[&str] = &[
    "ListTables",
    "QueryTable",
    "ListNodes",
    "ClusterInfo",
    "ServerInfo",
    "GetTableEnvs",
    "QueryBulkLoadStatus",
    "GetMetaLevel",
    "GetReplicaCount",
    "QueryBackupStatus",
    "QueryRestoreStatus",
    "ListBackupPolicies",
];

/// The meta server's [`Policy`].
pub struct MetaAccess {
    admin_users: BTreeSet<String>,
}

impl MetaAccess {
    /// A policy granting the control plane to `admin_users`.
    pub fn new(admin_users: &[String]) -> Self {
        Self { admin_users: admin_users.iter().cloned().collect() }
    }
}

fn require_role(identity: &Identity, role: Role) -> Result<(), String> {
    match identity.role() {
        Some(r) if r == role => Ok(()),
        _ => Err(format!("only {} servers of the cluster may", role.as_str())),
    }
}

impl Policy for MetaAccess {
    fn check(&self, method: &str, identity: &Identity) -> Result<(), String> {
        let (service, name) = method.trim_start_matches('/').split_once('/').unwrap_or((method, ""));
        match service {
            "wingkv.raft.RaftTransport" => require_role(identity, Role::Meta),
            "wingkv.meta.Meta" => match name {
                "RegisterNode" | "Heartbeat" => require_role(identity, Role::Replica),
                n if READ_METHODS.contains(&n) => Ok(()),
                _ => match identity.user() {
                    Some(u) if self.admin_users.contains(u) => Ok(()),
                    _ => Err("the control plane is for the users in the meta's admin_users".into()),
                },
            },
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_read_admins_change_servers_do_their_part() {
        let p = MetaAccess::new(&["admin".to_string()]);
        let admin = Identity::User("admin".into());
        let user = Identity::User("user1".into());
        let replica = Identity::Server { role: Role::Replica, name: "r".into() };
        let meta = Identity::Server { role: Role::Meta, name: "m".into() };
        assert!(p.check("/wingkv.meta.Meta/CreateTable", &admin).is_ok());
        for denied in [&user, &replica, &meta] {
            assert!(p.check("/wingkv.meta.Meta/CreateTable", denied).is_err(), "{denied}");
        }
        assert!(p.check("/wingkv.meta.Meta/QueryTable", &user).is_ok());
        assert!(p.check("/wingkv.meta.Meta/Heartbeat", &replica).is_ok());
        assert!(p.check("/wingkv.meta.Meta/RegisterNode", &admin).is_err());
        assert!(p.check("/wingkv.raft.RaftTransport/Vote", &meta).is_ok());
        assert!(p.check("/wingkv.raft.RaftTransport/Vote", &replica).is_err());
        assert!(p.check("/wingkv.raft.RaftTransport/Vote", &admin).is_err());
    }
}
