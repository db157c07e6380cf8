//! `wingkv shell -e` against a real cluster: every non-bulk-load command of DESIGN §7, the
//! `--json` output, and clear failures on bad commands.

use std::process::Command;

use anyhow::{ensure, Result};
use serde_json::Value;
use wingkv_tests::bin_path;
use wingkv_tests::cluster::Cluster;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn shell(meta: &str, json: bool, script: &str) -> Result<Run> {
    let mut cmd = Command::new(bin_path("wingkv"));
    cmd.args(["shell", "--meta", meta, "-e", script]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output()?;
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    })
}

fn ok(meta: &str, script: &str) -> Result<String> {
    let r = shell(meta, false, script)?;
    ensure!(r.code == 0, "`{script}` failed ({}): {}{}", r.code, r.stdout, r.stderr);
    Ok(r.stdout)
}

fn json(meta: &str, script: &str) -> Result<Vec<Value>> {
    let r = shell(meta, true, script)?;
    ensure!(r.code == 0, "`{script}` failed ({}): {}{}", r.code, r.stdout, r.stderr);
    Ok(r.stdout.lines().map(serde_json::from_str).collect::<Result<_, _>>()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_through_the_shell() -> Result<()> {
    let c = Cluster::start(1, 3).await?;
    let meta = c.meta_addrs().join(",");
    let meta = meta.as_str();
    let out = ok(meta, "create t -p 8 -r 3; use t; set a b c; get a b")?;
    ensure!(out.lines().last() == Some("\"c\""), "get printed: {out}");

    let out = ok(meta, "cluster_info; nodes; nodes -d; ls; ls -d; app t; app t -d; server_info")?;
    for want in ["onebox", "ALIVE", "AVAILABLE", "t.".trim_end_matches('.'), "primary"] {
        ensure!(out.contains(want), "missing '{want}' in:\n{out}");
    }

    let script = "use t; set h s1 v1; set h s2 v2 3600; exist h s1; ttl h s1; ttl h s2; ttl h nope; \
        incr h n; incr h n 5; incr h n -2; multi_set h m1 x1 m2 x2; multi_get h; multi_get h m1 m2 missing; \
        sortkey_count h; hash_scan h s1 s3; hash_scan h \"\" \"\" -n 2 -i; multi_del h m1 m2; \
        check_and_set h -c s1 -t value_exist -s s9 -v nine -r; get h s9; del h s1; exist h s1; \
        set \"bin\\x00key\" sk \"v\\xFF\"; get \"bin\\x00key\" sk; full_scan -n 100; count_data";
    let out = json(meta, script)?;
    let by = |i: usize| &out[i];
    assert_eq!(by(3)["exist"], Value::Bool(true));
    assert_eq!(by(4)["ttl_seconds"], Value::Null, "s1 has no TTL");
    ensure!(by(5)["ttl_seconds"].as_u64().is_some_and(|s| s > 3500), "{}", by(5));
    assert_eq!(by(6)["found"], Value::Bool(false));
    assert_eq!(by(7)["new_value"], 1);
    assert_eq!(by(8)["new_value"], 6);
    assert_eq!(by(9)["new_value"], 4);
    assert_eq!(by(11)["records"].as_array().map(|a| a.len()), Some(5), "{}", by(11));
    assert_eq!(by(12)["records"].as_array().map(|a| a.len()), Some(2));
    assert_eq!(by(13)["count"], 5);
    assert_eq!(by(14)["count"], 2, "s1 and s2 are in [s1, s3)");
    assert_eq!(by(15)["count"], 2, "-n 2 limits the scan");
    assert_eq!(by(16)["deleted"], 2);
    assert_eq!(by(17)["set"], Value::Bool(true));
    assert_eq!(by(17)["check_value"], "v1");
    assert_eq!(by(18)["value"], "nine");
    assert_eq!(by(20)["exist"], Value::Bool(false));
    assert_eq!(by(22)["value"], "v\\xFF", "binary values print escaped");
    // a/b, then h: s2, n, s9, then the binary key.
    assert_eq!(by(23)["count"], 5, "{}", by(23));
    assert_eq!(by(24)["count"], 5);

    // Envs, drop and recall.
    let out = json(meta, "use t; set_app_envs replica.foo bar; get_app_envs; del_app_envs replica.foo; get_app_envs")?;
    assert_eq!(out[2]["envs"]["replica.foo"], "bar");
    assert_eq!(out[4]["envs"].as_object().map(|o| o.len()), Some(0));
    let out = json(meta, "create gone -p 2 -r 1; drop gone -r 600")?;
    let app_id = out[1]["app_id"].as_u64().unwrap_or_default();
    ok(meta, &format!("recall {app_id} back; use back; set k k v; get k k"))?;

    // Bad commands and arguments: a clear message and a non-zero exit, stopping at the first.
    for (script, want) in [
        ("frobnicate", "unknown command 'frobnicate'"),
        ("get a b", "no table selected"),
        ("use t; incr h s2", "not a 64-bit integer"),
        ("create bad/name", "invalid table name"),
        ("create x -p 3", "power of two"),
        ("use nope", "no table named 'nope'"),
        ("use t; set a", "required"),
        ("use t; check_and_set h -t sometimes", "unknown check type"),
        ("use t; get \"\\xZZ\" b", "two hex digits"),
        ("use t; set \"unterminated b c", "unterminated"),
    ] {
        let r = shell(meta, false, script)?;
        ensure!(r.code != 0, "`{script}` succeeded: {}", r.stdout);
        ensure!(r.stderr.contains(want), "`{script}`: stderr does not say '{want}': {}", r.stderr);
    }
    let r = shell(meta, false, "use t; get a b; frobnicate; set a b never")?;
    ensure!(r.code != 0 && r.stdout.contains("\"c\""), "{}", r.stdout);
    ensure!(ok(meta, "use t; get a b")?.contains("\"c\""), "a failed script must not write after its error");
    Ok(())
}

/// A value wider than `format!`'s width limit (65,535) is printed cut, with a marker, in
/// tables, and whole with `--json` (and by `get`, which prints it alone); the shell never panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_wider_than_a_format_width_is_cut_in_tables_and_whole_in_json() -> Result<()> {
    let c = Cluster::start(1, 1).await?;
    let meta = c.meta_addrs().join(",");
    let meta = meta.as_str();
    ok(meta, "create wide -p 1 -r 1")?;
    let wide = "w".repeat(70_000);
    c.table("wide").await?.set("h", "s", &wide).await?;
    // `get` prints the value alone, not in a table: whole.
    ensure!(ok(meta, "use wide; get h s")?.contains(&wide), "`get` did not print the whole value");
    for command in ["multi_get h", "hash_scan h \"\" \"\"", "full_scan"] {
        let script = format!("use wide; {command}");
        let out = ok(meta, &script)?;
        ensure!(out.contains("chars; --json shows it whole"), "`{command}` printed no cut marker: {:.300}", out);
        ensure!(!out.contains(&wide), "`{command}` printed the whole value in a table");
        let out = json(meta, &script)?;
        let printed = out.last().map(|v| v.to_string()).unwrap_or_default();
        ensure!(printed.contains(&wide), "`{command}` --json lost part of the value: {:.300}", printed);
    }
    Ok(())
}
