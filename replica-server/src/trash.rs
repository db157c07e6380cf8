//! The trash of removed replicas: `DATA_DIR/trash/{app_id}.{pidx}.{unix_ms}/`.
//!
//! Removing a replica destroys data, and a removal decided by mistake must be recoverable. So a
//! removed replica's directory is not deleted but moved here whole — its data DB with its raft
//! log folded in ([`crate::raft_log::RaftLogDb::export_to`]) — and deleted only after
//! `replica_trash_grace_secs`. Moving a trash entry back to `DATA_DIR/replica/{app_id}.{pidx}`
//! (server stopped) restores the replica exactly as it was removed.
//!
//! Crash safety: the move is one `rename` followed by an fsync of both parent directories; a
//! crash before it leaves the replica in place (it reopens, and the meta decides again), a crash
//! after it leaves a trash entry and a raft log without a directory, which the next start
//! deletes (`ReplicaManager::open_all`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use wingkv_common::time::unix_millis;
use wingkv_common::{PartitionId, WingError};

use crate::durable::sync_dir;

/// Name of the trash directory under the data dir.
pub const TRASH_DIR: &str = "trash";

/// Moves the replica directory `dir` of `id` into `trash` and answers its new path.
pub fn move_to_trash(id: PartitionId, dir: &Path, trash: &Path) -> Result<PathBuf, WingError> {
    std::fs::create_dir_all(trash)
        .map_err(|e| WingError::Storage(format!("cannot create {}: {e}", trash.display())))?;
    let mut target = trash.join(format!("{id}.{}", unix_millis()));
    while target.exists() {
        target = trash.join(format!("{id}.{}", unix_millis() + 1));
    }
    std::fs::rename(dir, &target)
        .map_err(|e| WingError::Storage(format!("cannot move {} to {}: {e}", dir.display(), target.display())))?;
    sync_dir(trash)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(target)
}

/// When the trash entry `name` was made (`{app}.{pidx}.{unix_ms}`), if it is one.
fn trashed_at_ms(name: &str) -> Option<u64> {
    let (rest, ms) = name.rsplit_once('.')?;
    rest.parse::<PartitionId>().ok()?;
    ms.parse().ok()
}

/// Deletes the trash entries older than `grace`; answers the deleted paths. Entries whose
/// name is not a trash name are left alone.
pub fn sweep(trash: &Path, grace: Duration) -> Result<Vec<PathBuf>, WingError> {
    let entries = match std::fs::read_dir(trash) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(WingError::Storage(format!("cannot list {}: {e}", trash.display()))),
    };
    let now = unix_millis();
    let mut deleted = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(at) = trashed_at_ms(&name) else { continue };
        if now.saturating_sub(at) < grace.as_millis() as u64 {
            continue;
        }
        let path = entry.path();
        std::fs::remove_dir_all(&path)
            .map_err(|e| WingError::Storage(format!("cannot delete {}: {e}", path.display())))?;
        deleted.push(path);
    }
    if !deleted.is_empty() {
        sync_dir(trash)?;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_entries_are_kept_for_the_grace_period_then_deleted() {
        let root = tempfile::tempdir().unwrap();
        let (replicas, trash) = (root.path().join("replica"), root.path().join(TRASH_DIR));
        let dir = replicas.join("3.1");
        std::fs::create_dir_all(dir.join("db")).unwrap();
        std::fs::write(dir.join("db/CURRENT"), b"x").unwrap();
        let moved = move_to_trash(PartitionId::new(3, 1), &dir, &trash).unwrap();
        assert!(!dir.exists());
        assert_eq!(std::fs::read(moved.join("db/CURRENT")).unwrap(), b"x");
        std::fs::create_dir_all(trash.join("not-a-replica")).unwrap();
        assert!(sweep(&trash, Duration::from_secs(3600)).unwrap().is_empty(), "within the grace period");
        assert_eq!(sweep(&trash, Duration::ZERO).unwrap(), vec![moved.clone()]);
        assert!(!moved.exists());
        assert!(trash.join("not-a-replica").exists(), "foreign entries are left alone");
    }
}
