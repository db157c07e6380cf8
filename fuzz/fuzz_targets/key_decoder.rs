//! The key decoder and the scan-range helpers on arbitrary stored keys: no panic, and a key
//! that decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wingkv_common::key::{decode_key, encode_key, hash_key_range, next_blob};

fuzz_target!(|data: &[u8]| {
    if let Ok((hash_key, sort_key)) = decode_key(data) {
        let again = encode_key(hash_key, sort_key).expect("a decoded key encodes");
        assert_eq!(again, data, "decode then encode must give the key back");
        let _ = hash_key_range(hash_key);
    }
    if let Some(next) = next_blob(data) {
        assert!(next.as_slice() > data, "the next blob sorts after its prefix");
    }
});
