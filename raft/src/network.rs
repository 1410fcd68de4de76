//! The client side of Raft over tonic, behind the [`Connector`] seam.
//!
//! [`Connector`] turns a peer address into a tonic [`Channel`]. [`TcpConnector`] uses real TCP;
//! the chaos suite supplies one over simulated TCP, so the same network code runs in both.
//! Every channel has HTTP/2 keepalives, so a peer behind a partition is noticed even when no
//! request is outstanding, and every call has a deadline.

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use parley_proto::v1 as pb;
use pb::cluster_client::ClusterClient;
use pb::raft_client::RaftClient;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::codec;
use crate::types::{NodeId, NodeInfo, TypeConfig};

/// Largest gRPC message a node accepts or sends, in bytes. Snapshot chunks and append batches
/// stay well under it.
pub const GRPC_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest AppendEntries payload sent in one RPC, in bytes of encoded request. openraft gives an
/// AppendEntries one heartbeat interval to complete; a catch-up batch of hundreds of entries, each
/// a group-committed batch of commands, can take longer than that to encode, ship, decode and
/// fsync, and would then time out and be resent forever. Above this size the request is refused
/// locally with `PayloadTooLarge` and openraft resends it with fewer entries.
pub const APPEND_ENTRIES_BYTES_MAX: usize = 512 * 1024;

/// How a node reaches its peers' gRPC endpoints.
pub trait Connector: Send + Sync + 'static {
    /// A lazily connecting channel to `addr` (`host:port`). Must not block.
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error>;
}

/// Transport settings shared by every connector.
#[derive(Clone, Copy, Debug)]
pub struct ChannelSettings {
    /// Longest wait for a TCP connection to a peer.
    pub connect_timeout: Duration,
    /// Interval between HTTP/2 keepalive pings on an open connection.
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(500),
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(2),
        }
    }
}

impl ChannelSettings {
    /// A tonic endpoint for `addr` with these settings applied.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        Ok(Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true))
    }
}

/// Real TCP.
#[derive(Clone, Debug, Default)]
pub struct TcpConnector {
    /// Transport settings.
    pub settings: ChannelSettings,
}

impl Connector for TcpConnector {
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        Ok(self.settings.endpoint(addr)?.connect_lazy())
    }
}

/// Channels to peers, one per address, shared by Raft replication and write forwarding.
#[derive(Clone)]
pub struct Peers {
    connector: Arc<dyn Connector>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    /// Peers reached through `connector`.
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Self {
            connector,
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The channel to `addr`, created on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = match self.channels.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = self.connector.channel(addr)?;
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// A client for the application-level `Cluster` service of the node at `addr`.
    pub fn cluster_client(
        &self,
        addr: &str,
    ) -> Result<ClusterClient<Channel>, tonic::transport::Error> {
        Ok(ClusterClient::new(self.channel(addr)?)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX))
    }
}

/// openraft's network factory: one [`PeerConnection`] per replication target.
#[derive(Clone)]
pub struct Network {
    /// This node, for error reports.
    pub id: NodeId,
    /// Shared channels.
    pub peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        PeerConnection {
            id: self.id,
            target,
            client: self
                .peers
                .channel(&node.grpc_addr)
                .map(|channel| {
                    RaftClient::new(channel)
                        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                })
                .map_err(|e| e.to_string()),
            addr: node.grpc_addr.clone(),
        }
    }
}

/// Raft RPCs to one peer.
pub struct PeerConnection {
    id: NodeId,
    target: NodeId,
    addr: String,
    /// The client, or why none could be built (a malformed address).
    client: Result<RaftClient<Channel>, String>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, NodeInfo, E>>;

impl PeerConnection {
    fn client(&self) -> Result<RaftClient<Channel>, Unreachable> {
        self.client.clone().map_err(|problem| {
            Unreachable::new(&AddrError {
                addr: self.addr.clone(),
                problem,
            })
        })
    }

    /// Runs one RPC with a deadline and decodes the peer's `Result<T, E>` reply.
    async fn call<T, E, F>(&self, action: RPCTypes, ttl: Duration, rpc: F) -> RpcResult<T, E>
    where
        T: DeserializeOwned,
        E: Error + DeserializeOwned,
        F: std::future::Future<Output = Result<tonic::Response<pb::RaftPayload>, tonic::Status>>,
    {
        let reply = match tokio::time::timeout(ttl, rpc).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action,
                    id: self.id,
                    target: self.target,
                    timeout: ttl,
                }))
            }
            Ok(Err(status)) => return Err(status_to_rpc_error(&status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<T, E> =
            codec::decode(&reply.json).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn status_to_rpc_error<E: Error>(status: &tonic::Status) -> RPCError<NodeId, NodeInfo, E> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => {
            RPCError::Unreachable(Unreachable::new(status))
        }
        _ => RPCError::Network(NetworkError::new(status)),
    }
}

fn with_deadline<T>(message: T, ttl: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(ttl);
    request
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        let mut client = self.client()?;
        let json = codec::encode(&rpc).map_err(|e| NetworkError::new(&e))?;
        let entries = rpc.entries.len();
        if json.len() > APPEND_ENTRIES_BYTES_MAX && entries > 1 {
            // Ask openraft to resend with as many entries as fit, by average size (at least 1).
            let fitting = (entries * APPEND_ENTRIES_BYTES_MAX / json.len()).max(1);
            tracing::debug!(
                target = self.target,
                bytes = json.len(),
                entries,
                fitting,
                "append entries too large; asking for fewer"
            );
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(u64::try_from(fitting).unwrap_or(1)),
            ));
        }
        let ttl = option.hard_ttl();
        let request = with_deadline(pb::RaftPayload { json }, ttl);
        self.call(RPCTypes::AppendEntries, ttl, client.append_entries(request))
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        let mut client = self.client()?;
        let chunk = codec::snapshot_chunk_to_proto(&rpc).map_err(|e| NetworkError::new(&e))?;
        let ttl = option.hard_ttl();
        let request = with_deadline(chunk, ttl);
        self.call(
            RPCTypes::InstallSnapshot,
            ttl,
            client.install_snapshot(request),
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        let mut client = self.client()?;
        let json = codec::encode(&rpc).map_err(|e| NetworkError::new(&e))?;
        let ttl = option.hard_ttl();
        let request = with_deadline(pb::RaftPayload { json }, ttl);
        self.call(RPCTypes::Vote, ttl, client.vote(request)).await
    }
}

/// A peer address tonic could not use.
#[derive(Debug, thiserror::Error)]
#[error("peer address {addr} is unusable: {problem}")]
struct AddrError {
    addr: String,
    problem: String,
}
