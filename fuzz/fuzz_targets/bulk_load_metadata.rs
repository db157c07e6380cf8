//! The bulk-load layout parsers (`bulk_load_info`, `bulk_load_metadata`, remote names and
//! paths) on arbitrary bytes: no panic, and whatever parses is safe to use.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wingkv_common::bulk_load::{table_dir, validate_file_name, BulkLoadInfo, BulkLoadMetadata};

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = BulkLoadMetadata::parse(data) {
        let mut total = 0u64;
        for f in &meta.files {
            assert!(validate_file_name(&f.name).is_ok(), "a parsed name must be a plain file name");
            assert!(!f.name.contains('/') && !f.name.contains(".."));
            total += f.size;
        }
        assert_eq!(total, meta.file_total_size);
    }
    if let Ok(info) = BulkLoadInfo::parse(data) {
        assert!(info.partition_count.is_power_of_two());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let mut parts = text.splitn(3, '\n');
        let (root, cluster, table) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if let Ok(path) = table_dir(root, cluster, table) {
            assert!(!path.as_ref().split('/').any(|seg| seg == ".."), "{path} escapes its root");
        }
    }
});
