//! The gRPC raft network: one `RaftTransport` service per process carries the messages of every
//! raft group it hosts; each message names its group ([`PartitionId`]), and the payload is the
//! bincode of the openraft request (and of the `Result` on the way back). Appends and votes go
//! on one stream per peer ([`super::stream`]), snapshots as unary calls.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, Raft, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use wingkv_proto::raft::raft_transport_client::RaftTransportClient;
use wingkv_proto::raft::{RaftCalls, RaftMessage};

use super::stream::RaftPeers;
use super::{decode, encode, NodeId};
use crate::partition::PartitionId;

/// Largest gRPC message of the raft transport (log batches and snapshot chunks).
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Creates the network client of one raft group.
pub struct GrpcNetworkFactory {
    group: PartitionId,
    peers: Arc<RaftPeers>,
}

impl GrpcNetworkFactory {
    /// A factory for the group `group`, reaching its peers through `peers` (shared by every
    /// group of the process, so all of them share one stream per peer).
    pub fn new(group: PartitionId, peers: Arc<RaftPeers>) -> Self {
        Self { group, peers }
    }
}

/// The connection of one raft group to one peer.
pub struct GrpcNetwork {
    group: PartitionId,
    target: NodeId,
    addr: String,
    peers: Arc<RaftPeers>,
}

impl<C> RaftNetworkFactory<C> for GrpcNetworkFactory
where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
    AppendEntriesRequest<C>: Serialize,
    InstallSnapshotRequest<C>: Serialize,
{
    type Network = GrpcNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcNetwork {
        GrpcNetwork { group: self.group, target, addr: node.addr.clone(), peers: self.peers.clone() }
    }
}

impl GrpcNetwork {
    /// Sends one call: on the peer's stream when it fits there (see [`super::stream`]), else
    /// (a snapshot, a large append, a peer without streams) as a unary call.
    async fn call<E>(
        &self,
        method: RaftMethod,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, RPCError<NodeId, BasicNode, E>>
    where
        E: Error,
    {
        let payload = Bytes::from(payload);
        if method != RaftMethod::InstallSnapshot && self.peers.streams_to(&self.addr, payload.len()) {
            match self.peers.call(&self.addr, method, self.group, payload.clone(), timeout).await {
                // An older peer: this call (and the next ones) unary.
                Err(s) if s.code() == Code::Unimplemented => {}
                other => return other.map_err(rpc_error),
            }
        }
        let channel = self.peers.pool().get(&self.addr).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut client = RaftTransportClient::new(channel)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
        let mut req = tonic::Request::new(RaftMessage { partition: Some(self.group.to_proto()), payload });
        req.set_timeout(timeout);
        let resp = match method {
            RaftMethod::AppendEntries => client.append_entries(req).await,
            RaftMethod::Vote => client.vote(req).await,
            RaftMethod::InstallSnapshot => client.install_snapshot(req).await,
        };
        resp.map(|r| r.into_inner().payload).map_err(rpc_error)
    }

    fn decode_reply<R, E>(&self, bytes: &[u8]) -> Result<R, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        R: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let reply: Result<R, RaftError<NodeId, E>> =
            decode(bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// A failed call in openraft's terms. Connection-level failures are `Unreachable`: openraft
/// backs off before retrying an unreachable peer.
fn rpc_error<E: Error>(s: Status) -> RPCError<NodeId, BasicNode, E> {
    if matches!(s.code(), Code::Unavailable | Code::Unknown) {
        RPCError::Unreachable(Unreachable::new(&s))
    } else {
        RPCError::Network(NetworkError::new(&s))
    }
}

/// The RPCs of the raft transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftMethod {
    /// Log replication and heartbeats.
    AppendEntries,
    /// Elections.
    Vote,
    /// One chunk of a snapshot.
    InstallSnapshot,
}

fn encode_req<T: Serialize, E: Error>(req: &T) -> Result<Vec<u8>, RPCError<NodeId, BasicNode, E>> {
    encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

impl<C> RaftNetwork<C> for GrpcNetwork
where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
    AppendEntriesRequest<C>: Serialize,
    InstallSnapshotRequest<C>: Serialize,
{
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        // Sized before it is encoded: too big for one message, openraft retries with fewer
        // entries. One entry alone always fits: the servers refuse a write whose entry would
        // not (a replica's at `MAX_ENTRY_BYTES`, half of the message limit).
        let size = super::encoded_len(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if size > MAX_RAFT_MESSAGE_BYTES as u64 && rpc.entries.len() > 1 {
            let hint = (rpc.entries.len() / 2).max(1) as u64;
            return Err(RPCError::PayloadTooLarge(openraft::error::PayloadTooLarge::new_entries_hint(hint)));
        }
        let bytes = self.call(RaftMethod::AppendEntries, encode_req(&rpc)?, option.hard_ttl()).await?;
        self.decode_reply(&bytes)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        let bytes = self.call(RaftMethod::InstallSnapshot, encode_req(&rpc)?, option.hard_ttl()).await?;
        self.decode_reply(&bytes)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let bytes = self.call(RaftMethod::Vote, encode_req(&rpc)?, option.hard_ttl()).await?;
        self.decode_reply(&bytes)
    }
}

/// The receiving side: decodes a transport message for `raft`, runs it and encodes the result.
/// A payload that does not decode is answered with `InvalidArgument` and changes nothing.
pub async fn serve_raft_message<C>(raft: &Raft<C>, method: RaftMethod, payload: &[u8]) -> Result<Vec<u8>, Status>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
    C::SnapshotData: tokio::io::AsyncRead + tokio::io::AsyncWrite + tokio::io::AsyncSeek + Unpin,
    AppendEntriesRequest<C>: DeserializeOwned,
    InstallSnapshotRequest<C>: DeserializeOwned,
{
    let bad = |e: bincode::Error| Status::invalid_argument(format!("malformed raft {method:?} payload: {e}"));
    let out = match method {
        RaftMethod::AppendEntries => encode(&raft.append_entries(decode(payload).map_err(bad)?).await),
        RaftMethod::Vote => encode(&raft.vote(decode(payload).map_err(bad)?).await),
        RaftMethod::InstallSnapshot => encode(&raft.install_snapshot(decode(payload).map_err(bad)?).await),
    };
    out.map_err(|e| Status::internal(format!("cannot encode raft {method:?} reply: {e}")))
}

/// Finds the raft group a transport message is for and runs the message on it.
#[tonic::async_trait]
pub trait RaftGroups: Send + Sync + 'static {
    /// Runs `payload` as `method` on `group`; a group not hosted here is `NotFound`.
    async fn serve(&self, group: PartitionId, method: RaftMethod, payload: &[u8]) -> Result<Vec<u8>, Status>;
}

/// The `RaftTransport` gRPC service over the groups of a process.
pub struct RaftTransportService<G> {
    groups: Arc<G>,
    stopping: CancellationToken,
}

impl<G: RaftGroups> RaftTransportService<G> {
    /// The service for `groups`; its streams end once `stopping` is cancelled (the server stops).
    pub fn new(groups: G, stopping: CancellationToken) -> Self {
        Self { groups: Arc::new(groups), stopping }
    }

    async fn route(
        &self,
        method: RaftMethod,
        req: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        let group = PartitionId::from_proto(msg.partition.as_ref())?;
        let payload = self.groups.serve(group, method, &msg.payload).await?;
        Ok(tonic::Response::new(RaftMessage { partition: msg.partition, payload: payload.into() }))
    }
}

#[tonic::async_trait]
impl<G: RaftGroups> wingkv_proto::raft::raft_transport_server::RaftTransport for RaftTransportService<G> {
    async fn append_entries(&self, req: tonic::Request<RaftMessage>) -> Result<tonic::Response<RaftMessage>, Status> {
        self.route(RaftMethod::AppendEntries, req).await
    }

    async fn vote(&self, req: tonic::Request<RaftMessage>) -> Result<tonic::Response<RaftMessage>, Status> {
        self.route(RaftMethod::Vote, req).await
    }

    async fn install_snapshot(&self, req: tonic::Request<RaftMessage>) -> Result<tonic::Response<RaftMessage>, Status> {
        self.route(RaftMethod::InstallSnapshot, req).await
    }

    type StreamStream = super::stream::AnswerStream;

    async fn stream(
        &self,
        req: tonic::Request<tonic::Streaming<RaftCalls>>,
    ) -> Result<tonic::Response<Self::StreamStream>, Status> {
        Ok(tonic::Response::new(super::stream::serve_stream(
            self.groups.clone(),
            req.into_inner(),
            self.stopping.clone(),
        )))
    }
}

/// Address of the current leader of `raft`'s group, if known.
pub fn leader_address<C>(raft: &Raft<C>) -> Option<String>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
{
    let m = raft.metrics().borrow().clone();
    let leader = m.current_leader?;
    m.membership_config.membership().get_node(&leader).map(|n| n.addr.clone())
}
