//! File operations that survive a crash: a file written and synced before it is renamed into
//! place, and the directory synced after a rename or creation, so the change itself is durable.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use wingkv_common::WingError;

/// Writes `bytes` to a new file at `path` and syncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), WingError> {
    let io = |what: &str, e: std::io::Error| WingError::Storage(format!("cannot {what} {}: {e}", path.display()));
    let mut f = File::create(path).map_err(|e| io("create", e))?;
    f.write_all(bytes).map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("sync", e))
}

/// Syncs directory `dir`, so that renames and creations inside it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), WingError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WingError::Storage(format!("cannot sync directory {}: {e}", dir.display())))
}

/// Replaces the file at `path` with `bytes`: written and synced aside, renamed over it, and the
/// directory synced; a crash leaves the old content or the new, never a part.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), WingError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| WingError::Storage(format!("cannot rename {} to {}: {e}", tmp.display(), path.display())))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// The number kept in the file at `path` (as text), `None` when there is no such file. A file
/// that holds anything else is `Corruption`, naming `what` it should hold.
pub fn read_number(path: &Path, what: &str) -> Result<Option<u64>, WingError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            text.trim().parse::<u64>().map(Some).map_err(|_| {
                WingError::Corruption(format!("{} does not hold {what}: '{}'", path.display(), text.trim()))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(WingError::Storage(format!("cannot read {}: {e}", path.display()))),
    }
}
