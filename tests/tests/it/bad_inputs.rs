//! The bad-input catalogue: malformed or hostile inputs across the shell, the meta and data
//! RPCs, the env parser and the bulk-load files, each answered by a clear error that names the
//! problem; afterwards the data is intact and the cluster healthy.

use std::time::Duration;

use anyhow::{ensure, Result};
use bytes::Bytes;
use prost::Message;
use serde_json::Value;
use wingkv_proto::data::{CheckAndSetRequest, GetRequest, SetRequest};
use wingkv_proto::meta::CreateTableRequest;
use wingkv_tests::cli::{onebox_node, shell};
use wingkv_tests::onebox::Guard;
use wingkv_tests::raw::call_raw;
use wingkv_tests::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_clear_error_and_changes_nothing() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start(&dir)?;
    let (ok, _, err) = shell(&meta, "create t -p 4 -r 3; create u -p 4 -r 3; use t; set keep me intact; set n s 41")?;
    ensure!(ok, "{err}");
    let remote = tmp.path().join("remote");
    let root = remote.display().to_string();
    // A layout whose metadata is not JSON, for a bulk load that must fail with the reason.
    std::fs::create_dir_all(remote.join("onebox/t/0"))?;
    std::fs::write(remote.join("onebox/t/bulk_load_info"), r#"{"app_name":"t","partition_count":4}"#)?;
    std::fs::write(remote.join("onebox/t/0/bulk_load_metadata"), "{not json")?;
    std::fs::create_dir_all(remote.join("onebox/u"))?;
    std::fs::write(remote.join("onebox/u/bulk_load_info"), "[1,2,3]")?;

    // (what, shell script, what the error must say)
    let shell_cases: Vec<(&str, String, &str)> = vec![
        ("unknown command", "frobnicate".into(), "unknown command 'frobnicate'"),
        ("missing arguments", "use t; set onlyhashkey".into(), "required"),
        ("bad escape", r"use t; get \xZZ s".into(), "two hex digits"),
        ("table name with a space", "create 'bad name' -p 4".into(), "bad name"),
        ("partition count not a power of two", "create p3 -p 3".into(), "power of two"),
        ("replica count out of range", "create r9 -p 4 -r 9".into(), "replica"),
        ("second table of one name", "create t -p 4".into(), "already exists"),
        ("drop of a missing table", "drop nosuch".into(), "nosuch"),
        ("use of a missing table", "use nosuch".into(), "nosuch"),
        ("recall of an unknown id", "recall 99999".into(), "99999"),
        ("incr by a non-number", "use t; incr n s lots".into(), "lots"),
        ("incr of a non-integer value", "use t; incr keep me 1".into(), "integer"),
        ("throttling with an unknown kind", "use t; set_app_envs replica.write_throttling 1*slow*5".into(), "slow"),
        (
            "throttling with lower-case size unit",
            "use t; set_app_envs replica.write_throttling_by_size 5k*delay*1".into(),
            "upper-case",
        ),
        (
            "throttling with two delays",
            "use t; set_app_envs replica.write_throttling 1*delay*1,2*delay*2".into(),
            "more than one 'delay'",
        ),
        ("throttling with zero units", "use t; set_app_envs replica.write_throttling 0*reject*1".into(), "at least 1"),
        ("deny with a bad value", "use t; set_app_envs replica.deny_client_write maybe".into(), "true or false"),
        (
            "deny request with a bad scope",
            "use t; set_app_envs replica.deny_client_request timeout*some".into(),
            "timeout*all",
        ),
        (
            "unknown provider",
            format!("start_bulk_load -a t -c onebox -p ftp -r {root}"),
            "unknown bulk-load provider 'ftp'",
        ),
        ("cluster name '..'", format!("start_bulk_load -a t -c .. -p local -r {root}"), "'..'"),
        ("missing bulk_load_info", format!("start_bulk_load -a t -c elsewhere -p local -r {root}"), "does not exist"),
        (
            "bulk_load_info that is not an object",
            format!("start_bulk_load -a u -c onebox -p local -r {root}"),
            "bulk_load_info is not valid",
        ),
        ("partition out of range", "query_bulk_load_status -a t -i 99".into(), "no partition 99"),
        ("pause without a job", "pause_bulk_load -a t".into(), "has no bulk load"),
    ];
    let mut wrong = Vec::new();
    for (what, script, want) in &shell_cases {
        let (ok, _, err) = shell(&meta, script)?;
        if ok || !err.contains(want) {
            wrong.push(format!("{what}: `{script}` should fail saying '{want}'; ok={ok}, said: {}", err.trim()));
        }
    }
    ensure!(
        wrong.is_empty(),
        "{} of {} inputs were not refused clearly:\n{}",
        wrong.len(),
        shell_cases.len(),
        wrong.join("\n")
    );

    // Raw RPCs that a typed client would not send.
    let cfg: Value = serde_json::from_str(shell(&meta, "app t")?.1.lines().last().unwrap_or("{}"))?;
    let app_id = cfg["app_id"].as_u64().unwrap_or(0) as u32;
    let (replica, _) = onebox_node(&dir, "replica1")?;
    let pid = |i: u32| Some(wingkv_common::PartitionId::new(app_id, i).to_proto());
    let rpc_cases: Vec<(&str, &str, String, Vec<u8>, &str)> = vec![
        (
            "get without a partition",
            "/wingkv.data.Data/Get",
            replica.clone(),
            GetRequest::default().encode_to_vec(),
            "partition",
        ),
        (
            "get of an unknown table",
            "/wingkv.data.Data/Get",
            replica.clone(),
            GetRequest { partition: Some(wingkv_common::PartitionId::new(777, 0).to_proto()), ..Default::default() }
                .encode_to_vec(),
            "777.0",
        ),
        (
            "hash key over 64 KiB",
            "/wingkv.data.Data/Set",
            replica.clone(),
            SetRequest { partition: pid(0), hash_key: Bytes::from(vec![b'h'; 70_000]), ..Default::default() }
                .encode_to_vec(),
            "hash_key is 70000 bytes",
        ),
        (
            "unknown check type",
            "/wingkv.data.Data/CheckAndSet",
            replica.clone(),
            CheckAndSetRequest { partition: pid(0), check_type: 99, ..Default::default() }.encode_to_vec(),
            "check type",
        ),
        ("a body that is not protobuf", "/wingkv.data.Data/Set", replica.clone(), vec![0xFF, 0xFF, 0xFF, 0x07], ""),
        (
            "create with 0 partitions",
            "/wingkv.meta.Meta/CreateTable",
            meta.clone(),
            CreateTableRequest { name: "zero".into(), partition_count: Some(0), ..Default::default() }.encode_to_vec(),
            "power of two",
        ),
    ];
    for (what, method, addr, body, want) in rpc_cases {
        match call_raw(&addr, method, body).await {
            Ok(_) => wrong.push(format!("{what}: accepted")),
            Err(s) if s.code() == tonic::Code::Unknown || !s.message().contains(want) => {
                wrong.push(format!("{what}: should say '{want}', said: {:?} {}", s.code(), s.message()))
            }
            Err(_) => {}
        }
    }
    ensure!(wrong.is_empty(), "raw RPCs not refused clearly:\n{}", wrong.join("\n"));

    // A bulk load of a layout whose metadata is not JSON fails with the reason.
    let (ok, _, err) = shell(&meta, &format!("start_bulk_load -a t -c onebox -p local -r {root}"))?;
    ensure!(ok, "{err}");
    let v = wait_for("the bad metadata to fail the job", Duration::from_secs(60), || async {
        let (ok, out, _) = shell(&meta, "query_bulk_load_status -a t").ok()?;
        let v: Value = serde_json::from_str(out.trim()).ok().filter(|_| ok)?;
        (v["status"] == "BLS_FAILED").then_some(v)
    })
    .await?;
    ensure!(v["reason"].as_str().is_some_and(|r| r.contains("bulk_load_metadata is not valid")), "{v}");

    // Nothing changed, and the cluster serves: the data, a write, every node alive.
    let (ok, out, err) = shell(&meta, "use t; get keep me; get n s; set after bad inputs; get after bad; ls")?;
    ensure!(ok && out.contains("intact") && out.contains("41") && out.contains("inputs"), "{out}{err}");
    ensure!(!out.contains("\"zero\"") && !out.contains("\"p3\""), "a refused table exists: {out}");
    let (ok, out, err) = shell(&meta, "nodes")?;
    ensure!(ok && out.matches("ALIVE").count() == 3, "nodes: {out}{err}");
    let (ok, out, _) = shell(&meta, "use t; get_app_envs")?;
    ensure!(ok && !out.contains("replica."), "a refused env was stored: {out}");
    Ok(())
}
