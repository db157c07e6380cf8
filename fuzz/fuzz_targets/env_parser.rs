//! The table-env parser (write throttling, request denial) on arbitrary values: no panic, no
//! overflow. (The replica's throttle window has its own unit tests at extreme counts.)
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use wingkv_common::throttling::{
    validate_envs, TableThrottling, ThrottlingPolicy, DENY_CLIENT_REQUEST, DENY_CLIENT_WRITE, WRITE_THROTTLING,
    WRITE_THROTTLING_BY_SIZE,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let count = data.first().map_or(1, |b| 1u32 << (b % 17));
    for by_size in [false, true] {
        if let Ok(p) = ThrottlingPolicy::parse(WRITE_THROTTLING, text, by_size) {
            let _ = p.per_partition(count);
        }
    }
    // Every known key gets a piece of the input.
    let keys = [WRITE_THROTTLING, WRITE_THROTTLING_BY_SIZE, DENY_CLIENT_REQUEST, DENY_CLIENT_WRITE];
    let envs: BTreeMap<String, String> =
        keys.iter().zip(text.split('\n')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let valid = validate_envs(&envs).is_ok();
    match TableThrottling::from_envs(&envs, count) {
        Ok(_) => assert!(valid, "from_envs accepted what validate_envs refused"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
