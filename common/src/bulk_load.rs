//! The bulk-load file layout of DESIGN §5 (Pegasus's):
//!
//! ```text
//! {root}/{cluster}/{table}/bulk_load_info                {"app_id":N,"app_name":"t","partition_count":P}
//! {root}/{cluster}/{table}/{pidx}/bulk_load_metadata     {"files":[{"name":"0.sst","size":S,"md5":"hex"}],"file_total_size":T}
//! {root}/{cluster}/{table}/{pidx}/{name}.sst
//! ```
//!
//! Parsing checks everything a replica will rely on: names that cannot escape their directory,
//! digests of the right length ([`crate::file_digest`]: an `"md5"`, or the `"xxh3"` that backups
//! write), sizes that add up.

use serde::{Deserialize, Serialize};

use crate::WingError;

/// Name of the table-level info file.
pub const BULK_LOAD_INFO: &str = "bulk_load_info";
/// Name of each partition's metadata file.
pub const BULK_LOAD_METADATA: &str = "bulk_load_metadata";

/// `{table}/bulk_load_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkLoadInfo {
    /// Informational: external producers may not know it.
    #[serde(default)]
    pub app_id: u32,
    /// Must match the table.
    pub app_name: String,
    /// Must match the table.
    pub partition_count: u32,
}

pub use crate::file_digest::FileMeta;

/// `{table}/{pidx}/bulk_load_metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BulkLoadMetadata {
    /// The partition's files.
    pub files: Vec<FileMeta>,
    /// Sum of the file sizes.
    pub file_total_size: u64,
}

/// Refuses a remote file name that could leave its directory or is not a plain name.
pub fn validate_file_name(name: &str) -> Result<(), WingError> {
    let bad =
        |why: &str| Err(WingError::InvalidArgument(format!("bulk-load file name '{}' {why}", name.escape_default())));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.contains('/') || name.contains('\\') {
        return bad("contains a path separator");
    }
    if name == "." || name == ".." || name.contains("..") {
        return bad("contains '..'");
    }
    if name.contains('\0') {
        return bad("contains a NUL byte");
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("contains a control character");
    }
    Ok(())
}

impl BulkLoadInfo {
    /// Parses and checks `bulk_load_info`.
    pub fn parse(bytes: &[u8]) -> Result<Self, WingError> {
        let info: Self = serde_json::from_slice(bytes)
            .map_err(|e| WingError::InvalidArgument(format!("bulk_load_info is not valid: {e}")))?;
        crate::naming::validate_partition_count(info.partition_count)
            .map_err(|e| WingError::InvalidArgument(format!("bulk_load_info: {e}")))?;
        Ok(info)
    }

    /// Checks that this info describes the table `name` of `partition_count` partitions.
    pub fn check_matches(&self, name: &str, partition_count: u32) -> Result<(), WingError> {
        if self.app_name != name {
            return Err(WingError::InvalidArgument(format!(
                "bulk_load_info is for table '{}', not '{name}'",
                self.app_name
            )));
        }
        if self.partition_count != partition_count {
            return Err(WingError::InvalidArgument(format!(
                "bulk_load_info has {} partitions; table '{name}' has {partition_count}",
                self.partition_count
            )));
        }
        Ok(())
    }
}

impl BulkLoadMetadata {
    /// Parses and checks a partition's `bulk_load_metadata`.
    pub fn parse(bytes: &[u8]) -> Result<Self, WingError> {
        let meta: Self = serde_json::from_slice(bytes)
            .map_err(|e| WingError::InvalidArgument(format!("bulk_load_metadata is not valid: {e}")))?;
        let mut names = std::collections::HashSet::new();
        let mut total = 0u64;
        for f in &meta.files {
            validate_file_name(&f.name)?;
            if !names.insert(f.name.as_str()) {
                return Err(WingError::InvalidArgument(format!("bulk_load_metadata lists '{}' twice", f.name)));
            }
            total = total
                .checked_add(f.size)
                .ok_or_else(|| WingError::InvalidArgument("bulk_load_metadata sizes overflow".into()))?;
        }
        if total != meta.file_total_size {
            return Err(WingError::InvalidArgument(format!(
                "bulk_load_metadata says file_total_size {} but its files add up to {total}",
                meta.file_total_size
            )));
        }
        Ok(meta)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The object path of a table's bulk-load directory: `{root}/{cluster}/{table}`.
pub fn table_dir(root: &str, cluster: &str, table: &str) -> Result<object_store::path::Path, WingError> {
    for (what, part) in [("cluster", cluster), ("table", table)] {
        validate_file_name(part).map_err(|e| WingError::InvalidArgument(format!("{what}: {e}")))?;
    }
    let root = root.trim_matches('/');
    let joined = if root.is_empty() { format!("{cluster}/{table}") } else { format!("{root}/{cluster}/{table}") };
    object_store::path::Path::parse(&joined)
        .map_err(|e| WingError::InvalidArgument(format!("bulk-load root '{root}' is not a valid path: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_examples_parse() {
        let info = BulkLoadInfo::parse(br#"{"app_id":3,"app_name":"t","partition_count":8}"#).unwrap();
        info.check_matches("t", 8).unwrap();
        assert!(info.check_matches("u", 8).is_err());
        assert!(info.check_matches("t", 4).unwrap_err().to_string().contains("8 partitions"));
        // app_id is informational.
        BulkLoadInfo::parse(br#"{"app_name":"t","partition_count":8}"#).unwrap();
        let m = BulkLoadMetadata::parse(
            br#"{"files":[{"name":"0.sst","size":5,"md5":"5d41402abc4b2a76b9719d911017c592"}],"file_total_size":5}"#,
        )
        .unwrap();
        assert_eq!(m.files[0].size, 5);
    }

    #[test]
    fn hostile_metadata_is_refused() {
        let md5 = "5d41402abc4b2a76b9719d911017c592";
        for name in ["../x.sst", "a/b.sst", "/abs.sst", "..", "", "x\\u0000.sst", "a\\\\b"] {
            let j = format!(r#"{{"files":[{{"name":"{name}","size":1,"md5":"{md5}"}}],"file_total_size":1}}"#);
            assert!(BulkLoadMetadata::parse(j.as_bytes()).is_err(), "{name}");
        }
        let bad_md5 = r#"{"files":[{"name":"0.sst","size":1,"md5":"xyz"}],"file_total_size":1}"#;
        assert!(BulkLoadMetadata::parse(bad_md5.as_bytes()).is_err());
        let bad_total = format!(r#"{{"files":[{{"name":"0.sst","size":1,"md5":"{md5}"}}],"file_total_size":2}}"#);
        assert!(BulkLoadMetadata::parse(bad_total.as_bytes()).unwrap_err().to_string().contains("add up"));
        assert!(BulkLoadMetadata::parse(b"not json").is_err());
        assert!(BulkLoadInfo::parse(br#"{"app_name":"t","partition_count":3}"#).is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(table_dir("/data/bl", "onebox", "t").unwrap().as_ref(), "data/bl/onebox/t");
        assert_eq!(table_dir("", "onebox", "t").unwrap().as_ref(), "onebox/t");
        assert!(table_dir("/x", "..", "t").is_err());
        assert!(table_dir("/x", "c", "a/b").is_err());
    }
}
