//! The client side of the `Batch` stream: one stream per replica server, shared by every get,
//! set and del this client sends there. A request waits in the server's queue only while an
//! earlier message is being written: the stream's task takes everything queued at once into
//! one message, so an idle client sends each request at once and a busy one sends many per
//! message.
//!
//! One task owns each stream. It ends when the stream ends (see [`Stream::fail_all`] for what
//! becomes of the requests it did not answer) or when the client is dropped; the next request
//! to that server starts a new one.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::channel::mpsc as stream_channel;
use futures::SinkExt;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::Status;
use wingkv_common::error::{batch_error_status, ERROR_CODE_HEADER};
use wingkv_common::sync::MutexExt;
use wingkv_proto::data::batch_op::Op;
use wingkv_proto::data::batch_result::Result as Answer;
use wingkv_proto::data::data_client::DataClient;
use wingkv_proto::data::{BatchOp, BatchRequest, BatchResponse, BatchResult};

/// Most requests one message carries.
const MAX_OPS_PER_MESSAGE: usize = 512;
/// Most bytes of requests one message carries (a request alone may be up to
/// [`MAX_BATCHED_OP_BYTES`]); far under a server's `max_request_bytes`.
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Larger requests go as unary calls.
pub(crate) const MAX_BATCHED_OP_BYTES: usize = 64 << 10;
/// Requests queued for one server's stream at most; a caller past it waits for room.
const QUEUE: usize = 4_096;

/// A request waiting for its stream, and where its answer goes.
struct Queued {
    op: Op,
    /// When its caller stops waiting: the server is told what is left when it is sent.
    deadline: Instant,
    reply: oneshot::Sender<Result<Answer, Status>>,
}

/// A request sent and not answered yet.
struct Waiting {
    reply: oneshot::Sender<Result<Answer, Status>>,
    /// A get: retrying it is safe whatever became of it.
    read: bool,
}

/// The streams of one client, by server address. It owns their tasks: dropping it (the
/// client) aborts them, and each fails the requests it still holds (see [`Stream`]'s `Drop`).
#[derive(Default)]
pub(crate) struct Batchers {
    by_server: Mutex<HashMap<String, (mpsc::Sender<Queued>, tokio::task::AbortHandle)>>,
    /// Servers that answered `Unimplemented` to `Batch` (an older version): unary calls only.
    unary_only: Mutex<HashSet<String>>,
}

impl Batchers {
    /// Whether requests to `address` may go on its stream.
    pub(crate) fn serves_batches(&self, address: &str) -> bool {
        !self.unary_only.locked().contains(address)
    }

    /// Sends `op` to the server at `address` (over `channel`) on its stream and waits for its
    /// answer; the caller bounds the wait, `timeout` tells the server how long it is.
    pub(crate) async fn call(
        self: &Arc<Self>,
        address: &str,
        channel: Channel,
        op: Op,
        timeout: Duration,
    ) -> Result<Answer, Status> {
        let queue = self.queue(address, channel);
        let (reply, answer) = oneshot::channel();
        queue
            .send(Queued { op, deadline: Instant::now() + timeout, reply })
            .await
            .map_err(|_| Status::unavailable(format!("the batch stream to {address} closed")))?;
        answer.await.map_err(|_| Status::unavailable(format!("the batch stream to {address} broke")))?
    }

    /// The queue of `address`'s stream, starting its task if there is none or the last ended.
    fn queue(self: &Arc<Self>, address: &str, channel: Channel) -> mpsc::Sender<Queued> {
        let mut map = self.by_server.locked();
        if let Some((q, _)) = map.get(address).filter(|(q, _)| !q.is_closed()) {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        // The task holds the batchers weakly, so that dropping the client aborts it.
        let task = tokio::spawn(drive(Arc::downgrade(self), address.to_string(), channel, rx));
        map.insert(address.to_string(), (tx.clone(), task.abort_handle()));
        tx
    }
}

impl Drop for Batchers {
    fn drop(&mut self) {
        for (_, (_, task)) in self.by_server.locked().drain() {
            task.abort();
        }
    }
}

/// Owns one stream: sends what is queued, hands each answer to its caller. Sending and
/// receiving run side by side, so a send held by flow control never stops the answers from
/// being read (the server stops reading requests while its answers are not read).
async fn drive(batchers: Weak<Batchers>, address: String, channel: Channel, mut queue: mpsc::Receiver<Queued>) {
    let stream = Stream {
        address,
        waiting: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        closing: tokio::sync::Notify::new(),
    };
    // Started by a request: it is queued already.
    let Some(first) = queue.recv().await else { return };
    let (mut outbound, requests) = stream_channel::channel::<BatchRequest>(4);
    let mut unsent = Vec::new();
    let mut end = End::Unread;
    let (message, ids) = stream.take_message(first, &mut queue);
    if outbound.send(message).await.is_err() {
        unsent = ids;
    } else {
        let mut client = DataClient::new(channel).max_decoding_message_size(64 << 20);
        match client.batch(requests).await {
            Ok(resp) => {
                let mut inbound = resp.into_inner();
                let sending = stream.send_queued(&mut queue, outbound);
                tokio::pin!(sending);
                let mut sending_done = false;
                end = loop {
                    tokio::select! {
                        e = stream.receive(&mut inbound) => break e,
                        sent = &mut sending, if !sending_done => {
                            sending_done = true;
                            match sent {
                                // The client is gone: no one waits for an answer.
                                Sent::ClientGone => return,
                                // The server stops: the request half is ended; its answers
                                // are still read until it ends the stream.
                                Sent::Closing => {}
                                // The request half closed: how the stream ends says whether
                                // the server read what it sent; that message was not sent.
                                Sent::Failed(ids) => unsent = ids,
                            }
                        }
                    }
                };
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(server = %stream.address, "the server does not serve Batch: unary calls from now on");
                if let Some(b) = batchers.upgrade() {
                    b.unary_only.locked().insert(stream.address.clone());
                }
            }
            // Refused before it began (no connection, Busy, not admitted, or never sent because
            // its connection was closing, e.g. after a stopping server's GOAWAY): the handler
            // did not run, nothing it carried was read. The server's own answer goes to each
            // request.
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    || status.metadata().contains_key(ERROR_CODE_HEADER)
                    || never_sent(&status) =>
            {
                tracing::debug!(server = %stream.address, "batch stream refused: {status}");
                end = End::Refused(status);
            }
            Err(status) => {
                tracing::debug!(server = %stream.address, "batch stream failed: {status}");
                end = End::Broken(status);
            }
        }
    }
    stream.fail_all(&mut queue, unsent, end);
}

/// Whether `status` is hyper's "canceled": the call was never written, because its connection
/// closed first (a server that stops sends GOAWAY, and a call started on that connection then is
/// dropped unsent), so the server read nothing of it.
fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_canceled) {
            return true;
        }
        source = e.source();
    }
    false
}

/// How a stream ended, which says what became of the requests it did not answer.
enum End {
    /// The server ended it (it stops): it answered every request it read, so the others were
    /// not read, and a retry is safe.
    Unread,
    /// The server refused the stream with this status before reading anything.
    Refused(Status),
    /// The connection broke: a request sent may have been applied, and its fate is unknown, as
    /// a unary call's is when its connection breaks.
    Broken(Status),
}

/// Why the sending half stopped.
enum Sent {
    /// The client was dropped (its queue closed).
    ClientGone,
    /// The server said it stops: the request half was ended, and the queue closed (requests
    /// still in it fail as not sent; new ones start a new stream).
    Closing,
    /// The request half closed; these requests (one message) were not sent.
    Failed(Vec<u64>),
}

/// One stream's requests in flight, by id (shared by its sending and receiving halves).
struct Stream {
    address: String,
    waiting: Mutex<HashMap<u64, Waiting>>,
    next_id: AtomicU64,
    /// Notified when the server says it stops (`BatchResponse::closing`).
    closing: tokio::sync::Notify,
}

impl Stream {
    /// Sends what is queued, a message at a time, until the client is gone, the request half
    /// closes or the server says it stops. Returning drops `outbound`, which ends the request half.
    async fn send_queued(
        &self,
        queue: &mut mpsc::Receiver<Queued>,
        mut outbound: stream_channel::Sender<BatchRequest>,
    ) -> Sent {
        loop {
            let first = tokio::select! {
                q = queue.recv() => match q {
                    Some(q) => q,
                    None => return Sent::ClientGone,
                },
                _ = self.closing.notified() => {
                    queue.close();
                    return Sent::Closing;
                }
            };
            let (message, ids) = self.take_message(first, queue);
            if message.ops.is_empty() {
                continue;
            }
            if outbound.send(message).await.is_err() {
                return Sent::Failed(ids);
            }
        }
    }

    /// Hands out answers until the stream ends; says how it ended.
    async fn receive(&self, inbound: &mut tonic::Streaming<BatchResponse>) -> End {
        loop {
            match inbound.message().await {
                Ok(Some(resp)) => self.answer(resp),
                Ok(None) => return End::Unread,
                Err(status) => {
                    tracing::debug!(server = %self.address, "batch stream broke: {status}");
                    return End::Broken(status);
                }
            }
        }
    }

    fn answer(&self, resp: BatchResponse) {
        if resp.closing {
            self.closing.notify_one();
        }
        let mut waiting = self.waiting.locked();
        for BatchResult { id, result } in resp.results {
            let Some(w) = waiting.remove(&id) else { continue };
            let answer = match result {
                Some(Answer::Error(e)) => Err(batch_error_status(&e)),
                Some(answer) => Ok(answer),
                None => Err(Status::internal(format!("{} answered request {id} with nothing", self.address))),
            };
            // The caller may have given up (its deadline): nothing to do then.
            let _ = w.reply.send(answer);
        }
    }

    /// One message: `first` and what else is queued now, within the message's limits; each
    /// request is registered under a fresh id (returned too). A request whose caller gave up
    /// is not sent: a write must not land after its caller was told it timed out.
    fn take_message(&self, first: Queued, queue: &mut mpsc::Receiver<Queued>) -> (BatchRequest, Vec<u64>) {
        let mut ops = Vec::new();
        let mut ids = Vec::new();
        let mut bytes = 0usize;
        let mut waiting = self.waiting.locked();
        let mut next = Some(first);
        while let Some(q) = next.take() {
            let now = Instant::now();
            if !q.reply.is_closed() && q.deadline > now {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
                let left = q.deadline - now;
                let timeout_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
                let read = matches!(q.op, Op::Get(_));
                let op = BatchOp { id, timeout_ms, op: Some(q.op) };
                bytes += op.encoded_len();
                waiting.insert(id, Waiting { reply: q.reply, read });
                ops.push(op);
                ids.push(id);
            }
            if ops.len() < MAX_OPS_PER_MESSAGE && bytes < MAX_MESSAGE_BYTES - MAX_BATCHED_OP_BYTES {
                next = queue.try_recv().ok();
            }
        }
        (BatchRequest { ops }, ids)
    }

    /// The stream ended (`end` says how). A request still queued, or in the message that could
    /// not be sent (`unsent`), was never sent: it fails as `Unavailable`, which callers retry.
    /// A request sent and not answered fails the same way when the server ended the stream (it
    /// did not read it) or refused it (with the server's own status then); when the connection
    /// broke, a get still fails as `Unavailable` (reading again is safe) but a write as
    /// `Unknown`: its fate is unknown, as a unary call's whose connection breaks, and retrying
    /// it could apply it twice around another client's write.
    fn fail_all(&self, queue: &mut mpsc::Receiver<Queued>, unsent: Vec<u64>, end: End) {
        queue.close();
        let address = &self.address;
        let not_sent =
            || Status::unavailable(format!("the batch stream to {address} ended before the request was sent"));
        let mut waiting = self.waiting.locked();
        for id in unsent {
            if let Some(w) = waiting.remove(&id) {
                let _ = w.reply.send(Err(not_sent()));
            }
        }
        for (_, w) in waiting.drain() {
            let status = match &end {
                End::Unread => Status::unavailable(format!("the batch stream to {address} ended unread")),
                End::Refused(status) => status.clone(),
                End::Broken(why) if w.read => {
                    Status::unavailable(format!("the connection to {address} broke ({})", why.message()))
                }
                End::Broken(why) => Status::unknown(format!(
                    "the connection to {address} broke ({}); the write's fate is unknown",
                    why.message()
                )),
            };
            let _ = w.reply.send(Err(status));
        }
        while let Ok(q) = queue.try_recv() {
            let _ = q.reply.send(Err(not_sent()));
        }
    }
}

impl Drop for Stream {
    /// A stream dropped without [`Stream::fail_all`] (its task panicked, the runtime shut down):
    /// a write sent then has an unknown fate, never a retryable one.
    fn drop(&mut self) {
        let waiting = std::mem::take(&mut *self.waiting.locked());
        for (_, w) in waiting {
            let status = if w.read {
                Status::unavailable("the batch stream ended")
            } else {
                Status::unknown("the batch stream ended; the write's fate is unknown")
            };
            let _ = w.reply.send(Err(status));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::transport::Endpoint;
    use wingkv_proto::data::GetRequest;

    /// A server that does not serve `Batch` (an older version): the request fails as one that
    /// was not read (the caller retries it), and that server gets unary calls from then on.
    #[tokio::test]
    async fn a_server_without_batch_gets_unary_calls_from_then_on() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tonic::transport::Server::builder().add_routes(tonic::service::Routes::default());
        tokio::spawn(server.serve_with_incoming(incoming));
        let batchers = Arc::new(Batchers::default());
        let channel = Endpoint::from_shared(format!("http://{address}")).unwrap().connect_lazy();
        assert!(batchers.serves_batches(&address));
        let op = Op::Get(GetRequest::default());
        let err = batchers.call(&address, channel, op, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
        assert!(!batchers.serves_batches(&address));
    }
}
