//! The server side of the node-to-node gRPC services.
//!
//! [`serve`] hosts both services on any stream of connections: a TCP listener in the node
//! binary, a simulated listener in the chaos suite.

use std::future::Future;
use std::time::Duration;

use parley_proto::v1 as pb;
use pb::cluster_server::{Cluster, ClusterServer};
use pb::raft_server::{Raft as RaftRpc, RaftServer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

use crate::codec;
use crate::command::{Command, Outcome};
use crate::error::{grpc_status, ErrorClass};
use crate::limits::BATCH_COMMANDS_MAX;
use crate::network::{ChannelSettings, GRPC_MESSAGE_BYTES_MAX};
use crate::proposer::{LocalOutcome, Proposer};
use crate::state::check_input;
use crate::types::Raft;

/// Longest a forwarded write may ask the leader to wait, whatever the follower says.
const FORWARD_DEADLINE_MS_MAX: u32 = 60_000;

/// Raft RPCs, handed to the local openraft instance.
#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    /// Serves `raft`.
    pub fn new(raft: Raft) -> Self {
        Self { raft }
    }
}

fn bad_payload(error: impl std::fmt::Display) -> Status {
    ErrorClass::InvalidArgument.grpc_status(format!("malformed_payload: {error}"))
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<pb::RaftPayload>, Status> {
    codec::encode(value)
        .map(|json| Response::new(pb::RaftPayload { json }))
        .map_err(|e| grpc_status(&e))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = codec::decode(&request.into_inner().json).map_err(bad_payload)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = codec::decode(&request.into_inner().json).map_err(bad_payload)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::SnapshotChunk>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = codec::snapshot_chunk_from_proto(request.into_inner()).map_err(bad_payload)?;
        reply(&self.raft.install_snapshot(rpc).await)
    }
}

/// Writes forwarded by followers, proposed on this node if it leads.
#[derive(Clone)]
pub struct ClusterService {
    proposer: Proposer,
    relay: Option<mpsc::Sender<pb::Ephemeral>>,
}

impl ClusterService {
    /// Proposes through `proposer`; relayed ephemeral events are dropped.
    pub fn new(proposer: Proposer) -> Self {
        Self {
            proposer,
            relay: None,
        }
    }

    /// Hands relayed ephemeral events to `sink` (best effort: dropped when it is full).
    pub fn with_relay(mut self, sink: mpsc::Sender<pb::Ephemeral>) -> Self {
        self.relay = Some(sink);
        self
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardReply>, Status> {
        let request = request.into_inner();
        if request.commands_json.len() > BATCH_COMMANDS_MAX {
            return Err(ErrorClass::InvalidArgument.grpc_status(format!(
                "a forward carries at most {BATCH_COMMANDS_MAX} commands, got {}",
                request.commands_json.len()
            )));
        }
        let commands = request
            .commands_json
            .iter()
            .map(|json| codec::decode(json))
            .collect::<Result<Vec<Command>, _>>()
            .map_err(bad_payload)?;
        let deadline_ms = request.deadline_ms.clamp(1, FORWARD_DEADLINE_MS_MAX);
        let timeout = Duration::from_millis(u64::from(deadline_ms));
        // Every command joins the batch queue before the first answer is awaited, so the batch
        // task normally packs the whole forward into one entry.
        let outcomes = futures::future::join_all(commands.into_iter().map(|command| async move {
            // A peer's commands meet the same input bounds as a client's on the node that
            // took them (`Proposer::submit`): nothing out of bounds reaches the log. Nothing
            // was committed, so the answer names no log index.
            match check_input(&command.op) {
                Err(rejection) => LocalOutcome::Committed(Outcome::Rejected(rejection), 0),
                Ok(()) => self.proposer.propose_local(command, timeout).await,
            }
        }))
        .await;
        let results = outcomes
            .into_iter()
            .map(|outcome| {
                Ok(match outcome {
                    LocalOutcome::Committed(outcome, log_index) => pb::ForwardResult {
                        outcome: Some(pb::forward_result::Outcome::OutcomeJson(
                            codec::encode(&outcome).map_err(|e| grpc_status(&e))?,
                        )),
                        log_index,
                    },
                    LocalOutcome::NotLeader(leader) => pb::ForwardResult {
                        outcome: Some(pb::forward_result::Outcome::NotLeader(pb::NotLeader {
                            leader_id: leader.unwrap_or(0),
                        })),
                        log_index: 0,
                    },
                    LocalOutcome::Failed(error) => pb::ForwardResult {
                        outcome: Some(pb::forward_result::Outcome::Unavailable(error.to_string())),
                        log_index: 0,
                    },
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(pb::ForwardReply { results }))
    }

    async fn relay(
        &self,
        request: Request<pb::Ephemeral>,
    ) -> Result<Response<pb::RelayAck>, Status> {
        let event = request.into_inner();
        if event.json.len() > EPHEMERAL_BYTES_MAX {
            return Err(ErrorClass::PayloadTooLarge.grpc_status(format!(
                "an ephemeral event is at most {EPHEMERAL_BYTES_MAX} bytes, got {}",
                event.json.len()
            )));
        }
        if let Some(sink) = &self.relay {
            // Best effort by design: a full queue drops a typing indicator, nothing more.
            let _ = sink.try_send(event);
        }
        Ok(Response::new(pb::RelayAck {}))
    }
}

/// Largest ephemeral event accepted from a peer, in bytes.
pub const EPHEMERAL_BYTES_MAX: usize = 4096;

/// A tonic router hosting both services with the peer transport settings; callers may add
/// services (the chaos simulator adds its own) before serving.
pub fn router(
    raft: RaftService,
    cluster: ClusterService,
    settings: ChannelSettings,
) -> tonic::transport::server::Router {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(settings.keepalive_interval))
        .http2_keepalive_timeout(Some(settings.keepalive_timeout))
        .tcp_nodelay(true)
        .add_service(
            RaftServer::new(raft)
                .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX),
        )
        .add_service(
            ClusterServer::new(cluster)
                .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX),
        )
}

/// Serves both services on `incoming` until `shutdown` completes.
pub async fn serve<I, IO, IE>(
    incoming: I,
    raft: RaftService,
    cluster: ClusterService,
    settings: ChannelSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    router(raft, cluster, settings)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
