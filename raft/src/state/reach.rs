//! The quorum side's view of members it cannot reach: the leader replicates the set of members
//! it has not reached for `island_after` (`Op::SetUnreachable`, proposed by
//! [`crate::island::reach`]). An agent connected through one of them (their session's node) is
//! not routable: routing offers them nothing new, so a site cut off from the quorum does not
//! strand new work on agents who cannot see it. Work they hold stays theirs (a missed offer
//! still times out and is routed again). An agent who reconnects through a reachable node
//! (`Op::Presence`) is routable again at once, and so are all of a member's agents when it is
//! reached again.

use std::collections::BTreeSet;

use super::{Agent, State};
use crate::command::Outcome;
use crate::types::NodeId;

impl State {
    /// Whether `agent` is connected through a member the leader cannot reach.
    pub fn agent_unreachable(&self, agent: &Agent) -> bool {
        agent
            .session
            .as_ref()
            .is_some_and(|session| self.unreachable_nodes.contains(&session.node))
    }

    /// Replaces the unreachable members; routes at once for agents reached again.
    pub(super) fn set_unreachable(&mut self, at_ms: u64, nodes: &BTreeSet<NodeId>) -> Outcome {
        let reached_again = self.unreachable_nodes.iter().any(|n| !nodes.contains(n));
        self.unreachable_nodes = nodes.clone();
        if reached_again {
            self.route(at_ms);
        }
        Outcome::Done
    }
}
