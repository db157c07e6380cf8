//! A tower layer under every gRPC service of a server: one tracing span per request (with the
//! service, the method and, once the handler knows it, the partition) and the request counters
//! and latency histogram of [`ServerMetrics`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tracing::Instrument;

use super::ServerMetrics;
use crate::error::ERROR_CODE_HEADER;
use crate::PartitionId;

/// Wraps every request of a tonic server; see the module doc.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<ServerMetrics>,
}

impl RpcMetricsLayer {
    /// A layer counting into `metrics`.
    pub fn new(metrics: Arc<ServerMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> RpcMetricsService<S> {
        RpcMetricsService { inner, metrics: self.metrics.clone() }
    }
}

/// The service [`RpcMetricsLayer`] makes.
#[derive(Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: Arc<ServerMetrics>,
}

/// `/wingkv.data.Data/Get` → `("Data", "Get")`.
fn service_and_method(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    let service = service.rsplit('.').next().unwrap_or(service);
    (service.to_string(), method.to_string())
}

/// The answer code of a response: the wingkv error code when the server sent one, else the gRPC
/// status of a headers-only (error) response, else `OK` (a success carries its status in the
/// trailers).
fn answer_code(headers: &http::HeaderMap) -> String {
    if let Some(code) = headers.get(ERROR_CODE_HEADER).and_then(|v| v.to_str().ok()) {
        return code.to_string();
    }
    match headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<i32>().ok()) {
        None | Some(0) => "OK".to_string(),
        Some(c) => format!("{:?}", tonic::Code::from_i32(c)),
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(
        &mut self,
        req: http::Request<B>,
    ) -> Pin<Box<dyn Future<Output = Result<http::Response<RB>, S::Error>> + Send>> {
        let (service, method) = service_and_method(req.uri().path());
        let span = tracing::info_span!("rpc", service = %service, method = %method, partition = tracing::field::Empty);
        let metrics = self.metrics.clone();
        let start = Instant::now();
        let fut = self.inner.call(req).instrument(span.clone());
        Box::pin(async move {
            let result = fut.await;
            let code = match &result {
                Ok(resp) => answer_code(resp.headers()),
                Err(_) => "TransportError".to_string(),
            };
            let elapsed = start.elapsed();
            // Service and method come from the request path: a path no service answers is
            // counted as "unknown", so stray requests cannot grow the label sets without bound.
            let (service, method) =
                if code == "Unimplemented" { ("unknown", "unknown") } else { (service.as_str(), method.as_str()) };
            metrics.observe(service, method, &code, elapsed);
            if code != "OK" {
                span.in_scope(
                    || tracing::debug!(code = %code, elapsed_us = elapsed.as_micros() as u64, "request failed"),
                );
            }
            result
        })
    }
}

/// Notes the partition a request addresses on its span (see [`RpcMetricsLayer`]).
pub fn record_partition(id: PartitionId) {
    tracing::Span::current().record("partition", tracing::field::display(id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes() {
        assert_eq!(service_and_method("/wingkv.data.Data/Get"), ("Data".into(), "Get".into()));
        assert_eq!(service_and_method("/grpc.health.v1.Health/Check"), ("Health".into(), "Check".into()));
        assert_eq!(service_and_method("garbage"), ("garbage".into(), "".into()));
        let mut h = http::HeaderMap::new();
        assert_eq!(answer_code(&h), "OK");
        h.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(answer_code(&h), "Unavailable");
        h.insert(ERROR_CODE_HEADER, http::HeaderValue::from_static("NotLeader"));
        assert_eq!(answer_code(&h), "NotLeader");
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from_static("12"));
        assert_eq!(answer_code(&h), "Unimplemented");
    }
}
