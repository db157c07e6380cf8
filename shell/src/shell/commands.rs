//! The shell's commands, with Pegasus's names, flags and argument order (DESIGN §7).

use clap::{Parser, Subcommand};

/// `help start_bulk_load`: what the command reads and what happens then, kept as written.
const START_BULK_LOAD_HELP: &str = "\
Start a bulk load of a table from SST files on a provider.

The files are read from PROVIDER://ROOT/CLUSTER/TABLE/, in the layout that
`wingkv bulkgen` writes (Pegasus's):

  bulk_load_info             the table name and partition count
  PIDX/bulk_load_metadata    the partition's files, with their sizes and md5s
                             (or xxh3s, as backups write them)
  PIDX/NAME.sst              the partition's rows, sorted, as RocksDB SST files

The table must exist with that partition count and have no bulk load under way.
Every replica downloads and verifies its partition's files; then each
partition's primary has all its replicas ingest them at the same point of its
raft log. Watch the job with `query_bulk_load_status -a TABLE [-d]`;
`pause_bulk_load`, `restart_bulk_load` and `cancel_bulk_load [-f]` control it,
and `clear_bulk_load` removes the record of a finished job before the next one.

Example: start_bulk_load -a t -c onebox -p local -r /data/bl";

/// `help start_backup_app`: where the backup goes and how to follow it.
const START_BACKUP_APP_HELP: &str = "\
Start a cold backup of a live table to a provider.

Every partition's primary exports its data at one raft log index as SST files
to PROVIDER://ROOT/CLUSTER/TABLE/backup/BACKUP_ID/PIDX/ (the bulk-load layout),
and the meta writes backup_info there last. The command answers at once with
the backup id; follow the backup with `query_backup_status -a TABLE [-i ID] [-d]`
(a live progress bar at a terminal) and stop it with
`cancel_backup -a TABLE -i ID`, which removes its files. One backup of a table
runs at a time.

Example: start_backup_app -a t -p local -r /data/backup";

/// `help restore_app`: what the new table is and when it serves.
const RESTORE_APP_HELP: &str = "\
Create a new table from a cold backup.

The backup is read from PROVIDER://ROOT/CLUSTER/OLD_APP_NAME/backup/BACKUP_ID/
(CLUSTER is the cluster the backup was taken in). The new table gets the
backup's partition count and envs, and its replica count unless
--replica_count is given; its replicas download, verify and ingest the
backup's files (a bulk load), and it refuses data requests until every
partition is restored. Follow it with `query_restore_status -a NEW_APP_NAME [-d]`
(a live progress bar at a terminal).

Example: restore_app -c onebox -a t -i 1712345678901 -n t_restored -p local -r /data/backup";

/// `help add_backup_policy`: when a policy's backups start and how many are kept.
const ADD_BACKUP_POLICY_HELP: &str = "\
Add a backup policy: its tables are backed up at a time of day and every
interval after, and the latest HISTORY_COUNT backups of each table are kept
(older ones are removed from the provider).

-a takes app ids or table names, comma separated (names are resolved to ids
with `ls`). -s is HH:MM in UTC. See the policies with `ls_backup_policy` and
`query_backup_policy -p NAME`; change one with `modify_backup_policy`, and
stop or resume it with `disable_backup_policy` / `enable_backup_policy`.

Example: add_backup_policy -p daily -b local -r /data/backup -a 1,t2 -i 86400 -s 01:30 -c 3";

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
    /// Start a cold backup of a table to a provider; prints the backup id.
    #[command(long_about = START_BACKUP_APP_HELP)]
    StartBackupApp {
        /// Table name.
        #[arg(short = 'a', long = "app_name")]
        app_name: String,
        /// Provider: local, s3.
        #[arg(short = 'p', long = "backup_provider_type")]
        provider: String,
        /// Root directory on the provider.
        #[arg(short = 'r', long = "root_path")]
        root: String,
    },
    /// Show a table's backups (newest first), or one of them.
    QueryBackupStatus {
        /// Table name (live or dropped: its backups outlive it).
        #[arg(short = 'a', long = "app_name")]
        app_name: String,
        /// Only this backup.
        #[arg(short = 'i', long = "backup_id")]
        backup_id: Option<u64>,
        /// Per-partition progress.
        #[arg(short = 'd', long = "detailed")]
        detailed: bool,
    },
    /// Cancel a running backup; its files are removed from the provider.
    CancelBackup {
        /// Table name.
        #[arg(short = 'a', long = "app_name")]
        app_name: String,
        /// The backup's id.
        #[arg(short = 'i', long = "backup_id")]
        backup_id: u64,
    },
    /// Create a new table from a cold backup.
    #[command(long_about = RESTORE_APP_HELP)]
    RestoreApp {
        /// The cluster the backup was taken in (its directory on the provider).
        #[arg(short = 'c', long = "old_cluster_name")]
        cluster: String,
        /// The backed-up table's name.
        #[arg(short = 'a', long = "old_app_name")]
        old_app_name: String,
        /// The backup's id.
        #[arg(short = 'i', long = "backup_id")]
        backup_id: u64,
        /// The new table's name (default: the old one).
        #[arg(short = 'n', long = "new_app_name")]
        new_app_name: Option<String>,
        /// Provider: local, s3.
        #[arg(short = 'p', long = "backup_provider_type")]
        provider: String,
        /// Root directory on the provider.
        #[arg(short = 'r', long = "root_path")]
        root: String,
        /// Replicas per partition (default: the backup's).
        #[arg(long = "replica_count")]
        replica_count: Option<u32>,
    },
    /// Show the restore that created a table, with its partitions' progress.
    QueryRestoreStatus {
        /// The restored (new) table's name.
        #[arg(short = 'a', long = "app_name")]
        app_name: String,
        /// Per-replica download progress.
        #[arg(short = 'd', long = "detailed")]
        detailed: bool,
    },
    /// Add a backup policy: tables backed up at a time of day and every interval after.
    #[command(long_about = ADD_BACKUP_POLICY_HELP)]
    AddBackupPolicy {
        /// Policy name.
        #[arg(short = 'p', long = "policy_name")]
        policy_name: String,
        /// Provider: local, s3.
        #[arg(short = 'b', long = "backup_provider_type")]
        provider: String,
        /// Root directory on the provider.
        #[arg(short = 'r', long = "root_path")]
        root: String,
        /// Tables: app ids or names, comma separated.
        #[arg(
            short = 'a',
            long = "app_ids",
            value_name = "APP_IDS",
            required = true,
            value_delimiter = ',',
            value_parser = parse_app_ref
        )]
        app_ids: Vec<AppRef>,
        /// Seconds between two backups of a table.
        #[arg(short = 'i', long = "backup_interval_seconds")]
        interval_seconds: u64,
        /// Time of day of the first backup, HH:MM (UTC).
        #[arg(short = 's', long = "start_time", value_name = "HH:MM", value_parser = parse_start_time)]
        start_time: String,
        /// Backups kept of each table.
        #[arg(short = 'c', long = "backup_history_cnt")]
        history_count: u32,
    },
    /// List the backup policies.
    LsBackupPolicy,
    /// Show backup policies and their latest backups.
    QueryBackupPolicy {
        /// Policy names, comma separated.
        #[arg(short = 'p', long = "policy_name", value_name = "NAMES", required = true, value_delimiter = ',')]
        policy_names: Vec<String>,
        /// Backups shown per policy, newest first.
        #[arg(short = 'b', long = "backup_info_cnt", default_value_t = 3)]
        backup_info_count: usize,
    },
    /// Change a backup policy's tables, interval, start time or history count.
    ModifyBackupPolicy {
        /// Policy name.
        #[arg(short = 'p', long = "policy_name")]
        policy_name: String,
        /// Tables to add: app ids or names, comma separated.
        #[arg(
            short = 'a',
            long = "add_app",
            value_name = "APP_IDS",
            value_delimiter = ',',
            value_parser = parse_app_ref
        )]
        add_app_ids: Vec<AppRef>,
        /// Tables to remove: app ids or names, comma separated.
        #[arg(
            short = 'r',
            long = "remove_app",
            value_name = "APP_IDS",
            value_delimiter = ',',
            value_parser = parse_app_ref
        )]
        remove_app_ids: Vec<AppRef>,
        /// Seconds between two backups of a table.
        #[arg(short = 'i', long = "backup_interval_seconds")]
        interval_seconds: Option<u64>,
        /// Time of day of the backups, HH:MM (UTC).
        #[arg(short = 's', long = "start_time", value_name = "HH:MM", value_parser = parse_start_time)]
        start_time: Option<String>,
        /// Backups kept of each table.
        #[arg(short = 'c', long = "backup_history_count")]
        history_count: Option<u32>,
    },
    /// Stop a backup policy from starting backups (its backups are kept).
    DisableBackupPolicy {
        /// Policy name.
        #[arg(short = 'p', long = "policy_name")]
        policy_name: String,
    },
    /// Let a disabled backup policy start backups again.
    EnableBackupPolicy {
        /// Policy name.
        #[arg(short = 'p', long = "policy_name")]
        policy_name: String,
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

/// A table named in the `-a`/`-r` list of a policy command: an app id, or the name of a live
/// table, which is resolved to its id with `ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppRef {
    /// An app id, as `ls` shows it.
    Id(u32),
    /// A live table's name.
    Name(String),
}

/// Parses one element of a comma-separated table list (clap splits the list at the commas):
/// digits are an app id, anything else a table name.
pub fn parse_app_ref(s: &str) -> Result<AppRef, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("an empty element in the list: give app ids or table names, comma separated (e.g. 1,2,t)".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u32>().map(AppRef::Id).map_err(|_| format!("app id {s} is out of range"));
    }
    Ok(AppRef::Name(s.to_string()))
}

/// Parses a policy's start time, `HH:MM` (UTC), into its two-digit form (`2:5` → `02:05`), as
/// the meta reads it.
pub fn parse_start_time(s: &str) -> Result<String, String> {
    wingkv_common::time::parse_time_of_day(s).map(wingkv_common::time::format_time_of_day).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_refs_and_start_times_parse() {
        assert_eq!(parse_app_ref(" 3 "), Ok(AppRef::Id(3)));
        assert_eq!(parse_app_ref("t1"), Ok(AppRef::Name("t1".into())));
        assert!(parse_app_ref("").is_err());
        assert!(parse_app_ref("99999999999").is_err());
        assert_eq!(parse_start_time("2:5").as_deref(), Ok("02:05"));
        assert_eq!(parse_start_time("23:59").as_deref(), Ok("23:59"));
        for bad in ["24:00", "12:60", "12", "x:00", "+1:00", "-1:00", "123:00", ""] {
            assert!(parse_start_time(bad).is_err(), "{bad}");
        }
    }

    fn parse(line: &str) -> Result<Cmd, String> {
        Line::try_parse_from(line.split_whitespace()).map(|l| l.command).map_err(|e| e.to_string())
    }

    #[test]
    fn add_backup_policy_takes_pegasus_flags_and_normalizes_the_start_time() {
        match parse("add_backup_policy -p daily -b local -r /bk -a 1,t2 -i 86400 -s 1:30 -c 3") {
            Ok(Cmd::AddBackupPolicy {
                policy_name,
                provider,
                root,
                app_ids,
                interval_seconds,
                start_time,
                history_count,
            }) => {
                assert_eq!((policy_name.as_str(), provider.as_str(), root.as_str()), ("daily", "local", "/bk"));
                assert_eq!(app_ids, vec![AppRef::Id(1), AppRef::Name("t2".into())]);
                assert_eq!((interval_seconds, start_time.as_str(), history_count), (86400, "01:30", 3));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_backup_arguments_name_the_problem() {
        let err = |line: &str| parse(line).err().unwrap_or_default();
        let e = err("add_backup_policy -p d -b local -r /bk -a 1 -i 60 -s 24:00 -c 3");
        assert!(e.contains("'24:00'") && e.contains("--start_time") && e.contains("HH:MM"), "{e}");
        let e = err("add_backup_policy -p d -b local -r /bk -a 1 -i 60 -s 0130 -c 3");
        assert!(e.contains("--start_time"), "{e}");
        let e = err("add_backup_policy -p d -b local -r /bk -i 60 -s 01:30 -c 3");
        assert!(e.contains("--app_ids"), "{e}");
        let e = err("add_backup_policy -p d -b local -r /bk -a 1,,2 -i 60 -s 01:30 -c 3");
        assert!(e.contains("empty element"), "{e}");
        let e = err("cancel_backup -a t -i x");
        assert!(e.contains("'x'") && e.contains("--backup_id"), "{e}");
        let e = err("restore_app -c onebox -a t -i 1 -p local");
        assert!(e.contains("--root_path"), "{e}");
        let e = err("modify_backup_policy -p d -i many");
        assert!(e.contains("--backup_interval_seconds"), "{e}");
    }

    #[test]
    fn backup_commands_parse() {
        match parse("restore_app -c onebox -a t -i 7 -p local -r /bk --replica_count 1") {
            Ok(Cmd::RestoreApp { new_app_name: None, backup_id: 7, replica_count: Some(1), .. }) => {}
            other => panic!("{other:?}"),
        }
        match parse("query_backup_status -a t -i 5 -d") {
            Ok(Cmd::QueryBackupStatus { backup_id: Some(5), detailed: true, .. }) => {}
            other => panic!("{other:?}"),
        }
        match parse("query_backup_policy -p a,b") {
            Ok(Cmd::QueryBackupPolicy { policy_names, backup_info_count: 3 }) => assert_eq!(policy_names, ["a", "b"]),
            other => panic!("{other:?}"),
        }
        match parse("modify_backup_policy -p d -a 3 -r t1,4 -s 23:59") {
            Ok(Cmd::ModifyBackupPolicy { add_app_ids, remove_app_ids, start_time, interval_seconds: None, .. }) => {
                assert_eq!(add_app_ids, [AppRef::Id(3)]);
                assert_eq!(remove_app_ids, [AppRef::Name("t1".into()), AppRef::Id(4)]);
                assert_eq!(start_time.as_deref(), Some("23:59"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse("disable_backup_policy -p d"), Ok(Cmd::DisableBackupPolicy { .. })));
        assert!(matches!(parse("ls_backup_policy"), Ok(Cmd::LsBackupPolicy)));
    }
}
