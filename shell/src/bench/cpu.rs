//! CPU per operation: the CPU seconds the measured servers (`wingkv_process_cpu_seconds`, or
//! etcd's `process_cpu_seconds_total`, on `/metrics`) and this bench client spent in a phase,
//! divided by the operations done.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use wingkv_client::Client;

/// The `/metrics` endpoints (`host:port`) of every server of the measured cluster.
pub struct CpuProbe {
    endpoints: Vec<String>,
}

/// CPU seconds used so far.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    servers: f64,
    client: f64,
}

impl CpuProbe {
    /// Every replica server the meta lists and every meta of `metas`.
    pub async fn wingkv(client: &Client, metas: &[String]) -> Result<Self> {
        let admin = client.admin();
        let mut endpoints: Vec<String> = Vec::new();
        for m in metas {
            let info = admin
                .server_info(m, std::time::Duration::from_secs(5))
                .await
                .with_context(|| format!("server_info of meta {m}"))?;
            endpoints.push(info.http_address);
        }
        for n in admin.list_nodes().await.context("list the replica servers")? {
            endpoints.push(n.http_address);
        }
        anyhow::ensure!(
            endpoints.iter().all(|e| !e.is_empty()),
            "a server did not report its /metrics address: {endpoints:?}"
        );
        Ok(Self { endpoints })
    }

    /// etcd members serve `/metrics` on their client endpoints.
    pub fn etcd(endpoints: &[String]) -> Self {
        Self { endpoints: endpoints.to_vec() }
    }

    /// The servers' CPU seconds (summed) and this process's, now.
    pub async fn sample(&self) -> Result<CpuSample> {
        let mut servers = 0.0;
        for e in &self.endpoints {
            let text = super::http_get(e, "/metrics").await?;
            // wingkv's own gauge is precise to the µs; etcd's (Go) counter is precise too.
            servers += super::sample(&text, "wingkv_process_cpu_seconds")
                .or_else(|| super::sample(&text, "process_cpu_seconds_total"))
                .with_context(|| format!("no process_cpu_seconds_total on {e}/metrics"))?;
        }
        Ok(CpuSample { servers, client: wingkv_common::process::cpu_seconds() })
    }
}

impl CpuProbe {
    /// Waits until the servers use less than `cores` of CPU over a second (the work a phase
    /// leaves behind, such as the snapshots replicas build once a bulk load is in, is over);
    /// answers how long that took. Fails after `at_most`.
    pub async fn wait_quiet(&self, cores: f64, at_most: std::time::Duration) -> Result<std::time::Duration> {
        let started = std::time::Instant::now();
        let mut last = self.sample().await?;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let now = self.sample().await?;
            if now.servers - last.servers < cores {
                return Ok(started.elapsed());
            }
            anyhow::ensure!(
                started.elapsed() < at_most,
                "the servers still used {:.2} cores after {at_most:?}",
                now.servers - last.servers
            );
            last = now;
        }
    }
}

impl CpuSample {
    /// What was spent from `self` to `later`, in all and per operation (µs).
    pub fn report(&self, later: &CpuSample, operations: u64) -> Value {
        let (servers, client) = (later.servers - self.servers, later.client - self.client);
        let per_op = |secs: f64| if operations == 0 { 0.0 } else { secs * 1e6 / operations as f64 };
        json!({
            "servers_sec": servers,
            "client_sec": client,
            "servers_us_per_op": per_op(servers),
            "client_us_per_op": per_op(client),
            "total_us_per_op": per_op(servers + client),
        })
    }
}

/// One line for the text report.
pub fn text(cpu: &Value) -> String {
    let f = |k: &str| cpu[k].as_f64().unwrap_or(0.0);
    format!(
        "  cpu per op: servers {:.1} µs + client {:.1} µs = {:.1} µs ({:.1} s + {:.1} s)",
        f("servers_us_per_op"),
        f("client_us_per_op"),
        f("total_us_per_op"),
        f("servers_sec"),
        f("client_sec")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_operation_is_what_was_spent_between_the_samples() {
        let before = CpuSample { servers: 10.0, client: 1.0 };
        let after = CpuSample { servers: 12.0, client: 1.5 };
        let r = before.report(&after, 1000);
        let f = |k: &str| r[k].as_f64().unwrap();
        assert!((f("servers_us_per_op") - 2000.0).abs() < 1e-6, "{r}");
        assert!((f("client_us_per_op") - 500.0).abs() < 1e-6, "{r}");
        assert!((f("total_us_per_op") - 2500.0).abs() < 1e-6, "{r}");
        assert_eq!(before.report(&after, 0)["total_us_per_op"], 0.0);
        assert!(text(&r).contains("= 2500.0 µs"), "{}", text(&r));
    }
}
