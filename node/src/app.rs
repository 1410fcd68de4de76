//! The app: [`commit`], the write every request handler calls (answered only after commit: the
//! proposer waits for it), and the app actor, which seeds the config's directory and answers
//! readiness, the cluster view and metrics.
//!
//! A write or a read of a request runs on the HTTP worker that took the request, not in the
//! actor: the replica is shared, its proposer queues are the only hand-over to the Raft tasks,
//! and a read takes the applied state's read lock. A round trip through one actor's mailbox
//! would add two thread hops to every request and make one thread the path of all of them.

use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, ResponseFuture};
use parley_raft::command::{Directory, Op, Retention};
use parley_raft::replica::ReplicaStatus;
use parley_raft::{Outcome, ProposeError, Replica};
use serde::Serialize;

use crate::api::Member;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// How many requests may wait in the app actor's mailbox.
const MAILBOX_CAPACITY: usize = 4096;

/// How long a readiness check waits for applying to reach the commit index.
const READY_APPLY_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// The app actor.
pub struct AppActor {
    /// The replicated core.
    replica: Replica,
    /// Write counters and latency.
    metrics: Arc<Metrics>,
    /// Queues and agents from this node's config, seeded at start.
    directory: Directory,
    /// This node's configured retention, proposed at start when the cluster's differs.
    retention: Retention,
    /// This node's site, for the cluster view.
    site: String,
    /// Whether this node's directory seed has committed (readiness waits for it, so a node
    /// never answers "unknown agent" for an agent its own config lists).
    seeded: bool,
    /// The last state digest the cluster view computed (see [`DIGEST_INTERVAL_MIN`]).
    digest: Arc<std::sync::Mutex<Option<DigestAt>>>,
}

/// A digest of the applied state at one index, and when it was computed.
struct DigestAt {
    index: Option<u64>,
    digest: String,
    at: Instant,
}

/// Least time between two state digests computed for the cluster view: a digest encodes the
/// whole state, and the view answers anyone, so its cost is bounded by time, not by requests.
pub const DIGEST_INTERVAL_MIN: std::time::Duration = std::time::Duration::from_secs(1);

/// The applied index and the digest of the state at exactly that index: the cached pair while
/// nothing was applied since or it is younger than [`DIGEST_INTERVAL_MIN`], else a fresh one.
/// One computation runs at a time; concurrent callers wait for it and share it.
fn digest_at(
    replica: &Replica,
    applied_index: Option<u64>,
    cache: &std::sync::Mutex<Option<DigestAt>>,
    metrics: &Metrics,
) -> Result<(Option<u64>, String), ApiError> {
    let mut cached = cache
        .lock()
        .map_err(|_| ApiError::internal("the digest cache is poisoned"))?;
    if let Some(last) = cached.as_ref() {
        if last.index == applied_index || last.at.elapsed() < DIGEST_INTERVAL_MIN {
            return Ok((last.index, last.digest.clone()));
        }
    }
    let (index, digest) =
        replica.read_applied(|state, applied| (applied.map(|id| id.index), state.digest()));
    let digest = digest.map_err(|e| ApiError::internal(e.to_string()))?;
    metrics.count_state_digest();
    *cached = Some(DigestAt {
        index,
        digest: digest.clone(),
        at: Instant::now(),
    });
    Ok((index, digest))
}

impl AppActor {
    /// An actor over `replica`.
    pub fn new(
        replica: Replica,
        metrics: Arc<Metrics>,
        directory: Directory,
        retention: Retention,
        site: String,
    ) -> Self {
        Self {
            replica,
            metrics,
            directory,
            retention,
            site,
            seeded: false,
            digest: Arc::default(),
        }
    }
}

impl Actor for AppActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        let directory = &self.directory;
        let seed = !(directory.departments.is_empty()
            && directory.skills.is_empty()
            && directory.queues.is_empty()
            && directory.agents.is_empty());
        let replica = self.replica.clone();
        let directory = self.directory.clone();
        let retention = self.retention;
        let seeding = async move {
            // Seeding is idempotent, so every node does it once at start; it retries until a
            // leader commits it.
            if seed {
                if !propose_until_committed(&replica, Op::SeedDirectory(directory)).await {
                    return false;
                }
                tracing::info!("directory seeded");
            }
            // The configured retention replaces the cluster's when they differ (the node
            // restarted last wins; every node should carry the same values).
            let current = replica.read(|state, _| state.retention);
            if current != retention {
                if !propose_until_committed(&replica, Op::SetRetention(retention)).await {
                    return false;
                }
                tracing::info!(?retention, previous = ?current, "retention set");
            }
            true
        };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(seeding).map(|seeded, actor, _ctx| {
                actor.seeded = seeded;
            }),
        );
    }
}

/// Proposes `op` until a leader commits it; false if the node shuts down first.
async fn propose_until_committed(replica: &Replica, op: Op) -> bool {
    loop {
        match replica.propose(op.clone()).await {
            Ok(outcome) => {
                tracing::debug!(?outcome, "start-up write committed");
                return true;
            }
            Err(ProposeError::ShuttingDown) => return false,
            Err(error) => {
                tracing::debug!(%error, "start-up write; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

/// A write's outcome, and whether it was taken in island mode (see
/// `parley_raft::island::serve`): a client shows such a write as not yet confirmed by the whole
/// cluster.
#[derive(Debug)]
pub struct Written {
    /// What the write did.
    pub outcome: Outcome,
    /// Whether it was taken in island mode, into an island journal.
    pub island: bool,
    /// With `island`: the island node whose journal took it (this node, or the node keeping
    /// its site's island journal).
    pub island_node: Option<u64>,
}

/// Proposes `op` and records the write's outcome and latency.
pub async fn commit(replica: &Replica, metrics: &Metrics, op: Op) -> Result<Written, ApiError> {
    let started = Instant::now();
    let result = replica.propose_marked(op).await;
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok((Outcome::Rejected(rejection), _)) => {
            metrics.observe_write("rejected", seconds);
            Err(rejection.into())
        }
        Ok((outcome, island_node)) => {
            let island = island_node.is_some();
            metrics.observe_write(if island { "island" } else { "committed" }, seconds);
            Ok(Written {
                outcome,
                island,
                island_node,
            })
        }
        Err(error) => {
            metrics.observe_write("failed", seconds);
            Err(error.into())
        }
    }
}

/// What `GET /api/v1/cluster` shows.
#[derive(Debug, Message)]
#[rtype(result = "Result<ClusterView, ApiError>")]
pub struct GetClusterView;

/// The cluster as this node sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// This node.
    pub node_id: u64,
    /// This node's site.
    pub site: String,
    /// This node's role.
    pub role: &'static str,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Members with site, addresses and role.
    pub members: Vec<Member>,
    /// Last log index stored here.
    pub last_log_index: Option<u64>,
    /// Commit index known here.
    pub commit_index: Option<u64>,
    /// Last index covered by this node's snapshot.
    pub snapshot_index: Option<u64>,
    /// Last index applied here as of `state_digest`, which is the state at exactly this index.
    /// The pair is recomputed at most once a second while writes go on; once they stop, the
    /// next view after a second shows the latest index.
    pub applied_index: Option<u64>,
    /// BLAKE3 of the applied state at `applied_index`.
    pub state_digest: String,
    /// Whether this node is an island: it has heard from no leader (or, leading, from no
    /// quorum) for `island_after`. An island takes the customer's side of chats and callbacks
    /// into its island journal (answers carry `"island": true`) and merges them once a leader
    /// is heard again.
    pub island: bool,
    /// This node's island epoch: how many times it became an island (0: never).
    pub island_epoch: u64,
    /// How long this node has been an island, in ms; `null` while it is not one.
    pub island_for_ms: Option<u64>,
    /// While this node is an island: the island node keeping its site's island journal
    /// (this node, or the lowest island node of its site it reaches, to which it forwards its
    /// island writes); `null` otherwise, and for a moment after the site was cut off while
    /// that is decided.
    pub island_keeper: Option<u64>,
    /// Island writes in this node's journal not merged into the cluster yet.
    pub island_journal_entries: u64,
    /// Island writes this node merged into the cluster since it started.
    pub island_merged_writes: u64,
    /// Island writes the cluster could not take at merge since this node started (each is
    /// logged with why).
    pub island_merge_refused: u64,
    /// Agents' island actions that lost at merge and were kept as conflicts on their
    /// activities, since this node started (each logged).
    pub island_merge_conflicts: u64,
    /// The replicated cluster version, as applied here.
    pub cluster_version: u32,
    /// What this node's release reads, writes and implements.
    pub versions: crate::api::Supported,
}

impl Handler<GetClusterView> for AppActor {
    type Result = ResponseFuture<Result<ClusterView, ApiError>>;

    fn handle(&mut self, _msg: GetClusterView, _ctx: &mut Self::Context) -> Self::Result {
        let replica = self.replica.clone();
        let site = self.site.clone();
        let digest_cache = Arc::clone(&self.digest);
        let metrics = Arc::clone(&self.metrics);
        Box::pin(async move {
            let commit_index = replica
                .committed_index()
                .await
                .map_err(|e| ApiError::unavailable("raft_stopped", e.to_string()))?;
            let status: ReplicaStatus = replica.status();
            let (applied_index, state_digest) =
                digest_at(&replica, status.applied_index, &digest_cache, &metrics)?;
            let members = status
                .members
                .iter()
                .map(|(id, info)| {
                    let role = if status.leader == Some(*id) {
                        "leader"
                    } else if status.voters.contains(id) {
                        "follower"
                    } else {
                        "learner"
                    };
                    let seen = status.seen.get(id);
                    Member::new(
                        *id,
                        info,
                        role,
                        seen.and_then(|s| s.reachable),
                        seen.and_then(|s| s.island),
                    )
                })
                .collect();
            Ok(ClusterView {
                node_id: status.id,
                site,
                role: status.role,
                leader: status.leader,
                term: status.term,
                members,
                last_log_index: status.last_log_index,
                commit_index,
                snapshot_index: status.snapshot_index,
                applied_index,
                state_digest,
                island: status.island.island(),
                island_epoch: status.island.epoch,
                island_for_ms: status
                    .island
                    .since
                    .map(|since| u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)),
                island_keeper: status.island_journal.keeper,
                island_journal_entries: status.island_journal.journal_entries,
                island_merged_writes: status.island_journal.merged_total,
                island_merge_refused: status.island_journal.refused_total,
                island_merge_conflicts: status.island_journal.conflicts_total,
                cluster_version: replica.read_applied(|state, _| state.cluster_version.0),
                versions: parley_raft::version::SUPPORTED.into(),
            })
        })
    }
}

/// Whether this node should receive traffic.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), String>")]
pub struct CheckReady;

impl Handler<CheckReady> for AppActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, _msg: CheckReady, _ctx: &mut Self::Context) -> Self::Result {
        let replica = self.replica.clone();
        let seeded = self.seeded;
        Box::pin(async move {
            let status = replica.status();
            if status.island.island() {
                // An island serves its site's customers from its journal (and commits no
                // directory seed until the cluster is back).
                return Ok(());
            }
            if !seeded {
                return Err("the directory from this node's config is not committed yet".to_owned());
            }
            if status.leader.is_none() {
                return Err("no leader is known".to_owned());
            }
            let committed = replica
                .committed_index()
                .await
                .map_err(|e| format!("raft stopped: {e}"))?;
            // Applying trails commit by moments; give it a short while before saying no.
            if !replica.wait_applied(committed, READY_APPLY_WAIT).await {
                return Err(format!(
                    "applied index {:?} is behind commit index {committed:?}",
                    replica.status().applied_index
                ));
            }
            Ok(())
        })
    }
}

/// Renders the Prometheus metrics.
#[derive(Debug, Message)]
#[rtype(result = "Result<String, ApiError>")]
pub struct RenderMetrics;

impl Handler<RenderMetrics> for AppActor {
    type Result = ResponseFuture<Result<String, ApiError>>;

    fn handle(&mut self, _msg: RenderMetrics, _ctx: &mut Self::Context) -> Self::Result {
        let replica = self.replica.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let committed = replica.committed_index().await.ok().flatten();
            let size = replica.read(|state, _| crate::metrics::StateSize::of(state));
            metrics
                .render(&replica.status(), committed, size)
                .map_err(|e| ApiError::internal(e.to_string()))
        })
    }
}
