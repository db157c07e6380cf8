//! The `Batch` stream: one client's gets, sets and dels, many per message, on one long-lived
//! stream. Each request goes through the same admission, access check, partition check and
//! handler as its unary call, and gets its own answer (an error is the request's, never the
//! stream's). Answers ready at the same moment go out in one message.
//!
//! No task is spawned: the requests run inside the response stream, which the connection polls,
//! so they end with the stream (the client's end, a broken connection) exactly as a unary call
//! ends with its request. When the server stops, it tells the client (`closing`), answers what
//! it still reads `Busy` (not applied) until the client ends its half, and ends the stream once
//! the requests it took are answered. Ending it while the client still sends would leave unread
//! bytes at the close, and the kernel then resets the connection, which can throw away answers
//! already written: the client would see writes of unknown fate.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use prost::Message;
use tonic::{Request, Status, Streaming};
use wingkv_common::WingError;
use wingkv_proto::data::batch_op::Op;
use wingkv_proto::data::batch_result::Result as Answer;
use wingkv_proto::data::{BatchOp, BatchRequest, BatchResponse, BatchResult};
use wingkv_security::Peer;

use super::data::{DataService, WriteAdmission};

/// The response stream of `Batch`.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<BatchResponse, Status>> + Send>>;

/// Requests of one stream in progress at once; past it a request is answered `Busy` at once.
/// Each also takes a place among the server's `max_concurrent_requests`, as a unary call does.
const MAX_IN_FLIGHT: usize = 4_096;
/// Answers one response message carries at most, and their bytes at most (one answer alone
/// may be larger: a value up to the server's limits).
const MAX_ANSWERS_PER_MESSAGE: usize = 1_024;
const MAX_ANSWER_BYTES_PER_MESSAGE: usize = 4 << 20;
/// The longest a batched request may run, and how long one whose client sent no timeout may
/// (a unary call without `grpc-timeout` is bounded by the server's limits alike).
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

type Running = FuturesUnordered<Pin<Box<dyn Future<Output = BatchResult> + Send>>>;

/// Serves one `Batch` stream of `svc`.
pub fn serve(svc: DataService, req: Request<Streaming<BatchRequest>>) -> BatchStream {
    let peer = Arc::new(wingkv_security::identity::peer_of(&req));
    let driver = Driver {
        svc,
        peer,
        inbound: Some(req.into_inner()),
        running: Running::new(),
        failed: false,
        closing: Closing::No,
    };
    Box::pin(futures::stream::unfold(driver, |mut d| async move { d.next_message().await.map(|m| (m, d)) }))
}

/// The state of one stream: the requests still to read and those running.
struct Driver {
    svc: DataService,
    peer: Arc<Peer>,
    /// `None` once the client finished sending (or its half broke): what runs still answers.
    inbound: Option<Streaming<BatchRequest>>,
    running: Running,
    /// Reading the client's half failed: the stream ended with that error (the requests that
    /// were running were dropped, so their fate is unknown, and the client must not take the
    /// end for a clean one).
    failed: bool,
    closing: Closing,
}

/// Where a stopping server is in closing the stream.
#[derive(PartialEq)]
enum Closing {
    /// Not stopping.
    No,
    /// Stopping: the next message tells the client.
    Tell,
    /// The client was told; what it still sends is answered `Busy`.
    Told,
}

enum Event {
    Received(Result<Option<BatchRequest>, Status>),
    Answered(BatchResult),
    Stopping,
}

impl Driver {
    /// The next message of answers; `None` ends the stream (nothing left to read or answer).
    async fn next_message(&mut self) -> Option<Result<BatchResponse, Status>> {
        if self.failed {
            return None;
        }
        let mut results = Vec::new();
        let mut bytes = 0;
        loop {
            while results.len() < MAX_ANSWERS_PER_MESSAGE && bytes < MAX_ANSWER_BYTES_PER_MESSAGE {
                match self.running.next().now_or_never() {
                    Some(Some(r)) => {
                        bytes += r.encoded_len();
                        results.push(r);
                    }
                    _ => break,
                }
            }
            if !results.is_empty() || self.closing == Closing::Tell {
                let closing = self.closing != Closing::No;
                if closing {
                    self.closing = Closing::Told;
                }
                return Some(Ok(BatchResponse { results, closing }));
            }
            if self.inbound.is_none() && self.running.is_empty() {
                return None;
            }
            let event = tokio::select! {
                m = receive(&mut self.inbound) => Event::Received(m),
                Some(r) = self.running.next(), if !self.running.is_empty() => Event::Answered(r),
                _ = self.svc.stopping().cancelled(), if self.inbound.is_some() && self.closing == Closing::No => Event::Stopping,
            };
            match event {
                // The server stops: the client is told to end its half; the requests taken are
                // answered, then the stream ends (the client opens a new one, to wherever the
                // partition is served next).
                Event::Stopping => self.closing = Closing::Tell,
                Event::Answered(r) => {
                    bytes += r.encoded_len();
                    results.push(r);
                }
                Event::Received(Ok(Some(batch))) => {
                    for op in batch.ops {
                        if self.closing != Closing::No {
                            let busy =
                                WingError::Busy("the server is stopping: the request was not applied; retry it".into());
                            let r = BatchResult { id: op.id, result: Some(Answer::Error((&busy).into())) };
                            bytes += r.encoded_len();
                            results.push(r);
                        } else if self.running.len() >= MAX_IN_FLIGHT {
                            let busy = WingError::Busy(format!(
                                "{MAX_IN_FLIGHT} requests of this stream are in progress already; retry with backoff"
                            ));
                            let r = BatchResult { id: op.id, result: Some(Answer::Error((&busy).into())) };
                            bytes += r.encoded_len();
                            results.push(r);
                        } else {
                            self.running.push(Box::pin(run(self.svc.clone(), self.peer.clone(), op)));
                        }
                    }
                }
                // The client is done sending: the requests it sent are still answered.
                Event::Received(Ok(None)) => self.inbound = None,
                // Its half broke or could not be read (e.g. a message over `max_request_bytes`):
                // the stream ends with the error, so the client does not take the requests it
                // sent for unread.
                Event::Received(Err(status)) => {
                    tracing::debug!("batch stream ended: {status}");
                    self.failed = true;
                    return Some(Err(status));
                }
            }
        }
    }
}

/// The next message of the client; pending forever once it finished sending.
async fn receive(inbound: &mut Option<Streaming<BatchRequest>>) -> Result<Option<BatchRequest>, Status> {
    match inbound {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

/// Runs one request as its unary call would run, within its timeout; counts it as that call.
async fn run(svc: DataService, peer: Arc<Peer>, op: BatchOp) -> BatchResult {
    let started = Instant::now();
    let timeout = (op.timeout_ms > 0).then(|| Duration::from_millis(op.timeout_ms.into()).min(MAX_TIMEOUT));
    let limit = timeout.unwrap_or(MAX_TIMEOUT);
    let (method, outcome) = match op.op {
        Some(Op::Get(r)) => {
            let serve = async {
                let _in_flight = svc.admit_batched(&r, &peer)?;
                svc.serve_get(r).await.map(Answer::Get)
            };
            ("Get", within(limit, serve).await)
        }
        Some(Op::Set(r)) => {
            let admit = WriteAdmission::batched(&r, timeout);
            let serve = async {
                let _in_flight = svc.admit_batched(&r, &peer)?;
                svc.serve_set(r, admit).await.map(Answer::Write)
            };
            ("Set", within(limit, serve).await)
        }
        Some(Op::Del(r)) => {
            let admit = WriteAdmission::batched(&r, timeout);
            let serve = async {
                let _in_flight = svc.admit_batched(&r, &peer)?;
                svc.serve_del(r, admit).await.map(Answer::Write)
            };
            ("Del", within(limit, serve).await)
        }
        None => {
            ("Batch", Err(WingError::InvalidArgument("a batched request names no operation (get, set or del)".into())))
        }
    };
    svc.observe(method, outcome.as_ref().map(|_| ()), started.elapsed());
    let result = match outcome {
        Ok(answer) => answer,
        Err(e) => Answer::Error((&e).into()),
    };
    BatchResult { id: op.id, result: Some(result) }
}

async fn within<T>(limit: Duration, f: impl Future<Output = Result<T, WingError>>) -> Result<T, WingError> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(WingError::Timeout(format!("the request did not finish within {limit:?}"))))
}
