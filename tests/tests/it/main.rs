//! wingkv's integration tests, one module per scenario, all in this one test binary: a binary
//! per scenario would link RocksDB once each.
//!
//! Every scenario shares this process (with `cargo test`, they run side by side on threads;
//! nextest runs each test in a process of its own), so none may rely on process-wide state: no
//! `std::env::set_var`, no global subscriber, no fixed port or directory. Servers get their
//! environment through their `Command`, ports from [`wingkv_tests::free_port`] and data under a
//! temp dir of their own.

mod backpressure;
mod backup;
mod bad_inputs;
mod balance;
mod batch;
mod bulk_load;
mod bulk_load_replica;
mod bulk_load_sources;
mod bulkgen;
mod clock_offset;
mod data_ops;
mod disk_full;
mod large_values;
mod linearizability;
mod meta;
mod misrouted;
mod observability;
mod onebox;
mod replication;
mod sdk;
mod security;
mod seed_scenarios;
mod shell;
mod stalled_disk;
mod throttling;
