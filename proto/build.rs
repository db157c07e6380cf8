//! Generates the tonic/prost code. Uses the vendored `protoc`, so no system protobuf compiler is
//! needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let protos =
        ["proto/common.proto", "proto/data.proto", "proto/meta.proto", "proto/raft.proto", "proto/replica_admin.proto"];
    // The descriptor set feeds gRPC server reflection, so `grpcurl` works without the .proto files.
    let descriptor = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("wingkv_descriptor.bin");
    tonic_prost_build::configure()
        .bytes(".")
        .btree_map(".")
        .file_descriptor_set_path(&descriptor)
        .compile_protos(&protos, &["proto"])?;
    // etcd's KV service, a client only, outside the descriptor set: the benchmark's view of etcd.
    let etcd = "proto/etcd_kv.proto";
    tonic_prost_build::configure().build_server(false).bytes(".").compile_protos(&[etcd], &["proto"])?;
    for p in protos.iter().chain([&etcd]) {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
