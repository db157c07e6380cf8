//! wingkv Rust SDK (in progress).
