//! Prometheus metrics of one node.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use parley_raft::replica::ReplicaStatus;

/// Labels of the write counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `committed`, `rejected` or `failed`.
    pub outcome: &'static str,
}

/// Labels of the TLS reload counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsReloadLabels {
    /// `peer` or `http`.
    pub material: &'static str,
    /// `changed` (new files in use) or `refused` (kept the old ones).
    pub outcome: &'static str,
}

/// Labels of the in-memory state size gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `activities`, `chats`, `chat_events`, `requests` or `timers`.
    pub kind: &'static str,
}

/// How much the in-memory replicated state holds, by kind (retention keeps it bounded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateSize {
    /// Activities in memory.
    pub activities: usize,
    /// Chats in memory.
    pub chats: usize,
    /// Events of the chats in memory.
    pub chat_events: usize,
    /// Idempotency keys of chat and callback starts.
    pub requests: usize,
    /// Pending timers.
    pub timers: usize,
}

impl StateSize {
    /// Counts `state`.
    pub fn of(state: &parley_raft::State) -> Self {
        StateSize {
            activities: state.activities.len(),
            chats: state.chats.len(),
            chat_events: state.chats.values().map(|c| c.events.len()).sum(),
            requests: state.requests.len(),
            timers: state.timers.len(),
        }
    }
}

/// The node's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    term: Gauge,
    leader_id: Gauge,
    is_leader: Gauge,
    island: Gauge,
    island_epoch: Gauge,
    island_journal_entries: Gauge,
    island_merged_writes: Counter,
    island_merge_refused: Counter,
    island_merge_conflicts: Counter,
    last_log_index: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    snapshot_index: Gauge,
    snapshot_bytes: Gauge,
    write_latency_seconds: Histogram,
    writes: Family<WriteLabels, Counter>,
    long_poll_waiters: Gauge,
    streams: Gauge,
    log_appends: Counter,
    snapshots_installed: Counter,
    wal_syncs: Counter,
    forward_rpcs: Counter,
    forwarded_writes: Counter,
    state_digests: Counter,
    state_entries: Family<StateLabels, Gauge>,
    delivery_wakeups: Counter,
    delivery_full_scans: Counter,
    delivery_feeds_checked: Counter,
    tls_reloads: Family<TlsReloadLabels, Counter>,
    peer_handshakes_refused: Counter,
    peer_tls: std::sync::OnceLock<std::sync::Arc<parley_raft::tls::PeerTls>>,
    /// Makes "bring the storage counters up to the replica's totals" atomic between concurrent
    /// scrapes, so no increment is counted twice.
    render_lock: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("parley");
        let term = Gauge::default();
        registry.register("raft_term", "Current Raft term", term.clone());
        let leader_id = Gauge::default();
        registry.register(
            "raft_leader_id",
            "Leader this node knows of (0: none)",
            leader_id.clone(),
        );
        let is_leader = Gauge::default();
        registry.register(
            "raft_is_leader",
            "1 when this node leads",
            is_leader.clone(),
        );
        let island = Gauge::default();
        registry.register(
            "island",
            "1 while this node is an island (no leader or quorum heard for island_after)",
            island.clone(),
        );
        let island_epoch = Gauge::default();
        registry.register(
            "island_epoch",
            "How many times this node became an island",
            island_epoch.clone(),
        );
        let island_journal_entries = Gauge::default();
        registry.register(
            "island_journal_entries",
            "Island writes in this node's journal not merged into the cluster yet",
            island_journal_entries.clone(),
        );
        let island_merged_writes = Counter::default();
        registry.register(
            "island_merged_writes",
            "Island writes this node merged into the cluster",
            island_merged_writes.clone(),
        );
        let island_merge_refused = Counter::default();
        registry.register(
            "island_merge_refused",
            "Island writes the cluster could not take at merge (each logged with why)",
            island_merge_refused.clone(),
        );
        let island_merge_conflicts = Counter::default();
        registry.register(
            "island_merge_conflicts",
            "Agents' island actions that lost at merge, kept as conflicts on their activities",
            island_merge_conflicts.clone(),
        );
        let last_log_index = Gauge::default();
        registry.register(
            "raft_last_log_index",
            "Last log index stored here",
            last_log_index.clone(),
        );
        let commit_index = Gauge::default();
        registry.register(
            "raft_commit_index",
            "Commit index known here",
            commit_index.clone(),
        );
        let applied_index = Gauge::default();
        registry.register(
            "raft_applied_index",
            "Last index applied here",
            applied_index.clone(),
        );
        let snapshot_index = Gauge::default();
        registry.register(
            "raft_snapshot_index",
            "Last index in a snapshot here",
            snapshot_index.clone(),
        );
        let snapshot_bytes = Gauge::default();
        registry.register(
            "raft_snapshot_bytes",
            "Bytes of the snapshot file this node persisted or built last, the archive not included (0: none)",
            snapshot_bytes.clone(),
        );
        let write_latency_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "write_latency_seconds",
            "Time from a client write's arrival to its commit",
            write_latency_seconds.clone(),
        );
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register("writes", "Client writes by outcome", writes.clone());
        let long_poll_waiters = Gauge::default();
        registry.register(
            "long_poll_waiters",
            "Clients waiting for chat events on this node",
            long_poll_waiters.clone(),
        );
        let streams = Gauge::default();
        registry.register(
            "streams",
            "WebSocket streams open on this node",
            streams.clone(),
        );
        let snapshots_installed = Counter::default();
        registry.register(
            "raft_snapshots_installed",
            "Snapshots a leader sent that were installed here (a node behind the leader's \
             compacted log catches up so)",
            snapshots_installed.clone(),
        );
        let log_appends = Counter::default();
        registry.register(
            "storage_log_appends",
            "Raft log appends written to RocksDB",
            log_appends.clone(),
        );
        let wal_syncs = Counter::default();
        registry.register(
            "storage_wal_syncs",
            "WAL fsyncs the log appends waited for (group commit: appends share one)",
            wal_syncs.clone(),
        );
        let forward_rpcs = Counter::default();
        registry.register(
            "forward_rpcs",
            "Forward RPCs this node sent to the leader (each a batch of writes)",
            forward_rpcs.clone(),
        );
        let forwarded_writes = Counter::default();
        registry.register(
            "forwarded_writes",
            "Client writes this node forwarded to the leader",
            forwarded_writes.clone(),
        );
        let state_digests = Counter::default();
        registry.register(
            "state_digests",
            "State digests computed for the cluster view (each encodes the whole state)",
            state_digests.clone(),
        );
        let delivery_wakeups = Counter::default();
        registry.register(
            "delivery_wakeups",
            "Times applied entries were delivered to this node's streams and long polls",
            delivery_wakeups.clone(),
        );
        let delivery_full_scans = Counter::default();
        registry.register(
            "delivery_full_scans",
            "Deliveries that compared every followed feed because the touch journal could not \
             say which changed (after a restart, a snapshot install or an overflow)",
            delivery_full_scans.clone(),
        );
        let delivery_feeds_checked = Counter::default();
        registry.register(
            "delivery_feeds_checked",
            "Followed feeds whose head deliveries compared",
            delivery_feeds_checked.clone(),
        );
        let state_entries = Family::<StateLabels, Gauge>::default();
        registry.register(
            "state_entries",
            "Entries of the replicated state held in memory, by kind",
            state_entries.clone(),
        );
        let tls_reloads = Family::<TlsReloadLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "TLS file reloads by material and outcome (refused: the files in use were kept)",
            tls_reloads.clone(),
        );
        let peer_handshakes_refused = Counter::default();
        registry.register(
            "peer_handshakes_refused",
            "Incoming peer connections refused at the TLS handshake (no, a foreign or an \
             expired certificate)",
            peer_handshakes_refused.clone(),
        );
        Self {
            registry,
            tls_reloads,
            peer_handshakes_refused,
            peer_tls: std::sync::OnceLock::new(),
            state_digests,
            state_entries,
            delivery_wakeups,
            delivery_full_scans,
            delivery_feeds_checked,
            term,
            leader_id,
            is_leader,
            island,
            island_epoch,
            island_journal_entries,
            island_merged_writes,
            island_merge_refused,
            island_merge_conflicts,
            last_log_index,
            commit_index,
            applied_index,
            snapshot_index,
            snapshot_bytes,
            write_latency_seconds,
            writes,
            long_poll_waiters,
            streams,
            log_appends,
            snapshots_installed,
            wal_syncs,
            forward_rpcs,
            forwarded_writes,
            render_lock: std::sync::Mutex::new(()),
        }
    }

    /// Records one client write.
    pub fn observe_write(&self, outcome: &'static str, seconds: f64) {
        self.writes.get_or_create(&WriteLabels { outcome }).inc();
        if outcome == "committed" {
            self.write_latency_seconds.observe(seconds);
        }
    }

    /// Sets the number of long-poll waiters.
    pub fn set_long_poll_waiters(&self, waiters: usize) {
        self.long_poll_waiters
            .set(i64::try_from(waiters).unwrap_or(i64::MAX));
    }

    /// Counts one delivery of applied entries: whether it compared every feed, and how many
    /// feeds it compared.
    pub fn count_delivery(&self, full_scan: bool, feeds_checked: usize) {
        self.delivery_wakeups.inc();
        if full_scan {
            self.delivery_full_scans.inc();
        }
        self.delivery_feeds_checked
            .inc_by(u64::try_from(feeds_checked).unwrap_or(u64::MAX));
    }

    /// Counts one reload of TLS files.
    pub fn count_tls_reload(&self, material: &'static str, outcome: &'static str) {
        self.tls_reloads
            .get_or_create(&TlsReloadLabels { material, outcome })
            .inc();
    }

    /// Reports `tls`'s refused handshakes from now on.
    pub fn watch_peer_tls(&self, tls: std::sync::Arc<parley_raft::tls::PeerTls>) {
        let _ = self.peer_tls.set(tls);
    }

    /// Counts one state digest computed for the cluster view.
    pub fn count_state_digest(&self) {
        self.state_digests.inc();
    }

    /// Sets the number of open WebSocket streams.
    pub fn set_streams(&self, streams: usize) {
        self.streams.set(i64::try_from(streams).unwrap_or(i64::MAX));
    }

    /// Renders the text exposition, after refreshing the Raft gauges from `status`.
    pub fn render(
        &self,
        status: &ReplicaStatus,
        commit_index: Option<u64>,
        size: StateSize,
    ) -> Result<String, std::fmt::Error> {
        let _render = self
            .render_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let as_gauge = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        self.term.set(as_gauge(Some(status.term)));
        self.leader_id.set(as_gauge(status.leader).max(0));
        self.is_leader
            .set(i64::from(status.leader == Some(status.id)));
        self.island.set(i64::from(status.island.island()));
        self.island_epoch.set(as_gauge(Some(status.island.epoch)));
        self.island_journal_entries
            .set(as_gauge(Some(status.island_journal.journal_entries)));
        self.last_log_index.set(as_gauge(status.last_log_index));
        self.commit_index.set(as_gauge(commit_index));
        self.applied_index.set(as_gauge(status.applied_index));
        self.snapshot_index.set(as_gauge(status.snapshot_index));
        self.snapshot_bytes
            .set(as_gauge(Some(status.snapshot_bytes)));
        for (kind, count) in [
            ("activities", size.activities),
            ("chats", size.chats),
            ("chat_events", size.chat_events),
            ("requests", size.requests),
            ("timers", size.timers),
        ] {
            self.state_entries
                .get_or_create(&StateLabels { kind })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let refused = self.peer_tls.get().map_or(0, |tls| tls.refused_total());
        for (counter, total) in [
            (&self.peer_handshakes_refused, refused),
            (&self.log_appends, status.log_appends),
            (&self.snapshots_installed, status.snapshots_installed),
            (&self.wal_syncs, status.wal_syncs),
            (&self.forward_rpcs, status.forward_rpcs),
            (&self.forwarded_writes, status.forwarded_writes),
            (
                &self.island_merged_writes,
                status.island_journal.merged_total,
            ),
            (
                &self.island_merge_refused,
                status.island_journal.refused_total,
            ),
            (
                &self.island_merge_conflicts,
                status.island_journal.conflicts_total,
            ),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
