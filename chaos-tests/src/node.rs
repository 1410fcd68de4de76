//! One simulated node: the real replica (RocksDB, openraft, proposer, gRPC network), the real
//! app actor (which seeds the node's directory and commits every client command), the real
//! messaging actor (long polls on agent feeds, typing relayed by peers), the real services actor
//! firing timers, and the test-only `SimNode` service that stands in for the HTTP edge: clients
//! reach the app and messaging actors through it, and the oracle inspects the applied state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::proto::sim_node_server::{SimNode, SimNodeServer};
use crate::proto::{
    AgentFeedReply, AgentFeedRequest, InspectReply, InspectRequest, LeaseHistoryReply,
    LeaseHistoryRequest, MembersReply, MembersRequest, SimReply, SimWrite,
};
use actix::{Actor, Addr};
use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftLogReader;
use openraft::EntryPayload;
use parley_node::app::{self, AppActor};
use parley_node::messaging::{Feed, MessagingActor, WaitForEvents};
use parley_node::metrics::Metrics;
use parley_raft::command::{Directory, Retention};
use parley_raft::network::ChannelSettings;
use parley_raft::proposer::Clock;
use parley_raft::state::{ActivityStatus, EventCursor};
use parley_raft::{NodeId, NodeInfo, Op, Replica, ReplicaOptions, State, TypeConfig};
use parley_storage::{DbOptions, FsyncPolicy, IoMode, LogStore};
use tonic::{Request, Response, Status};

use crate::net::{incoming, SimConnector, GRPC_PORT};

/// The simulated wall clock: turmoil's epoch plus simulated time, so timers fire by
/// simulated time and runs replay.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimClock;

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let since = turmoil::since_epoch().unwrap_or_default();
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A node's wall clock: the simulated clock off by a skew (ms, either sign) that the run
/// may change at any time, as a badly synchronised clock, or one an operator or NTP steps
/// back, would be. The skew outlives the node's restarts.
#[derive(Clone, Debug, Default)]
pub struct SkewedClock {
    /// The skew now, in ms.
    pub skew_ms: Arc<AtomicI64>,
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> u64 {
        SimClock
            .now_ms()
            .saturating_add_signed(self.skew_ms.load(Ordering::Relaxed))
    }
}

/// The host name of node `id`.
pub fn host_name(id: NodeId) -> String {
    format!("node{id}")
}

/// The site of node `id` when the nodes are split, in id order, into sites of `sizes` nodes
/// (`site1`, `site2`, …); nodes past them (spares that join later) belong to the last site.
pub fn site_of(id: NodeId, sizes: &[u64]) -> String {
    let mut last = 0;
    for (index, size) in sizes.iter().enumerate() {
        last += size;
        if id <= last {
            return format!("site{}", index + 1);
        }
    }
    format!("site{}", sizes.len().max(1))
}

/// The static membership of a cluster of `n` simulated nodes in sites of `sites` nodes.
pub fn members(n: u64, sites: &[u64]) -> BTreeMap<NodeId, NodeInfo> {
    (1..=n)
        .map(|id| {
            (
                id,
                NodeInfo {
                    site: site_of(id, sites),
                    grpc_addr: format!("{}:{GRPC_PORT}", host_name(id)),
                    http_addr: String::new(),
                },
            )
        })
        .collect()
}

/// Transport settings for the simulation: production-like, so partitions are noticed by the
/// same keepalives and deadlines.
pub fn settings() -> ChannelSettings {
    ChannelSettings {
        connect_timeout: Duration::from_millis(500),
        keepalive_interval: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(2),
    }
}

/// [`settings`] with the keepalives `scale` times longer (see `Spec::timers_scale`).
pub fn scaled_settings(scale: u32) -> ChannelSettings {
    let base = settings();
    ChannelSettings {
        keepalive_interval: base.keepalive_interval * scale,
        keepalive_timeout: base.keepalive_timeout * scale,
        ..base
    }
}

/// Who each node believes leads and in which term, for faults aimed at the leader and to see
/// that one was elected after them. Shared by the simulated hosts and the fault injector (one
/// thread: turmoil runs everything on the caller's).
pub type Leaders = std::rc::Rc<std::cell::RefCell<BTreeMap<NodeId, (Option<NodeId>, u64)>>>;

/// Every node's island statuses as they changed, `(island, epoch)` in order, across restarts.
pub type Islands = std::rc::Rc<std::cell::RefCell<BTreeMap<NodeId, Vec<(bool, u64)>>>>;

/// Each node's island writes not merged yet, as it last reported them (an operator reads
/// `island_journal_entries` in the cluster view before removing a member).
pub type Journals = std::rc::Rc<std::cell::RefCell<BTreeMap<NodeId, u64>>>;

/// How long a simulated node goes without a leader before it is an island: over twice the
/// longest election timeout of five nodes.
pub const SIM_ISLAND_AFTER: Duration = Duration::from_secs(2);

/// Where a node records, for the run's report, what it saw: the leader and term, and its
/// island status as they changed.
#[derive(Clone, Debug, Default)]
pub struct Recorders {
    /// Each node's leader and term.
    pub leaders: Leaders,
    /// Each node's island history.
    pub islands: Islands,
    /// Each node's unmerged island writes.
    pub journals: Journals,
    /// The lease workload's records (what each node holds, fenced commands' answers).
    pub leases: crate::lease::Records,
}

/// What a run sets on a node beyond its identity: its clock and how much log it keeps.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// The node's wall clock.
    pub clock: SkewedClock,
    /// Log entries kept behind a snapshot: fewer make a node that fell behind catch up by
    /// snapshot install.
    pub log_entries_kept_after_snapshot: u64,
    /// Entries between two snapshots.
    pub snapshot_every_entries: u64,
    /// The lease workload, if the run has one.
    pub lease: Option<crate::lease::Workload>,
    /// Node timers multiplied by this (see `Spec::timers_scale`).
    pub timers_scale: u32,
}

/// Runs node `id` until the simulation crashes it. Storage is real RocksDB in `data_dir`,
/// which outlives the host, so a bounce is a restart after kill -9. With `members` empty the
/// node joins an existing cluster (`cluster_state = "existing"`): it forms none and waits to
/// be added.
pub async fn run(
    id: NodeId,
    members: BTreeMap<NodeId, NodeInfo>,
    directory: Directory,
    data_dir: PathBuf,
    site: String,
    recorders: Recorders,
    tuning: Tuning,
) -> turmoil::Result {
    let Recorders {
        leaders,
        islands,
        journals,
        leases,
    } = recorders;
    let mut options = ReplicaOptions::new(id, members.clone(), data_dir);
    // RocksDB calls run inline: the simulation is single threaded and must stay deterministic.
    options.db = DbOptions {
        fsync: FsyncPolicy::Never,
        io_mode: IoMode::Inline,
    };
    options.snapshot_every_entries = tuning.snapshot_every_entries;
    options.log_entries_kept_after_snapshot = tuning.log_entries_kept_after_snapshot;
    // Election timeouts staggered by node id with no random spread: openraft draws them from
    // an unseeded generator, so a spread would make runs differ between replays. The node with
    // the shortest timeout among the live ones campaigns first.
    let scale = tuning.timers_scale.max(1);
    options.heartbeat_ms = 100 * u64::from(scale);
    options.election_timeout_min_ms = (300 + 60 * id) * u64::from(scale);
    options.election_timeout_max_ms = options.election_timeout_min_ms + 1;
    options.island_after = SIM_ISLAND_AFTER * scale;
    let settings = scaled_settings(scale);
    let clock: Arc<dyn Clock> = Arc::new(tuning.clock);
    let replica = Replica::open(
        options,
        Arc::new(SimConnector {
            settings,
            from: Some(id),
        }),
        clock.clone(),
    )
    .await?;
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", GRPC_PORT)).await?;
    let (raft, cluster) = replica.services();
    let (relay_tx, relay_rx) = tokio::sync::mpsc::channel(RELAY_QUEUE);
    let cluster = cluster.with_relay(relay_tx);
    let metrics = Arc::new(Metrics::new());
    // As `parley serve` wires them: the app actor seeds this node's directory at start.
    let messaging = MessagingActor::new(replica.clone(), metrics.clone(), relay_rx).start();
    let _app = AppActor::new(
        replica.clone(),
        metrics.clone(),
        directory,
        Retention::default(),
        site,
    )
    .start();
    let sim = SimService {
        replica: replica.clone(),
        metrics,
        messaging,
    };
    // No TLS in the simulation (it is proven against real processes), but the route check
    // runs as in production.
    let check = replica.route_check(false);
    let server = parley_raft::server::router(raft, cluster, check, settings)
        .add_service(SimNodeServer::new(sim))
        .serve_with_incoming(incoming(listener));
    if let Some(workload) = tuning.lease {
        crate::lease::start(id, replica.clone(), clock.clone(), workload, leases);
    }
    let _services = parley_node::services::ServicesActor::new(replica.clone(), clock).start();
    if !members.is_empty() {
        let replica = replica.clone();
        tokio::spawn(async move {
            // Every node forms the cluster with the same static members; later starts rejoin.
            if let Err(error) = replica.form_cluster().await {
                tracing::warn!(%error, "forming the cluster");
            }
        });
    }
    let journal_replica = replica.clone();
    tokio::task::spawn_local(async move {
        loop {
            let entries = journal_replica.status().island_journal.journal_entries;
            journals.borrow_mut().insert(id, entries);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut island = replica.subscribe_island();
    tokio::task::spawn_local(async move {
        loop {
            let seen = {
                let status = *island.borrow_and_update();
                (status.island(), status.epoch)
            };
            {
                let mut islands = islands.borrow_mut();
                let history = islands.entry(id).or_default();
                if history.last() != Some(&seen) {
                    history.push(seen);
                }
            }
            if island.changed().await.is_err() {
                return;
            }
        }
    });
    let mut metrics = replica.raft().metrics();
    tokio::task::spawn_local(async move {
        loop {
            let seen = {
                let metrics = metrics.borrow_watched();
                (metrics.current_leader, metrics.current_term)
            };
            leaders.borrow_mut().insert(id, seen);
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
    server.await?;
    Ok(())
}

/// Relayed ephemeral events waiting for the messaging actor.
const RELAY_QUEUE: usize = 256;

/// The longest a membership request waits inside the simulation.
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest agent-feed long poll a client may ask for.
const FEED_WAIT_MAX: Duration = Duration::from_secs(5);

/// The test-only service of a simulated node.
#[derive(Clone)]
pub struct SimService {
    replica: Replica,
    metrics: Arc<Metrics>,
    messaging: Addr<MessagingActor>,
}

fn unavailable(error: impl std::fmt::Display) -> Status {
    Status::unavailable(error.to_string())
}

#[tonic::async_trait]
impl SimNode for SimService {
    async fn submit(&self, request: Request<SimWrite>) -> Result<Response<SimReply>, Status> {
        let op: Op = serde_json::from_slice(&request.into_inner().op_json)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // As the HTTP edge writes: on the calling task, through the app's commit.
        let reply = match app::commit(&self.replica, &self.metrics, op).await {
            Ok(written) => SimReply {
                outcome_json: serde_json::to_vec(&written.outcome)
                    .map_err(|e| Status::internal(e.to_string()))?,
                error: String::new(),
                retryable: false,
                island: written.island,
                island_node: written.island_node.unwrap_or(0),
            },
            Err(error) => SimReply {
                outcome_json: Vec::new(),
                retryable: error.status() == 503,
                error: error.to_string(),
                island: false,
                island_node: 0,
            },
        };
        Ok(Response::new(reply))
    }

    async fn agent_feed(
        &self,
        request: Request<AgentFeedRequest>,
    ) -> Result<Response<AgentFeedReply>, Status> {
        let request = request.into_inner();
        let after: EventCursor = request
            .after
            .parse()
            .map_err(|e: String| Status::invalid_argument(e))?;
        let agent_id = request.agent_id.clone();
        let head = self.replica.read(|state, _| {
            let last = state.agents.get(&agent_id).map_or(0, |a| a.feed_last_seq());
            state.feed_resume(&agent_id, &after).max(last)
        });
        let wait = self
            .messaging
            .send(WaitForEvents {
                feed: Feed::Agent(request.agent_id.clone()),
                after: head,
            })
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        let wait_for = Duration::from_millis(request.wait_ms).min(FEED_WAIT_MAX);
        // Woken, timed out or shut down: either way, answer with what is there now.
        let _ = tokio::time::timeout(wait_for, wait).await;
        let agent_id = request.agent_id;
        let page = self
            .replica
            .read(|state, _| state.feed_page(&agent_id, &after, 1_000));
        let reply = match page {
            None => return Err(Status::not_found("unknown agent")),
            Some(Err(first_kept)) => AgentFeedReply {
                events_json: b"[]".to_vec(),
                first_kept,
                cursors: Vec::new(),
            },
            Some(Ok(page)) => {
                let (events, cursors): (Vec<_>, Vec<_>) = page
                    .into_iter()
                    .map(|(event, at)| (event, at.to_string()))
                    .unzip();
                AgentFeedReply {
                    events_json: serde_json::to_vec(&events)
                        .map_err(|e| Status::internal(e.to_string()))?,
                    first_kept: 0,
                    cursors,
                }
            }
        };
        Ok(Response::new(reply))
    }

    async fn members(
        &self,
        request: Request<MembersRequest>,
    ) -> Result<Response<MembersReply>, Status> {
        let json = request.into_inner().change_json;
        let change = if json.is_empty() {
            None
        } else {
            Some(
                serde_json::from_slice(&json)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            )
        };
        let reply = match self
            .replica
            .members()
            .request(change, MEMBERS_TIMEOUT)
            .await
        {
            Ok(list) => MembersReply {
                list_json: serde_json::to_vec(&list)
                    .map_err(|e| Status::internal(e.to_string()))?,
                error: String::new(),
            },
            Err(error) => MembersReply {
                list_json: Vec::new(),
                error: format!("{}: {error}", parley_raft::Classified::code(&error)),
            },
        };
        Ok(Response::new(reply))
    }

    async fn lease_history(
        &self,
        request: Request<LeaseHistoryRequest>,
    ) -> Result<Response<LeaseHistoryReply>, Status> {
        let name = request.into_inner().name;
        let (applied, digest) = self
            .replica
            .read_applied(|state, applied| (applied.map(|id| id.index), state.digest()));
        let digest = digest.map_err(|e| Status::internal(e.to_string()))?;
        let Some(applied) = applied else {
            return Ok(Response::new(LeaseHistoryReply {
                applied_index: 0,
                digest,
                replayed_digest: String::new(),
                first_index: 0,
                entries_json: b"[]".to_vec(),
            }));
        };
        // A reader of its own: the log as persisted, up to the applied (so committed) index,
        // which no truncation touches.
        let mut reader = LogStore::<TypeConfig>::new(self.replica.db().clone());
        let entries = reader
            .try_get_log_entries(0..=applied)
            .await
            .map_err(unavailable)?;
        let mut state = State::default();
        let mut applied_commands = Vec::new();
        for entry in &entries {
            if let EntryPayload::Normal(batch) = &entry.payload {
                for command in &batch.commands {
                    let outcome = state.apply(command);
                    applied_commands.push((entry.log_id.index, command, outcome));
                }
            }
        }
        let history = crate::oracle::lease_history::lease_history(
            &name,
            applied_commands
                .iter()
                .map(|(index, command, outcome)| (*index, *command, outcome)),
        );
        Ok(Response::new(LeaseHistoryReply {
            applied_index: applied,
            digest,
            replayed_digest: state
                .digest()
                .map_err(|e| Status::internal(e.to_string()))?,
            first_index: entries.first().map_or(0, |entry| entry.log_id.index),
            entries_json: serde_json::to_vec(&history)
                .map_err(|e| Status::internal(e.to_string()))?,
        }))
    }

    async fn inspect(
        &self,
        request: Request<InspectRequest>,
    ) -> Result<Response<InspectReply>, Status> {
        let request = request.into_inner();
        let status = self.replica.status();
        let (term, snapshots_installed) = (status.term, status.snapshots_installed);
        // What the oracle asks about and the state retired is read from the archive, as the
        // HTTP API reads it; the retention is short enough here that completed chats retire
        // during a run.
        let missing: Vec<String> = self.replica.read_applied(|state, _| {
            request
                .chat_ids
                .iter()
                .chain(&request.activity_ids)
                .filter(|id| !state.activities.contains_key(*id))
                .cloned()
                .collect()
        });
        let mut retired = BTreeMap::new();
        for id in missing {
            if let Some(record) = self.replica.archived(&id).await.map_err(unavailable)? {
                retired.insert(id, record);
            }
        }
        let reply = self.replica.read_applied(|state, applied| {
            let chats: BTreeMap<&String, _> = request
                .chat_ids
                .iter()
                .filter_map(|id| {
                    let chat = state
                        .chats
                        .get(id)
                        .map(|c| &**c)
                        .or_else(|| retired.get(id).and_then(|r| r.chat.as_ref()))?;
                    Some((id, &chat.events))
                })
                .collect();
            let activities: BTreeMap<&String, _> = request
                .activity_ids
                .iter()
                .filter_map(|id| {
                    let activity = state
                        .activities
                        .get(id)
                        .map(|a| &**a)
                        .or_else(|| retired.get(id).map(|r| &r.activity))?;
                    Some((id, activity))
                })
                .collect();
            let agents: BTreeMap<&String, _> = request
                .agent_ids
                .iter()
                .filter_map(|id| state.agents.get(id).map(|a| (id, a)))
                .collect();
            let all = || {
                state
                    .activities
                    .values()
                    .map(|a| &**a)
                    .chain(retired.values().map(|r| &r.activity))
            };
            let count =
                |f: fn(&ActivityStatus) -> bool| all().filter(|a| f(&a.status)).count() as u64;
            Ok::<_, serde_json::Error>(InspectReply {
                applied_index: applied.map_or(0, |id| id.index),
                digest: state.digest()?,
                invariant_violation: state
                    .validate()
                    .err()
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                chats_json: serde_json::to_vec(&chats)?,
                term,
                assigned: count(|s| matches!(s, ActivityStatus::Assigned { .. })),
                offer_timeouts: all()
                    .flat_map(|a| &a.history)
                    .filter(|t| t.reason == "offer_timeout")
                    .count() as u64,
                activities_json: serde_json::to_vec(&activities)?,
                agents_json: serde_json::to_vec(&agents)?,
                completed: count(|s| matches!(s, ActivityStatus::Completed { .. })),
                snapshots_installed,
            })
        });
        reply
            .map(Response::new)
            .map_err(|e| Status::internal(e.to_string()))
    }
}
