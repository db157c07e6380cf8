//! The raft transport's stream (`RaftTransport.Stream`): one long-lived stream from a process to
//! each peer process, carrying the appends and votes of every raft group the two share. A call
//! waits in its peer's queue only while an earlier message is being written: the stream's task
//! takes everything queued at once into one message, so an idle group's heartbeat goes out at
//! once and a busy pair of servers sends many groups' appends per message. The receiver runs
//! the calls of a message side by side and answers those done at the same moment in one message.
//!
//! Why: a unary call costs an HTTP/2 stream, its headers and its own wakeups on both ends,
//! per append; see BENCHMARKS.md ("Batched raft traffic").
//!
//! Snapshots and calls larger than [`MAX_STREAMED_PAYLOAD`] stay unary, so a large append never
//! holds the heartbeats of other groups behind it. A peer that answers `Unimplemented` (an older
//! version) gets unary calls from then on.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::mpsc as stream_channel;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use wingkv_proto::raft::raft_answer::Result as Answer;
use wingkv_proto::raft::raft_transport_client::RaftTransportClient;
use wingkv_proto::raft::{RaftAnswer, RaftAnswers, RaftCall, RaftCallError, RaftCallKind, RaftCalls};

use super::network::{RaftGroups, RaftMethod, MAX_RAFT_MESSAGE_BYTES};
use crate::channel::ChannelPool;
use crate::partition::PartitionId;
use crate::sync::MutexExt;

/// Larger calls go unary (a catch-up append of many entries): a stream message stays small, so
/// the heartbeats of other groups are not queued behind megabytes.
pub const MAX_STREAMED_PAYLOAD: usize = 1 << 20;
/// Most calls one message carries.
const MAX_CALLS_PER_MESSAGE: usize = 512;
/// A message is closed once its calls reach this many bytes.
const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Calls queued for one peer at most; a caller past it waits for room (within its deadline).
const QUEUE: usize = 4_096;
/// Calls of one stream the receiver runs at once; past it a call is answered `Unavailable` at
/// once (openraft backs off and retries).
const MAX_IN_FLIGHT: usize = 4_096;
/// Answers one message carries at most.
const MAX_ANSWERS_PER_MESSAGE: usize = 1_024;
/// The longest a received call may run, and how long one without a deadline may.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Calls sent on raft streams by this process, and the messages that carried them: their ratio
/// is how many calls a message carries (`wingkv_raft_stream_calls_total` and
/// `wingkv_raft_stream_messages_total`).
pub static STREAM_CALLS_SENT: AtomicU64 = AtomicU64::new(0);
/// See [`STREAM_CALLS_SENT`].
pub static STREAM_MESSAGES_SENT: AtomicU64 = AtomicU64::new(0);

/// A call waiting for its stream, and where its answer goes.
struct Queued {
    call: RaftCall,
    deadline: Instant,
    reply: oneshot::Sender<Result<Bytes, Status>>,
}

/// The raft connections of a process to its peers, shared by all its groups: a gRPC channel per
/// address (from the process's pool) and a stream per address. It owns the streams' tasks:
/// dropping it aborts them, and each fails the calls it still holds.
pub struct RaftPeers {
    pool: ChannelPool,
    /// Streams are used at all (off: every call unary).
    streams_on: bool,
    streams: Mutex<HashMap<String, (mpsc::Sender<Queued>, tokio::task::AbortHandle)>>,
    /// Peers that answered `Unimplemented` to `Stream`: unary calls only.
    unary_only: Mutex<HashSet<String>>,
}

impl RaftPeers {
    /// The peers reached through `pool`'s channels, on streams when `streams` is on.
    pub fn new(pool: ChannelPool, streams: bool) -> Arc<Self> {
        Arc::new(Self { pool, streams_on: streams, streams: Mutex::default(), unary_only: Mutex::default() })
    }

    /// The channel pool unary calls use.
    pub fn pool(&self) -> &ChannelPool {
        &self.pool
    }

    /// Whether a call of `len` payload bytes to `address` goes on its stream.
    pub fn streams_to(&self, address: &str, len: usize) -> bool {
        self.streams_on && len <= MAX_STREAMED_PAYLOAD && !self.unary_only.locked().contains(address)
    }

    /// Runs `method` on `group` at the peer `address` through its stream and returns the encoded
    /// reply, waiting at most `timeout` in all. `Unimplemented` means the peer has no stream:
    /// send the call unary.
    pub async fn call(
        self: &Arc<Self>,
        address: &str,
        method: RaftMethod,
        group: PartitionId,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, Status> {
        let kind = match method {
            RaftMethod::AppendEntries => RaftCallKind::AppendEntries,
            RaftMethod::Vote => RaftCallKind::Vote,
            RaftMethod::InstallSnapshot => {
                return Err(Status::unimplemented("snapshots are sent unary"));
            }
        };
        let call = RaftCall { id: 0, kind: kind as i32, partition: Some(group.to_proto()), payload, timeout_ms: 0 };
        let deadline = Instant::now() + timeout;
        let queue = self.queue(address)?;
        let (reply, answer) = oneshot::channel();
        let run = async {
            queue
                .send(Queued { call, deadline, reply })
                .await
                .map_err(|_| Status::unavailable(format!("the raft stream to {address} closed")))?;
            answer.await.map_err(|_| Status::unavailable(format!("the raft stream to {address} broke")))?
        };
        tokio::time::timeout(timeout, run)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded(format!("no raft answer from {address} in {timeout:?}"))))
    }

    /// The queue of `address`'s stream, starting its task if there is none or the last ended.
    fn queue(self: &Arc<Self>, address: &str) -> Result<mpsc::Sender<Queued>, Status> {
        let mut map = self.streams.locked();
        if let Some((q, _)) = map.get(address).filter(|(q, _)| !q.is_closed()) {
            return Ok(q.clone());
        }
        let channel = self.pool.get(address).map_err(|e| Status::unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        // The task holds the peers weakly, so that dropping them aborts it.
        let task = tokio::spawn(drive(Arc::downgrade(self), address.to_string(), channel, rx));
        map.insert(address.to_string(), (tx.clone(), task.abort_handle()));
        Ok(tx)
    }
}

impl Drop for RaftPeers {
    fn drop(&mut self) {
        for (_, (_, task)) in self.streams.locked().drain() {
            task.abort();
        }
    }
}

/// Owns one stream: sends what is queued, hands each answer to its caller. Sending and receiving
/// run side by side, so a send held by flow control never stops the answers from being read.
/// When it ends, every call it holds fails as `Unavailable` (openraft retries; a repeated append
/// or vote is harmless), or as `Unimplemented` when the peer has no stream.
async fn drive(peers: Weak<RaftPeers>, address: String, channel: Channel, mut queue: mpsc::Receiver<Queued>) {
    let waiting = Waiting::default();
    let Some(first) = queue.recv().await else { return };
    let (mut outbound, calls) = stream_channel::channel::<RaftCalls>(4);
    let mut end = Status::unavailable(format!("the raft stream to {address} ended"));
    let message = waiting.take_message(first, &mut queue);
    if outbound.send(message).await.is_ok() {
        let mut client = RaftTransportClient::new(channel)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
        match client.stream(calls).await {
            Ok(resp) => {
                let mut inbound = resp.into_inner();
                let sending = async {
                    while let Some(first) = queue.recv().await {
                        let message = waiting.take_message(first, &mut queue);
                        if !message.calls.is_empty() && outbound.send(message).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::select! {
                    e = waiting.receive(&mut inbound) => end = e,
                    _ = sending => {}
                }
            }
            Err(status) if status.code() == Code::Unimplemented => {
                tracing::info!(peer = %address, "the peer does not serve raft streams: unary calls from now on");
                if let Some(p) = peers.upgrade() {
                    p.unary_only.locked().insert(address.clone());
                }
                end = status;
            }
            Err(status) => {
                tracing::debug!(peer = %address, "raft stream refused: {status}");
                end = Status::unavailable(format!("the raft stream to {address} was refused: {status}"));
            }
        }
    }
    queue.close();
    waiting.fail_all(&end);
    while let Ok(q) = queue.try_recv() {
        let _ = q.reply.send(Err(end.clone()));
    }
}

/// One stream's calls in flight, by id (shared by its sending and receiving halves).
#[derive(Default)]
struct Waiting {
    calls: Mutex<HashMap<u64, oneshot::Sender<Result<Bytes, Status>>>>,
    next_id: AtomicU64,
}

impl Waiting {
    /// One message: `first` and what else is queued now, within the message's limits. A call
    /// whose caller gave up is not sent.
    fn take_message(&self, first: Queued, queue: &mut mpsc::Receiver<Queued>) -> RaftCalls {
        let mut calls = Vec::new();
        let mut bytes = 0usize;
        let mut waiting = self.calls.locked();
        let mut next = Some(first);
        while let Some(mut q) = next.take() {
            let now = Instant::now();
            if !q.reply.is_closed() && q.deadline > now {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
                q.call.id = id;
                q.call.timeout_ms = u32::try_from((q.deadline - now).as_millis()).unwrap_or(u32::MAX).max(1);
                bytes += q.call.payload.len() + 32;
                waiting.insert(id, q.reply);
                calls.push(q.call);
            }
            if calls.len() < MAX_CALLS_PER_MESSAGE && bytes < MAX_MESSAGE_BYTES {
                next = queue.try_recv().ok();
            }
        }
        if !calls.is_empty() {
            STREAM_MESSAGES_SENT.fetch_add(1, Ordering::Relaxed);
            STREAM_CALLS_SENT.fetch_add(calls.len() as u64, Ordering::Relaxed);
        }
        RaftCalls { calls }
    }

    /// Hands out answers until the stream ends; returns the status its remaining calls get.
    async fn receive(&self, inbound: &mut Streaming<RaftAnswers>) -> Status {
        loop {
            match inbound.message().await {
                Ok(Some(message)) => {
                    let mut waiting = self.calls.locked();
                    for RaftAnswer { id, result } in message.answers {
                        let Some(reply) = waiting.remove(&id) else { continue };
                        let answer = match result {
                            Some(Answer::Payload(p)) => Ok(p),
                            Some(Answer::Error(e)) => Err(Status::new(Code::from_i32(e.code), e.message)),
                            None => Err(Status::internal(format!("raft call {id} was answered with nothing"))),
                        };
                        // The caller may have given up (its deadline): nothing to do then.
                        let _ = reply.send(answer);
                    }
                }
                Ok(None) => return Status::unavailable("the raft stream ended (the peer stops)"),
                Err(status) => {
                    tracing::debug!("raft stream broke: {status}");
                    return Status::unavailable(format!("the raft stream broke: {status}"));
                }
            }
        }
    }

    fn fail_all(&self, status: &Status) {
        for (_, reply) in self.calls.locked().drain() {
            let _ = reply.send(Err(status.clone()));
        }
    }
}

/// The answer stream of `RaftTransport.Stream`.
pub type AnswerStream = Pin<Box<dyn Stream<Item = Result<RaftAnswers, Status>> + Send>>;

type Running = FuturesUnordered<Pin<Box<dyn Future<Output = RaftAnswer> + Send>>>;

/// Serves one stream of calls on `groups`. No task is spawned: the calls run inside the answer
/// stream, which the connection polls, so they end with it. When `stopping` is cancelled the
/// stream ends at once, dropping the calls it runs (their callers see `Unavailable` and retry,
/// as when a unary call's server goes away; a raft call is safe to repeat): without that, a
/// peer's stream would hold a stopping server's graceful shutdown open for ever.
pub fn serve_stream<G: RaftGroups>(
    groups: Arc<G>,
    inbound: Streaming<RaftCalls>,
    stopping: CancellationToken,
) -> AnswerStream {
    let driver = Driver { groups, inbound: Some(inbound), running: Running::new(), stopping, failed: false };
    Box::pin(futures::stream::unfold(driver, |mut d| async move { d.next_message().await.map(|m| (m, d)) }))
}

/// The state of one served stream: the calls still to read and those running.
struct Driver<G> {
    groups: Arc<G>,
    /// `None` once the peer finished sending.
    inbound: Option<Streaming<RaftCalls>>,
    running: Running,
    stopping: CancellationToken,
    /// The stream ended: the peer's half failed (it ended with that error) or the server stops.
    failed: bool,
}

enum Event {
    Received(Result<Option<RaftCalls>, Status>),
    Answered(RaftAnswer),
    Stopping,
}

impl<G: RaftGroups> Driver<G> {
    /// The next message of answers; `None` ends the stream.
    async fn next_message(&mut self) -> Option<Result<RaftAnswers, Status>> {
        if self.failed {
            return None;
        }
        let mut answers = Vec::new();
        loop {
            while answers.len() < MAX_ANSWERS_PER_MESSAGE {
                match self.running.next().now_or_never() {
                    Some(Some(a)) => answers.push(a),
                    _ => break,
                }
            }
            if !answers.is_empty() {
                return Some(Ok(RaftAnswers { answers }));
            }
            if self.inbound.is_none() && self.running.is_empty() {
                return None;
            }
            let event = tokio::select! {
                m = receive(&mut self.inbound) => Event::Received(m),
                Some(a) = self.running.next(), if !self.running.is_empty() => Event::Answered(a),
                _ = self.stopping.cancelled() => Event::Stopping,
            };
            match event {
                Event::Stopping => {
                    self.failed = true;
                    return None;
                }
                Event::Answered(a) => answers.push(a),
                Event::Received(Ok(Some(message))) => {
                    for call in message.calls {
                        if self.running.len() >= MAX_IN_FLIGHT {
                            let busy = Status::unavailable(format!(
                                "{MAX_IN_FLIGHT} raft calls of this stream are in progress already"
                            ));
                            answers.push(error_answer(call.id, &busy));
                        } else {
                            self.running.push(Box::pin(run(self.groups.clone(), call)));
                        }
                    }
                }
                Event::Received(Ok(None)) => self.inbound = None,
                Event::Received(Err(status)) => {
                    tracing::debug!("raft stream ended: {status}");
                    self.failed = true;
                    return Some(Err(status));
                }
            }
        }
    }
}

/// The next message of the peer; pending for ever once it finished sending.
async fn receive(inbound: &mut Option<Streaming<RaftCalls>>) -> Result<Option<RaftCalls>, Status> {
    match inbound {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

/// Runs one call as its unary call would run, within its deadline.
async fn run<G: RaftGroups>(groups: Arc<G>, call: RaftCall) -> RaftAnswer {
    let method = match RaftCallKind::try_from(call.kind) {
        Ok(RaftCallKind::AppendEntries) => RaftMethod::AppendEntries,
        Ok(RaftCallKind::Vote) => RaftMethod::Vote,
        _ => {
            let bad = Status::invalid_argument(format!("raft call {} names no known kind ({})", call.id, call.kind));
            return error_answer(call.id, &bad);
        }
    };
    let group = match PartitionId::from_proto(call.partition.as_ref()) {
        Ok(g) => g,
        Err(e) => return error_answer(call.id, &Status::from(e)),
    };
    let limit =
        if call.timeout_ms > 0 { Duration::from_millis(call.timeout_ms.into()).min(MAX_TIMEOUT) } else { MAX_TIMEOUT };
    let result = tokio::time::timeout(limit, groups.serve(group, method, &call.payload))
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded(format!("the raft call did not finish within {limit:?}"))));
    match result {
        Ok(payload) => RaftAnswer { id: call.id, result: Some(Answer::Payload(payload.into())) },
        Err(status) => error_answer(call.id, &status),
    }
}

fn error_answer(id: u64, status: &Status) -> RaftAnswer {
    let error = RaftCallError { code: status.code() as i32, message: status.message().to_string() };
    RaftAnswer { id, result: Some(Answer::Error(error)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use wingkv_proto::raft::raft_transport_server::RaftTransportServer;

    use crate::raft::network::RaftTransportService;

    /// Groups that echo a payload prefixed with the group's index; `hang` never answers, `fail`
    /// fails with `NotFound`. Counts the `hang` calls it took.
    #[derive(Default)]
    struct Echo {
        hanging: Arc<AtomicU64>,
    }

    #[tonic::async_trait]
    impl RaftGroups for Echo {
        async fn serve(&self, group: PartitionId, _: RaftMethod, payload: &[u8]) -> Result<Vec<u8>, Status> {
            match payload {
                b"hang" => {
                    self.hanging.fetch_add(1, Ordering::Relaxed);
                    std::future::pending().await
                }
                b"fail" => Err(Status::not_found(format!("no group {group}"))),
                _ => Ok([&group.partition_index.to_be_bytes()[..], payload].concat()),
            }
        }
    }

    /// A transport server of [`Echo`] groups on loopback: its address, the token that stops it,
    /// its task (which ends once it has stopped) and the count of `hang` calls it took.
    async fn echo_server() -> (String, CancellationToken, tokio::task::JoinHandle<()>, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let stop = CancellationToken::new();
        let echo = Echo::default();
        let hanging = echo.hanging.clone();
        let service = RaftTransportServer::new(RaftTransportService::new(echo, stop.clone()));
        let server = tonic::transport::Server::builder().add_service(service);
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let _ = server.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped.cancelled()).await;
        });
        (address, stop, task, hanging)
    }

    fn call(
        peers: &Arc<RaftPeers>,
        address: &str,
        group: u32,
        payload: &'static [u8],
        timeout: Duration,
    ) -> impl Future<Output = Result<Bytes, Status>> {
        let (peers, address) = (peers.clone(), address.to_string());
        async move {
            peers
                .call(
                    &address,
                    RaftMethod::AppendEntries,
                    PartitionId::new(1, group),
                    Bytes::from_static(payload),
                    timeout,
                )
                .await
        }
    }

    /// Calls of many groups at once each get their own answer (an error is only its call's),
    /// and they share messages.
    #[tokio::test]
    async fn concurrent_calls_of_many_groups_share_messages_and_get_their_own_answers() {
        let (address, _stop, _server, _) = echo_server().await;
        let peers = RaftPeers::new(ChannelPool::default(), true);
        let sent_before = (STREAM_CALLS_SENT.load(Ordering::Relaxed), STREAM_MESSAGES_SENT.load(Ordering::Relaxed));
        let calls: Vec<_> = (0..200u32)
            .map(|g| {
                let payload: &'static [u8] = if g % 7 == 3 { b"fail" } else { b"append" };
                tokio::spawn(call(&peers, &address, g, payload, Duration::from_secs(10)))
            })
            .collect();
        for (g, c) in calls.into_iter().enumerate() {
            let answer = c.await.unwrap();
            if g % 7 == 3 {
                let e = answer.unwrap_err();
                assert_eq!(e.code(), Code::NotFound, "{e}");
                assert!(e.message().contains(&format!("no group 1.{g}")), "{e}");
            } else {
                let answer = answer.unwrap();
                assert_eq!(&answer[..4], &(g as u32).to_be_bytes());
                assert_eq!(&answer[4..], b"append");
            }
        }
        let calls = STREAM_CALLS_SENT.load(Ordering::Relaxed) - sent_before.0;
        let messages = STREAM_MESSAGES_SENT.load(Ordering::Relaxed) - sent_before.1;
        // Other tests of this process may send too: at least ours were counted, and ours went in
        // fewer messages than calls.
        assert!(calls >= 200, "{calls} calls counted");
        assert!(messages < calls, "{calls} calls in {messages} messages: none shared one");
    }

    /// A call the peer does not answer fails at its deadline, and the stream goes on serving.
    #[tokio::test]
    async fn an_unanswered_call_fails_at_its_deadline_and_others_go_on() {
        let (address, _stop, _server, _) = echo_server().await;
        let peers = RaftPeers::new(ChannelPool::default(), true);
        let started = Instant::now();
        let hung = call(&peers, &address, 1, b"hang", Duration::from_millis(300)).await.unwrap_err();
        assert_eq!(hung.code(), Code::DeadlineExceeded, "{hung}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        let answer = call(&peers, &address, 2, b"next", Duration::from_secs(10)).await.unwrap();
        assert_eq!(&answer[4..], b"next");
    }

    /// A stopping server ends its streams: the calls it took are answered, its graceful shutdown
    /// completes although the peer keeps its stream, and the peer's waiting call fails as
    /// `Unavailable` (openraft's "unreachable") rather than at its deadline.
    #[tokio::test]
    async fn a_stopping_server_ends_its_streams_and_its_shutdown_completes() {
        let (address, stop, server, hanging) = echo_server().await;
        let peers = RaftPeers::new(ChannelPool::default(), true);
        call(&peers, &address, 1, b"open", Duration::from_secs(10)).await.unwrap();
        let hung = tokio::spawn(call(&peers, &address, 2, b"hang", Duration::from_secs(60)));
        // The hung call is taken (running on the server) before the server stops.
        let deadline = Instant::now() + Duration::from_secs(10);
        while hanging.load(Ordering::Relaxed) < 1 {
            assert!(Instant::now() < deadline, "the server never took the second call");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server's shutdown waited for the peer's stream")
            .unwrap();
        let e = tokio::time::timeout(Duration::from_secs(10), hung).await.unwrap().unwrap().unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        assert!(peers.streams_to(&address, 1), "a stopped peer is not taken for one without streams");
    }

    /// A peer without streams (an older version): the call says `Unimplemented` (the caller sends
    /// it unary), and later calls go unary at once.
    #[tokio::test]
    async fn a_peer_without_streams_gets_unary_calls() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tonic::transport::Server::builder().add_routes(tonic::service::Routes::default());
        let server = tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
        let peers = RaftPeers::new(ChannelPool::default(), true);
        assert!(peers.streams_to(&address, 1));
        let e = call(&peers, &address, 1, b"append", Duration::from_secs(10)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented, "{e}");
        assert!(!peers.streams_to(&address, 1));
        server.abort();
    }

    /// Large calls never go on a stream, and no call does with streams off.
    #[test]
    fn large_calls_go_unary_and_so_does_everything_with_streams_off() {
        let peers = RaftPeers::new(ChannelPool::default(), true);
        assert!(peers.streams_to("127.0.0.1:1", MAX_STREAMED_PAYLOAD));
        assert!(!peers.streams_to("127.0.0.1:1", MAX_STREAMED_PAYLOAD + 1));
        let off = RaftPeers::new(ChannelPool::default(), false);
        assert!(!off.streams_to("127.0.0.1:1", 1));
    }
}
