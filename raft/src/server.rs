//! The server side of the node-to-node gRPC services.
//!
//! [`serve`] hosts both services on any stream of connections: a TCP listener in the node
//! binary, a simulated listener in the chaos suite.
//!
//! [`RaftService`] hands every Raft RPC to the local openraft instance and answers the JSON of
//! its result. A stopped Raft answers `Unavailable` with a message starting `raft_stopped`, an
//! unreadable request `InvalidArgument` with one starting `malformed_payload`. A streamed
//! snapshot is reassembled and checked ([`SnapshotAssembly`]) before openraft sees it.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult,
};
use parley_proto::v1 as pb;
use parley_storage::SnapshotDir;
use pb::cluster_server::{Cluster, ClusterServer};
use pb::raft_server::{Raft as RaftRpc, RaftServer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};

use crate::codec::{self, AssembledSnapshot, SnapshotAssembly};
use crate::command::{Command, Op, Outcome};
use crate::error::{grpc_status, ErrorClass, ProposeError};
use crate::island::{IslandServer, IslandStatus, LeaderContact};
use crate::limits::BATCH_COMMANDS_MAX;
use crate::membership::{self, MemberChange, Members, MEMBERSHIP_DEADLINE_MS_MAX};
use crate::network::{ChannelSettings, GRPC_MESSAGE_BYTES_MAX};
use crate::proposer::{LocalOutcome, Proposer};
use crate::route::RouteCheck;
use crate::state::check_input;
use crate::types::{Raft, TypeConfig};

/// Longest a forwarded write may ask the leader to wait, whatever the follower says.
const FORWARD_DEADLINE_MS_MAX: u32 = 60_000;

/// Longest a node spends receiving one streamed snapshot, from its first chunk to its last;
/// installing it afterwards is not counted.
pub const SNAPSHOT_RECEIVE_TIMEOUT: Duration = Duration::from_secs(600);

/// How many requests of a `StreamAppend` stream wait to be handed to openraft, and how many
/// answers wait to be sent back, at most; beyond that the stream applies backpressure.
const STREAM_APPEND_BUFFER: usize = 64;

/// Raft RPCs, handed to the local openraft instance.
#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
    /// Noted on every AppendEntries a leader sent that was not refused for its vote.
    contact: LeaderContact,
    /// Where a snapshot a leader sends is received into.
    snapshots: SnapshotDir,
}

impl RaftService {
    /// Serves `raft`, noting leader contact in `contact` (see [`crate::island`]), receiving
    /// snapshots into files in `snapshots`.
    pub fn new(raft: Raft, contact: LeaderContact, snapshots: SnapshotDir) -> Self {
        Self {
            raft,
            contact,
            snapshots,
        }
    }
}

fn bad_payload(error: impl std::fmt::Display) -> Status {
    ErrorClass::InvalidArgument.grpc_status(format!("malformed_payload: {error}"))
}

/// The status for openraft having stopped on this node: the caller should treat this node as
/// unreachable.
fn raft_stopped(fatal: &Fatal<TypeConfig>) -> Status {
    ErrorClass::Unavailable.grpc_status(format!("raft_stopped: {fatal}"))
}

/// The value of an openraft protocol call, whose only error is [`Fatal`].
fn raft_value<T>(result: Result<T, RaftError<TypeConfig>>) -> Result<T, Status> {
    match result {
        Ok(value) => Ok(value),
        Err(RaftError::Fatal(fatal)) => Err(raft_stopped(&fatal)),
        Err(RaftError::APIError(never)) => match never {},
    }
}

fn payload<T: serde::Serialize>(value: &T) -> Result<pb::RaftPayload, Status> {
    codec::encode(value)
        .map(|json| pb::RaftPayload { json })
        .map_err(|e| grpc_status(&e))
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<pb::RaftPayload>, Status> {
    payload(value).map(Response::new)
}

/// Receives a snapshot stream to its last chunk, into an unnamed file in `dir`; each chunk is
/// written off the async workers.
async fn receive_snapshot(
    mut chunks: Streaming<pb::SnapshotChunk>,
    dir: SnapshotDir,
) -> Result<AssembledSnapshot, Status> {
    let stopped =
        |e: std::io::Error| Status::internal(format!("snapshot_spool: the writer stopped: {e}"));
    let opened = dir.clone();
    let mut assembly = dir
        .run(move || SnapshotAssembly::new(&opened))
        .await
        .map_err(stopped)?
        .map_err(|e| grpc_status(&e))?;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        let (back, pushed) = dir
            .run(move || {
                let pushed = assembly.push(chunk);
                (assembly, pushed)
            })
            .await
            .map_err(stopped)?;
        assembly = back;
        if pushed.map_err(|e| grpc_status(&e))? {
            break;
        }
    }
    assembly.finish().map_err(|e| grpc_status(&e))
}

impl RaftService {
    /// Refuses a snapshot openraft would panic on instead of refusing (see
    /// `Raft::install_full_snapshot`): one whose last log id is beyond the sender's vote, or one
    /// greater than what this node has committed but not at a greater index. A cluster that
    /// follows the protocol never sends either; a corrupted or forged one must not stop this
    /// node. The second check reads this node's metrics, so it is best effort.
    fn check_snapshot(&self, received: &AssembledSnapshot) -> Result<(), Status> {
        let Some(last) = received.snapshot.meta.last_log_id.as_ref() else {
            return Ok(());
        };
        if last.leader_id > received.vote.leader_id {
            return Err(bad_payload(format!(
                "snapshot last log id {last} is beyond the sender's vote {}",
                received.vote
            )));
        }
        let committed = self.raft.metrics().borrow_watched().local_committed;
        if let Some(committed) = committed {
            if *last > committed && last.index <= committed.index {
                return Err(bad_payload(format!(
                    "snapshot last log id {last} contradicts the committed log id {committed}"
                )));
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = codec::decode(&request.into_inner().json).map_err(bad_payload)?;
        let answer = raft_value(self.raft.append_entries(rpc).await)?;
        if !matches!(answer, AppendEntriesResponse::HigherVote(_)) {
            self.contact.note();
        }
        reply(&answer)
    }

    type StreamAppendStream = ReceiverStream<Result<pb::RaftPayload, Status>>;

    async fn stream_append(
        &self,
        request: Request<Streaming<pb::RaftPayload>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let mut incoming = request.into_inner();
        let (requests, requests_queue) =
            mpsc::channel::<AppendEntriesRequest<TypeConfig>>(STREAM_APPEND_BUFFER);
        let (answers, answers_queue) = mpsc::channel(STREAM_APPEND_BUFFER);
        let (malformed, malformed_rx) = oneshot::channel::<Status>();

        // The peer's requests, decoded in order, until it ends its side, the transport fails,
        // openraft stops taking them or one is unreadable (reported after the answers to the
        // requests before it).
        tokio::spawn(async move {
            while let Some(message) = incoming.next().await {
                let Ok(message) = message else { break };
                match codec::decode(&message.json) {
                    Ok(rpc) => {
                        if requests.send(rpc).await.is_err() {
                            break;
                        }
                    }
                    Err(error) => {
                        let _ = malformed.send(bad_payload(error));
                        break;
                    }
                }
            }
        });

        // openraft's answers, in order, until it refuses one (conflict, higher vote), stops, or
        // has answered every request; it ends its stream after a refusal.
        let output = self.raft.stream_append(ReceiverStream::new(requests_queue));
        let contact = self.contact.clone();
        tokio::spawn(async move {
            let mut output = std::pin::pin!(output);
            while let Some(item) = output.next().await {
                let (answer, last) = match item {
                    Ok(result) => {
                        if !matches!(result, Err(StreamAppendError::HigherVote(_))) {
                            contact.note();
                        }
                        let refused = result.is_err();
                        (payload::<StreamAppendResult<TypeConfig>>(&result), refused)
                    }
                    Err(fatal) => (Err(raft_stopped(&fatal)), true),
                };
                let last = last || answer.is_err();
                if answers.send(answer).await.is_err() || last {
                    // The peer is gone, or the stream is over.
                    return;
                }
            }
            if let Ok(status) = malformed_rx.await {
                let _ = answers.send(Err(status)).await;
            }
        });

        Ok(Response::new(ReceiverStream::new(answers_queue)))
    }

    async fn vote(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = codec::decode(&request.into_inner().json).map_err(bad_payload)?;
        reply(&raft_value(self.raft.vote(rpc).await)?)
    }

    async fn pre_vote(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = codec::decode(&request.into_inner().json).map_err(bad_payload)?;
        reply(&raft_value(self.raft.pre_vote(rpc).await)?)
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = codec::decode(&request.into_inner().json).map_err(bad_payload)?;
        let answer = self
            .raft
            .handle_transfer_leader(rpc)
            .await
            .map_err(|fatal| raft_stopped(&fatal))?;
        reply(&answer)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let received = tokio::time::timeout(
            SNAPSHOT_RECEIVE_TIMEOUT,
            receive_snapshot(request.into_inner(), self.snapshots.clone()),
        )
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "snapshot_timeout: the snapshot was not received within {}s",
                SNAPSHOT_RECEIVE_TIMEOUT.as_secs()
            ))
        })??;
        self.check_snapshot(&received)?;
        tracing::info!(
            from = %received.vote,
            meta = %received.snapshot.meta,
            bytes = received.snapshot.snapshot.len(),
            "installing a received snapshot"
        );
        let AssembledSnapshot { vote, snapshot } = received;
        let answer = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|fatal| raft_stopped(&fatal))?;
        reply(&answer)
    }
}

/// Writes forwarded by followers, proposed on this node if it leads.
#[derive(Clone)]
pub struct ClusterService {
    proposer: Proposer,
    members: Members,
    relay: Option<mpsc::Sender<pb::Ephemeral>>,
    /// Whether this node is an island, for probes.
    island: watch::Receiver<IslandStatus>,
    /// Its island side: the site's island writes when it keeps the site's journal.
    island_server: IslandServer,
}

impl ClusterService {
    /// Proposes through `proposer`, answers membership requests with `members`, probes with
    /// `island`, and takes and hands out its site's island writes through `island_server`;
    /// relayed ephemeral events are dropped.
    pub fn new(
        proposer: Proposer,
        members: Members,
        island: watch::Receiver<IslandStatus>,
        island_server: IslandServer,
    ) -> Self {
        Self {
            proposer,
            members,
            relay: None,
            island,
            island_server,
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

    async fn members(
        &self,
        request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersReply>, Status> {
        let request = request.into_inner();
        if request.change_json.len() > MEMBER_CHANGE_BYTES_MAX {
            return Err(ErrorClass::PayloadTooLarge.grpc_status(format!(
                "a membership change is at most {MEMBER_CHANGE_BYTES_MAX} bytes, got {}",
                request.change_json.len()
            )));
        }
        let change: Option<MemberChange> = if request.change_json.is_empty() {
            None
        } else {
            Some(codec::decode(&request.change_json).map_err(bad_payload)?)
        };
        let deadline_ms = request.deadline_ms.clamp(1, MEMBERSHIP_DEADLINE_MS_MAX);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(deadline_ms));
        let answer = self.members.on_leader(change, deadline).await;
        Ok(Response::new(membership::encode_reply(answer)))
    }

    async fn probe(
        &self,
        _request: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeReply>, Status> {
        let status = *self.island.borrow();
        Ok(Response::new(pb::ProbeReply {
            island: status.island(),
            island_epoch: status.epoch,
            island_keeper: if status.island() {
                self.island_server.keeper().unwrap_or(0)
            } else {
                0
            },
            island_journal_entries: Some(self.island_server.status().journal_entries),
        }))
    }

    async fn island_take(
        &self,
        request: Request<pb::IslandTakeRequest>,
    ) -> Result<Response<pb::IslandTakeReply>, Status> {
        let request = request.into_inner();
        let op: Op = codec::decode(&request.op_json).map_err(bad_payload)?;
        let status = *self.island.borrow();
        let refused = |error: &ProposeError| {
            codec::encode(error)
                .map(pb::island_take_reply::Outcome::RefusedJson)
                .map_err(|e| ErrorClass::Internal.grpc_status(e.to_string()))
        };
        if !status.island() || !self.island_server.keeps_journal() {
            let error = ProposeError::Island {
                what: "writes for its site's island journal: it does not keep it now".to_owned(),
            };
            return Ok(Response::new(pb::IslandTakeReply {
                outcome: Some(refused(&error)?),
                journal_next: 0,
            }));
        }
        let deadline_ms = request.deadline_ms.clamp(1, FORWARD_DEADLINE_MS_MAX);
        let taken = tokio::time::timeout(
            Duration::from_millis(u64::from(deadline_ms)),
            self.island_server.take(status.epoch, op),
        )
        .await
        .unwrap_or(Err(ProposeError::Timeout {
            waited_ms: u64::from(deadline_ms),
        }));
        let reply = match taken {
            Ok(taken) => pb::IslandTakeReply {
                outcome: Some(pb::island_take_reply::Outcome::OutcomeJson(
                    codec::encode(&taken.outcome)
                        .map_err(|e| ErrorClass::Internal.grpc_status(e.to_string()))?,
                )),
                journal_next: taken.journal_next,
            },
            Err(error) => pb::IslandTakeReply {
                outcome: Some(refused(&error)?),
                journal_next: 0,
            },
        };
        Ok(Response::new(reply))
    }

    async fn island_records(
        &self,
        request: Request<pb::IslandRecordsRequest>,
    ) -> Result<Response<pb::IslandRecordsReply>, Status> {
        let request = request.into_inner();
        if !self.island.borrow().island() || !self.island_server.keeps_journal() {
            return Ok(Response::new(pb::IslandRecordsReply {
                keeper: false,
                ..Default::default()
            }));
        }
        let wait = Duration::from_millis(u64::from(
            request
                .wait_ms
                .min(crate::island::mirror::RECORDS_WAIT_MS_MAX),
        ));
        let records = self
            .island_server
            .records(request.from, wait)
            .await
            .map_err(|e| ErrorClass::Internal.grpc_status(e))?;
        Ok(Response::new(pb::IslandRecordsReply {
            keeper: true,
            first: records.first,
            records_json: records.records.into_iter().map(|r| r.bytes).collect(),
            next: records.next,
        }))
    }

    async fn versions(
        &self,
        _request: Request<pb::VersionsRequest>,
    ) -> Result<Response<pb::VersionsReply>, Status> {
        let supported_json = codec::encode(&crate::version::SUPPORTED)
            .map_err(|e| ErrorClass::Internal.grpc_status(e.to_string()))?;
        Ok(Response::new(pb::VersionsReply { supported_json }))
    }
}

/// Largest membership change accepted from a peer, in bytes of JSON.
pub const MEMBER_CHANGE_BYTES_MAX: usize = 4096;

/// Largest ephemeral event accepted from a peer, in bytes.
pub const EPHEMERAL_BYTES_MAX: usize = 4096;

/// A tonic router hosting both services with the peer transport settings; callers may add
/// services (the chaos simulator adds its own) before serving.
///
/// Every call passes `check` first (see [`crate::route`]).
pub fn router(
    raft: RaftService,
    cluster: ClusterService,
    check: RouteCheck,
    settings: ChannelSettings,
) -> tonic::transport::server::Router {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(settings.keepalive_interval))
        .http2_keepalive_timeout(Some(settings.keepalive_timeout))
        .tcp_nodelay(true)
        .add_service(InterceptedService::new(
            RaftServer::new(raft)
                .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX),
            check.clone(),
        ))
        .add_service(InterceptedService::new(
            ClusterServer::new(cluster)
                .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX),
            check,
        ))
}

/// Serves both services on `incoming` until `shutdown` completes.
pub async fn serve<I, IO, IE>(
    incoming: I,
    raft: RaftService,
    cluster: ClusterService,
    check: RouteCheck,
    settings: ChannelSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    router(raft, cluster, check, settings)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
