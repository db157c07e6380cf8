//! A table's access list on a secure cluster: the env `replica_access_controller.allowed_users`
//! (Pegasus's name), a comma-separated list of user names. Unset, every authenticated user may
//! read and write the table; set, only those users. The meta validates it when it is set; the
//! replicas enforce it, applied live from the heartbeat like the other envs.

use std::collections::{BTreeMap, BTreeSet};

/// The env key of a table's allowed users.
pub const ALLOWED_USERS: &str = "replica_access_controller.allowed_users";

/// The users `envs` allow (`None`: the env is unset, everyone authenticated), or why its value
/// is not a list of user names.
pub fn allowed_users(envs: &BTreeMap<String, String>) -> Result<Option<BTreeSet<String>>, String> {
    let Some(value) = envs.get(ALLOWED_USERS) else { return Ok(None) };
    let mut users = BTreeSet::new();
    for user in value.split(',').map(str::trim) {
        wingkv_security::certs::check_name("user", user).map_err(|e| format!("{ALLOWED_USERS} = '{value}': {e}"))?;
        users.insert(user.to_string());
    }
    Ok(Some(users))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envs(v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(ALLOWED_USERS.to_string(), v.to_string())])
    }

    #[test]
    fn a_list_of_names_or_a_clear_error() {
        assert_eq!(allowed_users(&BTreeMap::new()).unwrap(), None);
        let users = allowed_users(&envs("admin, user2")).unwrap().unwrap();
        assert_eq!(users.into_iter().collect::<Vec<_>>(), vec!["admin", "user2"]);
        for bad in ["", "admin,,x", "a b"] {
            let e = allowed_users(&envs(bad)).unwrap_err();
            assert!(e.contains(ALLOWED_USERS), "{e}");
        }
    }
}
