//! The client side of Raft over tonic, behind the [`Connector`] seam.
//!
//! [`Connector`] turns a peer address into a tonic [`Channel`]. [`TcpConnector`] uses real TCP;
//! the chaos suite supplies one over simulated TCP, so the same network code runs in both.
//! Every channel has HTTP/2 keepalives, so a peer behind a partition is noticed even when no
//! request is outstanding, and every call has a deadline.
//!
//! [`PeerConnection`] is openraft's network v2 ([`RaftNetworkV2`]) for one peer:
//! - replication runs over one pipelined bidirectional stream per session (`StreamAppend`):
//!   requests go out as openraft produces them, without waiting for the previous answer, and
//!   the answers come back in order on the same HTTP/2 stream;
//! - an AppendEntries larger than [`APPEND_ENTRIES_BYTES_MAX`] is cut into pieces that each fit
//!   (on the stream), or only its first piece is sent and openraft told of the partial success
//!   (unary `AppendEntries`), so the leader continues from there;
//! - a snapshot is streamed whole in chunks of [`Network::snapshot_chunk_bytes`] and installed by
//!   the peer once complete;
//! - votes, pre-votes and leadership transfers are unary calls.
//!
//! A peer whose Raft stopped answers `Unavailable`, which is reported to openraft as
//! [`Unreachable`] so that it backs off; other transport failures are [`NetworkError`]s.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use parley_proto::v1 as pb;
use pb::cluster_client::ClusterClient;
use pb::raft_client::RaftClient;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::codec::{self, SnapshotChunks, SnapshotStreamError, SNAPSHOT_BYTES_MAX};
use crate::route::RouteHeaders;
use crate::types::{NodeId, NodeInfo, Snapshot, TypeConfig, Vote};

/// Largest gRPC message a node accepts or sends, in bytes. Snapshot chunks and append batches
/// stay well under it.
pub const GRPC_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest AppendEntries payload sent in one message, in bytes of encoded request. openraft
/// gives an AppendEntries one heartbeat interval to complete; a catch-up batch of hundreds of
/// entries, each a group-committed batch of commands, can take longer than that to encode, ship,
/// decode and fsync, and would then time out and be resent forever. A larger request is cut into
/// pieces of at most this size (a single larger entry goes alone).
pub const APPEND_ENTRIES_BYTES_MAX: usize = 512 * 1024;

/// Default size of the chunks a snapshot is streamed in, in bytes (4 MiB).
pub const SNAPSHOT_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Largest snapshot chunk [`Network::new`] allows, in bytes: half a gRPC message, leaving ample
/// room for the header on the first chunk.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = GRPC_MESSAGE_BYTES_MAX / 2;

/// How a node reaches its peers' gRPC endpoints.
pub trait Connector: Send + Sync + 'static {
    /// A lazily connecting channel to node `peer` at `addr` (`host:port`). A connector that
    /// authenticates peers accepts only node `peer` at the other end. Must not block.
    fn channel(&self, peer: NodeId, addr: &str) -> Result<Channel, tonic::transport::Error>;
}

/// A channel to one peer whose every call carries the route headers (see [`crate::route`]).
pub type PeerChannel = InterceptedService<Channel, RouteHeaders>;

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

/// Plaintext TCP: only where the network itself is trusted (see `tls::connect` for mutual
/// TLS).
#[derive(Clone, Debug, Default)]
pub struct TcpConnector {
    /// Transport settings.
    pub settings: ChannelSettings,
}

impl Connector for TcpConnector {
    fn channel(&self, _peer: NodeId, addr: &str) -> Result<Channel, tonic::transport::Error> {
        // tonic's own connector, as `connect_lazy` makes it, behind a pause after failed dials.
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        Ok(self
            .settings
            .endpoint(addr)?
            .connect_with_connector_lazy(crate::dial::DialBackoff::new(http)))
    }
}

/// Channels to peers, one per node and address, shared by Raft replication and write
/// forwarding.
#[derive(Clone)]
pub struct Peers {
    connector: Arc<dyn Connector>,
    cluster: Arc<str>,
    id: NodeId,
    channels: Arc<Mutex<HashMap<(NodeId, String), Channel>>>,
}

impl Peers {
    /// The peers of node `id` in `cluster`, reached through `connector`.
    pub fn new(connector: Arc<dyn Connector>, cluster: &str, id: NodeId) -> Self {
        Self {
            connector,
            cluster: Arc::from(cluster),
            id,
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn headers(&self, peer: NodeId, channel: Channel) -> PeerChannel {
        InterceptedService::new(channel, RouteHeaders::new(&self.cluster, self.id, peer))
    }

    /// The channel to node `peer` at `addr`, created on first use.
    pub fn channel(
        &self,
        peer: NodeId,
        addr: &str,
    ) -> Result<PeerChannel, tonic::transport::Error> {
        let mut channels = match self.channels.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = (peer, addr.to_owned());
        if let Some(channel) = channels.get(&key) {
            return Ok(self.headers(peer, channel.clone()));
        }
        let channel = self.connector.channel(peer, addr)?;
        channels.insert(key, channel.clone());
        Ok(self.headers(peer, channel))
    }

    /// A channel to node `peer` at `addr` on a connection of its own, not cached.
    pub fn fresh_channel(
        &self,
        peer: NodeId,
        addr: &str,
    ) -> Result<PeerChannel, tonic::transport::Error> {
        Ok(self.headers(peer, self.connector.channel(peer, addr)?))
    }

    /// A client for the application-level `Cluster` service of node `peer` at `addr`.
    pub fn cluster_client(
        &self,
        peer: NodeId,
        addr: &str,
    ) -> Result<ClusterClient<PeerChannel>, tonic::transport::Error> {
        Ok(ClusterClient::new(self.channel(peer, addr)?)
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
    /// Size of the chunks a snapshot is streamed in, in bytes; 1 to
    /// [`SNAPSHOT_CHUNK_BYTES_MAX`].
    pub snapshot_chunk_bytes: usize,
}

impl Network {
    /// The network of node `id` over `peers`, streaming snapshots in chunks of
    /// `snapshot_chunk_bytes` bytes: `0` means [`SNAPSHOT_CHUNK_BYTES`], and values above
    /// [`SNAPSHOT_CHUNK_BYTES_MAX`] are lowered to it.
    pub fn new(id: NodeId, peers: Peers, snapshot_chunk_bytes: u64) -> Self {
        let snapshot_chunk_bytes = match usize::try_from(snapshot_chunk_bytes) {
            Ok(0) => SNAPSHOT_CHUNK_BYTES,
            Ok(bytes) => bytes.min(SNAPSHOT_CHUNK_BYTES_MAX),
            Err(_) => SNAPSHOT_CHUNK_BYTES_MAX,
        };
        Self {
            id,
            peers,
            snapshot_chunk_bytes,
        }
    }
}

impl Network {
    fn connection(
        &self,
        target: NodeId,
        node: &NodeInfo,
        channel: Result<PeerChannel, tonic::transport::Error>,
    ) -> PeerConnection {
        PeerConnection {
            route: Route {
                id: self.id,
                target,
            },
            client: channel
                .map(|channel| {
                    RaftClient::new(channel)
                        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                })
                .map_err(|e| e.to_string()),
            addr: node.grpc_addr.clone(),
            snapshot_chunk_bytes: self.snapshot_chunk_bytes.clamp(1, SNAPSHOT_CHUNK_BYTES_MAX),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    /// Replication and heartbeats share the peer's cached channel: HTTP/2 multiplexes them.
    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        self.connection(target, node, self.peers.channel(target, &node.grpc_addr))
    }

    /// A snapshot gets a connection of its own, so that megabytes of it queued in one TCP
    /// connection never delay the heartbeats and appends sharing the cached one.
    async fn new_snapshot_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        self.connection(
            target,
            node,
            self.peers.fresh_channel(target, &node.grpc_addr),
        )
    }
}

/// Raft RPCs to one peer.
pub struct PeerConnection {
    route: Route,
    addr: String,
    /// The client, or why none could be built (a malformed address).
    client: Result<RaftClient<PeerChannel>, String>,
    snapshot_chunk_bytes: usize,
}

type RpcResult<T> = Result<T, RPCError<TypeConfig>>;

/// The answer stream of [`PeerConnection`]'s `stream_append`.
type AppendStream<'s> = BoxStream<'s, RpcResult<StreamAppendResult<TypeConfig>>>;

fn network_error(error: &(impl std::error::Error + 'static)) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(error))
}

/// Who calls whom, for error reports.
#[derive(Clone, Copy, Debug)]
struct Route {
    id: NodeId,
    target: NodeId,
}

impl Route {
    fn timeout(&self, action: RPCTypes, ttl: Duration) -> RPCError<TypeConfig> {
        RPCError::Timeout(Timeout {
            action,
            id: self.id,
            target: self.target,
            timeout: ttl,
        })
    }

    /// The openraft error for a failed call: a peer that is down, unreachable or whose Raft
    /// stopped (`Unavailable`) is [`Unreachable`], so openraft backs off; an expired deadline is
    /// a [`Timeout`]; anything else a [`NetworkError`].
    fn status_error(
        &self,
        action: RPCTypes,
        ttl: Duration,
        status: &tonic::Status,
    ) -> RPCError<TypeConfig> {
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => {
                RPCError::Unreachable(Unreachable::new(status))
            }
            tonic::Code::DeadlineExceeded => self.timeout(action, ttl),
            _ => network_error(status),
        }
    }
}

impl PeerConnection {
    fn client(&self) -> Result<RaftClient<PeerChannel>, Unreachable<TypeConfig>> {
        self.client.clone().map_err(|problem| {
            Unreachable::new(&AddrError {
                addr: self.addr.clone(),
                problem,
            })
        })
    }

    /// Runs one unary RPC with a deadline of `ttl` and decodes the peer's JSON answer.
    async fn call<T, F>(&self, action: RPCTypes, ttl: Duration, rpc: F) -> RpcResult<T>
    where
        T: DeserializeOwned,
        F: Future<Output = Result<tonic::Response<pb::RaftPayload>, tonic::Status>>,
    {
        let reply = match tokio::time::timeout(ttl, rpc).await {
            Err(_) => return Err(self.route.timeout(action, ttl)),
            Ok(Err(status)) => return Err(self.route.status_error(action, ttl, &status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        codec::decode(&reply.json).map_err(|e| network_error(&e))
    }

    /// Encodes `message` and runs it as one unary RPC within `option`'s soft deadline.
    async fn call_json<Q, T, F, Fut>(
        &self,
        action: RPCTypes,
        message: &Q,
        option: &RPCOption,
        rpc: F,
    ) -> RpcResult<T>
    where
        Q: serde::Serialize,
        T: DeserializeOwned,
        F: FnOnce(RaftClient<PeerChannel>, tonic::Request<pb::RaftPayload>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<pb::RaftPayload>, tonic::Status>>,
    {
        let client = self.client()?;
        let json = codec::encode(message).map_err(|e| network_error(&e))?;
        let ttl = option.soft_ttl();
        let request = with_deadline(pb::RaftPayload { json }, ttl);
        self.call(action, ttl, rpc(client, request)).await
    }
}

fn with_deadline<T>(message: T, ttl: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(ttl);
    request
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = parley_storage::SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<TypeConfig>> {
        let mut client = self.client()?;
        let piece = codec::encode_append_piece(&rpc, 0, APPEND_ENTRIES_BYTES_MAX)
            .map_err(|e| network_error(&e))?;
        let partial = piece.entries < rpc.entries.len();
        if partial {
            tracing::debug!(
                target = self.route.target,
                entries = rpc.entries.len(),
                sent = piece.entries,
                bytes = piece.json.len(),
                "append entries too large; sending a prefix"
            );
        }
        let ttl = option.soft_ttl();
        let request = with_deadline(pb::RaftPayload { json: piece.json }, ttl);
        let response: AppendEntriesResponse<TypeConfig> = self
            .call(RPCTypes::AppendEntries, ttl, client.append_entries(request))
            .await?;
        Ok(match response {
            // The peer took everything sent: the prefix. openraft continues after it.
            AppendEntriesResponse::Success if partial => {
                AppendEntriesResponse::PartialSuccess(piece.last_log_id)
            }
            other => other,
        })
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, RpcResult<AppendStream<'s>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let mut client = self.client()?;
            // openraft's backoff after failed sessions is a wait inside the request stream,
            // before it yields a request. tonic opens the call without polling the stream, and
            // a peer that refuses connections fails the call at once: without taking the first
            // request here, a dead peer would be redialled in a tight loop.
            let mut input = input;
            let Some(first) = input.next().await else {
                let ended: AppendStream<'s> = Box::pin(futures::stream::empty());
                return Ok(ended);
            };
            let input = futures::stream::iter([first]).chain(input);
            let ttl = option.soft_ttl();
            let flow = Arc::new(Mutex::new(Flow::default()));
            let outbound = outbound_pieces(input, flow.clone());
            let responses = match tokio::time::timeout(ttl, client.stream_append(outbound)).await {
                Err(_) => return Err(self.route.timeout(RPCTypes::AppendEntries, ttl)),
                Ok(Err(status)) => {
                    return Err(self
                        .route
                        .status_error(RPCTypes::AppendEntries, ttl, &status))
                }
                Ok(Ok(responses)) => responses.into_inner(),
            };
            let answers = AppendAnswers {
                route: self.route,
                responses,
                flow,
                ttl,
            };
            let stream: AppendStream<'s> = Box::pin(futures::stream::unfold(
                Some(answers),
                |answers| async move {
                    let mut answers = answers?;
                    let (item, go_on) = answers.next_answer().await?;
                    Some((item, go_on.then_some(answers)))
                },
            ));
            Ok(stream)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<TypeConfig>> {
        self.call_json(
            RPCTypes::Vote,
            &rpc,
            &option,
            |mut client, request| async move { client.vote(request).await },
        )
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<TypeConfig>> {
        self.call_json(
            RPCTypes::Vote,
            &rpc,
            &option,
            |mut client, request| async move { client.pre_vote(request).await },
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client()?;
        let bytes = snapshot.snapshot.len();
        if bytes > SNAPSHOT_BYTES_MAX {
            // The peer would refuse it after the transfer; refuse it before.
            return Err(StreamingError::Network(NetworkError::new(
                &SnapshotStreamError::TooLarge {
                    limit: SNAPSHOT_BYTES_MAX,
                    got: bytes,
                },
            )));
        }
        let chunks = SnapshotChunks::new(
            &vote,
            &snapshot.meta,
            snapshot.snapshot,
            self.snapshot_chunk_bytes,
        )
        .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        // The whole transfer and the peer's install share one deadline (openraft's
        // `install_snapshot_timeout`).
        let ttl = option.soft_ttl();
        let mut request = tonic::Request::new(chunks.into_stream());
        request.set_timeout(ttl);
        tracing::debug!(
            target = self.route.target,
            bytes,
            chunk_bytes = self.snapshot_chunk_bytes,
            "streaming snapshot"
        );
        let send = self.call::<SnapshotResponse<TypeConfig>, _>(
            RPCTypes::InstallSnapshot,
            ttl,
            client.install_snapshot(request),
        );
        tokio::select! {
            biased;
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = send => result.map_err(StreamingError::from),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<TransferLeaderResponse<TypeConfig>> {
        self.call_json(
            RPCTypes::TransferLeader,
            &req,
            &option,
            |mut client, request| async move { client.transfer_leader(request).await },
        )
        .await
    }
}

/// The sending side's view of a `StreamAppend` stream: how many pieces are unanswered, since
/// when the stream has made no progress, and why the sending side stopped early, if it did.
#[derive(Debug)]
struct Flow {
    unanswered: usize,
    stalled_since: Instant,
    failure: Option<String>,
}

impl Default for Flow {
    fn default() -> Self {
        Self {
            unanswered: 0,
            stalled_since: Instant::now(),
            failure: None,
        }
    }
}

fn lock(flow: &Mutex<Flow>) -> std::sync::MutexGuard<'_, Flow> {
    match flow.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The messages of a `StreamAppend` stream: every request of `input`, each cut into pieces of
/// at most [`APPEND_ENTRIES_BYTES_MAX`] bytes; each piece sent is counted in `flow`. An
/// encoding failure ends the stream and is recorded in `flow`.
fn outbound_pieces<S>(
    input: S,
    flow: Arc<Mutex<Flow>>,
) -> impl Stream<Item = pb::RaftPayload> + Send + 'static
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    type Pending = Option<(AppendEntriesRequest<TypeConfig>, usize)>;
    futures::stream::unfold(
        (input, Pending::None, flow),
        |(mut input, pending, flow)| async move {
            let (rpc, start) = match pending {
                Some(pending) => pending,
                None => (input.next().await?, 0),
            };
            match codec::encode_append_piece(&rpc, start, APPEND_ENTRIES_BYTES_MAX) {
                Err(error) => {
                    lock(&flow).failure = Some(error.to_string());
                    None
                }
                Ok(piece) => {
                    let next = start + piece.entries;
                    let pending = (next < rpc.entries.len()).then_some((rpc, next));
                    {
                        let mut flow = lock(&flow);
                        if flow.unanswered == 0 {
                            flow.stalled_since = Instant::now();
                        }
                        flow.unanswered += 1;
                    }
                    Some((pb::RaftPayload { json: piece.json }, (input, pending, flow)))
                }
            }
        },
    )
}

/// The receiving side of a `StreamAppend` stream.
struct AppendAnswers {
    route: Route,
    responses: tonic::Streaming<pb::RaftPayload>,
    flow: Arc<Mutex<Flow>>,
    /// How long a piece may go unanswered with no other answer arriving.
    ttl: Duration,
}

impl AppendAnswers {
    /// The next answer and whether the stream goes on after it; `None` at the end.
    ///
    /// The stream ends after an error, after a refusal (conflict or higher vote; the peer ends
    /// its side then too), and when the peer ends its side.
    async fn next_answer(&mut self) -> Option<(RpcResult<StreamAppendResult<TypeConfig>>, bool)> {
        let action = RPCTypes::AppendEntries;
        let message = loop {
            // An idle stream (nothing unanswered) may stay open as long as openraft keeps it;
            // one with an unanswered piece must make progress within the deadline.
            let (unanswered, deadline) = {
                let flow = lock(&self.flow);
                (flow.unanswered, flow.stalled_since + self.ttl)
            };
            let wake = if unanswered == 0 {
                Instant::now() + self.ttl
            } else {
                deadline
            };
            match tokio::time::timeout_at(wake, self.responses.next()).await {
                Ok(message) => break message,
                Err(_) => {
                    let flow = lock(&self.flow);
                    if flow.unanswered > 0 && Instant::now() >= flow.stalled_since + self.ttl {
                        drop(flow);
                        tracing::debug!(target = self.route.target, "append stream stalled");
                        return Some((Err(self.route.timeout(action, self.ttl)), false));
                    }
                }
            }
        };
        match message {
            None => {
                let failure = lock(&self.flow).failure.take();
                failure.map(|failure| (Err(network_error(&StreamFailure(failure))), false))
            }
            Some(Err(status)) => Some((
                Err(self.route.status_error(action, self.ttl, &status)),
                false,
            )),
            Some(Ok(payload)) => {
                {
                    let mut flow = lock(&self.flow);
                    flow.unanswered = flow.unanswered.saturating_sub(1);
                    flow.stalled_since = Instant::now();
                }
                match codec::decode::<StreamAppendResult<TypeConfig>>(&payload.json) {
                    Err(error) => Some((Err(network_error(&error)), false)),
                    Ok(result) => {
                        let go_on = result.is_ok();
                        Some((Ok(result), go_on))
                    }
                }
            }
        }
    }
}

/// Why the sending side of a `StreamAppend` stream stopped early.
#[derive(Debug, thiserror::Error)]
#[error("append stream stopped: {0}")]
struct StreamFailure(String);

/// A peer address tonic could not use.
#[derive(Debug, thiserror::Error)]
#[error("peer address {addr} is unusable: {problem}")]
struct AddrError {
    addr: String,
    problem: String,
}
