//! The replicated contact-center state and its pure `apply`.
//!
//! Architecture invariant: [`State::apply`] is a function of the state and the command only. It
//! reads no clock, draws no randomness and does no I/O, so every replica that applies the same
//! log reaches the same state, which [`State::digest`] lets anyone check.
//!
//! The state is split by concern:
//! - [`directory`](self::directory): departments, skills, queues and agents (config seeding
//!   and the admin API);
//! - [`chat`](self::chat): chat sessions, their gap-free events, survey;
//! - [`agents`](self::agents): login, presence, availability and each agent's event feed;
//! - [`routing`](self::routing): queues, offers, acceptance, transfers, completion, timers;
//! - [`hours`](self::hours): business hours;
//! - [`island`](self::island): what an island takes while cut off, and the merge of its
//!   writes once it is connected again;
//! - [`touched`](self::touched): which chats and agent feeds recent entries appended to, for
//!   delivery (a by-product of `apply`, not replicated state);
//! - [`email`](self::email): mailboxes and their cursors, cases and threading, the outbox;
//! - [`lease`](self::lease): leases with fencing tokens, for services that run on one node at
//!   a time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::command::{
    ActivityId, AgentId, AgentSpec, Channel, ChatId, Command, Customer, DepartmentId,
    DepartmentSpec, Op, Outcome, Participant, QueueId, QueueSpec, Rejection, Request, Response,
    Retention, SkillId, SkillSpec, TransferTarget,
};
use crate::limits;
use parley_storage::ArchiveOp;

mod agents;
mod chat;
mod directory;
pub mod email;
mod events;
pub mod hours;
mod input;
pub mod island;
pub mod lease;
pub mod reach;
mod retention;
mod routing;
pub mod touched;

pub use directory::{check_agent_spec, check_queue_spec};
pub use email::{check_mailbox_spec, Case, CaseMessage, Cursor, Delivery, Direction, EmailState};
pub use events::{ChatEvents, ClientMsgIds};
pub use input::{check_entry, check_input};
pub use island::{island_takes, EventCursor, IslandCursor, IslandMark};
pub use lease::Lease;
pub use retention::{archive_key, check_retention, Retired};
pub use routing::{QueuePosition, CALLBACK_OUTCOMES};

/// Everything the cluster agrees on. Ordered maps only, so serialization (and the digest) is
/// the same on every replica.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Departments by id.
    pub departments: BTreeMap<DepartmentId, DepartmentSpec>,
    /// Skills by id.
    pub skills: BTreeMap<SkillId, SkillSpec>,
    /// Queues by id.
    pub queues: BTreeMap<QueueId, Queue>,
    /// Agents by id.
    pub agents: BTreeMap<AgentId, Agent>,
    /// Activities (chats, callbacks) by id. Shared with copies of the state (a snapshot's) and
    /// copied on their first change (`Arc::make_mut`), so copying the state copies no activity.
    pub activities: BTreeMap<ActivityId, Arc<Activity>>,
    /// Chat sessions by id (a chat's activity has the same id).
    pub chats: BTreeMap<ChatId, Arc<Chat>>,
    /// Client idempotency keys (`chat:<request id>`, `callback:<request id>`) to the activity
    /// they created, so a retried start returns the same activity instead of a second one.
    pub requests: BTreeMap<String, ActivityId>,
    /// Activities waiting for an agent, in routing order: (time they entered the queue, id).
    pub waiting: BTreeSet<(u64, ActivityId)>,
    /// Pending timers: (due time, what). A [`Op::Tick`] fires those due.
    pub timers: BTreeSet<(u64, Timer)>,
    /// Open chats per customer (lowercased email address), to bound them.
    pub open_chats_by_customer: BTreeMap<String, BTreeSet<ChatId>>,
    /// Directory keys (`queue:ID`, `agent:ID`, ...) ever created, by config or the admin API,
    /// so a node restarting with its config never re-creates what an operator later removed
    /// nor overwrites what the admin API changed.
    pub seeded: BTreeSet<String>,
    /// How long finished work stays in memory, then in the archive.
    #[serde(default)]
    pub retention: Retention,
    /// The latest expiry of anything archived so far: archive purges go on until it passes.
    #[serde(default)]
    pub archived_until_ms: u64,
    /// When the armed [`Timer::PurgeArchive`] fires, if one is armed.
    #[serde(default)]
    pub archive_purge_due_ms: Option<u64>,
    /// The cluster version (see [`crate::version`]): operations needing a higher one are
    /// refused. Left out of the serialized state (and so of the digest) while it is the
    /// initial one, so a state of a release that knew no cluster version encodes the same.
    #[serde(default, skip_serializing_if = "ClusterVersion::is_initial")]
    pub cluster_version: ClusterVersion,
    /// Per island origin node, the next position of its journal not merged yet (see
    /// [`island`]): a merge skips what is below it, so replaying a chunk changes nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub islands_merged: BTreeMap<crate::types::NodeId, u64>,
    /// The island mark the next chat event gets, while an island write is applied (see
    /// [`island`]). Not replicated state: empty between commands.
    #[serde(skip)]
    pub(crate) island_write: island::Marking,
    /// Set on an island's own view: only work started on the island is routed there, and only
    /// to agents who acted on the island (see [`island`]). Not replicated state.
    #[serde(skip)]
    pub on_island_view: bool,
    /// The members the leader has not reached for `island_after`: agents connected through
    /// them get no new work (see [`reach`]).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unreachable_nodes: BTreeSet<crate::types::NodeId>,
    /// The email channel: mailboxes, leases, cases, the outbox (see [`email`]). Left out of
    /// the serialized state while unused.
    #[serde(default, skip_serializing_if = "EmailState::is_empty")]
    pub email: EmailState,
    /// Set on an island's own view: the island, and where each chat its writes touched stood
    /// when the view forked (see [`island`]). Not replicated state.
    #[serde(skip)]
    pub(crate) island_view: Option<island::ViewFork>,
    /// What applies retired since the store last took it (see `parley_storage::archive`).
    /// Not part of the replicated state: the store drains it after every apply batch.
    #[serde(skip)]
    pub archive_outbox: Vec<ArchiveOp>,
    /// The feeds recent entries appended to (see [`touched`]). Not part of the replicated
    /// state: never serialized, always equal.
    #[serde(skip)]
    pub touched: touched::Touched,
}

/// The replicated cluster version; starts at [`crate::version::CLUSTER_VERSION_INITIAL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterVersion(pub u32);

impl Default for ClusterVersion {
    fn default() -> Self {
        Self(crate::version::CLUSTER_VERSION_INITIAL)
    }
}

impl ClusterVersion {
    /// Whether it is the version a cluster starts at.
    pub fn is_initial(&self) -> bool {
        self.0 == crate::version::CLUSTER_VERSION_INITIAL
    }
}

impl State {
    /// Raises the cluster version; lowering it is refused, setting the same one changes
    /// nothing.
    fn set_cluster_version(&mut self, version: u32) -> Result<Outcome, Rejection> {
        if version < self.cluster_version.0 {
            return Err(Rejection::conflict(format!(
                "the cluster version is {} and never goes down (asked for {version})",
                self.cluster_version.0
            )));
        }
        self.cluster_version = ClusterVersion(version);
        Ok(Outcome::Done)
    }
}

/// Something that happens at a time unless the state moves on first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "timer", content = "id", rename_all = "snake_case")]
pub enum Timer {
    /// An offer expires: the activity goes back to its queue.
    Offer(ActivityId),
    /// A scheduled callback becomes due: it enters its queue.
    Callback(ActivityId),
    /// An assigned chat's customer has been silent too long: the chat ends.
    Inactivity(ChatId),
    /// A finished activity (and its chat) leaves memory for the archive.
    Retire(ActivityId),
    /// Expired archive records are deleted.
    PurgeArchive,
}

/// A queue that activities enter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    /// Configuration.
    pub spec: QueueSpec,
    /// The most recent handling times (assignment to completion), in ms, newest last.
    pub recent_handle_ms: VecDeque<u64>,
}

/// An agent of the contact center.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Configuration (including the password hash, which no API returns).
    pub spec: AgentSpec,
    /// The current login session, if logged in.
    pub session: Option<Session>,
    /// Ready (true) or not per channel; a missing channel is not ready.
    pub ready: BTreeMap<Channel, bool>,
    /// Why the agent is not ready, as they said.
    pub not_ready_reason: Option<String>,
    /// Since when the agent has been idle, for longest-idle routing: set when they become
    /// ready, are assigned work, or finish work.
    pub idle_since_ms: u64,
    /// Activities offered to or assigned to the agent.
    pub work: BTreeSet<ActivityId>,
    /// The agent's most recent events, for their stream.
    pub feed: VecDeque<AgentEvent>,
    /// The sequence number the next feed event gets (the first is 1).
    pub feed_next_seq: u64,
    /// When the agent last signed in or out or changed their availability themselves, and
    /// through which node: an island's such write merges only if it is later (ISLAND.md rule
    /// 4, see [`island`]). Unset until the first such action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_stamp: Option<island::OwnStamp>,
}

/// A login session of an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Id named by the agent's token.
    pub session_id: String,
    /// When it started.
    pub since_ms: u64,
    /// The node the agent last used.
    pub node: u64,
}

/// One event in an agent's feed, numbered from 1 without gaps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEvent {
    /// Position in the agent's feed.
    pub seq: u64,
    /// When it happened.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub body: AgentEventBody,
}

/// What an agent feed event records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEventBody {
    /// A login session started.
    LoggedIn {
        /// The session.
        session_id: String,
    },
    /// The session ended.
    LoggedOut {
        /// The session.
        session_id: String,
    },
    /// Availability changed.
    Availability {
        /// Ready per channel.
        ready: BTreeMap<Channel, bool>,
        /// Why not ready, if said.
        reason: Option<String>,
    },
    /// An activity is offered; accept it before `until_ms`.
    Offered {
        /// The activity.
        activity_id: ActivityId,
        /// Its channel.
        channel: Channel,
        /// Its queue.
        queue_id: QueueId,
        /// When the offer expires.
        until_ms: u64,
    },
    /// An offer was taken back (`timeout`, `ended`).
    OfferWithdrawn {
        /// The activity.
        activity_id: ActivityId,
        /// Why.
        reason: String,
    },
    /// The agent accepted an activity and now works it.
    Assigned {
        /// The activity.
        activity_id: ActivityId,
    },
    /// An activity left the agent (`completed`, `transferred`, `ended_by_customer`,
    /// `inactivity`).
    Released {
        /// The activity.
        activity_id: ActivityId,
        /// Why.
        reason: String,
    },
    /// An event in one of the agent's chats; streams deliver the chat event itself.
    ChatEvent {
        /// The chat.
        chat_id: ChatId,
        /// The chat event's sequence number.
        chat_seq: u64,
    },
    /// A message of the case of one of the agent's email activities arrived, or a reply's
    /// delivery changed.
    CaseUpdated {
        /// The email activity.
        activity_id: ActivityId,
        /// Its case.
        case_id: crate::command::CaseId,
        /// The case message concerned.
        message_seq: u64,
    },
}

/// A unit of work: a chat, a callback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Stable id.
    pub id: ActivityId,
    /// Channel.
    pub channel: Channel,
    /// The queue it is (or was last) in.
    pub queue_id: QueueId,
    /// Where it is in its life.
    pub status: ActivityStatus,
    /// When it was created.
    pub created_at_ms: u64,
    /// When it (last) entered its queue.
    pub enqueued_at_ms: u64,
    /// When its current agent accepted it.
    pub assigned_at_ms: Option<u64>,
    /// Every status change, oldest first.
    pub history: Vec<Transition>,
    /// Channel-specific details.
    pub detail: ActivityDetail,
    /// The idempotency key that created it, released when it is retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_key: Option<String>,
    /// Agents' actions an island acknowledged on it that lost to the cluster side at the
    /// merge (ISLAND.md rule 3: losers are kept, not dropped), oldest first, at most
    /// [`limits::ISLAND_CONFLICTS_PER_ACTIVITY_MAX`] (the oldest go first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub island_conflicts: Vec<IslandConflict>,
}

/// An agent's action an island acknowledged that the merged state did not take, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IslandConflict {
    /// The agent who acted.
    pub agent_id: AgentId,
    /// `accept`, `transfer` or `complete`.
    pub action: String,
    /// When the island took it (its stamp).
    pub at_ms: u64,
    /// The island node that took it.
    pub origin: crate::types::NodeId,
    /// Its island epoch then.
    pub epoch: u64,
    /// Why it lost: `assigned_elsewhere` (an agent of the cluster side worked the activity
    /// and its customer wrote there last), `ended` (it ended on the cluster side), or
    /// `not_held` (the agent did not hold it on the merged side).
    pub reason: String,
}

/// Where an activity is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ActivityStatus {
    /// A callback waiting for its requested time.
    Scheduled,
    /// Waiting in its queue for an agent.
    Queued,
    /// Offered to an agent until a time.
    Offered {
        /// The agent.
        agent_id: AgentId,
        /// When the offer expires.
        until_ms: u64,
    },
    /// Worked by an agent.
    Assigned {
        /// The agent.
        agent_id: AgentId,
    },
    /// Done.
    Completed {
        /// The result, if one was given.
        outcome: Option<String>,
    },
    /// The customer left before an agent took it.
    Abandoned,
}

impl ActivityStatus {
    /// The agent holding the activity (offered or assigned), if any.
    pub fn holder(&self) -> Option<&AgentId> {
        match self {
            ActivityStatus::Offered { agent_id, .. } | ActivityStatus::Assigned { agent_id } => {
                Some(agent_id)
            }
            _ => None,
        }
    }

    /// Whether the activity is over.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ActivityStatus::Completed { .. } | ActivityStatus::Abandoned
        )
    }
}

/// One status change of an activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// When.
    pub at_ms: u64,
    /// The new status.
    pub status: ActivityStatus,
    /// The queue at that point.
    pub queue_id: QueueId,
    /// Why (`created`, `routed`, `offer_timeout`, `transferred`, ...).
    pub reason: String,
}

/// Channel-specific details of an activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActivityDetail {
    /// A chat; its session is in `State::chats` under the same id.
    Chat,
    /// A callback.
    Callback {
        /// Who to call.
        name: String,
        /// E.164 number.
        phone: String,
        /// When it is due.
        due_at_ms: u64,
    },
    /// Work on an email case (its mail is in `State::email`).
    Email {
        /// The case.
        case_id: crate::command::CaseId,
        /// The mailbox it came through.
        mailbox_id: crate::command::MailboxId,
        /// The case's subject.
        subject: String,
        /// The customer's address.
        from: String,
    },
}

/// Where a chat is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatStatus {
    /// Open: messages may be posted.
    Open,
    /// Ended: read only, may be rated.
    Ended,
}

/// One chat session with its gap-free event sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    /// Stable id (also its activity's id).
    pub id: ChatId,
    /// The customer's pre-chat details.
    pub customer: Customer,
    /// Lifecycle status.
    pub status: ChatStatus,
    /// When the chat started (proposer's clock, ms since the Unix epoch).
    pub created_at_ms: u64,
    /// The agent currently in the chat.
    pub agent_id: Option<AgentId>,
    /// When the inactivity timer fires, if armed.
    pub inactivity_at_ms: Option<u64>,
    /// The customer's rating, once given.
    pub survey: Option<Survey>,
    /// The chat's events; `events[i].seq == i + 1` always. Shared with the copy a snapshot
    /// is built from (see [`ChatEvents`]).
    pub events: ChatEvents,
    /// `sender key/client message id` to the seq it was given, so a retried post is not
    /// applied twice (see [`ClientMsgIds`]).
    pub client_msg_ids: ClientMsgIds,
}

/// A customer's rating.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Survey {
    /// 1 to 5.
    pub rating: u8,
    /// Free text.
    pub comment: String,
    /// When it was given.
    pub at_ms: u64,
}

/// One event in a chat, numbered from 1 without gaps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatEvent {
    /// Position in the chat, starting at 1.
    pub seq: u64,
    /// When it happened (proposer's clock, ms since the Unix epoch).
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub body: EventBody,
    /// Set on an event an island added while it was cut off: which island, and the number the
    /// island's clients saw it under (see `island`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub island: Option<IslandMark>,
}

/// What a chat event records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// The chat started.
    Started {
        /// The queue it entered.
        queue_id: QueueId,
        /// The customer's display name.
        customer_name: String,
        /// The pre-chat question.
        question: String,
    },
    /// A message.
    Message {
        /// Who sent it.
        from: Participant,
        /// The sender's id for it.
        client_msg_id: String,
        /// The text.
        text: String,
    },
    /// An agent joined the chat.
    AgentJoined {
        /// The agent.
        agent_id: AgentId,
        /// The name shown to the customer.
        agent_name: String,
    },
    /// The agent left the chat (it was transferred).
    AgentLeft {
        /// The agent.
        agent_id: AgentId,
        /// Why.
        reason: String,
    },
    /// The chat was transferred; the customer waits for the next agent.
    Transferred {
        /// Where to.
        #[serde(flatten)]
        target: TransferTarget,
    },
    /// The chat ended.
    Ended {
        /// Who ended it.
        by: Participant,
        /// Why (`customer`, `agent`, `inactivity`).
        reason: String,
    },
    /// The customer rated the chat.
    Rated {
        /// 1 to 5.
        rating: u8,
    },
}

/// A broken state invariant, found by [`State::validate`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("state invariant violated: {0}")]
pub struct InvariantViolation(pub String);

impl State {
    /// Applies one batch; one outcome per command, in order.
    pub fn apply_request(&mut self, request: &Request) -> Response {
        Response {
            outcomes: request.commands.iter().map(|c| self.apply(c)).collect(),
        }
    }

    /// Applies one command. A rejected command changes nothing: every check runs before the
    /// first change.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        let at = command.at_ms;
        if let Err(rejection) = check_input(&command.op) {
            return Outcome::Rejected(rejection);
        }
        let needs = crate::version::op_cluster_version(&command.op);
        if needs > self.cluster_version.0 {
            return Outcome::Rejected(Rejection::NotEnabled {
                needs,
                cluster_version: self.cluster_version.0,
            });
        }
        let outcome = match &command.op {
            Op::SeedDirectory(directory) => Ok(self.seed(directory)),
            Op::Upsert(entry) => self.upsert(entry),
            Op::Remove(key) => self.remove(key),
            Op::StartChat(start) => self.start_chat(at, start),
            Op::PostMessage(post) => self.post_message(at, post),
            Op::EndChat(end) => self.end_chat(at, end),
            Op::SubmitSurvey(survey) => self.submit_survey(at, survey),
            Op::RequestCallback(request) => self.request_callback(at, request),
            Op::Login(login) => self.login(at, command.origin, login),
            Op::Presence(session) => self.presence(at, command.origin, session),
            Op::Logout(session) => self.logout(at, command.origin, session),
            Op::SetAvailability(set) => self.set_availability(at, command.origin, set),
            Op::Accept(action) => self.accept(at, action),
            Op::Transfer(transfer) => self.transfer(at, transfer),
            Op::Complete(complete) => self.complete(at, complete),
            Op::Tick => Ok(self.tick(at)),
            Op::SetRetention(retention) => Ok(self.set_retention(*retention)),
            Op::SetClusterVersion { version } => self.set_cluster_version(*version),
            Op::MergeIsland(chunk) => Ok(self.merge_island(chunk)),
            Op::SetUnreachable { nodes } => Ok(self.set_unreachable(command.at_ms, nodes)),
            Op::Email(op) => self.apply_email(at, command.origin, op),
        };
        outcome.unwrap_or_else(Outcome::Rejected)
    }

    /// The events of `chat_id` with `seq > after`, at most `limit` (capped at
    /// [`limits::EVENTS_PAGE_MAX`]). `None` when the chat does not exist.
    pub fn chat_events(&self, chat_id: &str, after: u64, limit: usize) -> Option<Vec<&ChatEvent>> {
        let chat = self.chats.get(chat_id)?;
        let start = usize::try_from(after).unwrap_or(usize::MAX);
        let end = start.saturating_add(limit.min(limits::EVENTS_PAGE_MAX));
        Some(chat.events.range(start, end).collect())
    }

    /// Checks every state invariant; used by tests, the chaos oracle and debug assertions.
    pub fn validate(&self) -> Result<(), InvariantViolation> {
        let fail = |what: String| Err(InvariantViolation(what));
        for (id, chat) in &self.chats {
            if *id != chat.id {
                return fail(format!("chat {id} stored under another id"));
            }
            let Some(activity) = self.activities.get(id) else {
                return fail(format!("chat {id} has no activity"));
            };
            if chat.status == ChatStatus::Open && activity.status.is_terminal() {
                return fail(format!("chat {id} is open but its activity is over"));
            }
            if chat.status == ChatStatus::Ended && !activity.status.is_terminal() {
                return fail(format!("chat {id} has ended but its activity is live"));
            }
            let assigned = match &activity.status {
                ActivityStatus::Assigned { agent_id } => Some(agent_id),
                _ => None,
            };
            if chat.agent_id.as_ref() != assigned {
                return fail(format!("chat {id} shows an agent its activity does not"));
            }
            chat.validate()?;
        }
        let retiring: BTreeSet<&ActivityId> = self
            .timers
            .iter()
            .filter_map(|(_, timer)| match timer {
                Timer::Retire(id) => Some(id),
                _ => None,
            })
            .collect();
        for (id, activity) in &self.activities {
            if *id != activity.id {
                return fail(format!("activity {id} stored under another id"));
            }
            let live = !activity.status.is_terminal();
            if live && !self.queues.contains_key(&activity.queue_id) {
                return fail(format!(
                    "live activity {id} is in unknown queue {}",
                    activity.queue_id
                ));
            }
            let waiting = self
                .waiting
                .contains(&(activity.enqueued_at_ms, id.clone()));
            if waiting != (activity.status == ActivityStatus::Queued) {
                return fail(format!("activity {id}: waiting list disagrees with status"));
            }
            // G6: an activity is held by at most one agent, and that agent lists it.
            let holders: Vec<&AgentId> = self
                .agents
                .iter()
                .filter(|(_, agent)| agent.work.contains(id))
                .map(|(agent_id, _)| agent_id)
                .collect();
            let expected: Vec<&AgentId> = activity.status.holder().into_iter().collect();
            if holders != expected {
                return fail(format!(
                    "activity {id} is held by {holders:?} but its status names {expected:?}"
                ));
            }
            if activity.history.last().map(|t| &t.status) != Some(&activity.status) {
                return fail(format!("activity {id}: history does not end at its status"));
            }
            if !live && !retiring.contains(id) {
                return fail(format!("activity {id} is over but never leaves memory"));
            }
        }
        if let Some(due) = self.archive_purge_due_ms {
            if !self.timers.contains(&(due, Timer::PurgeArchive)) {
                return fail("the state expects an archive purge that is not armed".to_owned());
            }
        }
        for (key, id) in &self.requests {
            if self.activities.get(id).and_then(|a| a.request_key.as_ref()) != Some(key) {
                return fail(format!("request {key} names {id}, which it did not create"));
            }
        }
        for (id, agent) in &self.agents {
            if *id != agent.spec.id {
                return fail(format!("agent {id} stored under another id"));
            }
            for activity_id in &agent.work {
                if !self.activities.contains_key(activity_id) {
                    return fail(format!("agent {id} holds missing activity {activity_id}"));
                }
            }
            // G6: never over the per-channel limit, unless an island's merge gave the agent
            // work they took on the island (assigned work is never taken back, ISLAND.md rule
            // 4; routing offers them nothing new until they are below it).
            for channel in Channel::ALL {
                let load = self.load(agent, channel);
                let limit = agent.spec.limits.get(&channel).copied().unwrap_or(0);
                if load > limit as usize && !self.holds_merged_work(agent) {
                    return fail(format!(
                        "agent {id} holds {load} {} activities over a limit of {limit}",
                        channel.as_str()
                    ));
                }
            }
            if agent.session.is_none() && agent.work.iter().any(|a| self.is_assigned(a)) {
                return fail(format!("agent {id} is logged out but holds assigned work"));
            }
            let next = agent.feed.back().map_or(1, |event| event.seq + 1);
            if agent.feed_next_seq.max(1) != next {
                return fail(format!("agent {id}: feed sequence has a gap"));
            }
        }
        for (at, timer) in &self.timers {
            let armed = match timer {
                Timer::Offer(id) => self.activities.get(id).is_some_and(|a| {
                    matches!(a.status, ActivityStatus::Offered { until_ms, .. } if until_ms == *at)
                }),
                Timer::Callback(id) => self.activities.get(id).is_some_and(|a| {
                    a.status == ActivityStatus::Scheduled
                        && matches!(a.detail, ActivityDetail::Callback { due_at_ms, .. } if due_at_ms == *at)
                }),
                Timer::Inactivity(id) => self
                    .chats
                    .get(id)
                    .is_some_and(|c| c.inactivity_at_ms == Some(*at)),
                Timer::Retire(id) => self
                    .activities
                    .get(id)
                    .is_some_and(|a| a.status.is_terminal()),
                Timer::PurgeArchive => self.archive_purge_due_ms == Some(*at),
            };
            if !armed {
                return fail(format!("timer {timer:?} at {at} is stale"));
            }
        }
        for (request, activity_id) in &self.requests {
            if !self.activities.contains_key(activity_id) {
                return fail(format!(
                    "request {request} points at missing activity {activity_id}"
                ));
            }
        }
        let keys = self
            .departments
            .keys()
            .map(|id| format!("department:{id}"))
            .chain(self.skills.keys().map(|id| format!("skill:{id}")))
            .chain(self.queues.keys().map(|id| format!("queue:{id}")))
            .chain(self.agents.keys().map(|id| format!("agent:{id}")));
        for key in keys {
            if !self.seeded.contains(&key) {
                return fail(format!("{key} was never recorded as created"));
            }
        }
        self.validate_email()
    }

    /// A stable hash of the whole state (BLAKE3 of its canonical JSON), hex encoded. Replicas at
    /// the same applied index must report the same digest.
    pub fn digest(&self) -> Result<String, serde_json::Error> {
        let bytes = serde_json::to_vec(self)?;
        Ok(blake3::hash(&bytes).to_hex().to_string())
    }

    /// Whether `agent` holds work an island's merge gave them (`merged_accept`).
    pub fn holds_merged_work(&self, agent: &Agent) -> bool {
        agent.work.iter().any(|id| {
            self.activities.get(id).is_some_and(|activity| {
                activity.history.iter().any(|t| {
                    t.reason == island::MERGED_ACCEPT && t.status.holder() == Some(&agent.spec.id)
                })
            })
        })
    }

    /// How many activities of `channel` the agent holds (offered or assigned).
    pub fn load(&self, agent: &Agent, channel: Channel) -> usize {
        agent
            .work
            .iter()
            .filter(|id| {
                self.activities
                    .get(*id)
                    .is_some_and(|a| a.channel == channel)
            })
            .count()
    }

    fn is_assigned(&self, activity_id: &str) -> bool {
        self.activities
            .get(activity_id)
            .is_some_and(|a| matches!(a.status, ActivityStatus::Assigned { .. }))
    }
}

impl Queue {
    /// Whether `agent` is logged in, ready for this queue's channel and holds every skill it
    /// needs (capacity aside).
    pub fn serves(&self, agent: &Agent) -> bool {
        agent.session.is_some()
            && agent
                .ready
                .get(&self.spec.channel)
                .copied()
                .unwrap_or(false)
            && self
                .spec
                .skills
                .iter()
                .all(|s| agent.spec.skills.contains(s))
    }
}

impl Chat {
    /// The event with sequence number `seq`, if any.
    pub fn event(&self, seq: u64) -> Option<&ChatEvent> {
        let index = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.events.get(index)
    }

    /// The sequence number of the last event.
    pub fn last_seq(&self) -> u64 {
        self.events.len() as u64
    }

    /// Checks this chat's invariants: a gap-free sequence starting with `Started`, and every
    /// client message id recorded exactly once.
    pub fn validate(&self) -> Result<(), InvariantViolation> {
        let fail = |what: String| Err(InvariantViolation(format!("chat {}: {what}", self.id)));
        for (index, event) in self.events.iter().enumerate() {
            if event.seq != index as u64 + 1 {
                return fail(format!("event at {index} has seq {}", event.seq));
            }
            let is_start = matches!(event.body, EventBody::Started { .. });
            if is_start != (index == 0) {
                return fail(format!("start event misplaced at seq {}", event.seq));
            }
        }
        let ended = self
            .events
            .iter()
            .filter(|e| matches!(e.body, EventBody::Ended { .. }))
            .count();
        if ended != usize::from(self.status == ChatStatus::Ended) {
            return fail(format!("{ended} end events for status {:?}", self.status));
        }
        let mut messages = 0usize;
        for event in &self.events {
            if let EventBody::Message {
                from,
                client_msg_id,
                ..
            } = &event.body
            {
                messages += 1;
                let key = format!("{}/{}", from.key(), client_msg_id);
                if self.client_msg_ids.get(&key) != Some(&event.seq) {
                    return fail(format!(
                        "message {} is not indexed by its client id",
                        event.seq
                    ));
                }
            }
        }
        if messages != self.client_msg_ids.len() {
            return fail(format!(
                "{} client ids for {messages} messages",
                self.client_msg_ids.len()
            ));
        }
        Ok(())
    }
}

impl Agent {
    /// The feed events with `seq > after`, at most `limit`; `Err(first retained seq)` when
    /// events after `after` are no longer retained.
    pub fn feed_after(&self, after: u64, limit: usize) -> Result<Vec<AgentEvent>, u64> {
        let first = self.feed.front().map_or(self.feed_next_seq, |e| e.seq);
        if after.saturating_add(1) < first {
            return Err(first);
        }
        let skip = usize::try_from(after.saturating_add(1) - first).unwrap_or(usize::MAX);
        Ok(self
            .feed
            .iter()
            .skip(skip)
            .take(limit.min(limits::EVENTS_PAGE_MAX))
            .cloned()
            .collect())
    }

    /// The sequence number of the agent's last feed event (0 when none).
    pub fn feed_last_seq(&self) -> u64 {
        self.feed_next_seq.saturating_sub(1)
    }

    /// Whether `session_id` is the agent's current session.
    pub fn has_session(&self, session_id: &str) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.session_id == session_id)
    }

    fn push_feed(&mut self, touched: &mut touched::Touched, at_ms: u64, body: AgentEventBody) {
        touched.record(touched::Touch::Agent(self.spec.id.clone()));
        let seq = self.feed_next_seq.max(1);
        self.feed.push_back(AgentEvent { seq, at_ms, body });
        self.feed_next_seq = seq + 1;
        while self.feed.len() > limits::AGENT_FEED_RETAINED {
            self.feed.pop_front();
        }
    }
}

pub(crate) fn check_text(
    field: &str,
    value: &str,
    min_bytes: usize,
    max_bytes: usize,
) -> Result<(), Rejection> {
    let problem = if value.len() > max_bytes {
        format!("longer than {max_bytes} bytes")
    } else if value.trim().len() < min_bytes {
        "must not be empty".to_owned()
    } else if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        "contains control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(Rejection::invalid(field, problem))
}

/// Client ids: 1..=128 bytes of printable ASCII without spaces.
pub fn check_client_id(field: &str, value: &str) -> Result<(), Rejection> {
    check_id(field, value, limits::CLIENT_ID_BYTES_MAX)
}

/// Directory ids: 1..=64 bytes of ASCII letters, digits, `-`, `_` and `.`.
pub fn check_directory_id(field: &str, value: &str) -> Result<(), Rejection> {
    check_id(field, value, limits::DIRECTORY_ID_BYTES_MAX)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Rejection::invalid(
            field,
            "may hold only letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(())
}

fn check_id(field: &str, value: &str, max_bytes: usize) -> Result<(), Rejection> {
    let problem = if value.is_empty() {
        "must not be empty".to_owned()
    } else if value.len() > max_bytes {
        format!("longer than {max_bytes} bytes")
    } else if !value.bytes().all(|b| b.is_ascii_graphic()) {
        "must be printable ASCII without spaces".to_owned()
    } else {
        return Ok(());
    };
    Err(Rejection::invalid(field, problem))
}

/// A short reason or outcome word: 1..=64 bytes of lowercase letters, digits, `_` and `-`.
pub fn check_reason(field: &str, value: &str) -> Result<(), Rejection> {
    if value.is_empty() || value.len() > limits::REASON_BYTES_MAX {
        return Err(Rejection::invalid(
            field,
            format!("must be 1 to {} bytes", limits::REASON_BYTES_MAX),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
    {
        return Err(Rejection::invalid(
            field,
            "may hold only lowercase letters, digits, '_' and '-'",
        ));
    }
    Ok(())
}

impl parley_storage::Machine for State {
    type Request = Request;
    type Response = Response;
    const SNAPSHOT_FORMAT: u32 = crate::version::SNAPSHOT_FORMAT;

    fn reads_snapshot_format(format: u32) -> bool {
        crate::version::reads_snapshot_format(format)
    }

    fn check_request(request: &Self::Request) -> Result<(), (u32, String)> {
        if crate::version::reads_log_format(request.format) {
            return Ok(());
        }
        Err((
            request.format,
            format!(
                "this release reads log formats {} to {}",
                crate::version::LOG_FORMAT_MIN,
                crate::version::LOG_FORMAT
            ),
        ))
    }

    fn apply(&mut self, log_index: u64, request: &Self::Request) -> Self::Response {
        self.touched.begin(log_index);
        self.apply_request(request)
    }

    fn empty_response() -> Self::Response {
        Response::default()
    }

    fn check_invariants(&self) -> Result<(), String> {
        self.validate().map_err(|violation| violation.0)
    }

    fn take_archive(&mut self) -> Vec<ArchiveOp> {
        std::mem::take(&mut self.archive_outbox)
    }
}

#[cfg(test)]
mod tests;
