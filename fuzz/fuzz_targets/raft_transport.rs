//! The raft transport's decoders on arbitrary bytes, as a peer (or anyone who reaches the port)
//! can send them: the gRPC message (`RaftMessage`, protobuf) and its payload (bincode) for each
//! method, with the partition's and the meta's type configs. No panic, no unbounded allocation,
//! and whatever decodes encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use wingkv_common::raft::network::RaftMethod;
use wingkv_proto::raft::RaftMessage;

const METHODS: [RaftMethod; 3] = [RaftMethod::AppendEntries, RaftMethod::Vote, RaftMethod::InstallSnapshot];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let method = METHODS[usize::from(selector) % METHODS.len()];
    // Half the inputs go through the protobuf envelope, as on the wire; the rest are payloads.
    let payload = if selector & 0x80 != 0 {
        match RaftMessage::decode(rest) {
            Ok(msg) => msg.payload.to_vec(),
            Err(_) => return,
        }
    } else {
        rest.to_vec()
    };
    wingkv_replica_server::wire::check_raft_request(method, &payload);
    wingkv_meta_server::wire::check_raft_request(method, &payload);
});
