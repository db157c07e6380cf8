//! The shell's commands, with Pegasus's names, flags and argument order (DESIGN §7).

use clap::{Parser, Subcommand};

/// `help start_bulk_load`: what the command reads and what happens then, kept as written.
const START_BULK_LOAD_HELP: &str = "\
Start a bulk load of a table from SST files on a provider.

The files are read from PROVIDER://ROOT/CLUSTER/TABLE/, in the layout that
`wingkv bulkgen` writes (Pegasus's):

  bulk_load_info             the table name and partition count
  PIDX/bulk_load_metadata    the partition's files, with their sizes and md5
  PIDX/NAME.sst              the partition's rows, sorted, as RocksDB SST files

The table must exist with that partition count and have no bulk load under way.
Every replica downloads and verifies its partition's files; then each
partition's primary has all its replicas ingest them at the same point of its
raft log. Watch the job with `query_bulk_load_status -a TABLE [-d]`;
`pause_bulk_load`, `restart_bulk_load` and `cancel_bulk_load [-f]` control it,
and `clear_bulk_load` removes the record of a finished job before the next one.

Example: start_bulk_load -a t -c onebox -p local -r /data/bl";

/// One shell line, parsed.
#[derive(Parser, Debug)]
#[command(multicall = true, disable_help_subcommand = true)]
pub struct Line {
    #[command(subcommand)]
    pub command: Cmd,
}

/// Every shell command.
#[derive(Subcommand, Debug, Clone)]
#[command(rename_all = "snake_case")]
pub enum Cmd {
    /// Show the cluster: meta leader and members, node and table counts.
    ClusterInfo,
    /// List the replica servers.
    Nodes {
        /// Details: replica and primary counts per node.
        #[arg(short = 'd', long)]
        detailed: bool,
    },
    /// List the tables.
    Ls {
        /// Details: health, and dropped tables that can still be recalled.
        #[arg(short = 'd', long)]
        detailed: bool,
    },
    /// Show one table.
    App {
        /// Table name.
        name: String,
        /// Details: every partition's members and primary.
        #[arg(short = 'd', long)]
        detailed: bool,
    },
    /// Create a table.
    Create {
        /// Table name.
        name: String,
        /// Partition count (a power of two).
        #[arg(short = 'p', long = "partition_count", default_value_t = 4)]
        partition_count: u32,
        /// Replica count.
        #[arg(short = 'r', long = "replica_count", default_value_t = 3)]
        replica_count: u32,
        /// Envs, as k=v,k=v.
        #[arg(short = 'e', long = "envs")]
        envs: Option<String>,
    },
    /// Drop a table (recallable for the reserve time).
    Drop {
        /// Table name.
        name: String,
        /// Reserve seconds (default: the server's).
        #[arg(short = 'r', long = "reserve_seconds")]
        reserve_seconds: Option<u64>,
    },
    /// Bring a dropped table back.
    Recall {
        /// The dropped table's app id.
        app_id: u32,
        /// A new name (needed when the old one is taken).
        new_name: Option<String>,
    },
    /// Change how many replicas each partition of a table keeps (1..=5); the meta adds or
    /// removes members until every partition has that many (`get_replica_count` follows it).
    SetReplicaCount {
        /// Table name.
        name: String,
        /// The new count.
        replica_count: u32,
    },
    /// Show a table's replica count and how many partitions have it now.
    GetReplicaCount {
        /// Table name.
        name: String,
    },
    /// Select the table the data commands use.
    Use {
        /// Table name.
        name: String,
    },
    /// Set an env of the current table.
    SetAppEnvs {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Show the envs of the current table.
    GetAppEnvs,
    /// Delete envs of the current table.
    DelAppEnvs {
        /// Keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Show server versions and nodes.
    ServerInfo,
    /// Set what the meta does by itself: freezed (nothing), steady (repairs; the default) or
    /// lively (repairs and balancing of replicas and primaries).
    SetMetaLevel {
        /// freezed, steady or lively.
        level: String,
    },
    /// Show the meta level.
    GetMetaLevel,
    /// Take a replica server out of service: its primaries, then its replicas, move to other
    /// servers; `nodes -d` shows it `drained` once it holds nothing (then it may be stopped).
    Decommission {
        /// Node id or address.
        node: String,
    },
    /// Put a decommissioned replica server back in service.
    Recommission {
        /// Node id or address.
        node: String,
    },
    /// Move one replica or the primary of a partition now (at any meta level).
    Propose {
        /// The partition, as TABLE.PARTITION_INDEX.
        #[arg(short = 'g', long = "gpid")]
        gpid: String,
        /// move_primary (to the member -t) or move_replica (from the member -f to the node -t).
        #[arg(short = 'p', long = "type")]
        action: String,
        /// The node that gets the replica or the primary (node id or address).
        #[arg(short = 't', long = "target")]
        target: String,
        /// The member that leaves (move_replica; node id or address).
        #[arg(short = 'f', long = "from")]
        from: Option<String>,
    },
    /// Set a record.
    Set {
        /// Hash key.
        hash_key: String,
        /// Sort key.
        sort_key: String,
        /// Value.
        value: String,
        /// TTL in seconds.
        ttl_seconds: Option<u32>,
    },
    /// Read a record.
    Get {
        /// Hash key.
        hash_key: String,
        /// Sort key.
        sort_key: String,
    },
    /// Delete a record.
    Del {
        /// Hash key.
        hash_key: String,
        /// Sort key.
        sort_key: String,
    },
    /// Whether a record exists.
    Exist {
        /// Hash key.
        hash_key: String,
        /// Sort key.
        sort_key: String,
    },
    /// Remaining TTL of a record.
    Ttl {
        /// Hash key.
        hash_key: String,
        /// Sort key.
        sort_key: String,
    },
    /// Add to an integer record.
    Incr {
        /// Hash key.
        hash_key: String,
        /// Sort key.
        sort_key: String,
        /// Increment (default 1).
        #[arg(allow_negative_numbers = true, default_value_t = 1)]
        increment: i64,
    },
    /// Set a record if a check on a record of the same hash key passes.
    CheckAndSet {
        /// Hash key.
        hash_key: String,
        /// Sort key to check.
        #[arg(short = 'c', long = "check_sort_key", default_value = "")]
        check_sort_key: String,
        /// Check type (e.g. value_not_exist, value_match_prefix, value_bytes_less, value_int_greater).
        #[arg(short = 't', long = "check_type", default_value = "no_check")]
        check_type: String,
        /// Check operand.
        #[arg(short = 'o', long = "check_operand", default_value = "")]
        check_operand: String,
        /// Sort key to set (default: the checked one).
        #[arg(short = 's', long = "set_sort_key")]
        set_sort_key: Option<String>,
        /// Value to set.
        #[arg(short = 'v', long = "set_value", default_value = "")]
        set_value: String,
        /// TTL of the set value.
        #[arg(short = 'l', long = "set_value_ttl_seconds")]
        ttl_seconds: Option<u32>,
        /// Print the checked value.
        #[arg(short = 'r', long = "return_check_value")]
        return_check_value: bool,
    },
    /// Set several sort keys of one hash key.
    MultiSet {
        /// Hash key.
        hash_key: String,
        /// Sort key and value pairs.
        #[arg(required = true, num_args = 2..)]
        pairs: Vec<String>,
    },
    /// Read sort keys of one hash key (all when none given).
    MultiGet {
        /// Hash key.
        hash_key: String,
        /// Sort keys.
        sort_keys: Vec<String>,
    },
    /// Delete sort keys of one hash key.
    MultiDel {
        /// Hash key.
        hash_key: String,
        /// Sort keys.
        #[arg(required = true)]
        sort_keys: Vec<String>,
    },
    /// Count the sort keys of a hash key.
    SortkeyCount {
        /// Hash key.
        hash_key: String,
    },
    /// Scan one hash key from START to STOP (empty = open).
    HashScan {
        /// Hash key.
        hash_key: String,
        /// First sort key (inclusive).
        start_sort_key: String,
        /// Last sort key (exclusive).
        stop_sort_key: String,
        /// Most records.
        #[arg(short = 'n', long = "max_count")]
        max_count: Option<u64>,
        /// Leave values out.
        #[arg(short = 'i', long = "no_value")]
        no_value: bool,
    },
    /// Scan the whole table.
    FullScan {
        /// Most records per partition.
        #[arg(short = 'n', long = "max_count")]
        max_count: Option<u64>,
        /// Leave values out.
        #[arg(short = 'i', long = "no_value")]
        no_value: bool,
    },
    /// Count the records of the table.
    CountData,
    /// Start a bulk load of a table from SST files on a provider.
    #[command(long_about = START_BULK_LOAD_HELP)]
    StartBulkLoad {
        /// Table name.
        #[arg(short = 'a', long = "app_name")]
        app_name: String,
        /// Cluster name in the remote layout.
        #[arg(short = 'c', long = "cluster_name")]
        cluster: String,
        /// Provider: local, s3.
        #[arg(short = 'p', long = "file_provider_type")]
        provider: String,
        /// Root directory on the provider.
        #[arg(short = 'r', long = "root_path")]
        root: String,
        /// Ingest below existing data: rows already in the table keep their values. Needs the
        /// table env rocksdb.allow_ingest_behind=true, set when the table was created.
        #[arg(short = 'i', long = "ingest_behind")]
        ingest_behind: bool,
    },
    /// Show a table's bulk load.
    QueryBulkLoadStatus {
        /// Table name.
        #[arg(short = 'a', long = "app_name")]
        app_name: String,
        /// Only this partition.
        #[arg(short = 'i', long = "partition_index")]
        partition_index: Option<u32>,
        /// Per-replica progress.
        #[arg(short = 'd', long = "detailed")]
        detailed: bool,
    },
    /// Pause a downloading bulk load.
    PauseBulkLoad {
        /// Table name.
        #[arg(short = 'a', long = "app_name")]
        app_name: String,
    },
    /// Resume a paused bulk load.
    RestartBulkLoad {
        /// Table name.
        #[arg(short = 'a', long = "app_name")]
        app_name: String,
    },
    /// Cancel a bulk load (-f from any live state).
    CancelBulkLoad {
        /// Table name.
        #[arg(short = 'a', long = "app_name")]
        app_name: String,
        /// Force.
        #[arg(short = 'f', long = "forced")]
        forced: bool,
    },
    /// Remove a finished bulk load's record.
    ClearBulkLoad {
        /// Table name.
        #[arg(short = 'a', long = "app_name")]
        app_name: String,
    },
    /// Show the commands, or one command's usage.
    Help {
        /// A command.
        command: Option<String>,
    },
    /// Leave the shell.
    #[command(alias = "quit")]
    Exit,
}

/// The names of every command, for completion.
pub fn command_names() -> Vec<String> {
    use clap::CommandFactory;
    Line::command().get_subcommands().map(|c| c.get_name().to_string()).collect()
}
