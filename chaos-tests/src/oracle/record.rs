//! What clients saw acknowledged: chats started, messages with their seq, and every agent
//! action with the window (first send to answer, in the cluster's clock) in which it applied.

use std::collections::{BTreeMap, BTreeSet};

use parley_raft::command::{Channel, TransferTarget};

use super::Violation;

/// When an acknowledged action applied: no earlier than its first send and no later than
/// its answer, in milliseconds of the clock the nodes stamp commands with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The first attempt was sent.
    pub sent_ms: u64,
    /// The acknowledgement arrived.
    pub answered_ms: u64,
}

impl Window {
    /// Whether a command stamped `at_ms` may be this one.
    pub fn contains(&self, at_ms: u64) -> bool {
        self.sent_ms <= at_ms && at_ms <= self.answered_ms
    }

    /// This window widened by `slack_ms` on both sides.
    pub fn widened(self, slack_ms: u64) -> Self {
        Self {
            sent_ms: self.sent_ms.saturating_sub(slack_ms),
            answered_ms: self.answered_ms.saturating_add(slack_ms),
        }
    }

    /// Whether a state in effect from `from_ms` until `until_ms` (the next change) was in
    /// effect at some point of this window: what a command applied in this window saw, or
    /// made.
    pub fn overlaps(&self, from_ms: u64, until_ms: u64) -> bool {
        from_ms <= self.answered_ms && until_ms >= self.sent_ms
    }
}

/// An agent action a node acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentAction {
    /// Logged in with this session.
    Login {
        /// The session id.
        session_id: String,
    },
    /// Availability for a channel set.
    Availability {
        /// The channel.
        channel: Channel,
        /// Ready or not.
        ready: bool,
    },
    /// An offered activity accepted.
    Accept {
        /// The activity.
        activity_id: String,
    },
    /// An assigned activity transferred.
    Transfer {
        /// The activity.
        activity_id: String,
        /// Where to.
        target: TransferTarget,
    },
    /// An assigned activity completed.
    Complete {
        /// The activity.
        activity_id: String,
    },
}

impl AgentAction {
    /// The activity acted on, if any.
    pub fn activity_id(&self) -> Option<&str> {
        match self {
            AgentAction::Accept { activity_id }
            | AgentAction::Transfer { activity_id, .. }
            | AgentAction::Complete { activity_id } => Some(activity_id),
            AgentAction::Login { .. } | AgentAction::Availability { .. } => None,
        }
    }
}

/// One acknowledged agent action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckedAction {
    /// The agent.
    pub agent_id: String,
    /// What.
    pub action: AgentAction,
    /// When it applied.
    pub window: Window,
    /// The island node whose journal took it, if an island did (answered `"island": true`).
    pub island: Option<u64>,
}

/// Every acknowledgement of a run.
#[derive(Debug, Default)]
pub struct Oracle {
    /// Chat id → client message id → acknowledged seq.
    pub(super) acked: BTreeMap<String, BTreeMap<String, u64>>,
    /// Chat id → client message id → (island node, island seq) of the messages an island took
    /// (answered `"island": true`).
    pub(super) acked_island: BTreeMap<String, BTreeMap<String, (u64, u64)>>,
    /// Agent actions, in the order they were acknowledged.
    pub(super) actions: Vec<AckedAction>,
    /// Answers that should never happen.
    pub(super) unexpected: Vec<String>,
}

impl Oracle {
    /// A chat's start was acknowledged.
    pub fn chat_started(&mut self, chat_id: &str) {
        self.acked.entry(chat_id.to_owned()).or_default();
    }

    /// A message was acknowledged with `seq`.
    pub fn acked(&mut self, chat_id: &str, client_msg_id: &str, seq: u64) {
        self.acked
            .entry(chat_id.to_owned())
            .or_default()
            .insert(client_msg_id.to_owned(), seq);
    }

    /// A message was taken in island mode by `node`, answered with island seq `seq`.
    pub fn acked_on_island(&mut self, chat_id: &str, client_msg_id: &str, node: u64, seq: u64) {
        self.acked_island
            .entry(chat_id.to_owned())
            .or_default()
            .insert(client_msg_id.to_owned(), (node, seq));
    }

    /// Widens every agent action's window by `slack_ms` on both sides: the nodes' clocks
    /// were off the true time the windows were taken in by up to that much.
    pub fn widen_windows(&mut self, slack_ms: u64) {
        for action in &mut self.actions {
            action.window = action.window.widened(slack_ms);
        }
    }

    /// An agent action was acknowledged.
    pub fn agent_acked(
        &mut self,
        agent_id: &str,
        action: AgentAction,
        window: Window,
        island: Option<u64>,
    ) {
        self.actions.push(AckedAction {
            agent_id: agent_id.to_owned(),
            action,
            window,
            island,
        });
    }

    /// How many agent actions islands acknowledged.
    pub fn actions_on_islands(&self) -> usize {
        self.actions.iter().filter(|a| a.island.is_some()).count()
    }

    /// A write got an answer no client should see.
    pub fn unexpected(&mut self, subject: &str, what: &str) {
        self.unexpected.push(format!("{subject}: {what}"));
    }

    /// The chats to inspect.
    pub fn chat_ids(&self) -> Vec<String> {
        self.acked.keys().cloned().collect()
    }

    /// The activities to inspect: every chat's, and every one an agent acted on.
    pub fn activity_ids(&self) -> Vec<String> {
        let mut ids: BTreeSet<String> = self.acked.keys().cloned().collect();
        ids.extend(
            self.actions
                .iter()
                .filter_map(|a| a.action.activity_id().map(str::to_owned)),
        );
        ids.into_iter().collect()
    }

    /// The agents to inspect: every one that acted.
    pub fn agent_ids(&self) -> Vec<String> {
        let ids: BTreeSet<String> = self.actions.iter().map(|a| a.agent_id.clone()).collect();
        ids.into_iter().collect()
    }

    /// How many writes were acknowledged: chats started and messages.
    pub fn acked_count(&self) -> usize {
        self.acked.values().map(|m| m.len() + 1).sum::<usize>() + self.acked_island_count()
    }

    /// How many messages islands acknowledged.
    pub fn acked_island_count(&self) -> usize {
        self.acked_island.values().map(BTreeMap::len).sum()
    }

    /// The island nodes whose journals took the messages islands acknowledged.
    pub fn island_journals(&self) -> BTreeSet<u64> {
        self.acked_island
            .values()
            .flat_map(|acked| acked.values().map(|(node, _)| *node))
            .collect()
    }

    /// How many agent actions were acknowledged.
    pub fn actions_count(&self) -> usize {
        self.actions.len()
    }

    /// The acknowledged agent actions.
    pub fn actions(&self) -> &[AckedAction] {
        &self.actions
    }

    /// Answers clients got that no client should see (a refused retry, say).
    pub fn unexpected_answers(&self) -> Vec<Violation> {
        self.unexpected
            .iter()
            .map(|u| Violation(format!("unexpected answer: {u}")))
            .collect()
    }
}
