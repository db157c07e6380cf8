//! A replica server on a small filesystem that fills up: its writes are refused with `DiskFull`
//! (not applied) before the raft log meets ENOSPC, its reads go on, and once space is freed it
//! writes again by itself, on the same raft group, with no restart.
//!
//! The filesystem is a 256 MiB tmpfs the test mounts (root, as in CI) with the raft log and the
//! data on it. Another tenant's file takes most of it; the replica's own writes then fill it up
//! to the reserve.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use wingkv_common::{ErrorCode, PartitionId};
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
    let value = Bytes::from(vec![b'x'; VALUE]);
    let mut written = 0;
    let refusal = loop {
        ensure!(written < 1_000, "64 MiB written past a reserve that left 8 MiB");
        match data.set(set(&format!("k{written}"), value.clone())).await {
            Ok(_) => written += 1,
            Err(s) => break wing_error(&s),
        }
    };
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
