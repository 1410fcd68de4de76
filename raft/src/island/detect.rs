//! Island detection: whether this node is cut off from its cluster's quorum.
//!
//! A follower notes when it last heard from a leader ([`LeaderContact`], noted by the Raft
//! server on every AppendEntries a leader sent that was not refused for its vote); a leader
//! knows when a quorum last acknowledged it (openraft's `last_quorum_acked`). A node that has
//! had neither for `island_after` is an **island**; it stops being one as soon as it hears from
//! a leader again (or leads with a quorum). A follower whose leader says (in its latest probe
//! answer, [`crate::probe`]) that it is an island is one too: its leader reaches no quorum, so
//! neither does it (a site cut off with the old leader in it).
//! A leader that is the only voter is its own quorum: a single-node cluster is never an island. Every time a node becomes an island it starts a new
//! **island epoch**, counted per node and persisted before it is published, so an epoch never
//! repeats across restarts (the island journal names its writes by origin node and epoch).
//!
//! [`Detector`] is the pure rule; [`watch`] runs it every [`ISLAND_CHECK_INTERVAL`] on a
//! replica and publishes [`IslandStatus`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{Instant as _, ServerState};
use parley_storage::Db;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::probe::{Probes, PROBE_INTERVAL};
use crate::types::Raft;

/// How recent a probe answer of the leader must be to count (two probe rounds).
const LEADER_PROBE_FRESH: Duration = Duration::from_secs(2 * PROBE_INTERVAL.as_secs());

/// How often a node checks whether it is an island.
pub const ISLAND_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// The node-local key of the last island epoch.
const EPOCH_KEY: &str = "island_epoch";

/// When this node last heard from a leader; shared by the Raft server (which notes it) and the
/// island watch (which reads it). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct LeaderContact(Arc<Mutex<Option<Instant>>>);

impl LeaderContact {
    /// Notes that a leader was heard from now.
    pub fn note(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// When a leader was last heard from, if ever since start.
    pub fn last(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether a node is an island, as published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IslandStatus {
    /// Since when it is an island; `None` while it is connected.
    pub since: Option<Instant>,
    /// Its island epoch: the number of times it became an island (the current one while it is
    /// one, the last one otherwise; 0 before the first).
    pub epoch: u64,
}

impl IslandStatus {
    /// Whether the node is an island now.
    pub fn island(&self) -> bool {
        self.since.is_some()
    }
}

/// What the detector looks at, read at one instant.
#[derive(Clone, Copy, Debug)]
pub struct Signals {
    /// Now.
    pub now: Instant,
    /// When the node started watching (a node that never heard from a leader counts from it).
    pub started: Instant,
    /// Whether it leads.
    pub leading: bool,
    /// When a quorum last acknowledged it, if it leads.
    pub quorum_acked: Option<Instant>,
    /// When it last heard from a leader.
    pub leader_contact: Option<Instant>,
    /// Whether the leader it follows said it was an island in a recent probe answer.
    pub leader_island: bool,
}

/// The island rule, pure: connected while a leader (or, leading, a quorum) was heard from within
/// `island_after`; an island otherwise.
#[derive(Clone, Copy, Debug)]
pub struct Detector {
    island_after: Duration,
}

impl Detector {
    /// A detector with the given bound.
    pub fn new(island_after: Duration) -> Self {
        Self { island_after }
    }

    /// Whether a node with `signals` is cut off from the quorum.
    pub fn cut_off(&self, signals: &Signals) -> bool {
        let heard = if signals.leading {
            // A leader's own contact with a quorum; until a quorum acked it, the last contact it
            // had as a follower (a new leader has just been elected by a quorum).
            signals.quorum_acked.or(signals.leader_contact)
        } else {
            signals.leader_contact
        };
        if !signals.leading && signals.leader_island {
            return true;
        }
        let since = heard.unwrap_or(signals.started).max(signals.started);
        signals.now.saturating_duration_since(since) >= self.island_after
    }
}

/// Runs the island rule on `raft` every [`ISLAND_CHECK_INTERVAL`] until Raft stops, publishing
/// on the returned channel. A new epoch is persisted in `db` before it is published.
pub fn watch(
    raft: Raft,
    contact: LeaderContact,
    probes: Probes,
    db: Db,
    island_after: Duration,
) -> watch::Receiver<IslandStatus> {
    let epoch = match db.local_u64(EPOCH_KEY) {
        Ok(epoch) => epoch.unwrap_or(0),
        Err(error) => {
            tracing::error!(%error, "reading the island epoch; counting from 0");
            0
        }
    };
    let (tx, rx) = watch::channel(IslandStatus { since: None, epoch });
    let detector = Detector::new(island_after);
    tokio::spawn(async move {
        let started = Instant::now();
        let mut ticks = tokio::time::interval(ISLAND_CHECK_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let signals = {
                let metrics = raft.metrics();
                let m = metrics.borrow_watched();
                if m.running_state.is_err() {
                    return;
                }
                let now = Instant::now();
                let leading = m.state == ServerState::Leader;
                // A leader that is the only voter is its own quorum (openraft notes no quorum
                // acknowledgement without followers).
                let sole_voter = {
                    let mut voters = m.membership_config.membership().voter_ids();
                    voters.next() == Some(m.id) && voters.next().is_none()
                };
                let leader_island = !leading
                    && m.current_leader
                        .and_then(|id| probes.heard(id))
                        .is_some_and(|heard| {
                            heard.island
                                && now.saturating_duration_since(heard.at) <= LEADER_PROBE_FRESH
                        });
                Signals {
                    leader_island,
                    now,
                    started,
                    leading,
                    quorum_acked: if leading && sole_voter {
                        Some(now)
                    } else {
                        m.last_quorum_acked
                            .as_ref()
                            .map(|at| now.checked_sub(at.elapsed()).unwrap_or(started))
                    },
                    leader_contact: contact.last(),
                }
            };
            let cut_off = detector.cut_off(&signals);
            let current = *tx.borrow();
            match (current.island(), cut_off) {
                (false, true) => {
                    let epoch = current.epoch + 1;
                    let store = db.clone();
                    let persisted = db
                        .blocking(move || store.put_local_u64(EPOCH_KEY, epoch))
                        .await
                        .and_then(|written| written)
                        .map_err(|e| e.to_string());
                    if let Err(error) = persisted {
                        tracing::error!(%error, "persisting the island epoch; trying again");
                        continue;
                    }
                    tracing::warn!(
                        epoch,
                        after_ms = island_after.as_millis() as u64,
                        "no leader heard from: this node is an island"
                    );
                    tx.send_replace(IslandStatus {
                        since: Some(signals.now),
                        epoch,
                    });
                }
                (true, false) => {
                    tracing::info!(
                        epoch = current.epoch,
                        "a leader is heard again: the island ends"
                    );
                    tx.send_replace(IslandStatus {
                        since: None,
                        epoch: current.epoch,
                    });
                }
                _ => {}
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_follower_is_an_island_once_no_leader_was_heard_for_island_after() {
        let d = Detector::new(Duration::from_secs(2));
        let t0 = Instant::now();
        let follower = |now, contact| Signals {
            now: at(t0, now),
            started: t0,
            leading: false,
            quorum_acked: None,
            leader_contact: contact,
            leader_island: false,
        };
        assert!(!d.cut_off(&follower(1_999, None)), "counts from start");
        assert!(d.cut_off(&follower(2_000, None)), "never heard a leader");
        assert!(!d.cut_off(&follower(3_000, Some(at(t0, 1_500)))));
        assert!(d.cut_off(&follower(3_500, Some(at(t0, 1_500)))));
        // A contact noted before the watch started counts from the start.
        let early = Signals {
            leader_contact: Some(t0),
            started: at(t0, 1_000),
            ..follower(2_500, None)
        };
        assert!(!d.cut_off(&early));
    }

    #[test]
    fn a_follower_of_a_leader_that_is_an_island_is_one_too() {
        let d = Detector::new(Duration::from_secs(2));
        let t0 = Instant::now();
        let follower = Signals {
            now: at(t0, 3_000),
            started: t0,
            leading: false,
            quorum_acked: None,
            leader_contact: Some(at(t0, 2_900)),
            leader_island: true,
        };
        assert!(d.cut_off(&follower), "its leader reaches no quorum");
        assert!(!d.cut_off(&Signals {
            leader_island: false,
            ..follower
        }));
        // A leader's own probes of itself do not count: only its quorum does.
        assert!(!d.cut_off(&Signals {
            leading: true,
            quorum_acked: Some(at(t0, 2_900)),
            ..follower
        }));
    }

    #[test]
    fn a_leader_is_an_island_once_no_quorum_acked_it_for_island_after() {
        let d = Detector::new(Duration::from_secs(2));
        let t0 = Instant::now();
        let leader = |now, acked, contact| Signals {
            now: at(t0, now),
            started: t0,
            leading: true,
            quorum_acked: acked,
            leader_contact: contact,
            leader_island: false,
        };
        assert!(!d.cut_off(&leader(5_000, Some(at(t0, 4_000)), None)));
        assert!(d.cut_off(&leader(6_000, Some(at(t0, 4_000)), None)));
        // Just elected, no quorum ack yet: its last contact as a follower counts.
        assert!(!d.cut_off(&leader(5_000, None, Some(at(t0, 4_500)))));
        assert!(d.cut_off(&leader(5_000, None, None)));
    }
}
