//! One node's replica: the RocksDB stores, openraft, the proposer and the gRPC services, wired
//! together. The node binary and the chaos suite both build nodes from this.

use crate::state::{archive_key, Retired};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{InitializeError, RaftError};
use openraft::{ServerState, SnapshotPolicy};
use parley_storage::{AppliedState, Db, DbOptions, LogStore};
use serde::Serialize;
use tokio::sync::watch;

use crate::command::{Op, Outcome};
use crate::error::{ProposeError, ReplicaError};
use crate::island::{IslandJournalStatus, IslandServer, IslandStatus, LeaderContact};
use crate::membership::Members;
use crate::network::{Connector, Network, Peers};
use crate::probe::{Probes, Seen};
use crate::proposer::{Clock, Proposer, ProposerOptions};
use crate::relay::Relays;
use crate::route::RouteCheck;
use crate::server::{ClusterService, RaftService};
use crate::state::State;
pub use crate::types::StateStore;
use crate::types::{LogId, NodeId, NodeInfo, Raft, TypeConfig};

/// Everything a replica needs to start.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// The cluster's id, carried by every node-to-node call (see [`crate::route`]); a
    /// [`crate::route::valid_cluster_id`].
    pub cluster_id: String,
    /// This node's id; must be a key of `members`.
    pub id: NodeId,
    /// The members a new cluster is formed with, this node among them (see
    /// [`Replica::form_cluster`]); a node that joins an existing cluster leaves it empty. Once
    /// formed, the replicated membership is the truth.
    pub members: BTreeMap<NodeId, NodeInfo>,
    /// Directory of the RocksDB store.
    pub data_dir: PathBuf,
    /// Storage durability and I/O mode.
    pub db: DbOptions,
    /// Leader heartbeat interval, in milliseconds.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout, in milliseconds.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout, in milliseconds.
    pub election_timeout_max_ms: u64,
    /// A snapshot is built after this many log entries since the last one.
    pub snapshot_every_entries: u64,
    /// A snapshot is also built once this many bytes of log entries were appended since the
    /// last one (checked every [`SNAPSHOT_SIZE_CHECK_INTERVAL`]), so a log of large entries does
    /// not grow long between snapshots.
    pub snapshot_every_log_bytes: u64,
    /// Largest snapshot chunk sent in one RPC, in bytes.
    pub snapshot_chunk_bytes: u64,
    /// Log entries kept after a snapshot, so a briefly lagging follower catches up by log.
    pub log_entries_kept_after_snapshot: u64,
    /// Proposer tuning.
    pub proposer: ProposerOptions,
    /// How long without a leader (or, leading, without a quorum) before this node is an island
    /// (see [`crate::island`]).
    pub island_after: Duration,
}

/// The cluster id [`ReplicaOptions::new`] starts with.
pub const DEFAULT_CLUSTER_ID: &str = "parley";

impl ReplicaOptions {
    /// Options with defaults suited to a LAN for everything but identity and storage.
    pub fn new(id: NodeId, members: BTreeMap<NodeId, NodeInfo>, data_dir: PathBuf) -> Self {
        Self {
            cluster_id: DEFAULT_CLUSTER_ID.to_owned(),
            id,
            members,
            data_dir,
            db: DbOptions::default(),
            heartbeat_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 400,
            snapshot_every_entries: 10_000,
            snapshot_every_log_bytes: 64 * 1024 * 1024,
            snapshot_chunk_bytes: 1024 * 1024,
            log_entries_kept_after_snapshot: 1_000,
            proposer: ProposerOptions::default(),
            island_after: Duration::from_secs(10),
        }
    }
}

/// What a replica reports about itself.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaStatus {
    /// This node.
    pub id: NodeId,
    /// Current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Leader, follower, candidate or learner.
    pub role: &'static str,
    /// Index of the last log entry stored here.
    pub last_log_index: Option<u64>,
    /// Index of the last entry applied here.
    pub applied_index: Option<u64>,
    /// Index of the last entry in a snapshot here.
    pub snapshot_index: Option<u64>,
    /// Every member (voters and learners) with its details.
    pub members: BTreeMap<NodeId, NodeInfo>,
    /// The members that vote.
    pub voters: BTreeSet<NodeId>,
    /// Bytes of the snapshot file this node persisted or built last, the archive not
    /// included (0: none yet).
    pub snapshot_bytes: u64,
    /// Snapshots a leader sent that were installed here since start.
    pub snapshots_installed: u64,
    /// Log appends written here since start.
    pub log_appends: u64,
    /// WAL syncs those appends waited for since start (group commit: several appends share one).
    pub wal_syncs: u64,
    /// Forward RPCs this node sent to a leader since start.
    pub forward_rpcs: u64,
    /// Writes those forward RPCs carried.
    pub forwarded_writes: u64,
    /// Whether this node is an island, and its island epoch.
    #[serde(skip)]
    pub island: IslandStatus,
    /// The island journal's figures.
    #[serde(skip)]
    pub island_journal: IslandJournalStatus,
    /// What this node's probes say of every member (see [`crate::probe`]).
    #[serde(skip)]
    pub seen: BTreeMap<NodeId, Seen>,
}

/// How often the log's growth since the last snapshot is compared with
/// [`ReplicaOptions::snapshot_every_log_bytes`].
pub const SNAPSHOT_SIZE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Asks openraft for a snapshot whenever `bytes_max` bytes of log entries were appended since
/// the last snapshot (or since the last request); ends when Raft stops.
async fn snapshot_by_size(raft: Raft, db: Db, bytes_max: u64) {
    let mut base = db.log_bytes_appended();
    let mut last_snapshot = raft.metrics().borrow_watched().snapshot;
    loop {
        tokio::time::sleep(SNAPSHOT_SIZE_CHECK_INTERVAL).await;
        let snapshot = raft.metrics().borrow_watched().snapshot;
        let appended = db.log_bytes_appended();
        if snapshot != last_snapshot {
            last_snapshot = snapshot;
            base = appended;
            continue;
        }
        if appended.saturating_sub(base) >= bytes_max {
            tracing::info!(
                bytes = appended - base,
                "the log grew past its size bound since the last snapshot; building one"
            );
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            base = appended;
        }
    }
}

/// A running replica.
#[derive(Clone)]
pub struct Replica {
    id: NodeId,
    cluster_id: String,
    raft: Raft,
    store: StateStore,
    proposer: Proposer,
    db: Db,
    /// The members a new cluster is formed with (see [`Replica::form_cluster`]).
    bootstrap: BTreeMap<NodeId, NodeInfo>,
    relays: Relays,
    members: Members,
    peers: Peers,
    /// When a leader was last heard from, noted by the Raft server.
    contact: LeaderContact,
    /// Whether this node is an island.
    island: watch::Receiver<IslandStatus>,
    /// The bound of [`ReplicaOptions::island_after`].
    island_after: Duration,
    /// What every other member last answered to a probe.
    probes: Probes,
    /// The island's view and journal (see [`crate::island::serve`]).
    island_server: IslandServer,
    /// Longest a write waits, also for a merge of island writes.
    write_timeout: Duration,
}

impl Replica {
    /// Opens the stores under `options.data_dir` and starts Raft and the proposer on the current
    /// tokio runtime. Does not form the cluster; see [`Replica::form_cluster`].
    pub async fn open(
        options: ReplicaOptions,
        connector: Arc<dyn Connector>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ReplicaError> {
        let config = openraft::Config {
            cluster_name: options.cluster_id.clone(),
            // A node that was cut off asks before it campaigns: it does not raise the term and
            // depose a healthy leader when it comes back.
            enable_pre_vote: Some(true),
            heartbeat_interval: options.heartbeat_ms,
            election_timeout_min: options.election_timeout_min_ms,
            election_timeout_max: options.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_every_entries),
            snapshot_max_chunk_size: options.snapshot_chunk_bytes,
            max_in_snapshot_log_to_keep: options.log_entries_kept_after_snapshot,
            // The deadline of a whole snapshot transfer and install (openraft's default of
            // 200 ms fits no real snapshot); the receiver allows as long.
            install_snapshot_timeout: u64::try_from(
                crate::server::SNAPSHOT_RECEIVE_TIMEOUT.as_millis(),
            )
            .unwrap_or(u64::MAX),
            // Entries are group-committed batches; a smaller first try keeps catch-up RPCs
            // within the heartbeat-long deadline (see `network::APPEND_ENTRIES_BYTES_MAX`).
            max_payload_entries: 64,
            ..Default::default()
        };
        let config = Arc::new(config.validate()?);
        let db = Db::open(&options.data_dir, options.db)?;
        let log_store = LogStore::<TypeConfig>::new(db.clone());
        let store = StateStore::open(db.clone()).await?;
        if !crate::route::valid_cluster_id(&options.cluster_id) {
            return Err(ReplicaError::Membership(format!(
                "{:?} cannot name a cluster: use 1 to {} letters, digits, '-', '_' or '.'",
                options.cluster_id,
                crate::route::CLUSTER_ID_BYTES_MAX
            )));
        }
        let peers = Peers::new(connector, &options.cluster_id, options.id);
        let network = Network::new(options.id, peers.clone(), options.snapshot_chunk_bytes);
        let raft = Raft::new(options.id, config, network, log_store, store.clone()).await?;
        let relays = Relays::start(options.id, peers.clone(), &raft);
        tokio::spawn(snapshot_by_size(
            raft.clone(),
            db.clone(),
            options.snapshot_every_log_bytes.max(1),
        ));
        let island_server =
            IslandServer::open(options.id, db.clone(), store.clone(), clock.clone())?;
        let members = Members::new(
            options.id,
            raft.clone(),
            peers.clone(),
            store.clone(),
            island_server.clone(),
        );
        let write_timeout = options.proposer.write_timeout;
        let format: crate::proposer::WriteFormat = {
            let store = store.clone();
            Arc::new(move || {
                crate::version::log_format_at(store.read(|state, _| state.cluster_version.0))
            })
        };
        let proposer = Proposer::start(
            options.id,
            raft.clone(),
            peers.clone(),
            store.subscribe(),
            clock,
            format,
            options.proposer,
        );
        let probes = crate::probe::start(options.id, raft.clone(), peers.clone());
        let contact = LeaderContact::default();
        let island = crate::island::watch(
            raft.clone(),
            contact.clone(),
            probes.clone(),
            db.clone(),
            options.island_after,
        );
        tokio::spawn(crate::island::reach::watch(
            options.id,
            raft.clone(),
            probes.clone(),
            store.clone(),
            proposer.clone(),
            options.island_after,
        ));
        tokio::spawn(crate::island::merge_loop(
            island_server.clone(),
            proposer.clone(),
            island.clone(),
        ));
        tokio::spawn(crate::island::mirror::site_loop(
            options.id,
            raft.clone(),
            peers.clone(),
            probes.clone(),
            island_server.clone(),
            island.clone(),
        ));
        Ok(Self {
            id: options.id,
            cluster_id: options.cluster_id,
            raft,
            store,
            proposer,
            db,
            bootstrap: options.members,
            relays,
            members,
            peers,
            contact,
            island,
            island_after: options.island_after,
            probes,
            island_server,
            write_timeout,
        })
    }

    /// Forms a new cluster from the bootstrap members if this node has never been part of one.
    /// Every node may call this with the same members, in any order: the first log entry is the
    /// same on all of them. A node that already has state ignores it. A node joining an
    /// existing cluster never calls it: it waits to be added (see [`crate::membership`]).
    ///
    /// A cluster formed here starts at the cluster version every member of this release
    /// implements: its members all run it, so there is no older release to wait for. A
    /// background task raises it once every member answers (see [`crate::upgrade::finalize`]).
    pub async fn form_cluster(&self) -> Result<(), ReplicaError> {
        if !self.bootstrap.contains_key(&self.id) {
            return Err(ReplicaError::Membership(format!(
                "node {} is not among the members {:?}",
                self.id,
                self.bootstrap.keys().collect::<Vec<_>>()
            )));
        }
        match self.raft.initialize(self.bootstrap.clone()).await {
            Ok(()) => {
                tracing::info!(
                    members = self.bootstrap.len(),
                    "formed cluster from static membership"
                );
                tokio::spawn(crate::upgrade::raise_new_cluster(self.clone()));
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                tracing::debug!("cluster already formed; rejoining");
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotInMembers(e))) => {
                Err(ReplicaError::Membership(e.to_string()))
            }
            Err(RaftError::Fatal(fatal)) => Err(ReplicaError::Fatal(fatal)),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Whether this node is an island now, and its island epoch.
    pub fn island(&self) -> IslandStatus {
        *self.island.borrow()
    }

    /// A receiver that changes whenever this node becomes or stops being an island.
    pub fn subscribe_island(&self) -> watch::Receiver<IslandStatus> {
        self.island.clone()
    }

    /// The cluster this node belongs to.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The state-machine store (for backups: [`crate::backup::take`]).
    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// The openraft handle, for metrics and tests.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The proposer.
    pub fn proposer(&self) -> &Proposer {
        &self.proposer
    }

    /// The storage handle, for size figures.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Commits `op` through the leader (see [`Proposer::propose`]) or, while this node is an
    /// island, takes it into the island journal; see [`Replica::propose_marked`].
    pub async fn propose(&self, op: Op) -> Result<Outcome, ProposeError> {
        self.propose_marked(op).await.map(|(outcome, _)| outcome)
    }

    /// Like [`Replica::propose`], and says which island node took the write if it was taken
    /// in island mode: this node, or the node keeping its site's island journal (see
    /// [`crate::island::site`]). While island writes are being merged, a write waits (within
    /// the write timeout) for the merge, so no client reads a state without the island writes
    /// it was answered for.
    pub async fn propose_marked(&self, op: Op) -> Result<(Outcome, Option<NodeId>), ProposeError> {
        let status = self.island();
        if status.island() {
            return self.take_on_island(status, op).await;
        }
        if self.island_server.serving() {
            let mut serving = self.island_server.subscribe_serving();
            let merged = tokio::time::timeout(self.write_timeout, serving.wait_for(|s| !*s)).await;
            if !matches!(merged, Ok(Ok(_))) {
                return Err(ProposeError::Merging);
            }
        }
        self.proposer
            .propose(op)
            .await
            .map(|outcome| (outcome, None))
    }

    /// Takes `op` on this island: into this node's journal if it keeps its site's, otherwise
    /// through the keeper. While the keeper is undecided (a probe round after the site was cut
    /// off) the write waits, then is taken here.
    async fn take_on_island(
        &self,
        status: IslandStatus,
        op: Op,
    ) -> Result<(Outcome, Option<NodeId>), ProposeError> {
        let mut keeper = self.island_server.subscribe_keeper();
        let decided = tokio::time::timeout(
            crate::island::mirror::KEEPER_DECIDE_WAIT.min(self.write_timeout),
            async { keeper.wait_for(Option::is_some).await.map(|k| *k) },
        )
        .await;
        let keeper = match decided {
            Ok(Ok(Some(keeper))) => keeper,
            _ => self.id,
        };
        if keeper != self.id {
            let Some(addr) = crate::island::mirror::address(&self.raft, keeper) else {
                return Err(ProposeError::IslandKeeper {
                    keeper,
                    problem: "it is no longer a member".to_owned(),
                });
            };
            return crate::island::mirror::forward_take(
                &self.peers,
                &self.island_server,
                keeper,
                &addr,
                &op,
                self.write_timeout,
            )
            .await
            .map(|outcome| (outcome, Some(keeper)));
        }
        self.island_server
            .take(status.epoch, op)
            .await
            .map(|taken| (taken.outcome, Some(self.id)))
    }

    /// Runs `f` on the state this node serves: the island's view while it has one (see
    /// [`crate::island::serve`]), the locally applied state otherwise. Never held across an
    /// await.
    pub fn read<T>(&self, f: impl FnOnce(&State, Option<&LogId>) -> T) -> T {
        if let Some((state, applied)) = self.island_server.view() {
            return f(&state, applied.as_ref());
        }
        self.store.read(f)
    }

    /// Runs `f` on the locally applied (replicated) state, never the island's view: for what
    /// must be the same on every node at the same index (the state digest). Never held
    /// across an await.
    pub fn read_applied<T>(&self, f: impl FnOnce(&State, Option<&LogId>) -> T) -> T {
        self.store.read(f)
    }

    /// A receiver that changes whenever what [`Replica::read`] serves changed without an
    /// entry being applied: an island write was taken here, or the island's view was dropped.
    pub fn subscribe_island_view(&self) -> watch::Receiver<u64> {
        self.island_server.subscribe_changes()
    }

    /// The archived record of a retired activity (see `state::retention`), `None` if the
    /// activity was never retired here or its record expired.
    pub async fn archived(&self, activity_id: &str) -> Result<Option<Retired>, ReplicaError> {
        let Some(json) = self.store.archived(&archive_key(activity_id)).await? else {
            return Ok(None);
        };
        serde_json::from_str(&json).map(Some).map_err(|source| {
            ReplicaError::Storage(parley_storage::StoreError::Codec {
                what: "archived activity",
                source,
            })
        })
    }

    /// Changes whenever something is applied here.
    pub fn subscribe_applied(&self) -> watch::Receiver<AppliedState<TypeConfig>> {
        self.store.subscribe()
    }

    /// Queues an ephemeral event (typing) for every other member, best effort: dropped for a
    /// peer whose queue is full, each send bounded by a short deadline, failures ignored.
    pub fn relay(&self, chat_id: &str, json: Vec<u8>) {
        self.relays.send(&parley_proto::v1::Ephemeral {
            chat_id: chat_id.to_owned(),
            json,
        });
    }

    /// The channels to the other members.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Membership requests through this node (see [`crate::membership`]).
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// This node's position among the current members by id (0 first), `None` while it is
    /// not a member.
    pub fn rank(&self) -> Option<usize> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let rank = m
            .membership_config
            .membership()
            .nodes()
            .position(|(id, _)| *id == self.id);
        rank
    }

    /// The check every call to this node's gRPC services passes: meant for this node of this
    /// cluster and, with `require_certificate` (mutual TLS), from a caller whose certificate
    /// names it.
    pub fn route_check(&self, require_certificate: bool) -> RouteCheck {
        RouteCheck::new(self.cluster_id.clone(), self.id, require_certificate)
    }

    /// The gRPC services to host for peers.
    pub fn services(&self) -> (RaftService, ClusterService) {
        (
            RaftService::new(
                self.raft.clone(),
                self.contact.clone(),
                self.store.snapshot_dir().clone(),
            ),
            ClusterService::new(
                self.proposer.clone(),
                self.members.clone(),
                self.island.clone(),
                self.island_server.clone(),
            ),
        )
    }

    /// A consistent picture of this replica from openraft's metrics.
    pub fn status(&self) -> ReplicaStatus {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        ReplicaStatus {
            id: self.id,
            term: m.current_term,
            leader: m.current_leader,
            role: role_name(m.state),
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.as_ref().map(|id| id.index),
            snapshot_index: m.snapshot.as_ref().map(|id| id.index),
            members: m
                .membership_config
                .membership()
                .nodes()
                .map(|(id, node)| (*id, node.clone()))
                .collect(),
            voters: m.membership_config.membership().voter_ids().collect(),
            snapshot_bytes: self.store.snapshot_bytes(),
            snapshots_installed: self.store.snapshots_installed(),
            log_appends: self.db.log_appends(),
            wal_syncs: self.db.wal_syncs(),
            forward_rpcs: self.proposer.forward_stats().rpcs(),
            forwarded_writes: self.proposer.forward_stats().writes(),
            island: *self.island.borrow(),
            island_journal: self.island_server.status(),
            seen: m
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| {
                    let seen = if *id == self.id {
                        Seen {
                            reachable: Some(true),
                            island: Some(self.island.borrow().island()),
                        }
                    } else {
                        self.probes.seen(*id, self.island_after)
                    };
                    (*id, seen)
                })
                .collect(),
        }
    }

    /// Waits up to `within` until this node has applied `index` (nothing to wait for when it
    /// is `None`); whether it did.
    pub async fn wait_applied(&self, index: Option<u64>, within: Duration) -> bool {
        let mut applied = self.subscribe_applied();
        tokio::time::timeout(within, async {
            loop {
                if applied.borrow().last_applied.map(|id| id.index) >= index {
                    return true;
                }
                if applied.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    /// The commit index this node knows of.
    pub async fn committed_index(&self) -> Result<Option<u64>, ReplicaError> {
        Ok(self
            .raft
            .with_raft_state(|state| state.local_committed().map(|id| id.index))
            .await?)
    }

    /// Hands leadership to the most caught-up other voter if this node leads, and waits up to
    /// `within` for another node to take over: a leader that is shutting down costs the cluster
    /// no election timeout. Returns whether leadership moved (`false` also when this node did
    /// not lead or no voter could take over in time; shutting down goes on either way).
    pub async fn hand_over_leadership(&self, within: Duration) -> bool {
        let target = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            if m.current_leader != Some(self.id) {
                return false;
            }
            // The voter whose log matches the leader's furthest needs the fewest entries
            // before it can lead.
            m.membership_config
                .membership()
                .voter_ids()
                .filter(|id| *id != self.id)
                .max_by_key(|id| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).copied().flatten())
                        .map(|log_id| log_id.index)
                })
        };
        let Some(target) = target else {
            return false;
        };
        if let Err(error) = self.raft.trigger().transfer_leader(target).await {
            tracing::warn!(%error, target, "could not start the leadership transfer");
            return false;
        }
        let mut metrics = self.raft.server_metrics();
        let moved = tokio::time::timeout(within, async {
            loop {
                let leader = metrics.borrow_watched().current_leader;
                if leader.is_some_and(|leader| leader != self.id) {
                    return true;
                }
                if metrics.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false);
        if moved {
            tracing::info!(target, "handed leadership over before shutting down");
        } else {
            tracing::warn!(target, ?within, "leadership did not move in time");
        }
        moved
    }

    /// Stops Raft. In-flight writes fail with a retryable error.
    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft did not shut down cleanly");
        }
    }
}

/// A stable lowercase name for an openraft server state.
pub fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}
