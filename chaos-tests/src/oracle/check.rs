//! The checks: each takes the record and/or one node's observation and returns what it found
//! broken. [`check_all`] runs them all over every node.

use std::collections::{BTreeMap, BTreeSet};

use parley_raft::command::{Channel, TransferTarget};
use parley_raft::state::island::MERGED_ACCEPT;
use parley_raft::state::{Activity, ActivityStatus, Agent, AgentEventBody, EventBody};

use super::observe::Observation;
use super::record::{AckedAction, AgentAction, Oracle, Window};
use super::Violation;

fn violation(text: String) -> Violation {
    Violation(text)
}

/// Every check on every node, plus the cluster-wide ones.
pub fn check_all(oracle: &Oracle, observations: &[Observation]) -> Vec<Violation> {
    let mut violations = oracle.unexpected_answers();
    violations.extend(check_cluster(observations));
    for observation in observations {
        violations.extend(invariants(observation));
        violations.extend(messages(oracle, observation));
        violations.extend(agent_actions(oracle, observation));
        violations.extend(holders(observation));
        violations.extend(super::islands::island_clocks(observation));
    }
    violations
}

/// G7 and convergence: every node at one applied index, with one digest.
pub fn check_cluster(observations: &[Observation]) -> Vec<Violation> {
    let Some(first) = observations.first() else {
        return vec![violation("no node could be observed".to_owned())];
    };
    let mut violations = Vec::new();
    for other in &observations[1..] {
        if other.applied_index != first.applied_index {
            violations.push(violation(format!(
                "replicas did not converge: node {} applied {}, node {} applied {}",
                first.node, first.applied_index, other.node, other.applied_index
            )));
        } else if other.digest != first.digest {
            violations.push(violation(format!(
                "G7: node {} digest {} differs from node {}'s {} at index {}",
                other.node, other.digest, first.node, first.digest, first.applied_index
            )));
        }
    }
    violations
}

/// The node's own `State::validate` (ghost sessions, stale timers, holders, limits, …).
pub fn invariants(observation: &Observation) -> Vec<Violation> {
    observation
        .invariant_violations
        .iter()
        .map(|v| violation(format!("node {}: {v}", observation.node)))
        .collect()
}

/// G1, G2, G3 on one node's chats.
pub fn messages(oracle: &Oracle, observation: &Observation) -> Vec<Violation> {
    let node = observation.node;
    let mut violations = Vec::new();
    for (chat_id, acked) in &oracle.acked {
        let Some(events) = observation.chats.get(chat_id) else {
            violations.push(violation(format!(
                "G1: node {node} lost acknowledged chat {chat_id}"
            )));
            continue;
        };
        let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
        for (index, event) in events.iter().enumerate() {
            if event.seq != index as u64 + 1 {
                violations.push(violation(format!(
                    "G3: node {node} chat {chat_id}: event {index} has seq {}",
                    event.seq
                )));
            }
            if let EventBody::Message { client_msg_id, .. } = &event.body {
                if seen.insert(client_msg_id, event.seq).is_some() {
                    violations.push(violation(format!(
                        "G2: node {node} chat {chat_id}: {client_msg_id} appears twice"
                    )));
                }
            }
        }
        // An island's answer holds once its message is there: it carries the island's mark
        // (node and the seq its client saw), or none when the same message reached the
        // cluster through another node first (the merge kept the cluster's).
        for (client_msg_id, (origin, seq)) in oracle.acked_island.get(chat_id).into_iter().flatten()
        {
            let found = events.iter().find(|e| {
                matches!(&e.body, EventBody::Message { client_msg_id: id, .. } if id == client_msg_id)
            });
            match found {
                None => violations.push(violation(format!(
                    "G1: node {node} chat {chat_id}: {client_msg_id}, taken by island node \
                     {origin}, is missing"
                ))),
                Some(event) => {
                    if let Some(mark) = event.island {
                        if mark.origin != *origin || mark.seq != *seq {
                            violations.push(violation(format!(
                                "G1: node {node} chat {chat_id}: {client_msg_id} taken by island \
                                 node {origin} at island seq {seq} but marked {mark:?}"
                            )));
                        }
                    }
                }
            }
        }
        for (client_msg_id, seq) in acked {
            match seen.get(client_msg_id.as_str()) {
                None => violations.push(violation(format!(
                    "G1: node {node} chat {chat_id}: acknowledged {client_msg_id} is missing"
                ))),
                Some(found) if found != seq => violations.push(violation(format!(
                    "G1: node {node} chat {chat_id}: {client_msg_id} acknowledged at {seq} but \
                     stored at {found}"
                ))),
                Some(_) => {}
            }
        }
    }
    violations
}

/// Whether the agent's feed still starts at its first event (it keeps the most recent ones).
fn feed_complete(agent: &Agent) -> bool {
    agent.feed.front().is_none_or(|e| e.seq == 1)
}

/// Every acknowledged agent action shows in this node's state where it applied.
pub fn agent_actions(oracle: &Oracle, observation: &Observation) -> Vec<Violation> {
    let node = observation.node;
    let mut violations = Vec::new();
    for acked in oracle.actions() {
        let AckedAction {
            agent_id,
            action,
            window,
            island,
        } = acked;
        let Some(agent) = observation.agents.get(agent_id) else {
            violations.push(violation(format!(
                "G1: node {node} has no agent {agent_id}, who had {action:?} acknowledged"
            )));
            continue;
        };
        let found = match action {
            AgentAction::Login { session_id } => {
                // The session existed when the login was answered: logged in by then and not
                // logged out before the login was sent.
                let mut open = false;
                for event in &agent.feed {
                    match &event.body {
                        AgentEventBody::LoggedIn { session_id: s }
                            if s == session_id && event.at_ms <= window.answered_ms =>
                        {
                            open = true
                        }
                        AgentEventBody::LoggedOut { session_id: s }
                            if s == session_id && event.at_ms < window.sent_ms =>
                        {
                            open = false
                        }
                        _ => {}
                    }
                }
                open || !feed_complete(agent) || superseded(agent, *island, window)
            }
            AgentAction::Availability { channel, ready } => {
                agent.feed.iter().any(|event| {
                    matches!(&event.body, AgentEventBody::Availability { ready: r, .. }
                        if r.get(channel).copied().unwrap_or(false) == *ready)
                        && window.contains(event.at_ms)
                }) || !feed_complete(agent)
                    || superseded(agent, *island, window)
            }
            AgentAction::Accept { activity_id }
            | AgentAction::Transfer { activity_id, .. }
            | AgentAction::Complete { activity_id } => {
                let Some(activity) = observation.activities.get(activity_id) else {
                    violations.push(violation(format!(
                        "G1: node {node} lost activity {activity_id}, on which {agent_id} had \
                         {action:?} acknowledged"
                    )));
                    continue;
                };
                in_history(activity, agent_id, action, |from, until| {
                    window.overlaps(from, until)
                }) || island
                    .is_some_and(|node| kept_as_conflict(activity, agent_id, action, window, node))
            }
        };
        if !found {
            let history = match action {
                AgentAction::Accept { activity_id }
                | AgentAction::Transfer { activity_id, .. }
                | AgentAction::Complete { activity_id } => observation
                    .activities
                    .get(activity_id)
                    .map(|activity| format!("; its history: {}", history_tail(activity, 8)))
                    .unwrap_or_default(),
                AgentAction::Login { .. } | AgentAction::Availability { .. } => String::new(),
            };
            violations.push(violation(format!(
                "G1: node {node}: {agent_id}'s acknowledged {action:?} (applied between {} and \
                 {} ms) is not in the state{history}",
                window.sent_ms, window.answered_ms
            )));
        }
    }
    violations
}

/// Whether an island's sign-in or availability change lost at the merge to a later (or
/// concurrent) one of the agent's own on the cluster side (ISLAND.md rule 4: last writer by
/// the agent's own clock): the agent's latest own action is stamped no earlier than the
/// island's window. A write the cluster took is never superseded this way.
fn superseded(agent: &Agent, island: Option<u64>, window: &Window) -> bool {
    island.is_some()
        && agent
            .own_stamp
            .is_some_and(|own| own.hlc.wall_ms >= window.sent_ms)
}

/// Whether an action island node `node` acknowledged lost at the merge and the activity keeps
/// it as a conflict (ISLAND.md rule 3: losers are kept, not dropped): same agent, same action,
/// same island, taken within the action's window.
fn kept_as_conflict(
    activity: &Activity,
    agent_id: &str,
    action: &AgentAction,
    window: &Window,
    node: u64,
) -> bool {
    let kind = match action {
        AgentAction::Accept { .. } => "accept",
        AgentAction::Transfer { .. } => "transfer",
        AgentAction::Complete { .. } => "complete",
        AgentAction::Login { .. } | AgentAction::Availability { .. } => return false,
    };
    activity.island_conflicts.iter().any(|c| {
        c.agent_id == agent_id && c.action == kind && c.origin == node && window.contains(c.at_ms)
    })
}

/// The last `count` transitions of an activity's history, oldest first, for a report.
pub fn history_tail(activity: &Activity, count: usize) -> String {
    let skip = activity.history.len().saturating_sub(count);
    activity
        .history
        .iter()
        .skip(skip)
        .map(|t| format!("{:?} ({}) at {}", t.status, t.reason, t.at_ms))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the activity's history holds the transition `action` by `agent_id` makes, in effect
/// (from it until the next transition) at a time `when` accepts. An action answered as done
/// because it had already applied (a retried accept, transfer or completion) finds the
/// transition of its first application still in effect.
fn in_history(
    activity: &Activity,
    agent_id: &str,
    action: &AgentAction,
    when: impl Fn(u64, u64) -> bool,
) -> bool {
    let assigned_to_agent = |status: &ActivityStatus| matches!(status, ActivityStatus::Assigned { agent_id: a } if a == agent_id);
    let mut previous: Option<&ActivityStatus> = None;
    for (index, transition) in activity.history.iter().enumerate() {
        let by_agent = previous.is_some_and(assigned_to_agent);
        // A transition is in effect at least when it was made: the next one may carry an
        // earlier stamp (commands are stamped where they arrive and can commit in another
        // order, e.g. a customer's message held up by a partition that moves the chat on).
        let until_ms = activity
            .history
            .get(index + 1)
            .map_or(u64::MAX, |next| next.at_ms.max(transition.at_ms));
        let matched = when(transition.at_ms, until_ms)
            && match action {
                AgentAction::Accept { .. } => {
                    assigned_to_agent(&transition.status) && transition.reason == "accepted"
                }
                AgentAction::Transfer { target, .. } => {
                    by_agent
                        && transition.reason == "transferred"
                        && match target {
                            TransferTarget::Queue { queue_id } => {
                                transition.status == ActivityStatus::Queued
                                    && transition.queue_id == *queue_id
                            }
                            TransferTarget::Agent { agent_id: to } => matches!(
                                &transition.status,
                                ActivityStatus::Offered { agent_id: a, .. } if a == to
                            ),
                        }
                }
                AgentAction::Complete { .. } => {
                    by_agent && matches!(transition.status, ActivityStatus::Completed { .. })
                }
                AgentAction::Login { .. } | AgentAction::Availability { .. } => false,
            };
        if matched {
            return true;
        }
        previous = Some(&transition.status);
    }
    false
}

/// G6 on one node: replays every activity's history and every agent's feed, and checks the
/// final holders.
pub fn holders(observation: &Observation) -> Vec<Violation> {
    let mut violations = Vec::new();
    for activity in observation.activities.values() {
        violations.extend(history_holders(observation.node, activity));
    }
    for agent in observation.agents.values() {
        violations.extend(feed_load(observation.node, agent, &observation.activities));
    }
    violations.extend(final_holders(observation));
    violations
}

/// An activity's history, replayed: it changes hands only by a transfer from the agent who
/// worked it, and is assigned only to the agent it was offered to.
fn history_holders(node: u64, activity: &Activity) -> Vec<Violation> {
    let mut violations = Vec::new();
    let id = &activity.id;
    for pair in activity.history.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        match (&before.status, &after.status) {
            (
                ActivityStatus::Offered { agent_id: a, .. },
                ActivityStatus::Assigned { agent_id: b },
            ) if a == b => {}
            (_, ActivityStatus::Assigned { agent_id: b }) => violations.push(violation(format!(
                "G6: node {node} activity {id}: assigned to {b} at {} ms while {:?} (not offered \
                 to {b})",
                after.at_ms, before.status
            ))),
            (
                ActivityStatus::Assigned { agent_id: a },
                ActivityStatus::Offered { agent_id: b, .. },
            ) if a != b && after.reason == "transferred" => {}
            (previous, ActivityStatus::Offered { agent_id: b, .. }) => {
                if let Some(a) = previous.holder() {
                    violations.push(violation(format!(
                        "G6: node {node} activity {id}: offered to {b} at {} ms while held by \
                         {a}",
                        after.at_ms
                    )));
                }
            }
            _ => {}
        }
    }
    violations
}

/// An agent's feed, replayed in order: what they hold never exceeds their limit per channel,
/// and they are assigned only what they were offered.
fn feed_load(node: u64, agent: &Agent, activities: &BTreeMap<String, Activity>) -> Vec<Violation> {
    let id = &agent.spec.id;
    if !feed_complete(agent) {
        // The oldest events are gone: the load at the start of what is kept is unknown.
        return Vec::new();
    }
    let mut violations = Vec::new();
    let mut held: BTreeMap<&str, Channel> = BTreeMap::new();
    for event in &agent.feed {
        match &event.body {
            AgentEventBody::Offered {
                activity_id,
                channel,
                ..
            } => {
                if held.insert(activity_id, *channel).is_some() {
                    violations.push(violation(format!(
                        "G6: node {node} agent {id}: offered {activity_id} again (feed seq {}) \
                         while holding it",
                        event.seq
                    )));
                }
                let load = held.values().filter(|c| *c == channel).count();
                let limit = agent.spec.limits.get(channel).copied().unwrap_or(0) as usize;
                // The one exception (ISLAND.md rule 4, as `State::validate` allows it): a merge
                // gives an agent the work they took on an island (`merged_accept`) whatever
                // their load; they get no other offer until below their limit.
                let merged = activities.get(activity_id.as_str()).is_some_and(|activity| {
                    activity.history.iter().any(|t| {
                        t.reason == MERGED_ACCEPT
                            && t.at_ms == event.at_ms
                            && matches!(&t.status, ActivityStatus::Offered { agent_id, .. } if agent_id == id)
                    })
                });
                if load > limit && !merged {
                    // Each held activity with why it was last offered to this agent.
                    let holding: Vec<String> = held
                        .keys()
                        .map(|a| {
                            let why = activities.get(*a).and_then(|activity| {
                                activity.history.iter().rev().find_map(|t| match &t.status {
                                    ActivityStatus::Offered { agent_id, .. } if agent_id == id => {
                                        Some(t.reason.clone())
                                    }
                                    _ => None,
                                })
                            });
                            format!("{a} ({})", why.unwrap_or_default())
                        })
                        .collect();
                    violations.push(violation(format!(
                        "G6: node {node} agent {id} held {load} {} activities at feed seq {}, \
                         over a limit of {limit} (holding {holding:?})",
                        channel.as_str(),
                        event.seq
                    )));
                }
            }
            AgentEventBody::Assigned { activity_id }
                if !held.contains_key(activity_id.as_str()) =>
            {
                violations.push(violation(format!(
                    "G6: node {node} agent {id}: assigned {activity_id} (feed seq {}) without an \
                     offer",
                    event.seq
                )));
            }
            AgentEventBody::OfferWithdrawn { activity_id, .. }
            | AgentEventBody::Released { activity_id, .. } => {
                held.remove(activity_id.as_str());
            }
            _ => {}
        }
    }
    violations
}

/// The final state: each activity's holder lists it as work and nobody else does; no agent
/// over a limit.
fn final_holders(observation: &Observation) -> Vec<Violation> {
    let node = observation.node;
    let mut violations = Vec::new();
    for (id, activity) in &observation.activities {
        let listed_by: Vec<&String> = observation
            .agents
            .iter()
            .filter(|(_, agent)| agent.work.contains(id))
            .map(|(agent_id, _)| agent_id)
            .collect();
        let holder = activity.status.holder();
        if listed_by.len() > 1 {
            violations.push(violation(format!(
                "G6: node {node} activity {id} is held by {listed_by:?} at once"
            )));
        }
        if let Some(holder) = holder {
            if observation
                .agents
                .get(holder)
                .is_some_and(|a| !a.work.contains(id))
            {
                violations.push(violation(format!(
                    "G6: node {node} activity {id} names {holder} but {holder} does not hold it"
                )));
            }
        }
        for agent_id in listed_by {
            if Some(agent_id) != holder {
                violations.push(violation(format!(
                    "G6: node {node} agent {agent_id} holds {id}, whose status is {:?}",
                    activity.status
                )));
            }
        }
    }
    for (agent_id, agent) in &observation.agents {
        let mut load: BTreeMap<Channel, usize> = BTreeMap::new();
        let known: BTreeSet<&String> = agent
            .work
            .iter()
            .filter(|a| observation.activities.contains_key(*a))
            .collect();
        for activity_id in known {
            if let Some(activity) = observation.activities.get(activity_id) {
                *load.entry(activity.channel).or_default() += 1;
            }
        }
        for (channel, load) in load {
            let limit = agent.spec.limits.get(&channel).copied().unwrap_or(0) as usize;
            if load > limit {
                violations.push(violation(format!(
                    "G6: node {node} agent {agent_id} holds {load} {} activities, over a limit \
                     of {limit}",
                    channel.as_str()
                )));
            }
        }
    }
    violations
}
