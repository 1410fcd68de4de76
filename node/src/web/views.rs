//! What the API returns: views computed from the applied state. Never the raw state (it holds
//! password hashes and internal indexes).

use std::collections::BTreeMap;

use parley_raft::command::{ActivityId, AgentId, ChatId, QueueId, SkillId};
use parley_raft::state::{self as st, Activity, ActivityDetail, Agent, EventCursor};
use parley_raft::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::{
    ActivityStatus, AgentEventBody, Channel, ChatEvent, ChatStatus, Survey, Transition,
};

/// A chat as its customer sees it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChatView {
    /// The chat.
    pub chat_id: ChatId,
    /// `open` or `ended`.
    pub status: ChatStatus,
    /// Where its activity is: queued, offered, assigned, completed, abandoned.
    pub activity: ActivityStatus,
    /// The queue it is in.
    pub queue_id: QueueId,
    /// Place in the queue while queued (1 = next).
    pub position: Option<u64>,
    /// Estimated wait while queued, in seconds.
    pub estimated_wait_s: Option<u64>,
    /// The agent in the chat, if any.
    pub agent: Option<AgentRef>,
    /// The chat's last event sequence number.
    pub last_seq: u64,
    /// The customer's rating, once given.
    pub survey: Option<Survey>,
    /// When the chat started, ms since the Unix epoch.
    pub created_at_ms: u64,
}

/// An agent as customers see them.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AgentRef {
    /// Id.
    pub agent_id: AgentId,
    /// Display name.
    pub name: String,
}

/// The customer's view of a chat, or `None` if it does not exist.
pub fn chat_view(state: &State, chat_id: &str) -> Option<ChatView> {
    let chat = state.chats.get(chat_id)?;
    let activity = state.activities.get(chat_id)?;
    let position = state.queue_position(chat_id);
    Some(ChatView {
        chat_id: chat.id.clone(),
        status: chat.status.into(),
        activity: (&activity.status).into(),
        queue_id: activity.queue_id.clone(),
        position: position.map(|p| p.position),
        estimated_wait_s: position.map(|p| p.estimated_wait_ms.div_ceil(1000)),
        agent: chat.agent_id.as_ref().map(|id| AgentRef {
            agent_id: id.clone(),
            name: state
                .agents
                .get(id)
                .map_or_else(|| id.clone(), |a| a.spec.name.clone()),
        }),
        last_seq: chat.last_seq(),
        survey: chat.survey.as_ref().map(Survey::from),
        created_at_ms: chat.created_at_ms,
    })
}

/// An activity as its agent (or a supervisor) sees it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ActivityView {
    /// Id (a chat's id for chats).
    pub id: ActivityId,
    /// Channel.
    pub channel: Channel,
    /// Current queue.
    pub queue_id: QueueId,
    /// Where it is.
    pub status: ActivityStatus,
    /// When it was created, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// When it last entered its queue.
    pub enqueued_at_ms: u64,
    /// When its agent accepted it.
    pub assigned_at_ms: Option<u64>,
    /// Every transition, oldest first.
    pub history: Vec<Transition>,
    /// Agents' actions an island took that lost at its merge, oldest first (empty unless a
    /// site was cut off; see docs/OPERATIONS.md, island mode).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub island_conflicts: Vec<IslandConflictView>,
    /// For chats.
    pub chat: Option<ChatSummary>,
    /// For callbacks.
    pub callback: Option<CallbackSummary>,
}

/// An agent's action an island acknowledged that lost at the merge.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct IslandConflictView {
    /// The agent who acted.
    pub agent_id: AgentId,
    /// `accept`, `transfer` or `complete`.
    pub action: String,
    /// When the island took it, ms since the Unix epoch.
    pub at_ms: u64,
    /// The island node that took it.
    pub island_node: u64,
    /// Why it lost: `assigned_elsewhere`, `ended` or `not_held`.
    pub reason: String,
}

/// A chat's details for its agent.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChatSummary {
    /// Customer's name.
    pub customer_name: String,
    /// Customer's email.
    pub customer_email: String,
    /// The pre-chat question.
    pub question: String,
    /// `open` or `ended`.
    pub status: ChatStatus,
    /// Last event sequence number.
    pub last_seq: u64,
}

/// A callback's details for its agent.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CallbackSummary {
    /// Who to call.
    pub name: String,
    /// E.164 number.
    pub phone: String,
    /// When it was due, ms since the Unix epoch.
    pub due_at_ms: u64,
}

/// The view of one activity.
pub fn activity_view(state: &State, activity: &Activity) -> ActivityView {
    let chat = state.chats.get(&activity.id).and_then(|chat| {
        let question = chat.events.first().and_then(|e| match &e.body {
            st::EventBody::Started { question, .. } => Some(question.clone()),
            _ => None,
        })?;
        Some(ChatSummary {
            customer_name: chat.customer.name.clone(),
            customer_email: chat.customer.email.clone(),
            question,
            status: chat.status.into(),
            last_seq: chat.last_seq(),
        })
    });
    let callback = match &activity.detail {
        ActivityDetail::Callback {
            name,
            phone,
            due_at_ms,
        } => Some(CallbackSummary {
            name: name.clone(),
            phone: phone.clone(),
            due_at_ms: *due_at_ms,
        }),
        ActivityDetail::Chat | ActivityDetail::Email { .. } => None,
    };
    ActivityView {
        id: activity.id.clone(),
        channel: activity.channel.into(),
        queue_id: activity.queue_id.clone(),
        status: (&activity.status).into(),
        created_at_ms: activity.created_at_ms,
        enqueued_at_ms: activity.enqueued_at_ms,
        assigned_at_ms: activity.assigned_at_ms,
        history: activity.history.iter().map(Transition::from).collect(),
        island_conflicts: activity
            .island_conflicts
            .iter()
            .map(|c| IslandConflictView {
                agent_id: c.agent_id.clone(),
                action: c.action.clone(),
                at_ms: c.at_ms,
                island_node: c.origin,
                reason: c.reason.clone(),
            })
            .collect(),
        chat,
        callback,
    }
}

/// An agent's console state.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AgentView {
    /// Id.
    pub agent_id: AgentId,
    /// Display name.
    pub name: String,
    /// Skills.
    pub skills: Vec<SkillId>,
    /// Limit per channel.
    pub limits: BTreeMap<Channel, u32>,
    /// Whether a session is open.
    pub logged_in: bool,
    /// The node the agent last used, while logged in.
    pub node: Option<u64>,
    /// False while the cluster's leader cannot reach that node (a site cut off): the agent
    /// gets no new work until they reconnect through a reachable node or it is reached again.
    pub reachable: bool,
    /// Ready per channel.
    pub ready: BTreeMap<Channel, bool>,
    /// Why not ready, as the agent said.
    pub not_ready_reason: Option<String>,
    /// Activities held per channel (offered or assigned).
    pub load: BTreeMap<Channel, u32>,
    /// Idle since, ms since the Unix epoch (longest idle is routed first).
    pub idle_since_ms: u64,
    /// The agent's last feed sequence number (provisional on an island).
    pub feed_last_seq: u64,
    /// The cursor to resume the agent's feed and stream from (pass it as `after`): the last
    /// feed sequence number, or on an island an island cursor.
    pub feed_after: String,
    /// Whether the agent holds more work of some channel than their limit (possible after an
    /// island merged: assigned work is never taken back): no new offers until below it.
    pub over_limit: bool,
    /// The activities the agent holds.
    pub activities: Vec<ActivityView>,
}

/// The view of one agent.
pub fn agent_view(state: &State, agent: &Agent) -> AgentView {
    let load = parley_raft::command::Channel::ALL
        .iter()
        .map(|c| {
            let held = u32::try_from(state.load(agent, *c)).unwrap_or(u32::MAX);
            (Channel::from(*c), held)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    AgentView {
        agent_id: agent.spec.id.clone(),
        name: agent.spec.name.clone(),
        skills: agent.spec.skills.clone(),
        limits: agent
            .spec
            .limits
            .iter()
            .map(|(c, n)| ((*c).into(), *n))
            .collect(),
        logged_in: agent.session.is_some(),
        node: agent.session.as_ref().map(|s| s.node),
        reachable: !state.agent_unreachable(agent),
        ready: agent.ready.iter().map(|(c, r)| ((*c).into(), *r)).collect(),
        not_ready_reason: agent.not_ready_reason.clone(),
        load,
        idle_since_ms: agent.idle_since_ms,
        feed_last_seq: agent.feed_last_seq(),
        feed_after: state.feed_cursor(&agent.spec.id).to_string(),
        over_limit: agent.spec.limits.iter().any(|(channel, limit)| {
            state.load(agent, *channel) > usize::try_from(*limit).unwrap_or(usize::MAX)
        }),
        activities: agent
            .work
            .iter()
            .filter_map(|id| state.activities.get(id))
            .map(|a| activity_view(state, a))
            .collect(),
    }
}

/// One event of an agent's feed as streams deliver it: chat events carry the event itself.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AgentFeedItem {
    /// Position in the agent's feed (provisional on an island: see `after`).
    pub seq: u64,
    /// The cursor to resume after this event, on any node: its `seq`, or an island cursor
    /// (`i.<node>.<epoch>.<fork>.<seq>`) for an event an island's view numbered. From an
    /// island cursor, a node other than that island resumes at the island's fork: the
    /// client is sent again, as merged, what it saw on the island.
    pub after: String,
    /// When it happened.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub body: AgentEventBody,
    /// For `chat_event`: the chat event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<ChatEvent>,
}

/// Agent feed events after `after`, materialized (see `State::feed_page`); `Err(first
/// retained)` when they are gone.
pub fn agent_feed(
    state: &State,
    agent_id: &str,
    after: &EventCursor,
    limit: usize,
) -> Option<Result<Vec<AgentFeedItem>, u64>> {
    Some(state.feed_page(agent_id, after, limit)?.map(|events| {
        events
            .into_iter()
            .map(|(e, at)| {
                let event = match &e.body {
                    st::AgentEventBody::ChatEvent { chat_id, chat_seq } => state
                        .chats
                        .get(chat_id)
                        .and_then(|c| c.event(*chat_seq))
                        .map(ChatEvent::from),
                    _ => None,
                };
                AgentFeedItem {
                    seq: e.seq,
                    after: at.to_string(),
                    at_ms: e.at_ms,
                    body: AgentEventBody::from(&e.body),
                    event,
                }
            })
            .collect()
    }))
}

/// A queue's live figures for supervisors.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct QueueStats {
    /// Id.
    pub queue_id: QueueId,
    /// Display name.
    pub name: String,
    /// Channel.
    pub channel: Channel,
    /// Activities waiting.
    pub waiting: u64,
    /// How long the oldest waiting activity has waited, ms (at the last applied change).
    pub oldest_enqueued_at_ms: Option<u64>,
    /// Activities offered and not yet accepted.
    pub offered: u64,
    /// Activities being worked.
    pub assigned: u64,
    /// Logged-in agents ready for this queue.
    pub agents_ready: u64,
    /// Mean of recent handling times, ms.
    pub mean_handle_ms: Option<u64>,
    /// Estimated wait for the next arrival, seconds.
    pub estimated_wait_s: u64,
}

/// Every queue's figures.
pub fn queue_stats(state: &State) -> Vec<QueueStats> {
    state
        .queues
        .values()
        .map(|queue| {
            let id = &queue.spec.id;
            let live = state
                .activities
                .values()
                .filter(|a| a.queue_id == *id && !a.status.is_terminal());
            let (mut waiting, mut offered, mut assigned) = (0, 0, 0);
            let mut oldest: Option<u64> = None;
            for activity in live {
                match activity.status {
                    st::ActivityStatus::Queued => {
                        waiting += 1;
                        oldest =
                            Some(oldest.map_or(activity.enqueued_at_ms, |o| {
                                o.min(activity.enqueued_at_ms)
                            }));
                    }
                    st::ActivityStatus::Offered { .. } => offered += 1,
                    st::ActivityStatus::Assigned { .. } => assigned += 1,
                    _ => {}
                }
            }
            let agents_ready = state.agents.values().filter(|a| queue.serves(a)).count() as u64;
            let handled = queue.recent_handle_ms.len() as u64;
            QueueStats {
                queue_id: id.clone(),
                name: queue.spec.name.clone(),
                channel: queue.spec.channel.into(),
                waiting,
                oldest_enqueued_at_ms: oldest,
                offered,
                assigned,
                agents_ready,
                mean_handle_ms: queue
                    .recent_handle_ms
                    .iter()
                    .sum::<u64>()
                    .checked_div(handled),
                estimated_wait_s: state.estimated_wait_ms(id, waiting + 1).div_ceil(1000),
            }
        })
        .collect()
}
