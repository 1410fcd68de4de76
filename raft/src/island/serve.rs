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

/// The cluster version merges need; below it an island serves nothing.
const MERGE_CLUSTER_VERSION: u32 = 2;

/// One record of the island journal.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The island epoch the write was taken in.
    epoch: u64,
    /// The write.
    write: IslandWrite,
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
        let hlc = Hlc::open(db, HLC_MAX_OFFSET_MS)?;
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
        }
    }

    /// Takes `op` as island epoch `epoch`: answered once it is in the journal, synced. Writes
    /// an island does not take are refused with [`ProposeError::Island`].
    pub async fn take(&self, epoch: u64, op: Op) -> Result<Outcome, ProposeError> {
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
        let (hlc, stamp) = tokio::task::spawn_blocking(move || {
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
            | Outcome::CallbackRequested { replayed: true, .. } => return Ok(outcome),
            _ => {}
        }
        let record = serde_json::to_vec(&Record { epoch, write }).map_err(journal_error)?;
        self.journal
            .append(vec![record])
            .await
            .map_err(journal_error)?;
        self.publish(View {
            state: Arc::new(next),
            ..view
        });
        self.changes.send_modify(|n| *n += 1);
        drop(writer);
        Ok(outcome)
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
            Some(view) if view.epoch == epoch => Ok(view),
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
        state.routing_paused = true;
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
        })
    }

    /// Drops the view once nothing is left to merge and this node is not an island.
    async fn end_view(&self, island: &watch::Receiver<IslandStatus>) {
        let _writer = self.writer.lock().await;
        if island.borrow().island() || !self.journal.bounds().is_empty() {
            return;
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
                next_position,
            } => {
                self.merged_total
                    .fetch_add(u64::from(merged), Ordering::Relaxed);
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
    loop {
        let status = *island.borrow_and_update();
        let bounds = server.journal.bounds();
        let wait = if status.island() {
            if let Err(error) = server.ensure_view(status.epoch).await {
                tracing::warn!(%error, "building the island view");
                MERGE_RETRY_DELAY
            } else {
                MERGE_POLL_INTERVAL
            }
        } else if bounds.is_empty() {
            server.end_view(&island).await;
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
