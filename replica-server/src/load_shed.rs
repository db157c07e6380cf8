//! Load shedding of data requests: a replica server works on at most
//! `max_concurrent_requests` requests holding at most `max_inflight_request_bytes` at once, and
//! answers any request past either limit with `Busy` at once. Without it every waiting request
//! (held by write throttling, queued for raft, stuck behind a slow disk) keeps its memory and a
//! task until it ends, so a burst of clients grows the server without bound.
//!
//! Only the data service is limited: raft and admin traffic must flow whatever the client load.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use wingkv_common::WingError;

/// The limits and what they refused.
#[derive(Debug)]
pub struct LoadShedder {
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_requests: usize,
    max_bytes: usize,
    /// Requests refused because `max_concurrent_requests` were in progress.
    pub shed_by_count: AtomicU64,
    /// Requests refused because `max_inflight_request_bytes` were held.
    pub shed_by_bytes: AtomicU64,
}

/// A request's place among those in progress, or its bytes among those held; released when
/// dropped.
#[derive(Debug)]
pub struct InFlight(#[allow(dead_code)] OwnedSemaphorePermit);

impl LoadShedder {
    /// Limits of `max_requests` requests and `max_bytes` bytes (`max_bytes` at most `u32::MAX`;
    /// the config checks it).
    pub fn new(max_requests: usize, max_bytes: usize) -> Self {
        Self {
            requests: Arc::new(Semaphore::new(max_requests)),
            bytes: Arc::new(Semaphore::new(max_bytes)),
            max_requests,
            max_bytes,
            shed_by_count: AtomicU64::new(0),
            shed_by_bytes: AtomicU64::new(0),
        }
    }

    /// Admits one more request in progress, or refuses it with `Busy`. Checked before the
    /// request's body is read (see [`ShedService`]), so a refused request costs no decoding.
    pub fn admit_request(&self) -> Result<InFlight, WingError> {
        match self.requests.clone().try_acquire_owned() {
            Ok(permit) => Ok(InFlight(permit)),
            Err(_) => {
                self.shed_by_count.fetch_add(1, Ordering::Relaxed);
                Err(WingError::Busy(format!(
                    "the server is working on {} requests already (max_concurrent_requests); retry with backoff",
                    self.max_requests
                )))
            }
        }
    }

    /// Admits a decoded request of `bytes` (its encoded size) among the bytes held, or refuses
    /// it with `Busy`.
    pub fn admit_bytes(&self, bytes: usize) -> Result<InFlight, WingError> {
        // A request is never larger than `max_request_bytes` <= `max_bytes` (the config checks
        // both), so one alone always fits.
        let permits = u32::try_from(bytes.min(self.max_bytes)).unwrap_or(u32::MAX);
        match self.bytes.clone().try_acquire_many_owned(permits) {
            Ok(permit) => Ok(InFlight(permit)),
            Err(_) => {
                self.shed_by_bytes.fetch_add(1, Ordering::Relaxed);
                Err(WingError::Busy(format!(
                    "the server holds {} bytes of requests already (max_inflight_request_bytes); retry with backoff",
                    self.max_bytes
                )))
            }
        }
    }

    /// Requests in progress now.
    pub fn in_flight(&self) -> usize {
        self.max_requests - self.requests.available_permits()
    }
}

/// A gRPC service behind the request limit: a request past `max_concurrent_requests` is
/// answered `Busy` before its body is read; an admitted one holds its place until its handler
/// answers (for a scan: until its stream is opened).
#[derive(Clone)]
pub struct ShedService<S> {
    inner: S,
    shed: Arc<LoadShedder>,
}

impl<S> ShedService<S> {
    /// `inner` behind `shed`'s request limit.
    pub fn new(inner: S, shed: Arc<LoadShedder>) -> Self {
        Self { inner, shed }
    }
}

impl<S: NamedService> NamedService for ShedService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for ShedService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match self.shed.admit_request() {
            Ok(place) => {
                let answer = self.inner.call(req);
                Box::pin(async move {
                    let response = answer.await;
                    drop(place);
                    response
                })
            }
            Err(e) => {
                let status = tonic::Status::from(e);
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_either_limit_a_request_is_busy_until_one_ends() {
        let shed = LoadShedder::new(2, 100);
        let a = shed.admit_request().unwrap();
        let b = shed.admit_request().unwrap();
        assert_eq!(shed.admit_request().unwrap_err().code(), wingkv_common::ErrorCode::Busy);
        assert_eq!(shed.in_flight(), 2);
        drop(a);
        let c = shed.admit_request().unwrap();
        drop((b, c));
        let big = shed.admit_bytes(90).unwrap();
        let e = shed.admit_bytes(20).unwrap_err();
        assert!(e.to_string().contains("max_inflight_request_bytes"), "{e}");
        assert_eq!((shed.shed_by_count.load(Ordering::Relaxed), shed.shed_by_bytes.load(Ordering::Relaxed)), (1, 1));
        drop(big);
        shed.admit_bytes(100).unwrap();
        assert_eq!(shed.in_flight(), 0, "a refused or dropped request holds nothing");
    }
}
