//! The quorum side's view of members it cannot reach: the leader replicates the set of members
//! it has not reached for `island_after` (`Op::SetUnreachable`, proposed by
//! [`crate::island::reach`]). An agent connected through one of them (their session's node) is
//! not routable: routing offers them nothing new, so a site cut off from the quorum does not
//! strand new work on agents who cannot see it. Work they hold stays theirs (a missed offer
//! still times out and is routed again). An agent who reconnects through a reachable node
//! (`Op::Presence`) is routable again at once, and so are all of a member's agents when it is
//! reached again.
//!
//! A chat assigned to an unreachable agent goes back to its queue, at its old place, once its
//! customer writes on this side (ISLAND.md rule 3): the customer is here, the agent is not.
//! Never on an island's view (it leaves work of before the split alone) nor for a message an
//! island merges (its customer wrote on the island, where the agent may be too).

use std::collections::BTreeSet;

use super::{Agent, EventBody, State};
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

    /// Puts chat `chat_id` back into its queue if the agent it is assigned to is unreachable
    /// (see the module docs); called when its customer wrote.
    pub(super) fn reroute_from_unreachable(&mut self, at_ms: u64, chat_id: &str) {
        if self.on_island_view || self.island_write.active() {
            return;
        }
        let Some(agent_id) = self.chats.get(chat_id).and_then(|c| c.agent_id.clone()) else {
            return;
        };
        if !self
            .agents
            .get(&agent_id)
            .is_some_and(|agent| self.agent_unreachable(agent))
        {
            return;
        }
        let Some(enqueued_at_ms) = self.activities.get(chat_id).map(|a| a.enqueued_at_ms) else {
            return;
        };
        self.push_chat_event(
            chat_id,
            at_ms,
            EventBody::AgentLeft {
                agent_id,
                reason: "unreachable".to_owned(),
            },
        );
        self.disarm_inactivity(chat_id);
        if let Some(chat) = self.chats.get_mut(chat_id).map(std::sync::Arc::make_mut) {
            chat.agent_id = None;
        }
        self.release(at_ms, chat_id, "agent_unreachable");
        self.enqueue(at_ms, chat_id, enqueued_at_ms, "agent_unreachable");
        self.route(at_ms);
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
