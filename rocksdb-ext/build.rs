//! Compiles the C++ shim against the headers of the RocksDB librocksdb-sys builds, so the shim
//! and the library it calls into are one version.

fn main() {
    let Ok(sys) = std::env::var("DEP_ROCKSDB_CARGO_MANIFEST_DIR") else {
        panic!("librocksdb-sys did not say where its sources are (DEP_ROCKSDB_CARGO_MANIFEST_DIR is unset)");
    };
    let include = std::path::Path::new(&sys).join("rocksdb").join("include");
    if !include.join("rocksdb").join("options.h").exists() {
        panic!("no RocksDB headers under {}", include.display());
    }
    println!("cargo:rerun-if-changed=src/shim.cc");
    cc::Build::new()
        .cpp(true)
        .file("src/shim.cc")
        .include(&include)
        .flag("-std=c++17")
        .warnings(true)
        .compile("wingkv_rocksdb_ext");
}
