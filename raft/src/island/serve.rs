//! Serving as an island: the island's view of the state, its journal, and the merge once a
//! leader is heard again (docs/ARCHITECTURE.md "Island mode").
//!
//! While this node is an island, [`IslandServer::take`] answers the writes an island takes
//! (`state::island_takes`): each is stamped with the hybrid logical clock, applied to a copy of
//! the island's view (the applied state with routing paused) and appended to the island
//! journal, synced, before the copy is published and the write answered. Reads are served from
//! the view while there is one ([`IslandServer::view`]).
//!
//! When a leader is heard again, [`merge_loop`] replays the journal through the log in chunks
//! and truncates what the cluster applied; once the journal is empty the view is dropped and
//! reads and writes go to the replicated state again. Writes that arrive while a merge runs
//! wait for it (within the write timeout), so a client never reads a state without its own
//! island writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use parley_storage::{Db, Journal, JournalEntry};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use super::{Hlc, IslandStatus};
use crate::command::{IslandChunk, IslandWrite, Op, Outcome, Rejection};
use crate::error::{ProposeError, ReplicaError};
use crate::limits;
use crate::proposer::{Clock, Proposer};
use crate::state::State;
use crate::types::{LogId, NodeId, StateStore};

/// The largest clock offset a remote stamp may have, in ms.
pub const HLC_MAX_OFFSET_MS: u64 = 500;

/// How often the merge task looks again when nothing woke it.
const MERGE_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How long the merge task waits after a failed attempt.
const MERGE_RETRY_DELAY: Duration = Duration::from_secs(1);

/// How long a node whose view mirrored its site's keeper keeps that view once connected again,
/// waiting for the keeper's merge, before it serves the replicated state without it.
const KEEPER_MERGE_WAIT: Duration = Duration::from_secs(30);

/// The cluster version merges need; below it an island serves nothing.
const MERGE_CLUSTER_VERSION: u32 = 2;

/// One record of the island journal (also what `Cluster.IslandRecords` sends).
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    /// The island epoch the write was taken in.
    pub epoch: u64,
    /// The write.
    pub write: IslandWrite,
}

/// Of a view that mirrors its site's keeper (see [`crate::island::site`]): whose journal, and
/// how far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mirror {
    /// The node keeping the site's journal.
    keeper: NodeId,
    /// The position after the last of its records applied to the view.
    next: u64,
}

/// What a keeper's journal holds from a position on (the answer to `Cluster.IslandRecords`).
#[derive(Debug, Default)]
pub struct Records {
    /// The journal's first position.
    pub first: u64,
    /// Records from `max(from, first)` on.
    pub records: Vec<JournalEntry>,
    /// The position after the last record.
    pub next: u64,
}

/// A write taken: its outcome, and the journal's next position once it was taken.
#[derive(Debug)]
pub struct Taken {
    /// The write's result.
    pub outcome: Outcome,
    /// The position after the write (or, when nothing was journaled, the journal's end).
    pub journal_next: u64,
}

/// The island's view: the state it serves from.
#[derive(Clone)]
struct View {
    /// The island epoch whose writes it takes.
    epoch: u64,
    /// The applied log id it forked at.
    applied: Option<LogId>,
    /// The fork with every unmerged journal write applied.
    state: Arc<State>,
    /// While this node forwards to its site's keeper: the keeper's records mirrored so far.
    mirror: Option<Mirror>,
}

/// What the island's side of a node reports, for metrics and the cluster view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IslandJournalStatus {
    /// Writes in the journal not merged yet.
    pub journal_entries: u64,
    /// Island writes merged into the cluster since start.
    pub merged_total: u64,
    /// Island writes the merged state could not take since start (each logged).
    pub refused_total: u64,
    /// Agents' island actions kept as conflicts at merge since start (each logged).
    pub conflicts_total: u64,
    /// While an island: the node keeping its site's island journal (see
    /// [`crate::island::site`]).
    pub keeper: Option<NodeId>,
}

/// A node's island side. Cheap to clone.
#[derive(Clone)]
pub struct IslandServer {
    id: NodeId,
    journal: Journal,
    store: StateStore,
    clock: Arc<dyn Clock>,
    view: Arc<RwLock<Option<View>>>,
    /// Serializes island writes and view changes (positions are given in order); holds the
    /// clock, taken out while a blocking call runs.
    writer: Arc<Mutex<Option<Hlc<Db>>>>,
    /// Whether a view is served, for writers waiting for a merge.
    serving: watch::Sender<bool>,
    /// Counts changes of the view (island writes taken, the view dropped), so delivery can
    /// wake on them: they change what reads see without anything being applied.
    changes: watch::Sender<u64>,
    merged_total: Arc<AtomicU64>,
    refused_total: Arc<AtomicU64>,
    conflicts_total: Arc<AtomicU64>,
    /// The island epoch of the last write taken into this node's own journal (0: none since
    /// start), for the keeper rule.
    last_taken_epoch: Arc<AtomicU64>,
    /// While this node is an island: the node keeping its site's island journal (itself or
    /// the one it forwards to; see [`crate::island::site`]).
    keeper: watch::Sender<Option<NodeId>>,
    /// For blocking calls (the clock's persisted bound), run as the database's I/O mode says.
    db: Db,
}

fn journal_error(error: impl std::fmt::Display) -> ProposeError {
    ProposeError::Journal(error.to_string())
}

impl IslandServer {
    /// The island side of the node whose database is `db`. Blocking (reads the journal's bounds
    /// and the clock's bound); runs once at start-up.
    pub fn open(
        id: NodeId,
        db: Db,
        store: StateStore,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ReplicaError> {
        let journal = Journal::open(db.clone())?;
        let hlc = Hlc::open(db.clone(), HLC_MAX_OFFSET_MS)?;
        let unmerged = !journal.bounds().is_empty();
        Ok(Self {
            id,
            journal,
            store,
            clock,
            view: Arc::new(RwLock::new(None)),
            writer: Arc::new(Mutex::new(Some(hlc))),
            serving: watch::Sender::new(unmerged),
            changes: watch::Sender::new(0),
            merged_total: Arc::default(),
            refused_total: Arc::default(),
            conflicts_total: Arc::default(),
            last_taken_epoch: Arc::default(),
            keeper: watch::Sender::new(None),
            db,
        })
    }

    /// The island's view and the log id it forked at, while reads are served from one.
    pub fn view(&self) -> Option<(Arc<State>, Option<LogId>)> {
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|v| (Arc::clone(&v.state), v.applied))
    }

    /// Whether a view is served now (writes wait for its merge).
    pub fn serving(&self) -> bool {
        *self.serving.borrow()
    }

    /// Whether writes must wait for a merge (a view is served); changes when it ends.
    pub fn subscribe_serving(&self) -> watch::Receiver<bool> {
        self.serving.subscribe()
    }

    /// A receiver that changes whenever the view changed: an island write was taken, or the
    /// view was dropped after the merge.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// What it reports.
    pub fn status(&self) -> IslandJournalStatus {
        IslandJournalStatus {
            journal_entries: self.journal.bounds().len(),
            merged_total: self.merged_total.load(Ordering::Relaxed),
            refused_total: self.refused_total.load(Ordering::Relaxed),
            conflicts_total: self.conflicts_total.load(Ordering::Relaxed),
            keeper: self.keeper(),
        }
    }

    /// The node keeping this node's site's island journal, while this node is an island.
    pub fn keeper(&self) -> Option<NodeId> {
        *self.keeper.borrow()
    }

    /// A receiver of the keeper, for writes waiting until it is decided.
    pub fn subscribe_keeper(&self) -> watch::Receiver<Option<NodeId>> {
        self.keeper.subscribe()
    }

    /// Publishes the keeper (see [`crate::island::mirror::site_loop`]).
    pub fn set_keeper(&self, keeper: Option<NodeId>) {
        self.keeper
            .send_if_modified(|k| std::mem::replace(k, keeper) != keeper);
    }

    /// Whether this node keeps its site's island journal now.
    pub fn keeps_journal(&self) -> bool {
        self.keeper() == Some(self.id)
    }

    /// Whether this node's own journal holds writes of island epoch `epoch` (a keeper with
    /// writes of its current epoch keeps them; see [`crate::island::site::keeper`]).
    pub fn keeps_writes(&self, epoch: u64) -> bool {
        !self.journal.bounds().is_empty() && self.last_taken_epoch.load(Ordering::Relaxed) == epoch
    }

    /// Takes `op` as island epoch `epoch`: answered once it is in the journal, synced. Writes
    /// an island does not take are refused with [`ProposeError::Island`].
    pub async fn take(&self, epoch: u64, op: Op) -> Result<Taken, ProposeError> {
        if let Err(Rejection::Island { what }) = crate::state::island_takes(&op) {
            return Err(ProposeError::Island { what });
        }
        let mut writer = self.writer.lock().await;
        if self.journal.bounds().len() >= limits::ISLAND_JOURNAL_ENTRIES_MAX {
            return Err(ProposeError::Island {
                what: format!(
                    "more writes: its island journal is full ({} unmerged writes)",
                    limits::ISLAND_JOURNAL_ENTRIES_MAX
                ),
            });
        }
        let view = self.view_for(epoch).await?;
        if view.state.cluster_version.0 < MERGE_CLUSTER_VERSION {
            return Err(ProposeError::Island {
                what: format!(
                    "writes: island mode needs cluster version {MERGE_CLUSTER_VERSION} \
                     (`parley ctl upgrade finalize` raises it once every member runs a release \
                     that has it)"
                ),
            });
        }
        let hlc = writer
            .take()
            .ok_or_else(|| journal_error("the island clock was lost in an earlier failure"))?;
        let physical_ms = self.clock.now_ms();
        let (hlc, stamp) = self
            .db
            .blocking(move || {
                let mut hlc = hlc;
                let stamp = hlc.now(physical_ms);
                (hlc, stamp)
            })
            .await
            .map_err(journal_error)?;
        *writer = Some(hlc);
        let stamp = stamp.map_err(journal_error)?;
        let mut write = IslandWrite {
            position: self.journal.bounds().next,
            hlc: stamp,
            at_ms: physical_ms,
            op,
            seq: None,
            agent: None,
        };
        let mut next = State::clone(&view.state);
        let outcome = next.apply_island(self.id, epoch, &mut write);
        match outcome {
            Outcome::Rejected(Rejection::Island { what }) => {
                return Err(ProposeError::Island { what })
            }
            // A rejection or a replay changes nothing: nothing to keep.
            Outcome::Rejected(_)
            | Outcome::ChatStarted { replayed: true, .. }
            | Outcome::MessagePosted { replayed: true, .. }
            | Outcome::CallbackRequested { replayed: true, .. } => {
                return Ok(Taken {
                    outcome,
                    journal_next: self.journal.bounds().next,
                })
            }
            _ => {}
        }
        let record = serde_json::to_vec(&Record { epoch, write }).map_err(journal_error)?;
        self.journal
            .append(vec![record])
            .await
            .map_err(journal_error)?;
        self.last_taken_epoch.store(epoch, Ordering::Relaxed);
        self.publish(View {
            state: Arc::new(next),
            ..view
        });
        self.changes.send_modify(|n| *n += 1);
        drop(writer);
        Ok(Taken {
            outcome,
            journal_next: self.journal.bounds().next,
        })
    }

    /// The records of this node's journal from `from` on (at most a merge chunk's worth),
    /// waiting up to `wait` for one when there is none yet.
    pub async fn records(&self, from: u64, wait: Duration) -> Result<Records, String> {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let bounds = self.journal.bounds();
            let from = from.max(bounds.first);
            if from < bounds.next {
                let records = self
                    .journal
                    .read(
                        from,
                        limits::ISLAND_CHUNK_WRITES_MAX,
                        limits::ISLAND_CHUNK_BYTES_MAX - 1024,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let next = records.last().map_or(from, |r| r.position + 1);
                return Ok(Records {
                    first: bounds.first,
                    records,
                    next,
                });
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    return Ok(Records {
                        first: bounds.first,
                        records: Vec::new(),
                        next: bounds.next.max(from),
                    })
                }
            }
        }
    }

    /// Makes the view one that mirrors `keeper`'s journal in island epoch `epoch` (built from
    /// this node's applied state and own journal when it is not one yet); the position from
    /// which the keeper's records are wanted next.
    pub async fn mirror_from(&self, epoch: u64, keeper: NodeId) -> Result<u64, ProposeError> {
        let _writer = self.writer.lock().await;
        let current = self
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(View {
            epoch: e,
            mirror: Some(mirror),
            ..
        }) = current
        {
            if e == epoch && mirror.keeper == keeper {
                return Ok(mirror.next);
            }
        }
        let mut view = self.rebuild(epoch).await?;
        view.mirror = Some(Mirror { keeper, next: 0 });
        self.publish(view);
        self.changes.send_modify(|n| *n += 1);
        tracing::info!(
            epoch,
            keeper,
            "mirroring the island journal of this site's keeper"
        );
        Ok(0)
    }

    /// Applies `keeper`'s records (its journal from `first`, up to `next`) to the view, if the
    /// view mirrors `keeper` in `epoch`.
    pub async fn apply_mirrored(
        &self,
        epoch: u64,
        keeper: NodeId,
        first: u64,
        records: Vec<JournalEntry>,
        next: u64,
    ) -> Result<(), String> {
        let _writer = self.writer.lock().await;
        let Some(view) = self
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            return Ok(());
        };
        let Some(mirror) = view
            .mirror
            .filter(|m| m.keeper == keeper && view.epoch == epoch)
        else {
            return Ok(());
        };
        if first > mirror.next && mirror.next > 0 {
            // Records between were merged and truncated: the cluster has them, this view
            // gets them once it follows the cluster again.
            tracing::info!(
                keeper,
                from = mirror.next,
                first,
                "records of the keeper were merged before this node mirrored them"
            );
        }
        if next <= mirror.next {
            return Ok(());
        }
        let mut state = State::clone(&view.state);
        let merged = state.islands_merged.get(&keeper).copied().unwrap_or(0);
        for entry in &records {
            if entry.position < mirror.next || entry.position < merged {
                continue;
            }
            let mut record = decode(entry)?;
            if let Outcome::Rejected(rejection) =
                state.apply_island(keeper, record.epoch, &mut record.write)
            {
                tracing::warn!(
                    keeper,
                    position = entry.position,
                    %rejection,
                    "a write of the site's keeper does not apply to this node's island view"
                );
            }
        }
        self.publish(View {
            state: Arc::new(state),
            mirror: Some(Mirror { keeper, next }),
            ..view
        });
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Waits (up to `wait`) until the view holds `keeper`'s records before `next`; whether it
    /// does.
    pub async fn wait_mirrored(&self, keeper: NodeId, next: u64, wait: Duration) -> bool {
        let mut changes = self.changes.subscribe();
        let held = || {
            self.view
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .and_then(|v| v.mirror)
                .is_some_and(|m| m.keeper == keeper && m.next >= next)
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if held() {
                return true;
            }
            if !matches!(
                tokio::time::timeout_at(deadline, changes.changed()).await,
                Ok(Ok(()))
            ) {
                return held();
            }
        }
    }

    /// The keeper this node's view mirrors, and how far, if it mirrors one.
    pub fn mirrored(&self) -> Option<(NodeId, u64)> {
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|v| v.mirror)
            .map(|m| (m.keeper, m.next))
    }

    fn publish(&self, view: View) {
        *self.view.write().unwrap_or_else(PoisonError::into_inner) = Some(view);
        self.serving
            .send_if_modified(|serving| !std::mem::replace(serving, true));
    }

    /// Builds the view of `epoch` unless there is one, holding the writer lock so no write is
    /// applied to a view that a concurrent build then replaces.
    async fn ensure_view(&self, epoch: u64) -> Result<(), ProposeError> {
        let _writer = self.writer.lock().await;
        self.view_for(epoch).await.map(|_| ())
    }

    /// The view writes of `epoch` go to, built when there is none or it is of another epoch.
    /// Called with the writer lock held.
    async fn view_for(&self, epoch: u64) -> Result<View, ProposeError> {
        let current = self
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match current {
            Some(view) if view.epoch == epoch && view.mirror.is_none() => Ok(view),
            _ => {
                let view = self.rebuild(epoch).await?;
                self.publish(view.clone());
                Ok(view)
            }
        }
    }

    /// A view forked from the applied state now, with every journal write it did not merge
    /// yet applied on top, each with the sequence number its client was answered with.
    async fn rebuild(&self, epoch: u64) -> Result<View, ProposeError> {
        let (mut state, applied) = self.store.read(|s, applied| (s.clone(), applied.copied()));
        state.on_island_view = true;
        let mut from = state
            .islands_merged
            .get(&self.id)
            .copied()
            .unwrap_or(0)
            .max(self.journal.bounds().first);
        loop {
            let entries = self
                .journal
                .read(from, 1024, limits::ISLAND_CHUNK_BYTES_MAX)
                .await
                .map_err(journal_error)?;
            let Some(last) = entries.last() else { break };
            from = last.position + 1;
            for entry in &entries {
                let mut record = decode(entry).map_err(journal_error)?;
                let outcome = state.apply_island(self.id, record.epoch, &mut record.write);
                if let Outcome::Rejected(rejection) = outcome {
                    tracing::warn!(
                        position = entry.position,
                        %rejection,
                        "an unmerged island write does not apply to the rebuilt island view"
                    );
                }
            }
        }
        tracing::info!(epoch, from = ?applied, "island view built");
        Ok(View {
            epoch,
            applied,
            state: Arc::new(state),
            mirror: None,
        })
    }

    /// Drops the view once nothing is left to merge and this node is not an island. A view
    /// that mirrors its site's keeper is kept until the cluster merged what it mirrored, or
    /// until `keeper_wait_over` (the keeper may never come back).
    async fn end_view(&self, island: &watch::Receiver<IslandStatus>, keeper_wait_over: bool) {
        let _writer = self.writer.lock().await;
        if island.borrow().island() || !self.journal.bounds().is_empty() {
            return;
        }
        if let Some((keeper, next)) = self.mirrored() {
            let merged = self
                .store
                .read(|s, _| s.islands_merged.get(&keeper).copied().unwrap_or(0));
            if merged < next && !keeper_wait_over {
                return;
            }
        }
        let had = self
            .view
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .is_some();
        if had {
            tracing::info!("island writes merged; serving the replicated state again");
            self.changes.send_modify(|n| *n += 1);
        }
        self.serving.send_if_modified(std::mem::take);
    }

    /// Proposes the next chunk of the journal; whether it was applied.
    async fn merge_next(&self, proposer: &Proposer) -> Result<bool, String> {
        let first = self.journal.bounds().first;
        // Room for the chunk's own fields around the writes.
        let bytes_max = limits::ISLAND_CHUNK_BYTES_MAX - 1024;
        let entries = self
            .journal
            .read(first, limits::ISLAND_CHUNK_WRITES_MAX, bytes_max)
            .await
            .map_err(|e| e.to_string())?;
        let mut writes = Vec::with_capacity(entries.len());
        let mut chunk_epoch = None;
        for entry in &entries {
            let record = decode(entry)?;
            if chunk_epoch.is_some_and(|epoch| epoch != record.epoch) {
                break;
            }
            chunk_epoch = Some(record.epoch);
            writes.push(record.write);
        }
        let Some(epoch) = chunk_epoch else {
            return Ok(false);
        };
        let count = writes.len();
        let outcome = proposer
            .propose(Op::MergeIsland(IslandChunk {
                origin: self.id,
                epoch,
                writes,
            }))
            .await
            .map_err(|e| e.to_string())?;
        match outcome {
            Outcome::IslandMerged {
                merged,
                skipped,
                refused,
                conflicts,
                next_position,
            } => {
                self.merged_total
                    .fetch_add(u64::from(merged), Ordering::Relaxed);
                self.conflicts_total
                    .fetch_add(u64::from(conflicts), Ordering::Relaxed);
                self.refused_total
                    .fetch_add(refused.len() as u64, Ordering::Relaxed);
                for write in &refused {
                    tracing::warn!(
                        position = write.position,
                        rejection = %write.rejection,
                        "the cluster could not take an island write"
                    );
                }
                tracing::info!(
                    epoch,
                    count,
                    merged,
                    skipped,
                    refused = refused.len(),
                    conflicts,
                    "island writes merged"
                );
                self.journal
                    .truncate_before(next_position)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(true)
            }
            Outcome::Rejected(rejection) => Err(format!("the merge was refused: {rejection}")),
            other => Err(format!("the merge was answered {other:?}")),
        }
    }
}

fn decode(entry: &JournalEntry) -> Result<Record, String> {
    serde_json::from_slice(&entry.bytes).map_err(|e| {
        format!(
            "island journal entry {} cannot be read: {e}",
            entry.position
        )
    })
}

/// Keeps the island side in step with the island status: builds the view when this node
/// becomes an island (also after a restart with unmerged writes), merges the journal once a
/// leader is heard again, and drops the view when everything is merged. Runs until the
/// island status channel closes.
pub async fn merge_loop(
    server: IslandServer,
    proposer: Proposer,
    mut island: watch::Receiver<IslandStatus>,
) {
    let mut connected_since: Option<tokio::time::Instant> = None;
    loop {
        let status = *island.borrow_and_update();
        let bounds = server.journal.bounds();
        if status.island() {
            connected_since = None;
        } else if connected_since.is_none() {
            connected_since = Some(tokio::time::Instant::now());
        }
        let wait = if status.island() {
            if server.keeper().is_some_and(|keeper| keeper != server.id) {
                // Mirroring the site's keeper: its view is built by the site loop.
                MERGE_POLL_INTERVAL
            } else if let Err(error) = server.ensure_view(status.epoch).await {
                tracing::warn!(%error, "building the island view");
                MERGE_RETRY_DELAY
            } else {
                MERGE_POLL_INTERVAL
            }
        } else if bounds.is_empty() {
            let keeper_wait_over =
                connected_since.is_some_and(|since| since.elapsed() >= KEEPER_MERGE_WAIT);
            server.end_view(&island, keeper_wait_over).await;
            MERGE_POLL_INTERVAL
        } else {
            if server.view().is_none() {
                if let Err(error) = server.ensure_view(status.epoch).await {
                    tracing::warn!(%error, "building the island view to merge from");
                }
            }
            match server.merge_next(&proposer).await {
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%error, "merging island writes; will retry");
                    MERGE_RETRY_DELAY
                }
            }
        };
        // Woken by a change of the island status or the poll interval; ends with the channel.
        if let Ok(Err(_)) = tokio::time::timeout(wait, island.changed()).await {
            return;
        }
    }
}
