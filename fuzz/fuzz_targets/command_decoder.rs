//! The decoders of raft log commands on arbitrary bytes: a replica's `Command` and the meta's
//! `MetaCommand`, versioned or as the first releases wrote them. No panic, no unbounded
//! allocation, and whatever decodes encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wingkv_replica_server::wire::check_command(data);
    wingkv_meta_server::wire::check_command(data);
});
