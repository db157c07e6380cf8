//! What a server tells operators about itself: Prometheus metrics on HTTP `/metrics`, liveness
//! on `/health`, and a tracing span with timing for every gRPC request.
//!
//! Two kinds of metrics, kept apart on purpose:
//! - request counters and latency histograms live in [`ServerMetrics`] and are updated on the
//!   request path by [`RpcMetricsLayer`];
//! - state that already lives elsewhere (raft, RocksDB, bulk-load progress, throttling counters)
//!   is read at scrape time by the server's [`MetricsSource`] into a [`Scrape`], so nothing is
//!   copied on the hot path and a scrape always shows the current values.

mod http;
mod rpc;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

pub use http::{http_advertise_address, http_listen_address, MetricsHttpServer, HTTP_ADDRESS_FILE};
pub use rpc::{record_partition, RpcMetricsLayer};

use crate::WingError;

/// Labels of one sample: `(name, value)` pairs, the same names in every sample of a metric.
pub type Labels<'a> = &'a [(&'static str, &'a str)];

/// The request metrics of one server process, and the registry they are rendered from.
pub struct ServerMetrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    role: &'static str,
    started: Instant,
}

impl ServerMetrics {
    /// Metrics of a server playing `role` (`meta` or `replica`).
    pub fn new(role: &'static str) -> Result<Arc<Self>, WingError> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("wingkv_requests_total", "gRPC requests served, by service, method and answer code"),
            &["service", "method", "code"],
        )
        .map_err(metrics_error)?;
        // 50 µs .. 13 s: a cached get sits at the bottom, a throttled write near the top.
        let buckets = prometheus::exponential_buckets(50e-6, 2.0, 19).map_err(metrics_error)?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "wingkv_request_duration_seconds",
                "Time to answer a gRPC request (a stream: its first response)",
            )
            .buckets(buckets),
            &["service", "method"],
        )
        .map_err(metrics_error)?;
        registry.register(Box::new(requests.clone())).map_err(metrics_error)?;
        registry.register(Box::new(latency.clone())).map_err(metrics_error)?;
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .map_err(metrics_error)?;
        Ok(Arc::new(Self { registry, requests, latency, role, started: Instant::now() }))
    }

    /// Counts one answered request.
    pub fn observe(&self, service: &str, method: &str, code: &str, elapsed: Duration) {
        if let Ok(c) = self.requests.get_metric_with_label_values(&[service, method, code]) {
            c.inc();
        }
        if let Ok(h) = self.latency.get_metric_with_label_values(&[service, method]) {
            h.observe(elapsed.as_secs_f64());
        }
    }

    /// Time since the process started serving.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The Prometheus text exposition of every metric: the request metrics, the process
    /// metrics, and what `source` reads now.
    pub fn render(&self, source: &dyn MetricsSource) -> String {
        let mut scrape = Scrape::default();
        scrape.gauge(
            "wingkv_build_info",
            "Version of the serving binary (always 1)",
            &[("version", env!("CARGO_PKG_VERSION")), ("role", self.role)],
            1.0,
        );
        scrape.gauge("wingkv_uptime_seconds", "Seconds since the server started", &[], self.uptime().as_secs_f64());
        // process_cpu_seconds_total counts whole seconds: too coarse for CPU per operation.
        scrape.gauge(
            "wingkv_process_cpu_seconds",
            "User and system CPU seconds of the process, to the microsecond",
            &[],
            crate::process::cpu_seconds(),
        );
        source.collect(&mut scrape);
        let mut families = self.registry.gather();
        families.extend(scrape.gather());
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!("cannot encode metrics: {e}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn metrics_error(e: prometheus::Error) -> WingError {
    WingError::Internal(format!("metrics: {e}"))
}

/// What a server reads into a scrape: its state at the moment of the scrape.
pub trait MetricsSource: Send + Sync + 'static {
    /// Adds the current values to `out`.
    fn collect(&self, out: &mut Scrape);
}

/// The values one scrape collects, as gauges and counters by name.
#[derive(Default)]
pub struct Scrape {
    gauges: HashMap<&'static str, GaugeVec>,
    counters: HashMap<&'static str, CounterVec>,
}

impl Scrape {
    /// Sets the gauge `name{labels}` to `value`.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, labels: Labels<'_>, value: f64) {
        if let Some(g) = Self::metric(&mut self.gauges, name, help, labels, GaugeVec::new) {
            g.set(value);
        }
    }

    /// Sets the counter `name{labels}` to `value` (a count kept elsewhere since start).
    pub fn counter(&mut self, name: &'static str, help: &'static str, labels: Labels<'_>, value: u64) {
        if let Some(c) = Self::metric(&mut self.counters, name, help, labels, CounterVec::new) {
            c.inc_by(value as f64);
        }
    }

    /// The sample `name{labels}` of a family in `families`, the family made on first use.
    /// A bad definition or labels that do not fit the family are logged and skipped: a scrape
    /// never fails for one metric.
    fn metric<T: MetricVecBuilder>(
        families: &mut HashMap<&'static str, MetricVec<T>>,
        name: &'static str,
        help: &'static str,
        labels: Labels<'_>,
        make: fn(Opts, &[&str]) -> prometheus::Result<MetricVec<T>>,
    ) -> Option<T::M>
    where
        MetricVec<T>: Clone,
    {
        let vec = match families.get(name) {
            Some(v) => v.clone(),
            None => {
                let names: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
                let Ok(v) = make(Opts::new(name, help), &names) else {
                    tracing::warn!(metric = name, "invalid metric definition");
                    return None;
                };
                families.insert(name, v.clone());
                v
            }
        };
        let values: Vec<&str> = labels.iter().map(|(_, v)| *v).collect();
        vec.get_metric_with_label_values(&values)
            .map_err(|e| tracing::warn!(metric = name, "metric labels do not match: {e}"))
            .ok()
    }

    fn gather(self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families: Vec<_> = self.gauges.values().flat_map(|g| g.collect()).collect();
        families.extend(self.counters.values().flat_map(|c| c.collect()));
        // Stable output, whatever order the maps keep.
        families.sort_by(|a, b| a.name().cmp(b.name()));
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl MetricsSource for Fixed {
        fn collect(&self, out: &mut Scrape) {
            out.gauge("wingkv_test_gauge", "a gauge", &[("partition", "1.0")], 3.0);
            out.gauge("wingkv_test_gauge", "a gauge", &[("partition", "1.1")], 4.5);
            // Wrong label names for an existing metric: skipped, not a panic.
            out.gauge("wingkv_test_gauge", "a gauge", &[("other", "x")], 9.0);
            out.counter("wingkv_test_total", "a counter", &[], 42);
        }
    }

    #[test]
    fn render_has_requests_scrape_values_and_process_metrics() {
        let m = ServerMetrics::new("replica").unwrap();
        m.observe("Data", "Get", "OK", Duration::from_micros(120));
        m.observe("Data", "Get", "NotLeader", Duration::from_millis(2));
        let text = m.render(&Fixed);
        assert!(text.contains("wingkv_requests_total{code=\"OK\",method=\"Get\",service=\"Data\"} 1"), "{text}");
        assert!(text.contains("wingkv_requests_total{code=\"NotLeader\",method=\"Get\",service=\"Data\"} 1"));
        assert!(text.contains("wingkv_request_duration_seconds_count{method=\"Get\",service=\"Data\"} 2"));
        assert!(text.contains("wingkv_test_gauge{partition=\"1.0\"} 3"));
        assert!(text.contains("wingkv_test_gauge{partition=\"1.1\"} 4.5"));
        assert!(!text.contains("other=\"x\""));
        assert!(text.contains("# TYPE wingkv_test_total counter"));
        assert!(text.contains("wingkv_test_total 42"));
        assert!(text.contains("wingkv_build_info{role=\"replica\",version=\""));
        assert!(text.contains("process_resident_memory_bytes"));
    }
}
