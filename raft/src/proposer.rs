//! Getting commands committed: stamping, group commit and forwarding to the leader.
//!
//! Every write on a node goes through [`Proposer::propose`]:
//! 1. the command is stamped with this node's clock and id ([`Proposer::stamp`]);
//! 2. on the leader it joins the batch queue: one task packs every command waiting in the queue
//!    into one Raft entry ([`Request`]) while the previous entry is being flushed and
//!    replicated, so one fsync commits many writes (group commit);
//! 3. on a follower it joins the forward queue: one task sends every command waiting there to
//!    the leader in one `Cluster.Forward` RPC while earlier forwards are in flight (at most
//!    [`ProposerOptions::forward_inflight_max`]), and the leader puts them all in its batch
//!    queue. One RPC, one decode and one apply wait then serve many writes;
//! 4. when the leader changes or is unknown the proposer waits for a new one and retries, until
//!    the write timeout. Every command is idempotent (client ids), so a retry never duplicates.
//!    A forward still waiting on a leader that was replaced is abandoned the moment this node
//!    learns of the new one, and its RPC's in-flight place given back: a lost leader's host
//!    answers nothing, and its writes (and every forward queued behind them) would otherwise
//!    wait out the deadline.
//!
//! The answer comes only after the entry is committed on a majority and applied here (leader) or
//! on the leader and, bounded by [`APPLY_WAIT_MAX`], here (forwarded write).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::ClientWriteError;
use openraft::impls::ProgressResponder;
use openraft::metrics::RaftServerMetrics;
use openraft::type_config::alias::WatchReceiverOf;
use parley_proto::v1 as pb;
use parley_storage::AppliedState;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::codec::{self, Encoding};
use crate::command::{Command, Op, Outcome, Request};
use crate::error::ProposeError;
use crate::network::Peers;
use crate::state::check_input;
use crate::types::{NodeId, Raft, TypeConfig};

/// Where the proposer gets wall-clock time. `apply` never reads a clock; this is the only place
/// time enters the replicated state.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// Tuning of the proposer.
#[derive(Clone, Copy, Debug)]
pub struct ProposerOptions {
    /// Longest a write waits for its commit, including leader changes, before the caller is told
    /// to retry.
    pub write_timeout: Duration,
    /// Most commands waiting for the batch task; beyond it writes are refused as overloaded.
    pub queue_commands_max: usize,
    /// Most commands in one Raft entry.
    pub batch_commands_max: usize,
    /// Most Raft entries proposed but not yet committed at once. 1 means the next batch forms
    /// while the previous one is flushed, which is what makes group commit effective.
    pub inflight_batches_max: usize,
    /// Most forward RPCs (each a batch of commands) a follower has in flight to the leader at
    /// once; commands arriving meanwhile wait for the next forward and share it.
    pub forward_inflight_max: usize,
}

impl Default for ProposerOptions {
    fn default() -> Self {
        Self {
            write_timeout: Duration::from_secs(5),
            queue_commands_max: 16_384,
            batch_commands_max: crate::limits::BATCH_COMMANDS_MAX,
            inflight_batches_max: 2,
            forward_inflight_max: 4,
        }
    }
}

/// Longest a committed write forwarded to the leader waits for this node to apply it before
/// it is answered anyway.
pub const APPLY_WAIT_MAX: Duration = Duration::from_secs(2);

/// The result of proposing on this node only.
#[derive(Debug)]
pub enum LocalOutcome {
    /// Committed and applied on the leader, by the entry at this log index; or refused
    /// before proposing (its input out of bounds: `Outcome::Rejected`, log index 0).
    Committed(Outcome, u64),
    /// This node is not the leader; the leader it knows of, if any.
    NotLeader(Option<NodeId>),
    /// Could not be proposed or confirmed.
    Failed(ProposeError),
}

struct Pending {
    command: Command,
    reply: oneshot::Sender<LocalOutcome>,
}

/// What the forward task has done, for metrics: with both counts an operator sees how many
/// writes one forward RPC carried.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Forward RPCs sent to a leader.
    rpcs: AtomicU64,
    /// Writes those RPCs carried.
    writes: AtomicU64,
}

impl ForwardStats {
    /// Forward RPCs sent so far.
    pub fn rpcs(&self) -> u64 {
        self.rpcs.load(Ordering::Relaxed)
    }

    /// Writes forwarded so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

/// A write waiting in a follower's forward queue.
struct Forwarding {
    /// The leader it goes to.
    leader: NodeId,
    /// The stamped command.
    command: Command,
    /// When its caller stops waiting.
    deadline: Instant,
    /// Where its result goes, once the leader answered and (for a committed write) this node
    /// applied it or [`APPLY_WAIT_MAX`] passed.
    reply: oneshot::Sender<Result<LocalOutcome, ForwardError>>,
}

/// The log format the cluster writes now ([`crate::version::log_format_at`] of the replicated
/// cluster version): batches are proposed, and commands forwarded, in it.
pub type WriteFormat = Arc<dyn Fn() -> u32 + Send + Sync>;

/// Proposes commands; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    raft: Raft,
    clock: Arc<dyn Clock>,
    queue: mpsc::Sender<Pending>,
    forwards: mpsc::Sender<Forwarding>,
    forward_stats: Arc<ForwardStats>,
    options: ProposerOptions,
}

impl Proposer {
    /// Starts the batch and forward tasks on the current tokio runtime. `applied` is this
    /// node's state machine's own record of what it applied: a forwarded write waits on it
    /// (read your writes) without a round through openraft's core and metrics.
    pub fn start(
        id: NodeId,
        raft: Raft,
        peers: Peers,
        applied: watch::Receiver<AppliedState<TypeConfig>>,
        clock: Arc<dyn Clock>,
        format: WriteFormat,
        options: ProposerOptions,
    ) -> Self {
        let (queue, rx) = mpsc::channel(options.queue_commands_max.max(1));
        tokio::spawn(run_batches(raft.clone(), rx, Arc::clone(&format), options));
        let (forwards, forward_rx) = mpsc::channel(options.queue_commands_max.max(1));
        let forward_stats = Arc::new(ForwardStats::default());
        tokio::spawn(run_forwards(
            raft.clone(),
            peers,
            applied,
            forward_rx,
            Arc::clone(&forward_stats),
            format,
            options,
        ));
        Self {
            inner: Arc::new(Inner {
                id,
                raft,
                clock,
                queue,
                forwards,
                forward_stats,
                options,
            }),
        }
    }

    /// Stamps `op` with this node's clock and id.
    pub fn stamp(&self, op: Op) -> Command {
        Command {
            at_ms: self.inner.clock.now_ms(),
            origin: self.inner.id,
            op,
        }
    }

    /// How many forward RPCs this node sent and how many writes they carried.
    pub fn forward_stats(&self) -> &ForwardStats {
        &self.inner.forward_stats
    }

    /// The clock commands are stamped with.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// Stamps and commits `op`; see the module docs.
    pub async fn propose(&self, op: Op) -> Result<Outcome, ProposeError> {
        self.submit(self.stamp(op)).await
    }

    /// Commits an already stamped command through whichever node leads.
    pub async fn submit(&self, command: Command) -> Result<Outcome, ProposeError> {
        // Input bounds are refused here, before the command costs a replication; apply would
        // give the same rejection.
        if let Err(rejection) = check_input(&command.op) {
            return Ok(Outcome::Rejected(rejection));
        }
        let timeout = self.inner.options.write_timeout;
        let started = Instant::now();
        let deadline = started + timeout;
        let mut sent = false;
        // Server metrics change only with the vote, the leader or the membership, not with
        // every append and apply: a write waiting here is not woken for each entry.
        let mut metrics = self.inner.raft.server_metrics();
        let mut hint: Option<NodeId> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let waited_ms = elapsed_ms(started);
                return Err(if sent {
                    ProposeError::Timeout { waited_ms }
                } else {
                    ProposeError::NoLeader { waited_ms }
                });
            }
            let leader = hint
                .take()
                .or_else(|| metrics.borrow_watched().current_leader);
            let retry_with = match leader {
                Some(leader) if leader == self.inner.id => {
                    sent = true;
                    match self.propose_local(command.clone(), remaining).await {
                        LocalOutcome::Committed(outcome, _) => return Ok(outcome),
                        LocalOutcome::NotLeader(next) => next,
                        LocalOutcome::Failed(error) => return Err(error),
                    }
                }
                Some(leader) => {
                    sent = true;
                    // A leader that was lost answers nothing (its host or link is gone: no
                    // reset comes back), so the forward is abandoned as soon as this node
                    // learns of another leader, not at the deadline. Sending the command again
                    // is safe for the same reason any retry is.
                    // The leader this node knew of when the forward began: `leader` itself, or,
                    // when `leader` is a hint from another node's answer, one this node has not
                    // caught up from yet (never a reason to abandon the forward).
                    let known = metrics.borrow_watched().current_leader;
                    let forwarded = tokio::select! {
                        forwarded = self.forward(leader, command.clone(), deadline) => forwarded,
                        next = leader_other_than(&mut metrics, [Some(leader), known]) => {
                            tracing::debug!(leader, next, "leader changed while forwarding");
                            Ok(LocalOutcome::NotLeader(Some(next)))
                        }
                    };
                    match forwarded {
                        Ok(LocalOutcome::Committed(outcome, _)) => return Ok(outcome),
                        Ok(LocalOutcome::NotLeader(next)) => next.filter(|n| *n != leader),
                        Ok(LocalOutcome::Failed(error)) => return Err(error),
                        Err(error) => {
                            tracing::debug!(leader, %error, "forwarding failed; will retry");
                            None
                        }
                    }
                }
                None => None,
            };
            if retry_with.is_some() {
                hint = retry_with;
                continue;
            }
            // Wait for news of a leader, but never spin: at least a short pause.
            let pause = remaining.min(Duration::from_millis(25));
            tokio::time::sleep(pause).await;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(remaining, async {
                while metrics.borrow_watched().current_leader.is_none() {
                    if metrics.changed().await.is_err() {
                        break;
                    }
                }
            })
            .await;
        }
    }

    /// Proposes `command` on this node only, waiting at most `timeout`. Used for local writes and
    /// for writes forwarded here by followers.
    pub async fn propose_local(&self, command: Command, timeout: Duration) -> LocalOutcome {
        let (reply, rx) = oneshot::channel();
        match self.inner.queue.try_send(Pending { command, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return LocalOutcome::Failed(ProposeError::Overloaded)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return LocalOutcome::Failed(ProposeError::ShuttingDown)
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => LocalOutcome::Failed(ProposeError::ShuttingDown),
            Err(_) => LocalOutcome::Failed(ProposeError::Timeout {
                waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// Hands `command` to the forward queue for `leader` and waits (until `deadline`) for the
    /// leader's answer and, if it committed, for this node to apply it.
    async fn forward(
        &self,
        leader: NodeId,
        command: Command,
        deadline: Instant,
    ) -> Result<LocalOutcome, ForwardError> {
        let (reply, rx) = oneshot::channel();
        let forwarding = Forwarding {
            leader,
            command,
            deadline,
            reply,
        };
        match self.inner.forwards.try_send(forwarding) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Ok(LocalOutcome::Failed(ProposeError::Overloaded))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Ok(LocalOutcome::Failed(ProposeError::ShuttingDown))
            }
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Ok(LocalOutcome::Failed(ProposeError::ShuttingDown)),
            Err(_) => Err(ForwardError::Transport("deadline elapsed".to_owned())),
        }
    }
}

/// Resolves once this node knows of a leader that is none of `leaders` (never while no leader
/// is known, nor if the metrics channel closes).
async fn leader_other_than(
    metrics: &mut WatchReceiverOf<TypeConfig, RaftServerMetrics<TypeConfig>>,
    leaders: [Option<NodeId>; 2],
) -> NodeId {
    loop {
        if let Some(next) = metrics
            .borrow_watched()
            .current_leader
            .filter(|next| !leaders.contains(&Some(*next)))
        {
            return next;
        }
        if metrics.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Why a forward RPC gave no results.
enum ForwardEnd {
    /// This node learnt of another leader first; the RPC was dropped.
    Abandoned(NodeId),
    Failed(ForwardError),
}

#[derive(Clone, Debug, thiserror::Error)]
enum ForwardError {
    #[error("leader {0} has no known address")]
    UnknownAddress(NodeId),
    #[error("{0}")]
    Transport(String),
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Waits for an in-flight permit, then for the first item of `rx`, and takes every item waiting
/// behind it (at most `batch_max` in all), keeping those `wanted` says to keep (possibly none).
/// `None` once `rx` is closed.
async fn next_batch<T>(
    inflight: &Arc<Semaphore>,
    rx: &mut mpsc::Receiver<T>,
    batch_max: usize,
    wanted: impl Fn(&T) -> bool,
) -> Option<(OwnedSemaphorePermit, Vec<T>)> {
    let permit = Arc::clone(inflight).acquire_owned().await.ok()?;
    let first = rx.recv().await?;
    let mut batch = Vec::with_capacity(batch_max.min(64));
    batch.push(first);
    while batch.len() < batch_max {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    batch.retain(|item| wanted(item));
    Some((permit, batch))
}

/// The forward task of a follower: takes every command waiting in the forward queue and sends
/// them to the leader in one RPC (one per leader, should the leader have changed meanwhile),
/// with at most `forward_inflight_max` RPCs in flight.
async fn run_forwards(
    raft: Raft,
    peers: Peers,
    applied: watch::Receiver<AppliedState<TypeConfig>>,
    mut rx: mpsc::Receiver<Forwarding>,
    stats: Arc<ForwardStats>,
    format: WriteFormat,
    options: ProposerOptions,
) {
    let inflight = Arc::new(Semaphore::new(options.forward_inflight_max.max(1)));
    let batch_max = options.batch_commands_max.max(1);
    loop {
        // Callers that gave up are not worth forwarding; their retry comes with the same ids.
        let Some((permit, batch)) = next_batch(&inflight, &mut rx, batch_max, |forwarding| {
            !forwarding.reply.is_closed()
        })
        .await
        else {
            return;
        };
        let mut by_leader: BTreeMap<NodeId, Vec<Forwarding>> = BTreeMap::new();
        for forwarding in batch {
            by_leader
                .entry(forwarding.leader)
                .or_default()
                .push(forwarding);
        }
        let permit = Arc::new(permit);
        let encoding = Encoding::of_log_format(format());
        for (leader, group) in by_leader {
            stats.rpcs.fetch_add(1, Ordering::Relaxed);
            stats.writes.fetch_add(
                u64::try_from(group.len()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            let (raft, peers, permit) = (raft.clone(), peers.clone(), Arc::clone(&permit));
            let applied = applied.clone();
            tokio::spawn(forward_batch(
                raft, peers, applied, leader, group, encoding, permit,
            ));
        }
    }
}

/// Sends one batch of forwarded commands to `leader` and answers each: at once when it did not
/// commit, after this node applied the batch's last committed index (bounded) when it did. The
/// in-flight permit is released as soon as the leader answered.
async fn forward_batch(
    raft: Raft,
    peers: Peers,
    applied: watch::Receiver<AppliedState<TypeConfig>>,
    leader: NodeId,
    group: Vec<Forwarding>,
    encoding: Encoding,
    permit: Arc<OwnedSemaphorePermit>,
) {
    let Some(deadline) = group.iter().map(|forwarding| forwarding.deadline).max() else {
        return;
    };
    // A lost leader answers nothing: once this node learns of another leader the RPC is dropped
    // and its in-flight place given back at once, so forwards to the successor are not held up
    // behind it until the deadline. Each caller then retries with the new leader (its own
    // watch sees the change too).
    let mut metrics = raft.server_metrics();
    let known = metrics.borrow_watched().current_leader;
    let sent = tokio::select! {
        sent = send_forward(&raft, &peers, leader, &group, encoding, deadline) => {
            sent.map_err(ForwardEnd::Failed)
        }
        next = leader_other_than(&mut metrics, [Some(leader), known]) => {
            tracing::debug!(leader, next, "leader changed; forward abandoned");
            Err(ForwardEnd::Abandoned(next))
        }
    };
    drop(permit);
    let results = match sent {
        Ok(results) => results,
        Err(ForwardEnd::Abandoned(next)) => {
            for forwarding in group {
                let _ = forwarding
                    .reply
                    .send(Ok(LocalOutcome::NotLeader(Some(next))));
            }
            return;
        }
        Err(ForwardEnd::Failed(error)) => {
            for forwarding in group {
                let _ = forwarding.reply.send(Err(error.clone()));
            }
            return;
        }
    };
    let mut committed = Vec::with_capacity(group.len());
    let mut last_index = 0;
    for (forwarding, result) in group.into_iter().zip(results) {
        match result {
            Ok(LocalOutcome::Committed(outcome, index)) => {
                last_index = last_index.max(index);
                committed.push((forwarding, outcome, index));
            }
            other => {
                let _ = forwarding.reply.send(other);
            }
        }
    }
    if committed.is_empty() {
        return;
    }
    wait_applied(applied, last_index, deadline).await;
    for (forwarding, outcome, index) in committed {
        let _ = forwarding
            .reply
            .send(Ok(LocalOutcome::Committed(outcome, index)));
    }
}

/// One `Cluster.Forward` RPC carrying `group`; one result per command, in order.
async fn send_forward(
    raft: &Raft,
    peers: &Peers,
    leader: NodeId,
    group: &[Forwarding],
    encoding: Encoding,
    deadline: Instant,
) -> Result<Vec<Result<LocalOutcome, ForwardError>>, ForwardError> {
    let addr = {
        let metrics = raft.server_metrics();
        let metrics = metrics.borrow_watched();
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|node| node.grpc_addr.clone())
    };
    let addr = addr.ok_or(ForwardError::UnknownAddress(leader))?;
    let mut client = peers
        .cluster_client(leader, &addr)
        .map_err(|e| ForwardError::Transport(e.to_string()))?;
    let commands_json = group
        .iter()
        .map(|forwarding| codec::encode_as(encoding, &forwarding.command))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ForwardError::Transport(e.to_string()))?;
    let timeout = deadline.saturating_duration_since(Instant::now());
    let mut request = tonic::Request::new(pb::ForwardRequest {
        commands_json,
        deadline_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
    });
    request.set_timeout(timeout);
    let reply = tokio::time::timeout(timeout, client.forward(request))
        .await
        .map_err(|_| ForwardError::Transport("deadline elapsed".to_owned()))?
        .map_err(|status| ForwardError::Transport(status.to_string()))?
        .into_inner();
    if reply.results.len() != group.len() {
        let message = format!(
            "the leader answered {} results for {} forwarded commands",
            reply.results.len(),
            group.len()
        );
        return Ok(group
            .iter()
            .map(|_| Ok(LocalOutcome::Failed(ProposeError::Codec(message.clone()))))
            .collect());
    }
    Ok(reply.results.into_iter().map(forward_result).collect())
}

/// One command's result in a forward reply.
fn forward_result(result: pb::ForwardResult) -> Result<LocalOutcome, ForwardError> {
    use pb::forward_result::Outcome;
    match result.outcome {
        Some(Outcome::OutcomeJson(json)) => Ok(match codec::decode(&json) {
            Ok(outcome) => LocalOutcome::Committed(outcome, result.log_index),
            Err(e) => LocalOutcome::Failed(ProposeError::Codec(e.to_string())),
        }),
        Some(Outcome::NotLeader(not_leader)) => Ok(LocalOutcome::NotLeader(
            Some(not_leader.leader_id).filter(|id| *id != 0),
        )),
        // The leader could not take it now; the caller retries like after a lost connection.
        Some(Outcome::Unavailable(message)) => Err(ForwardError::Transport(message)),
        None => Ok(LocalOutcome::Failed(ProposeError::Codec(
            "empty forward result".to_owned(),
        ))),
    }
}

/// Waits (bounded by [`APPLY_WAIT_MAX`] and `deadline`) until this node has applied `index`, so
/// a client that wrote through this node reads its own write here. The write is committed
/// either way.
async fn wait_applied(
    mut applied: watch::Receiver<AppliedState<TypeConfig>>,
    index: u64,
    deadline: Instant,
) {
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .min(APPLY_WAIT_MAX);
    let reached = |state: &AppliedState<TypeConfig>| {
        state
            .last_applied
            .as_ref()
            .is_some_and(|log_id| log_id.index >= index)
    };
    match tokio::time::timeout(remaining, applied.wait_for(reached)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_closed)) => tracing::debug!(index, "state machine closed before applying"),
        Err(_elapsed) => tracing::debug!(index, "committed write not yet applied here"),
    }
}

/// The batch task: takes everything waiting, proposes it as one entry, answers each command.
async fn run_batches(
    raft: Raft,
    mut rx: mpsc::Receiver<Pending>,
    format: WriteFormat,
    options: ProposerOptions,
) {
    let inflight = Arc::new(Semaphore::new(options.inflight_batches_max.max(1)));
    let batch_max = options.batch_commands_max.max(1);
    loop {
        // Callers that gave up are not worth a log entry; their retry comes with the same ids.
        let Some((permit, batch)) = next_batch(&inflight, &mut rx, batch_max, |pending| {
            !pending.reply.is_closed()
        })
        .await
        else {
            return;
        };
        if batch.is_empty() {
            continue;
        }
        let (commands, replies): (Vec<Command>, Vec<oneshot::Sender<LocalOutcome>>) = batch
            .into_iter()
            .map(|pending| (pending.command, pending.reply))
            .unzip();
        let size = commands.len();
        // Only completion matters here: a writer is answered once its entry is applied.
        let (responder, applied) = ProgressResponder::complete_only();
        match raft
            .client_write_ff(Request::in_format(format(), commands), Some(responder))
            .await
        {
            Err(fatal) => {
                tracing::warn!(%fatal, "raft stopped; failing batch");
                for reply in replies {
                    let _ = reply.send(LocalOutcome::Failed(ProposeError::ShuttingDown));
                }
            }
            Ok(()) => {
                tokio::spawn(async move {
                    let result = applied.await;
                    drop(permit);
                    match result {
                        Ok(Ok(written)) => {
                            let index = written.log_id.index;
                            let outcomes = written.data.outcomes;
                            if outcomes.len() != size {
                                tracing::error!(
                                    expected = size,
                                    got = outcomes.len(),
                                    "batch answered with the wrong number of outcomes"
                                );
                            }
                            let mut outcomes = outcomes.into_iter();
                            for reply in replies {
                                let outcome = match outcomes.next() {
                                    Some(outcome) => LocalOutcome::Committed(outcome, index),
                                    None => LocalOutcome::Failed(ProposeError::Codec(
                                        "missing outcome".to_owned(),
                                    )),
                                };
                                let _ = reply.send(outcome);
                            }
                        }
                        Ok(Err(ClientWriteError::ForwardToLeader(forward))) => {
                            for reply in replies {
                                let _ = reply.send(LocalOutcome::NotLeader(forward.leader_id));
                            }
                        }
                        Ok(Err(other)) => {
                            tracing::warn!(error = %other, "batch refused");
                            for reply in replies {
                                let _ = reply.send(LocalOutcome::NotLeader(None));
                            }
                        }
                        Err(_) => {
                            // Raft dropped the responder: leadership lost or shutdown. The
                            // commands may or may not commit; retrying them is safe.
                            for reply in replies {
                                let _ = reply.send(LocalOutcome::NotLeader(None));
                            }
                        }
                    }
                });
            }
        }
    }
}
