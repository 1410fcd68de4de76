//! The leader's side of reachability: it replicates which members it has not reached for
//! `island_after` ([`Op::SetUnreachable`], see `state::reach`), so agents connected through
//! them get no new work. Only the leader proposes, once a second at most and only on a change;
//! a member counts as unreachable once it answered no probe for `island_after` (the bound that
//! makes a node an island on its own side), so a short blip changes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;

use crate::command::{Op, Outcome};
use crate::probe::Probes;
use crate::proposer::Proposer;
use crate::types::{NodeId, Raft, StateStore};

/// How often the leader compares what its probes say with the replicated set.
const REACH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The cluster version `Op::SetUnreachable` needs.
const REACH_CLUSTER_VERSION: u32 = 2;

/// The members `probes` say did not answer for `within`, of `members` other than `me`.
pub fn unreachable(
    me: NodeId,
    members: impl IntoIterator<Item = NodeId>,
    probes: &Probes,
    within: Duration,
) -> BTreeSet<NodeId> {
    members
        .into_iter()
        .filter(|id| *id != me && probes.seen(*id, within).reachable == Some(false))
        .collect()
}

/// Runs on every node until Raft stops; proposes only while this node leads.
pub async fn watch(
    me: NodeId,
    raft: Raft,
    probes: Probes,
    store: StateStore,
    proposer: Proposer,
    within: Duration,
) {
    let mut ticks = tokio::time::interval(REACH_CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let members: Vec<NodeId> = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            if m.running_state.is_err() {
                return;
            }
            if m.state != ServerState::Leader {
                continue;
            }
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect()
        };
        let wanted = unreachable(me, members, &probes, within);
        let (current, version) =
            store.read(|state, _| (state.unreachable_nodes.clone(), state.cluster_version.0));
        if version < REACH_CLUSTER_VERSION || current == wanted {
            continue;
        }
        match proposer
            .propose(Op::SetUnreachable {
                nodes: wanted.clone(),
            })
            .await
        {
            Ok(Outcome::Rejected(rejection)) => {
                tracing::warn!(%rejection, "marking unreachable members was refused");
            }
            Ok(_) => tracing::info!(
                unreachable = ?wanted,
                "members this leader cannot reach get no new work for their agents"
            ),
            Err(error) => tracing::debug!(%error, "marking unreachable members; will retry"),
        }
    }
}
