//! Latency and throughput of a benchmark phase, per operation type.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Latencies are recorded in microseconds, 1 µs .. 100 s, 3 significant digits.
const MAX_MICROS: u64 = 100_000_000;

/// What one worker saw of one operation type.
pub struct OpStats {
    latency: Histogram<u64>,
    errors: u64,
    /// Reads that found nothing (after a load, each is a lost or misrouted record).
    misses: u64,
    first_error: Option<String>,
}

impl OpStats {
    fn new() -> Result<Self> {
        let latency = Histogram::new_with_bounds(1, MAX_MICROS, 3).map_err(|e| anyhow!("histogram: {e}"))?;
        Ok(Self { latency, errors: 0, misses: 0, first_error: None })
    }
}

/// Per-operation statistics of one worker, merged into a phase's at the end.
#[derive(Default)]
pub struct Stats {
    ops: BTreeMap<&'static str, OpStats>,
}

impl Stats {
    fn op(&mut self, op: &'static str) -> Result<&mut OpStats> {
        if !self.ops.contains_key(op) {
            self.ops.insert(op, OpStats::new()?);
        }
        self.ops.get_mut(op).ok_or_else(|| anyhow!("no stats for {op}"))
    }

    /// Records one successful operation.
    pub fn ok(&mut self, op: &'static str, elapsed: Duration) -> Result<()> {
        let micros = (elapsed.as_micros() as u64).clamp(1, MAX_MICROS);
        self.op(op)?.latency.saturating_record(micros);
        Ok(())
    }

    /// Records a read that found nothing.
    pub fn miss(&mut self, op: &'static str) -> Result<()> {
        self.op(op)?.misses += 1;
        Ok(())
    }

    /// Records a failed operation.
    pub fn error(&mut self, op: &'static str, e: &dyn std::fmt::Display) -> Result<()> {
        let s = self.op(op)?;
        s.errors += 1;
        if s.first_error.is_none() {
            s.first_error = Some(e.to_string());
        }
        Ok(())
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: Stats) -> Result<()> {
        for (op, o) in other.ops {
            let s = self.op(op)?;
            s.latency.add(&o.latency).map_err(|e| anyhow!("merge histograms: {e}"))?;
            s.errors += o.errors;
            s.misses += o.misses;
            if s.first_error.is_none() {
                s.first_error = o.first_error;
            }
        }
        Ok(())
    }

    /// Successful operations of every type.
    pub fn total_ok(&self) -> u64 {
        self.ops.values().map(|s| s.latency.len()).sum()
    }

    /// Failed operations of every type.
    pub fn total_errors(&self) -> u64 {
        self.ops.values().map(|s| s.errors).sum()
    }

    /// The phase as JSON (latencies in microseconds).
    pub fn to_json(&self, phase: &str, elapsed: Duration) -> Value {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let ops: serde_json::Map<String, Value> = self
            .ops
            .iter()
            .map(|(op, s)| {
                let h = &s.latency;
                (
                    op.to_string(),
                    json!({
                        "count": h.len(),
                        "ops_per_sec": h.len() as f64 / secs,
                        "errors": s.errors,
                        "misses": s.misses,
                        "first_error": s.first_error,
                        "avg_us": h.mean(),
                        "p50_us": h.value_at_quantile(0.50),
                        "p99_us": h.value_at_quantile(0.99),
                        "p999_us": h.value_at_quantile(0.999),
                        "max_us": h.max(),
                    }),
                )
            })
            .collect();
        json!({
            "phase": phase,
            "elapsed_sec": secs,
            "operations": self.total_ok(),
            "errors": self.total_errors(),
            "ops_per_sec": self.total_ok() as f64 / secs,
            "per_operation": ops,
        })
    }

    /// The phase as a table.
    pub fn to_text(&self, phase: &str, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "[{phase}] {} ops in {:.1} s: {:.0} ops/s, {} errors",
            self.total_ok(),
            secs,
            self.total_ok() as f64 / secs,
            self.total_errors()
        );
        let _ = writeln!(
            out,
            "  {:<8} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}",
            "op", "count", "ops/s", "avg_ms", "p50_ms", "p99_ms", "p999_ms", "max_ms", "errors", "misses"
        );
        let ms = |us: u64| us as f64 / 1000.0;
        for (op, s) in &self.ops {
            let h = &s.latency;
            let _ = writeln!(
                out,
                "  {:<8} {:>10} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>7} {:>7}",
                op,
                h.len(),
                h.len() as f64 / secs,
                h.mean() / 1000.0,
                ms(h.value_at_quantile(0.50)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max()),
                s.errors,
                s.misses
            );
            if let Some(e) = &s.first_error {
                let _ = writeln!(out, "    first error: {e}");
            }
        }
        out.trim_end().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_quantiles() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for i in 1..=100u64 {
            a.ok("read", Duration::from_micros(i * 10)).unwrap();
        }
        b.ok("read", Duration::from_millis(50)).unwrap();
        b.error("update", &"Busy: throttled").unwrap();
        b.miss("read").unwrap();
        a.merge(b).unwrap();
        assert_eq!(a.total_ok(), 101);
        assert_eq!(a.total_errors(), 1);
        let j = a.to_json("run", Duration::from_secs(1));
        let read = &j["per_operation"]["read"];
        assert_eq!(read["count"], 101);
        assert_eq!(read["misses"], 1);
        let p50 = read["p50_us"].as_u64().unwrap();
        assert!((495..=515).contains(&p50), "p50 {p50}");
        assert!(read["max_us"].as_u64().unwrap() >= 49_900);
        assert_eq!(j["per_operation"]["update"]["first_error"], "Busy: throttled");
        assert!(a.to_text("run", Duration::from_secs(1)).contains("first error: Busy: throttled"));
    }
}
