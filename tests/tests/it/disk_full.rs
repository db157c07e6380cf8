//! A replica server on a small filesystem that fills up: its writes are refused with `DiskFull`
//! (not applied) before the raft log meets ENOSPC, its reads go on, and once space is freed it
//! writes again by itself, on the same raft group, with no restart.
//!
//! The filesystem is a 256 MiB tmpfs the test mounts (root, as in CI) with the raft log and the
//! data on it. Another tenant's file takes most of it; the replica's own writes then fill it up
//! to the reserve. With the guard off, the same fill meets ENOSPC in the data DB or in the
//! shared raft log: the stopped group is reopened by itself once space is freed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use tonic::transport::Channel;
use wingkv_common::{ErrorCode, PartitionId, WingError};
use wingkv_proto::data::data_client::DataClient;
use wingkv_proto::data::{GetRequest, SetRequest};
use wingkv_tests::{create_group, wait_for, wait_leader, wing_error, ReplicaProcess};

const P: PartitionId = PartitionId { app_id: 1, partition_index: 0 };
const RESERVE: u64 = 32 << 20;
const VALUE: usize = 64 << 10;

/// A tmpfs mounted for the test, unmounted when dropped (after the servers on it stopped).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let out =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output()?;
        if !out.status.success() {
            bail!(
                "this test mounts a tmpfs and needs root (CI runs as root): mount said {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn free_bytes(dir: &Path) -> Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid path and a zeroed out-parameter of the right type.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    ensure!(unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0, "statvfs {}", dir.display());
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

fn set(key: &str, value: Bytes) -> SetRequest {
    SetRequest {
        partition: Some(P.to_proto()),
        hash_key: Bytes::copy_from_slice(key.as_bytes()),
        sort_key: Bytes::from_static(b"s"),
        value,
        ttl_seconds: 0,
    }
}

fn get(key: &str) -> GetRequest {
    GetRequest {
        partition: Some(P.to_proto()),
        hash_key: Bytes::copy_from_slice(key.as_bytes()),
        sort_key: Bytes::from_static(b"s"),
    }
}

/// Writes `k0`, `k1`, … of [`VALUE`] bytes until one is refused: how many were written, and the
/// refusal. More than 64 MiB written is an error: the tests leave at most 8 MiB to fill.
async fn write_until_refused(data: &mut DataClient<Channel>) -> Result<(u64, WingError)> {
    let value = Bytes::from(vec![b'x'; VALUE]);
    for written in 0..1_000 {
        if let Err(s) = data.set(set(&format!("k{written}"), value.clone())).await {
            return Ok((written, wing_error(&s)));
        }
    }
    bail!("64 MiB written on a disk left with at most 8 MiB to fill")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_serves_reads_and_recovers_by_itself() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let disk = Tmpfs::mount(&tmp.path().join("disk"), "256m")?;
    let config = format!("reserved_disk_bytes = {RESERVE}\n[storage]\nwrite_buffer_bytes = 4194304\n");
    let mut node = ReplicaProcess::start(1, &disk.0.join("n1"), &config).await?;
    create_group(&[&node], 0, P).await?;
    wait_leader(&[&node], P, Duration::from_secs(30)).await?;
    let mut data = node.data().await?;
    data.set(set("before", Bytes::from_static(b"kept"))).await?;

    // Another tenant's file leaves the reserve and 8 MiB.
    let ballast = disk.0.join("ballast");
    let take = free_bytes(&disk.0)?.saturating_sub(RESERVE + (8 << 20));
    std::fs::write(&ballast, vec![0u8; take as usize]).context("write the ballast")?;

    // The replica's writes fill the rest up to the reserve: refused with DiskFull, not ENOSPC.
    let (written, refusal) = write_until_refused(&mut data).await?;
    ensure!(refusal.code() == ErrorCode::DiskFull, "a write near a full disk answered {refusal}");
    ensure!(refusal.to_string().contains("reserved_disk_bytes"), "{refusal}");
    ensure!(written > 0, "the first write was refused already");
    let free = free_bytes(&disk.0)?;
    ensure!(free > 0, "the filesystem filled up completely");

    // Reads go on, and every refused write is absent.
    let r = data.get(get("before")).await?.into_inner();
    ensure!(r.found && r.value == "kept", "a read on a full disk: {r:?}");
    let r = data.get(get(&format!("k{}", written - 1))).await?.into_inner();
    ensure!(r.found && r.value.len() == VALUE, "the last accepted write is missing");
    ensure!(!data.get(get(&format!("k{written}"))).await?.into_inner().found, "a refused write was applied");

    // Space freed: writes resume by themselves on the same group.
    std::fs::remove_file(&ballast)?;
    wait_for("writes to resume after space was freed", Duration::from_secs(30), || {
        let mut data = data.clone();
        async move { data.set(set("after", Bytes::from_static(b"resumed"))).await.ok() }
    })
    .await?;
    let r = data.get(get("after")).await?.into_inner();
    ensure!(r.found && r.value == "resumed", "{r:?}");
    let status = node.status(P).await.context("the replica's status")?;
    ensure!(status.applied_index >= written + 2, "the group stalled: {status:?}");
    node.kill();
    Ok(())
}

/// With the guard off (`reserved_disk_bytes = 0`) the replica's data DB meets ENOSPC applying a
/// write and openraft stops the group: see [`enospc_stops_no_group_for_good`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_data_db_met_enospc_writes_again_once_space_is_freed() -> Result<()> {
    enospc_stops_no_group_for_good(|root| root.to_path_buf(), "/data/replica/1.0/db/").await
}

/// The same with only the shared raft log on the small filesystem: its append meets ENOSPC, and
/// RocksDB must clear its own error once space is back before the reopened group can write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_raft_log_met_enospc_writes_again_once_space_is_freed() -> Result<()> {
    enospc_stops_no_group_for_good(|root| root.join("data").join("raft-log"), "/data/raft-log/").await
}

/// A write that meets ENOSPC fails naming the full disk, reads answer `Unavailable` (not a
/// routing error), and once space is freed the group is reopened and writes again with no
/// restart of the process, every acknowledged write kept — no group is left stopped.
/// `small_disk(root)` is where the 128 MiB filesystem is mounted under the node's root, and the
/// first failed write must name a file under `failing_file`.
async fn enospc_stops_no_group_for_good(small_disk: impl Fn(&Path) -> PathBuf, failing_file: &str) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("n1");
    let disk = Tmpfs::mount(&small_disk(&root), "128m")?;
    let config = "reserved_disk_bytes = 0\n[storage]\nwrite_buffer_bytes = 4194304\n";
    let mut node = ReplicaProcess::start(1, &root, config).await?;
    create_group(&[&node], 0, P).await?;
    wait_leader(&[&node], P, Duration::from_secs(30)).await?;
    let mut data = node.data().await?;
    data.set(set("before", Bytes::from_static(b"kept"))).await?;

    // Another tenant's file leaves 4 MiB; the replica's writes run into ENOSPC.
    let ballast = disk.0.join("ballast");
    let take = free_bytes(&disk.0)?.saturating_sub(4 << 20);
    std::fs::write(&ballast, vec![0u8; take as usize]).context("write the ballast")?;
    let (written, failure) = write_until_refused(&mut data).await?;
    ensure!(
        failure.code() == ErrorCode::Unavailable && failure.to_string().contains("No space left on device"),
        "a write that met ENOSPC answered {failure}"
    );
    ensure!(written > 0, "the first write failed already");
    ensure!(failure.to_string().contains(failing_file), "the write failed elsewhere than in {failing_file}: {failure}");

    // While the disk is full the stopped group answers Unavailable, naming why: never NotLeader
    // or NotFound, which would send clients looking for another primary or a new route.
    let read = data.get(get("before")).await.err().map(|s| wing_error(&s));
    ensure!(
        read.as_ref()
            .is_some_and(|e| e.code() == ErrorCode::Unavailable && e.to_string().contains("raft group stopped")),
        "a read of the stopped group answered {read:?}"
    );
    std::fs::remove_file(&ballast)?;
    wait_for("writes to resume after space was freed", Duration::from_secs(60), || {
        let mut data = data.clone();
        async move { data.set(set("after", Bytes::from_static(b"resumed"))).await.ok() }
    })
    .await?;
    let r = data.get(get("after")).await?.into_inner();
    ensure!(r.found && r.value == "resumed", "{r:?}");
    for key in ["before".to_string(), format!("k{}", written - 1)] {
        let r = data.get(get(&key)).await?.into_inner();
        ensure!(r.found && !r.value.is_empty(), "{key}, written before the disk filled up, is missing");
    }
    let metrics = wingkv_tests::metrics::scrape(&node.http_addr()?).await?;
    let restarts = wingkv_tests::metrics::sum(&metrics, "wingkv_replica_restarts_total", &[]);
    ensure!(restarts >= 1.0, "the group resumed without a counted restart: {restarts}");
    node.kill();
    Ok(())
}
