//! A secure onebox (`wingkv onebox start --secure`): mutual TLS on every connection, the control
//! plane for `admin_users`, raft and replica administration for servers, per-table access lists,
//! and certificate rotation without a restart. Real processes on loopback; the clients are the
//! shell binary, the SDK and raw gRPC stubs presenting each certificate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use wingkv_client::{Admin, Client, ClientConfig, CreateTableOptions};
use wingkv_common::channel::ChannelPool;
use wingkv_common::{ErrorCode, WingError};
use wingkv_proto::raft::raft_transport_client::RaftTransportClient;
use wingkv_proto::raft::RaftMessage;
use wingkv_proto::replica_admin::replica_admin_client::ReplicaAdminClient;
use wingkv_proto::replica_admin::PartitionRequest;
use wingkv_security::client::ClientTls;
use wingkv_security::TlsConfig;
use wingkv_tests::onebox::{start_secure, Guard};
use wingkv_tests::{bin_path, wait_for, wing_error};

/// The files of `user` in a `wingkv cert` directory, checked against the CA in `ca_dir`.
fn files(ca_dir: &Path, user_dir: &Path, user: &str) -> TlsConfig {
    TlsConfig {
        ca_file: ca_dir.join("ca.crt"),
        cert_file: user_dir.join(format!("{user}.crt")),
        key_file: user_dir.join(format!("{user}.key")),
    }
}

fn config(meta: &str, tls: Option<TlsConfig>) -> ClientConfig {
    let mut c = ClientConfig::new([meta]);
    c.request_timeout = Duration::from_secs(5);
    c.tls = tls;
    c
}

/// `wingkv ARGS`: (exit status success, stdout + stderr).
fn wingkv(args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new(bin_path("wingkv")).args(args).output()?;
    Ok((
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    ))
}

fn replica_addr(dir: &Path, n: u32) -> Result<String> {
    let file = dir.join(format!("replica{n}")).join("data").join("server.addr");
    Ok(std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?.trim().to_string())
}

fn expect_code(r: Result<impl std::fmt::Debug, WingError>, code: ErrorCode, what: &str) -> Result<WingError> {
    match r {
        Err(e) if e.code() == code => Ok(e),
        other => anyhow::bail!("{what}: expected {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_onebox_admits_by_certificate() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir: PathBuf = tmp.path().join("onebox");
    let meta = start_secure(&dir)?;
    let _guard = Guard(dir.clone());
    let tls = dir.join("tls");
    let admin_files = files(&tls, &tls, "admin");
    let user1_files = files(&tls, &tls, "user1");

    // Plaintext is refused with a message the shell shows.
    let (ok, out) = wingkv(&["shell", "--meta", &meta, "--timeout", "3", "-e", "ls"])?;
    ensure!(!ok && out.contains("this server requires TLS"), "a plaintext shell: {out}");
    let e = expect_code(
        Admin::new(config(&meta, None))?.list_tables(false).await,
        ErrorCode::Unauthenticated,
        "a plaintext SDK",
    )?;
    ensure!(e.to_string().contains("requires TLS"), "{e}");

    // A certificate from another CA is refused in the handshake.
    let other = tmp.path().join("other-ca");
    let other_s = other.to_string_lossy().to_string();
    ensure!(wingkv(&["cert", "new-ca", "--dir", &other_s])?.0, "new-ca");
    ensure!(wingkv(&["cert", "issue-client", "--dir", &other_s, "--user", "admin"])?.0, "issue-client");
    let foreign = Admin::new(config(&meta, Some(files(&tls, &other, "admin"))))?.list_tables(false).await;
    ensure!(foreign.is_err(), "a certificate of another CA was served: {foreign:?}");

    // The admin creates tables; user1 may read the catalog but not change it.
    let admin = Admin::new(config(&meta, Some(admin_files.clone())))?;
    let opts = |p| CreateTableOptions { partition_count: Some(p), replica_count: Some(3), ..Default::default() };
    admin.create_table("a", opts(4)).await?;
    admin.create_table("b", opts(4)).await?;
    let user1 = Admin::new(config(&meta, Some(user1_files.clone())))?;
    ensure!(user1.list_tables(false).await?.len() == 2, "user1 lists the tables");
    let e = expect_code(user1.create_table("c", opts(2)).await, ErrorCode::PermissionDenied, "user1 create")?;
    ensure!(e.to_string().contains("user 'user1'") && e.to_string().contains("admin_users"), "{e}");

    // Raft and replica administration are for servers: a user certificate is refused.
    let pool = ChannelPool::new(Some(ClientTls::new(&user1_files)?));
    let replica = replica_addr(&dir, 1)?;
    let mut raft = RaftTransportClient::new(pool.get(&replica)?);
    let status = raft.vote(RaftMessage::default()).await.expect_err("a user's raft vote was taken");
    ensure!(status.code() == tonic::Code::PermissionDenied, "raft vote by user1: {status:?}");
    let status = raft.stream(futures::stream::empty()).await.expect_err("a user's raft stream was taken");
    ensure!(status.code() == tonic::Code::PermissionDenied, "raft stream by user1: {status:?}");
    let mut replica_admin = ReplicaAdminClient::new(pool.get(&replica)?);
    let removed = replica_admin.remove_replica(PartitionRequest::default()).await;
    let e = wing_error(&removed.expect_err("user1 removed a replica"));
    ensure!(e.code() == ErrorCode::PermissionDenied && e.to_string().contains("only servers"), "{e}");

    // Reflection (the whole API listed) is off on a secure server unless configured; health
    // answers every certified peer.
    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let listed =
            ServerReflectionClient::new(pool.get(&replica)?).server_reflection_info(futures::stream::iter([req])).await;
        ensure!(
            listed.as_ref().is_err_and(|s| s.code() == tonic::Code::Unimplemented),
            "reflection on a secure server: {listed:?}"
        );
        let health = tonic_health::pb::health_client::HealthClient::new(pool.get(&replica)?)
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await?;
        ensure!(health.into_inner().status == 1, "health of a secure replica server");
    }

    // Table a lists admin only: user1 is refused there (once replicas have the env) and
    // served on b; admin is served on both.
    admin.set_envs("a", [(wingkv_common::table_acl::ALLOWED_USERS, "admin")]).await?;
    let user1_client = Client::with_config(config(&meta, Some(user1_files.clone()))).await?;
    let (ua, ub) = (user1_client.open_table("a").await?, user1_client.open_table("b").await?);
    let refused = wait_for("user1 to be refused on table a", Duration::from_secs(20), || {
        let ua = ua.clone();
        async move { ua.set("h", "s", "v").await.err().filter(|e| e.code() == ErrorCode::PermissionDenied) }
    })
    .await?;
    ensure!(refused.to_string().contains("user 'user1'") && refused.to_string().contains("allowed_users"), "{refused}");
    expect_code(ua.get("h", "s").await, ErrorCode::PermissionDenied, "user1 reads a")?;
    ub.set("h", "s", "v1").await.context("user1 writes b")?;
    let admin_client = Client::with_config(config(&meta, Some(admin_files.clone()))).await?;
    let aa = admin_client.open_table("a").await?;
    aa.set("h", "s", "v0").await.context("admin writes a")?;
    ensure!(aa.get("h", "s").await?.as_deref() == Some(&b"v0"[..]), "admin reads a");
    ensure!(admin_client.open_table("b").await?.get("h", "s").await?.as_deref() == Some(&b"v1"[..]), "admin reads b");

    // Refusals are counted.
    let http = std::fs::read_to_string(dir.join("meta1").join("data").join("http.addr"))?;
    let samples = wingkv_tests::metrics::scrape(http.trim()).await?;
    let denied = wingkv_tests::metrics::sum(&samples, "wingkv_refused_requests_total", &[("reason", "denied")]);
    let plaintext = wingkv_tests::metrics::sum(&samples, "wingkv_refused_requests_total", &[("reason", "plaintext")]);
    ensure!(denied >= 1.0 && plaintext >= 1.0, "meta refusals counted: denied {denied}, plaintext {plaintext}");

    // Rotation: replica1 gets a new certificate (a new key) in its files; new connections see
    // it without a restart, and the cluster goes on serving.
    let probe = ClientTls::new(&admin_files)?;
    let before = probe.server_certificate(&replica).await?;
    let tls_s = tls.to_string_lossy().to_string();
    ensure!(
        wingkv(&["cert", "issue-server", "--dir", &tls_s, "--role", "replica", "--name", "replica1"])?.0,
        "reissue replica1"
    );
    wait_for("replica1 to present its new certificate", Duration::from_secs(20), || {
        let (probe, replica, before) = (probe.clone(), replica.clone(), before.clone());
        async move { probe.server_certificate(&replica).await.ok().filter(|now| *now != before) }
    })
    .await?;
    let fresh = Client::with_config(config(&meta, Some(admin_files))).await?;
    fresh.open_table("b").await?.set("after", "rotation", "ok").await.context("a write after the rotation")?;
    Ok(())
}

/// `wingkv shell --json --tls-dir TLS --tls-user USER -e SCRIPT`: (success, stdout + stderr).
fn secure_shell(meta: &str, tls: &Path, user: &str, script: &str) -> Result<(bool, String)> {
    let tls = tls.to_string_lossy().to_string();
    wingkv(&["shell", "--json", "--meta", meta, "--tls-dir", &tls, "--tls-user", user, "-e", script])
}

/// A bulk load on a secure onebox: the meta drives the replicas with its server certificate,
/// only an admin may start it, and every row arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_on_a_secure_onebox() -> Result<()> {
    const ROWS: u64 = 20_000;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let meta = start_secure(&dir)?;
    let _guard = Guard(dir.clone());
    let tls = dir.join("tls");
    let remote = tmp.path().join("remote");
    wingkv_tests::cli::bulkgen(
        &remote,
        &[
            "--table",
            "t",
            "--partitions",
            "4",
            "--cluster",
            "onebox",
            "--provider",
            "local",
            "--generate",
            &ROWS.to_string(),
        ],
    )?;
    let root = remote.to_string_lossy().to_string();
    let (ok, out) = secure_shell(&meta, &tls, "admin", "create t -p 4 -r 3")?;
    ensure!(ok, "create: {out}");

    let start = format!("start_bulk_load -a t -c onebox -p local -r {root}");
    let (ok, out) = secure_shell(&meta, &tls, "user1", &start)?;
    ensure!(
        !ok && out.contains("permission denied") && out.contains("user 'user1'"),
        "user1 started a bulk load: {out}"
    );
    let (ok, out) = secure_shell(&meta, &tls, "admin", &start)?;
    ensure!(ok, "start_bulk_load: {out}");
    let end = wait_for("the secure bulk load to end", Duration::from_secs(120), || {
        let (meta, tls) = (meta.clone(), tls.clone());
        async move {
            let (ok, out) = secure_shell(&meta, &tls, "user1", "query_bulk_load_status -a t").ok()?;
            let v: serde_json::Value = serde_json::from_str(out.lines().next()?).ok().filter(|_| ok)?;
            matches!(v["status"].as_str()?, "BLS_SUCCEED" | "BLS_FAILED" | "BLS_CANCELED").then_some(v)
        }
    })
    .await?;
    ensure!(end["status"] == "BLS_SUCCEED", "the secure bulk load ended {end}");

    let client = Client::with_config(config(&meta, Some(files(&tls, &tls, "user1")))).await?;
    let t = client.open_table("t").await?;
    let mut scan = t.full_scan(wingkv_client::ScanOptions { batch_size: 5_000, ..Default::default() });
    let mut rows = 0u64;
    while let Some(r) = futures::StreamExt::next(&mut scan).await {
        r?;
        rows += 1;
    }
    ensure!(rows == ROWS, "user1 scanned {rows} rows of {ROWS} loaded");
    Ok(())
}
