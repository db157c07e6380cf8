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
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::channel::mpsc as stream_channel;
use futures::SinkExt;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::Status;
use wingkv_common::error::batch_error_status;
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
    timeout: Duration,
    reply: oneshot::Sender<Result<Answer, Status>>,
}

/// The streams of one client, by server address.
#[derive(Default)]
pub(crate) struct Batchers {
    by_server: Mutex<HashMap<String, mpsc::Sender<Queued>>>,
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
            .send(Queued { op, timeout, reply })
            .await
            .map_err(|_| Status::unavailable(format!("the batch stream to {address} closed")))?;
        answer.await.map_err(|_| Status::unavailable(format!("the batch stream to {address} broke")))?
    }

    /// The queue of `address`'s stream, starting its task if there is none or the last ended.
    fn queue(self: &Arc<Self>, address: &str, channel: Channel) -> mpsc::Sender<Queued> {
        let mut map = self.by_server.locked();
        if let Some(q) = map.get(address).filter(|q| !q.is_closed()) {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        // The task holds the batchers weakly: dropping the client ends it.
        tokio::spawn(drive(Arc::downgrade(self), address.to_string(), channel, rx));
        map.insert(address.to_string(), tx.clone());
        tx
    }
}

/// Owns one stream: sends what is queued, hands each answer to its caller.
async fn drive(batchers: Weak<Batchers>, address: String, channel: Channel, mut queue: mpsc::Receiver<Queued>) {
    let mut stream = Stream { address, waiting: HashMap::new(), next_id: 0 };
    // Started by a request: it is queued already.
    let Some(first) = queue.recv().await else { return };
    let (mut outbound, requests) = stream_channel::channel::<BatchRequest>(4);
    let message = stream.take_message(first, &mut queue);
    let mut end = End::Unread;
    if outbound.send(message).await.is_ok() {
        let mut client = DataClient::new(channel).max_decoding_message_size(64 << 20);
        match client.batch(requests).await {
            Ok(resp) => end = stream.serve(resp.into_inner(), &mut queue, &mut outbound).await,
            // Refused before it began: nothing it carried was read.
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(server = %stream.address, "the server does not serve Batch: unary calls from now on");
                if let Some(b) = batchers.upgrade() {
                    b.unary_only.locked().insert(stream.address.clone());
                }
            }
            Err(status) => {
                tracing::debug!(server = %stream.address, "batch stream refused: {status}");
                // Unavailable: no connection (a unary call would be retried alike).
                if status.code() != tonic::Code::Unavailable {
                    end = End::Broken;
                }
            }
        }
    }
    stream.fail_all(&mut queue, end);
}

/// How a stream ended, which says what became of the requests it did not answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server ended it (it stops): it answered every request it read, so the others were
    /// not read, and a retry is safe.
    Unread,
    /// The connection broke: a request sent may have been applied, and its fate is unknown, as
    /// a unary call's is when its connection breaks.
    Broken,
}

/// One stream's requests in flight, by id.
struct Stream {
    address: String,
    waiting: HashMap<u64, oneshot::Sender<Result<Answer, Status>>>,
    next_id: u64,
}

impl Stream {
    /// Sends what is queued and hands out answers until the stream ends or the client is gone.
    async fn serve(
        &mut self,
        mut inbound: tonic::Streaming<BatchResponse>,
        queue: &mut mpsc::Receiver<Queued>,
        outbound: &mut stream_channel::Sender<BatchRequest>,
    ) -> End {
        loop {
            tokio::select! {
                q = queue.recv() => match q {
                    Some(q) => {
                        let message = self.take_message(q, queue);
                        if outbound.send(message).await.is_err() {
                            return End::Broken;
                        }
                    }
                    // The client is gone: no one waits for an answer.
                    None => return End::Unread,
                },
                m = inbound.message() => match m {
                    Ok(Some(resp)) => self.answer(resp),
                    Ok(None) => return End::Unread,
                    Err(status) => {
                        tracing::debug!(server = %self.address, "batch stream broke: {status}");
                        return End::Broken;
                    }
                },
            }
        }
    }

    fn answer(&mut self, resp: BatchResponse) {
        for BatchResult { id, result } in resp.results {
            let Some(reply) = self.waiting.remove(&id) else { continue };
            let answer = match result {
                Some(Answer::Error(e)) => Err(batch_error_status(&e)),
                Some(answer) => Ok(answer),
                None => Err(Status::internal(format!("{} answered request {id} with nothing", self.address))),
            };
            // The caller may have given up (its deadline): nothing to do then.
            let _ = reply.send(answer);
        }
    }

    /// One message: `first` and what else is queued now, within the message's limits; each
    /// request is registered under a fresh id.
    fn take_message(&mut self, first: Queued, queue: &mut mpsc::Receiver<Queued>) -> BatchRequest {
        let mut ops = Vec::new();
        let mut bytes = self.add(first, &mut ops);
        while ops.len() < MAX_OPS_PER_MESSAGE && bytes < MAX_MESSAGE_BYTES - MAX_BATCHED_OP_BYTES {
            match queue.try_recv() {
                Ok(q) => bytes += self.add(q, &mut ops),
                Err(_) => break,
            }
        }
        BatchRequest { ops }
    }

    fn add(&mut self, q: Queued, ops: &mut Vec<BatchOp>) -> usize {
        self.next_id += 1;
        let timeout_ms = u32::try_from(q.timeout.as_millis()).unwrap_or(u32::MAX).max(1);
        let op = BatchOp { id: self.next_id, timeout_ms, op: Some(q.op) };
        let bytes = op.encoded_len();
        self.waiting.insert(self.next_id, q.reply);
        ops.push(op);
        bytes
    }

    /// The stream ended (`end` says how). A request still queued was never sent: it fails as
    /// `Unavailable`, which callers retry. A request sent and not answered fails the same way
    /// when the server ended the stream (it did not read it), and as `Unknown` when the
    /// connection broke: its fate is unknown, as a unary call's whose connection breaks, and
    /// retrying a write then could apply it twice around another client's write.
    fn fail_all(&mut self, queue: &mut mpsc::Receiver<Queued>, end: End) {
        queue.close();
        let address = &self.address;
        let unsent = || Status::unavailable(format!("the batch stream to {address} ended before the request was sent"));
        for (_, reply) in self.waiting.drain() {
            let status = match end {
                End::Unread => Status::unavailable(format!("the batch stream to {address} ended unread")),
                End::Broken => {
                    Status::unknown(format!("the connection to {address} broke; the request's fate is unknown"))
                }
            };
            let _ = reply.send(Err(status));
        }
        while let Ok(q) = queue.try_recv() {
            let _ = q.reply.send(Err(unsent()));
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
