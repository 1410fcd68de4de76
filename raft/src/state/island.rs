//! Island mode in the state: what an island takes while it is cut off, and the merge of those
//! writes into the replicated state once it is connected again.
//!
//! # The island's view
//!
//! An island serves from a copy of the state as it last applied it (the **fork**), with its own
//! writes applied on top by [`State::apply_island`]. The copy routes only what the island owns
//! ([`State::on_island_view`]): chats started on the island, offered only to agents who acted
//! on the island (signed in, said they are there, changed their availability or worked).
//! Work from before the split stays where it was (ISLAND.md rule 6), so it is never routed by
//! both sides; a chat of before the split already assigned to an agent on the island is
//! worked there as before. An island fires no timers: an offer made there waits for its agent
//! (or their sign-out) until the merge. Every chat event an island write adds is marked
//! ([`IslandMark`]) with the island (origin node, island epoch), the island's hybrid logical
//! clock and the sequence number the island's clients saw it under.
//!
//! # The merge ([`Op::MergeIsland`](crate::command::Op))
//!
//! The island replays its journal in chunks; each write is merged once (per origin, journal
//! positions below [`State::islands_merged`] are skipped), in the island's order:
//! - **start chat**: the chat is created as the island created it (its first event keeps its
//!   mark) and enters its queue at the time the island took it; a request id the cluster has
//!   seen already keeps the cluster's chat. A chat whose queue is gone (or no longer takes
//!   chats) is created and ended at once, so nothing the customer wrote is lost.
//! - **message**: grow-only. A message whose sender and client message id the chat holds
//!   already is the same message and is skipped; any other is appended with its mark, also to a
//!   chat that ended meanwhile (the transcript keeps it; nobody is routed for it).
//! - **end**: the end wins: an open chat ends; an ended one stays as it is.
//! - **survey**: the first rating wins.
//! - **callback request**: deduplicated by request id, as always.
//! - **an agent's sign-in, sign-out and availability** (rule 4): last writer wins, by the
//!   agent's own actions' clock, then node ([`OwnStamp`]); an island's sign-in that lost
//!   leaves the cluster side's session in place. A sign-out is refused while the agent holds
//!   assigned work on the merged side.
//! - **an agent's accept** (rules 2 and 3): work nobody works on the cluster side (queued, or
//!   offered to another agent, whose offer is withdrawn) is offered to the island's agent and
//!   accepted; work an agent of the cluster side works stays theirs unless the chat's latest
//!   customer message was taken by this island, in which case that agent is released
//!   (`merged_transfer`, capacity back) and the island's agent works it. Ended work stays
//!   ended. Assigned work is never revoked for a limit: an agent over a limit after the merge
//!   gets no new offers until below it.
//! - **transfer, complete**: as on the cluster, by the agent whatever their session (an
//!   island's session may have lost to a later sign-in), when they hold the work on the
//!   merged side; a completion of work that ended meanwhile changes nothing (the end wins).
//! - **an agent's action that lost** (an accept of work the cluster side's agent keeps or that
//!   ended there; a transfer or completion of work the agent does not hold on the merged side)
//!   is kept on its activity as an [`IslandConflict`] (who, what, when, which island, why),
//!   not dropped and not refused: the island acknowledged it, and CouchDB's rule holds here
//!   too, losers are kept. A lost accept also tells the agent's feed the work is not theirs
//!   (`Released`, `merged_transfer`), so their console lets go of it.
//!
//! A write the merged state cannot take (its chat was retired meanwhile, say) is listed in the
//! outcome with why, never dropped unseen. Sequence numbers are given at merge, after the
//! chat's last one: a number once answered never changes meaning, and a client holding an
//! island cursor resumes with exactly what it did not see ([`State::events_after_island`]).
//!
//! # Cursors ([`EventCursor`])
//!
//! On an island's view the events its writes added after the fork are numbered provisionally:
//! the merge numbers them again after the cluster's own events of the time. A client that read
//! such events holds an island cursor (the island, the fork, the last island event it saw)
//! instead of a sequence number; [`State::events_page`] answers every page with the cursor
//! after each event, so a client passes back what it was given and resumes on any node, before
//! or after the merge, with exactly the events it missed. An island cursor becomes a plain
//! sequence number again once no island event it covers lies ahead.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    ActivityStatus, AgentEvent, AgentEventBody, ChatEvent, ChatStatus, EventBody, IslandConflict,
    State,
};
use crate::command::{
    ActivityAction, AgentId, AgentSession, Command, EndChat, IslandChunk, IslandWrite, Login, Op,
    Outcome, Participant, PostMessage, RefusedWrite, Rejection, StartChat, SubmitSurvey,
};
use crate::island::Stamp;
use crate::types::NodeId;

/// Why a merge offered work to an island's agent who took it on the island.
pub const MERGED_ACCEPT: &str = "merged_accept";
/// Why a merge took work from an agent: the other side's agent works it.
pub const MERGED_TRANSFER: &str = "merged_transfer";
/// An island's action lost: an agent of the cluster side works the activity, and its
/// customer wrote there last.
pub const CONFLICT_ASSIGNED_ELSEWHERE: &str = "assigned_elsewhere";
/// An island's action lost: the activity ended on the cluster side.
pub const CONFLICT_ENDED: &str = "ended";
/// An island's action lost: the agent did not hold the activity on the merged side.
pub const CONFLICT_NOT_HELD: &str = "not_held";

/// The latest of `chat`'s customer messages, by clock then node (see [`event_stamp`]).
fn latest_customer_message(chat: &super::Chat) -> Option<&ChatEvent> {
    chat.events
        .iter()
        .filter(|event| {
            matches!(
                &event.body,
                EventBody::Message {
                    from: Participant::Customer,
                    ..
                }
            )
        })
        .max_by_key(|event| event_stamp(event))
}

/// When a chat event was taken: an island's by its clock and node; the cluster's by the
/// proposer's clock, before any island event of the same ms (node 0).
fn event_stamp(event: &ChatEvent) -> OwnStamp {
    match event.island {
        Some(mark) => OwnStamp {
            hlc: mark.hlc,
            origin: mark.origin,
        },
        None => OwnStamp {
            hlc: Stamp {
                wall_ms: event.at_ms,
                logical: 0,
            },
            origin: 0,
        },
    }
}

/// The agent an agent's action is by, if `op` is one.
fn acting_agent(op: &Op) -> Option<&AgentId> {
    match op {
        Op::Login(login) => Some(&login.agent_id),
        Op::Presence(session) | Op::Logout(session) => Some(&session.agent_id),
        Op::SetAvailability(set) => Some(&set.session.agent_id),
        Op::Accept(action) => Some(&action.session.agent_id),
        Op::Transfer(transfer) => Some(&transfer.action.session.agent_id),
        Op::Complete(complete) => Some(&complete.action.session.agent_id),
        _ => None,
    }
}

/// The record of an agent's island action (`kind`: accept, transfer, complete) that lost at
/// the merge, and why.
fn lost_action(
    action: &ActivityAction,
    kind: &str,
    at_ms: u64,
    origin: NodeId,
    epoch: u64,
    reason: &str,
) -> IslandConflict {
    IslandConflict {
        agent_id: action.session.agent_id.clone(),
        action: kind.to_owned(),
        at_ms,
        origin,
        epoch,
        reason: reason.to_owned(),
    }
}

/// The activity an agent's accept, transfer or completion is on, if `op` is one.
fn work_acted_on(op: &Op) -> Option<&str> {
    match op {
        Op::Accept(action) => Some(&action.activity_id),
        Op::Transfer(transfer) => Some(&transfer.action.activity_id),
        Op::Complete(complete) => Some(&complete.action.activity_id),
        _ => None,
    }
}

/// Where an event added by an island came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IslandMark {
    /// The island node that took the write.
    pub origin: NodeId,
    /// Its island epoch then.
    pub epoch: u64,
    /// The sequence number the island's clients saw the event under.
    pub seq: u64,
    /// The island's hybrid logical clock when it took the write.
    pub hlc: Stamp,
}

/// A cursor an island handed out: the client saw the chat up to island sequence number `seq`
/// of island (`origin`, `epoch`), which forked from the chat at sequence number `fork`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IslandCursor {
    /// The island node.
    pub origin: NodeId,
    /// Its island epoch.
    pub epoch: u64,
    /// The chat's last sequence number when the island forked (0 for a chat started there).
    pub fork: u64,
    /// The last island sequence number the client saw.
    pub seq: u64,
}

/// Where an island's view forked, per chat its writes touched (see the module docs).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ViewFork {
    /// The island node whose view this is.
    origin: NodeId,
    /// Its island epoch.
    epoch: u64,
    /// Per chat, its last sequence number when the view forked (0: started on the island).
    chats: BTreeMap<crate::command::ChatId, u64>,
    /// The agents who acted on the island: the only ones its routing offers work to.
    agents: BTreeSet<AgentId>,
    /// Work from before the split an agent on the island transferred to another agent there:
    /// the island made that offer, so it takes its accept.
    offered: BTreeSet<crate::command::ActivityId>,
    /// Per agent, the last sequence number of their feed when the view forked: feed events
    /// after it are numbered provisionally (see [`State::feed_page`]).
    feeds: BTreeMap<AgentId, u64>,
}

/// When, and through which node, an agent last signed in or out or changed their
/// availability themselves: the island's clock for an island write, the proposer's clock
/// (logical part 0) otherwise. Ordered by clock, then node, so every node picks the same
/// latest (ISLAND.md rule 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OwnStamp {
    /// The clock.
    pub hlc: Stamp,
    /// The node that took the action.
    pub origin: NodeId,
}

/// Where a client stands in a chat's events (the `after` of the events API and streams).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventCursor {
    /// Every event after this sequence number is new to the client.
    After(u64),
    /// The client read through an island.
    Island(IslandCursor),
}

impl Default for EventCursor {
    fn default() -> Self {
        EventCursor::After(0)
    }
}

impl std::fmt::Display for EventCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventCursor::After(seq) => write!(f, "{seq}"),
            EventCursor::Island(c) => {
                write!(f, "i.{}.{}.{}.{}", c.origin, c.epoch, c.fork, c.seq)
            }
        }
    }
}

impl std::str::FromStr for EventCursor {
    type Err = String;

    /// `<seq>` or `i.<origin>.<epoch>.<fork>.<seq>`, decimal numbers.
    fn from_str(text: &str) -> Result<Self, String> {
        let number = |part: &str| {
            if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "cursor {text:?} is neither a sequence number nor an island cursor \
                     (i.<node>.<epoch>.<fork>.<seq>)"
                ));
            }
            part.parse::<u64>()
                .map_err(|_| format!("cursor {text:?} holds a number out of range"))
        };
        match text.strip_prefix("i.") {
            None => number(text).map(EventCursor::After),
            Some(rest) => {
                let parts: Vec<&str> = rest.split('.').collect();
                let [origin, epoch, fork, seq] = parts.as_slice() else {
                    return Err(format!(
                        "island cursor {text:?} must be i.<node>.<epoch>.<fork>.<seq>"
                    ));
                };
                Ok(EventCursor::Island(IslandCursor {
                    origin: number(origin)?,
                    epoch: number(epoch)?,
                    fork: number(fork)?,
                    seq: number(seq)?,
                }))
            }
        }
    }
}

/// Whether `mark` is of island `origin` at or before (`epoch`, `seq`): island events of one
/// node are ordered by epoch, then by island sequence number.
fn covered(mark: &IslandMark, origin: NodeId, epoch: u64, seq: u64) -> bool {
    mark.origin == origin && (mark.epoch, mark.seq) <= (epoch, seq)
}

/// The mark the next chat event gets while an island write is applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Marking {
    pending: Option<IslandMark>,
    /// The sequence number the marked event got, once it was added.
    added: Option<u64>,
    /// The write's clock and island, for an agent's own actions.
    stamp: Option<OwnStamp>,
    /// Whether the write is being merged (not applied to an island's view).
    merging: bool,
    /// Agents' island actions kept as conflicts by the merge of the current chunk.
    lost: u32,
}

impl Marking {
    /// Whether an island write is being applied (on a view, or merged).
    pub(crate) fn active(&self) -> bool {
        self.pending.is_some() || self.added.is_some()
    }

    /// The mark for an event given sequence number `seq`, if a write is being marked and its
    /// event was not added yet. A mark whose island seq is unset (0) takes `seq`: on the
    /// island's own view the two are one.
    pub(crate) fn take_mark(&mut self, seq: u64) -> Option<IslandMark> {
        let mut mark = self.pending.take()?;
        if mark.seq == 0 {
            mark.seq = seq;
        }
        self.added = Some(seq);
        Some(mark)
    }

    /// Whether an island write is being merged.
    pub(crate) fn merging(&self) -> bool {
        self.merging
    }

    /// Holds the mark back while the merge adds events of its own (not the island write's).
    fn suspend(&mut self) -> Option<IslandMark> {
        self.pending.take()
    }

    fn resume(&mut self, held: Option<IslandMark>) {
        if self.pending.is_none() && self.added.is_none() {
            self.pending = held;
        }
    }

    fn start(&mut self, mark: IslandMark, merging: bool) {
        self.pending = Some(mark);
        self.added = None;
        self.stamp = Some(OwnStamp {
            hlc: mark.hlc,
            origin: mark.origin,
        });
        self.merging = merging;
    }

    fn finish(&mut self) -> Option<u64> {
        self.pending = None;
        self.stamp = None;
        self.merging = false;
        self.added.take()
    }
}

/// Whether an island takes `op`: the customer's side of chats and callbacks, and agents'
/// sign-in, availability and work. Directory and membership changes, cluster settings and
/// timers wait for the cluster.
pub fn island_takes(op: &Op) -> Result<(), Rejection> {
    let what = match op {
        Op::StartChat(_)
        | Op::PostMessage(_)
        | Op::EndChat(_)
        | Op::SubmitSurvey(_)
        | Op::RequestCallback(_)
        | Op::Login(_)
        | Op::Presence(_)
        | Op::Logout(_)
        | Op::SetAvailability(_)
        | Op::Accept(_)
        | Op::Transfer(_)
        | Op::Complete(_) => return Ok(()),
        Op::SeedDirectory(_) | Op::Upsert(_) | Op::Remove(_) => "a directory change",
        Op::SetRetention(_) | Op::SetClusterVersion { .. } | Op::SetUnreachable { .. } => {
            "a cluster setting"
        }
        Op::Tick => "a timer",
        Op::MergeIsland(_) => "a merge",
        // Leases and the mail cursor need the quorum: an island would fetch what the cluster
        // fetches too.
        Op::Email(_) => "email",
    };
    Err(Rejection::Island {
        what: what.to_owned(),
    })
}

impl State {
    /// Applies one island write to an island's view (see the module docs): refused unless an
    /// island takes it; the chat event it adds is marked with `origin`, `epoch` and the write's
    /// clock, and its sequence number is recorded in `write.seq`. A write that has a recorded
    /// sequence number already (a view rebuilt from the journal) keeps it: it is the number
    /// its client was answered with.
    pub fn apply_island(&mut self, origin: NodeId, epoch: u64, write: &mut IslandWrite) -> Outcome {
        if let Err(rejection) = island_takes(&write.op) {
            return Outcome::Rejected(rejection);
        }
        let needs = crate::version::island_op_cluster_version(&write.op);
        if needs > self.cluster_version.0 {
            return Outcome::Rejected(Rejection::Island {
                what: format!(
                    "an agent's action (an island takes it at cluster version {needs}; the \
                     cluster is at {})",
                    self.cluster_version.0
                ),
            });
        }
        let chat_id = match &write.op {
            Op::StartChat(op) => Some(&op.chat_id),
            Op::PostMessage(op) => Some(&op.chat_id),
            Op::EndChat(op) => Some(&op.chat_id),
            Op::SubmitSurvey(op) => Some(&op.chat_id),
            _ => None,
        };
        if self.island_view.is_none() {
            // The first island write: the view is the fork still.
            let feeds = self
                .agents
                .iter()
                .map(|(id, agent)| (id.clone(), agent.feed_last_seq()))
                .collect();
            self.island_view = Some(ViewFork {
                origin,
                epoch,
                chats: BTreeMap::new(),
                agents: BTreeSet::new(),
                offered: BTreeSet::new(),
                feeds,
            });
        }
        if let Op::Accept(action) = &write.op {
            // An offer from before the split is the cluster's to time out and route again
            // (ISLAND.md rule 6): the island takes accepts of the chats it started and of the
            // offers it made itself (a transfer between two agents on the island).
            let offered_here = self
                .island_view
                .as_ref()
                .is_some_and(|view| view.offered.contains(&action.activity_id));
            if !self.island_owns(&action.activity_id) && !offered_here {
                return Outcome::Rejected(Rejection::Island {
                    what: format!(
                        "accepting {}, offered before the site was cut off,",
                        action.activity_id
                    ),
                });
            }
        }
        let chat_fork = chat_id.map(|id| (id, self.chats.get(id).map_or(0, |c| c.last_seq())));
        let agents_on_islands = self.cluster_version.0 >= crate::version::AGENTS_ON_ISLANDS;
        if agents_on_islands && write.seq.is_none() && write.agent.is_none() {
            write.agent = chat_id
                .and_then(|id| self.chats.get(id))
                .and_then(|chat| chat.agent_id.clone());
        }
        if let Some(view) = self.island_view.as_mut() {
            if let Some((chat_id, fork)) = chat_fork {
                view.chats.entry(chat_id.clone()).or_insert(fork);
            }
        }
        self.island_write.start(
            IslandMark {
                origin,
                epoch,
                seq: write.seq.unwrap_or(0),
                hlc: write.hlc,
            },
            false,
        );
        let outcome = self.apply(&Command {
            at_ms: write.at_ms,
            origin,
            op: write.op.clone(),
        });
        let added = self.island_write.finish();
        let outcome = match (outcome, work_acted_on(&write.op)) {
            // The island knows the state of work from before the split only as it was then:
            // the cluster side may have moved it to this agent since. Not a conflict the
            // island can decide; the agent retries on the cluster.
            (Outcome::Rejected(Rejection::Conflict { .. }), Some(activity_id))
                if !self.island_owns(activity_id) =>
            {
                Outcome::Rejected(Rejection::Island {
                    what: format!(
                        "an action on {activity_id}, work from before the site was cut off that \
                         this island does not hold,"
                    ),
                })
            }
            (outcome, _) => outcome,
        };
        if write.seq.is_none() {
            write.seq = added;
        }
        if !matches!(outcome, Outcome::Rejected(_)) {
            // The agent is on the island: its routing may offer them work.
            if let (Some(agent_id), Some(view)) =
                (acting_agent(&write.op), self.island_view.as_mut())
            {
                view.agents.insert(agent_id.clone());
            }
            if let (Op::Transfer(transfer), Some(view)) = (&write.op, self.island_view.as_mut()) {
                if matches!(
                    transfer.target,
                    crate::command::TransferTarget::Agent { .. }
                ) {
                    view.offered.insert(transfer.action.activity_id.clone());
                }
            }
        }
        outcome
    }

    /// Merges a chunk of an island's journal (see the module docs).
    pub(super) fn merge_island(&mut self, chunk: &IslandChunk) -> Outcome {
        let mut merged = 0u32;
        let mut skipped = 0u32;
        let mut refused = Vec::new();
        self.island_write.lost = 0;
        let next = self.islands_merged.get(&chunk.origin).copied().unwrap_or(0);
        let mut next_position = next;
        for write in &chunk.writes {
            if write.position < next_position {
                skipped += 1;
                continue;
            }
            self.island_write.start(
                IslandMark {
                    origin: chunk.origin,
                    epoch: chunk.epoch,
                    seq: write.seq.unwrap_or(0),
                    hlc: write.hlc,
                },
                true,
            );
            let result = self.merge_write(chunk.origin, chunk.epoch, write);
            self.island_write.finish();
            match result {
                Ok(()) => merged += 1,
                Err(rejection) => {
                    tracing::warn!(
                        origin = chunk.origin,
                        epoch = chunk.epoch,
                        position = write.position,
                        %rejection,
                        "an island write could not be merged"
                    );
                    refused.push(RefusedWrite {
                        position: write.position,
                        rejection,
                    });
                }
            }
            next_position = write.position + 1;
        }
        self.islands_merged.insert(chunk.origin, next_position);
        let conflicts = std::mem::take(&mut self.island_write.lost);
        Outcome::IslandMerged {
            merged,
            skipped,
            refused,
            conflicts,
            next_position,
        }
    }

    fn merge_write(
        &mut self,
        origin: NodeId,
        epoch: u64,
        write: &IslandWrite,
    ) -> Result<(), Rejection> {
        let at = write.at_ms;
        match &write.op {
            Op::StartChat(start) => self.merge_start(at, start),
            Op::PostMessage(post) => self.merge_message(at, post, write.agent.as_ref()),
            Op::EndChat(end) => self.merge_end(at, end),
            Op::SubmitSurvey(survey) => self.merge_survey(at, survey),
            Op::RequestCallback(request) => self.request_callback(at, request).map(|_| ()),
            Op::Login(login) => self.merge_login(at, origin, login),
            Op::Presence(session) => {
                if self.has_session(session) {
                    self.presence(at, origin, session)?;
                }
                Ok(())
            }
            Op::Logout(session) => {
                if self.has_session(session) && self.island_stamp_wins(&session.agent_id) {
                    self.logout(at, origin, session)?;
                }
                Ok(())
            }
            Op::SetAvailability(set) => {
                self.known_agent(&set.session.agent_id)?;
                if self.island_stamp_wins(&set.session.agent_id) {
                    self.set_availability(at, origin, set)?;
                }
                Ok(())
            }
            Op::Accept(action) => {
                let lost = self.merge_accept(at, origin, action)?;
                if let Some(reason) = lost {
                    let conflict = lost_action(action, "accept", at, origin, epoch, reason);
                    self.island_action_lost(&action.activity_id, conflict, true);
                }
                Ok(())
            }
            Op::Transfer(transfer) => {
                let action = &transfer.action;
                match self.transfer(at, transfer) {
                    Ok(_) => Ok(()),
                    Err(Rejection::Conflict { .. }) if !self.holds(action) => {
                        let reason = self.why_not_held(&action.activity_id);
                        let conflict = lost_action(action, "transfer", at, origin, epoch, reason);
                        self.island_action_lost(&action.activity_id, conflict, false);
                        Ok(())
                    }
                    Err(rejection) => Err(rejection),
                }
            }
            Op::Complete(complete) => {
                let action = &complete.action;
                let ended = self
                    .activities
                    .get(&action.activity_id)
                    .is_some_and(|a| a.status.is_terminal());
                if ended || !self.holds(action) {
                    // Ended on the cluster side meanwhile (the end wins, ISLAND.md rule 2), or
                    // worked there by another agent (rule 3): kept as a conflict.
                    if self.activities.contains_key(&action.activity_id) {
                        let reason = self.why_not_held(&action.activity_id);
                        let conflict = lost_action(action, "complete", at, origin, epoch, reason);
                        self.island_action_lost(&action.activity_id, conflict, false);
                        return Ok(());
                    }
                }
                self.complete(at, complete).map(|_| ())
            }
            // `check_input` refuses a chunk holding anything else.
            other => island_takes(other),
        }
    }

    fn known_agent(&self, agent_id: &str) -> Result<&super::Agent, Rejection> {
        self.agents
            .get(agent_id)
            .ok_or_else(|| Rejection::UnknownAgent {
                agent_id: agent_id.to_owned(),
            })
    }

    fn has_session(&self, session: &AgentSession) -> bool {
        self.agents
            .get(&session.agent_id)
            .is_some_and(|agent| agent.has_session(&session.session_id))
    }

    /// Whether the island write being merged is later than the agent's own last sign-in,
    /// sign-out or availability change (ISLAND.md rule 4: last writer by clock, then node).
    fn island_stamp_wins(&self, agent_id: &str) -> bool {
        let Some(stamp) = self.island_write.stamp else {
            return false;
        };
        self.agents
            .get(agent_id)
            .is_some_and(|agent| agent.own_stamp.is_none_or(|own| stamp > own))
    }

    /// An island sign-in: taken if it is the agent's latest own action; otherwise the later
    /// session on the cluster side stays and the island's is over (the agent signs in again;
    /// what they did on the island is merged all the same).
    fn merge_login(&mut self, at_ms: u64, origin: NodeId, login: &Login) -> Result<(), Rejection> {
        let agent = self.known_agent(&login.agent_id)?;
        if agent.has_session(&login.session_id) || !self.island_stamp_wins(&login.agent_id) {
            return Ok(());
        }
        self.login(at_ms, origin, login).map(|_| ())
    }

    /// Whether the agent of `action` holds its activity on the merged side.
    fn holds(&self, action: &ActivityAction) -> bool {
        self.activities.get(&action.activity_id).is_some_and(|a| {
            matches!(&a.status, ActivityStatus::Assigned { agent_id } if *agent_id == action.session.agent_id)
        })
    }

    /// Why an agent's island action on `activity_id` did not take (see [`IslandConflict`]).
    fn why_not_held(&self, activity_id: &str) -> &'static str {
        match self.activities.get(activity_id).map(|a| &a.status) {
            Some(status) if status.is_terminal() => CONFLICT_ENDED,
            Some(ActivityStatus::Assigned { .. }) => CONFLICT_ASSIGNED_ELSEWHERE,
            _ => CONFLICT_NOT_HELD,
        }
    }

    /// Keeps an island's action that lost at the merge on its activity (ISLAND.md rule 3:
    /// losers are kept, not dropped); with `release`, the agent's feed says the work is not
    /// theirs (`merged_transfer`), so their console lets go of what the island gave them.
    fn island_action_lost(&mut self, activity_id: &str, conflict: IslandConflict, release: bool) {
        let at_ms = conflict.at_ms;
        let agent_id = conflict.agent_id.clone();
        tracing::info!(
            activity_id,
            agent_id,
            action = conflict.action,
            reason = conflict.reason,
            origin = conflict.origin,
            "an island's action lost at the merge; kept as a conflict"
        );
        let Some(activity) = self
            .activities
            .get_mut(activity_id)
            .map(std::sync::Arc::make_mut)
        else {
            return;
        };
        if activity.island_conflicts.len() >= crate::limits::ISLAND_CONFLICTS_PER_ACTIVITY_MAX {
            activity.island_conflicts.remove(0);
        }
        activity.island_conflicts.push(conflict);
        self.island_write.lost = self.island_write.lost.saturating_add(1);
        if release {
            if let Some(agent) = self.agents.get_mut(&agent_id) {
                agent.push_feed(
                    &mut self.touched,
                    at_ms,
                    AgentEventBody::Released {
                        activity_id: activity_id.to_owned(),
                        reason: MERGED_TRANSFER.to_owned(),
                    },
                );
            }
        }
    }

    /// An island's accept (ISLAND.md rules 2 and 3): work nobody on the cluster side works
    /// (queued, or offered to someone) is offered to the island's agent and accepted; work an
    /// agent of the cluster side works goes to the side that holds its customer's latest
    /// message since the split, the other agent getting a `merged_transfer` release; ended
    /// work stays ended. Answers why the island's accept lost, if it did.
    fn merge_accept(
        &mut self,
        at_ms: u64,
        origin: NodeId,
        action: &ActivityAction,
    ) -> Result<Option<&'static str>, Rejection> {
        self.known_agent(&action.session.agent_id)?;
        let me = &action.session.agent_id;
        let activity =
            self.activities
                .get(&action.activity_id)
                .ok_or_else(|| Rejection::UnknownActivity {
                    activity_id: action.activity_id.clone(),
                })?;
        let id = activity.id.clone();
        match activity.status.clone() {
            ActivityStatus::Assigned { agent_id } if agent_id == *me => return Ok(None),
            ActivityStatus::Offered { agent_id, .. } if agent_id == *me => {}
            ActivityStatus::Offered { .. } => {
                self.return_offer(at_ms, &id, MERGED_TRANSFER);
                self.offer(at_ms, &id, me, MERGED_ACCEPT);
            }
            ActivityStatus::Queued => self.offer(at_ms, &id, me, MERGED_ACCEPT),
            ActivityStatus::Assigned { agent_id } => {
                if !self.customer_last_on_island(&id, origin) {
                    // The cluster side's agent keeps it: its customer wrote there last.
                    return Ok(Some(CONFLICT_ASSIGNED_ELSEWHERE));
                }
                self.take_from_agent(at_ms, &id, &agent_id, MERGED_TRANSFER);
                self.offer(at_ms, &id, me, MERGED_ACCEPT);
            }
            ActivityStatus::Completed { .. } | ActivityStatus::Abandoned => {
                return Ok(Some(CONFLICT_ENDED));
            }
            ActivityStatus::Scheduled => return Ok(Some(CONFLICT_NOT_HELD)),
        }
        self.accept(at_ms, action).map(|_| None)
    }

    /// Whether the latest customer message of chat `chat_id`, by clock then node, was taken by
    /// island `origin`.
    fn customer_last_on_island(&self, chat_id: &str, origin: NodeId) -> bool {
        self.chats
            .get(chat_id)
            .and_then(|chat| latest_customer_message(chat))
            .is_some_and(|event| event.island.is_some_and(|mark| mark.origin == origin))
    }

    /// Whether the island write being merged is later, by clock then node, than every
    /// customer message `chat` holds.
    fn island_write_is_latest(&self, chat: &super::Chat) -> bool {
        let Some(stamp) = self.island_write.stamp else {
            return false;
        };
        latest_customer_message(chat).is_none_or(|event| event_stamp(event) < stamp)
    }

    /// Gives open chat `chat_id` to `agent_id` at a merge: whoever holds it (an offer, or
    /// the chat) lets go (`merged_transfer`), and the agent is offered it and accepts.
    fn give_to(&mut self, at_ms: u64, chat_id: &str, agent_id: &AgentId) {
        let Some(status) = self.activities.get(chat_id).map(|a| a.status.clone()) else {
            return;
        };
        // The events this adds are the merge's; the island write's mark is for its message.
        let held = self.island_write.suspend();
        match status {
            ActivityStatus::Assigned { agent_id: holder } => {
                self.take_from_agent(at_ms, chat_id, &holder, MERGED_TRANSFER);
            }
            ActivityStatus::Offered { .. } => {
                self.return_offer(at_ms, chat_id, MERGED_TRANSFER);
            }
            ActivityStatus::Queued => {}
            _ => {
                self.island_write.resume(held);
                return;
            }
        }
        self.offer(at_ms, chat_id, agent_id, MERGED_ACCEPT);
        let session_id = self
            .agents
            .get(agent_id)
            .and_then(|a| a.session.as_ref())
            .map(|s| s.session_id.clone())
            .unwrap_or_default();
        let action = ActivityAction {
            session: AgentSession {
                agent_id: agent_id.clone(),
                session_id,
            },
            activity_id: chat_id.to_owned(),
        };
        if let Err(rejection) = self.accept(at_ms, &action) {
            tracing::warn!(
                chat_id,
                agent_id,
                %rejection,
                "a merged chat could not be given to its island agent"
            );
        }
        self.island_write.resume(held);
    }

    /// Takes assigned work away from `agent_id` (who gets their capacity back), the chat's
    /// customer told the agent left, and puts it back into its queue at its old place.
    fn take_from_agent(&mut self, at_ms: u64, activity_id: &str, agent_id: &str, reason: &str) {
        let held = self.island_write.suspend();
        if self.chats.contains_key(activity_id) {
            self.push_chat_event(
                activity_id,
                at_ms,
                EventBody::AgentLeft {
                    agent_id: agent_id.to_owned(),
                    reason: reason.to_owned(),
                },
            );
            self.disarm_inactivity(activity_id);
            if let Some(chat) = self
                .chats
                .get_mut(activity_id)
                .map(std::sync::Arc::make_mut)
            {
                chat.agent_id = None;
            }
        }
        let enqueued_at_ms = self
            .activities
            .get(activity_id)
            .map_or(at_ms, |a| a.enqueued_at_ms);
        self.release(at_ms, activity_id, reason);
        self.enqueue(at_ms, activity_id, enqueued_at_ms, reason);
        self.island_write.resume(held);
    }

    /// The agent's own stamp for an action at `at_ms` through `origin` (see [`OwnStamp`]);
    /// none below the cluster version that merges agents' actions, whose releases keep none.
    pub(super) fn own_stamp(&self, at_ms: u64, origin: NodeId) -> Option<OwnStamp> {
        if self.cluster_version.0 < crate::version::AGENTS_ON_ISLANDS {
            return None;
        }
        Some(self.island_write.stamp.unwrap_or(OwnStamp {
            hlc: Stamp {
                wall_ms: at_ms,
                logical: 0,
            },
            origin,
        }))
    }

    /// Whether routing may offer `agent` work in this state: on the cluster, while the leader
    /// reaches the node they are connected through; on an island's view, once they acted on
    /// the island.
    pub(super) fn routable(&self, agent: &super::Agent) -> bool {
        if self.on_island_view {
            return self
                .island_view
                .as_ref()
                .is_some_and(|view| view.agents.contains(&agent.spec.id));
        }
        !self.agent_unreachable(agent)
    }

    /// Whether an island's view routes `activity_id`: a chat started on the island.
    pub(super) fn island_owns(&self, activity_id: &str) -> bool {
        self.island_view
            .as_ref()
            .is_some_and(|view| view.chats.get(activity_id) == Some(&0))
    }

    fn merge_start(&mut self, at_ms: u64, start: &StartChat) -> Result<(), Rejection> {
        if self
            .requests
            .contains_key(&format!("chat:{}", start.request_id))
        {
            // Started on both sides (a retry that reached the cluster too): the cluster's chat
            // is the one the customer kept.
            return Ok(());
        }
        if self.activities.contains_key(&start.chat_id) {
            return Err(Rejection::invalid("chat_id", "already in use"));
        }
        let takes_chats = self
            .queues
            .get(&start.queue_id)
            .is_some_and(|q| q.spec.channel == crate::command::Channel::Chat);
        self.insert_chat(at_ms, start);
        if !takes_chats {
            self.finish_chat(
                at_ms,
                &start.chat_id,
                Participant::System,
                "queue_removed",
                "queue_removed",
            );
        }
        self.route(at_ms);
        Ok(())
    }

    fn merge_message(
        &mut self,
        at_ms: u64,
        post: &PostMessage,
        island_agent: Option<&AgentId>,
    ) -> Result<(), Rejection> {
        let chat = self.known_chat(&post.chat_id)?;
        let key = format!("{}/{}", post.sender.key(), post.client_msg_id);
        if chat.client_msg_ids.contains_key(&key) {
            return Ok(());
        }
        if let (Participant::Customer, Some(island_agent), ChatStatus::Open) =
            (&post.sender, island_agent, chat.status)
        {
            let moved = chat.agent_id.as_ref() != Some(island_agent);
            if moved && self.agents.contains_key(island_agent) && self.island_write_is_latest(chat)
            {
                // The customer wrote to the island's agent, later than to anyone on the
                // cluster side (ISLAND.md rule 3): the island's agent works the chat.
                self.give_to(at_ms, &post.chat_id, island_agent);
            }
        }
        let chat = self.known_chat(&post.chat_id)?;
        if chat.status == ChatStatus::Open {
            if let Participant::Agent { agent_id } = &post.sender {
                if chat.agent_id.as_ref() != Some(agent_id) {
                    // The agent no longer works the chat: appended as after an end.
                    return self.append_late_message(at_ms, post, key);
                }
            }
            return self.post_message(at_ms, post).map(|_| ());
        }
        self.append_late_message(at_ms, post, key)
    }

    /// Appends a message to a chat that ended (or that its sender no longer works) meanwhile:
    /// kept in the transcript, routed to nobody, arming no timer.
    fn append_late_message(
        &mut self,
        at_ms: u64,
        post: &PostMessage,
        key: String,
    ) -> Result<(), Rejection> {
        let seq = self.push_chat_event(
            &post.chat_id,
            at_ms,
            EventBody::Message {
                from: post.sender.clone(),
                client_msg_id: post.client_msg_id.clone(),
                text: post.text.clone(),
            },
        );
        if let Some(chat) = self
            .chats
            .get_mut(&post.chat_id)
            .map(std::sync::Arc::make_mut)
        {
            chat.client_msg_ids.insert(key, seq);
        }
        Ok(())
    }

    fn merge_end(&mut self, at_ms: u64, end: &EndChat) -> Result<(), Rejection> {
        let chat = self.known_chat(&end.chat_id)?;
        if chat.status == ChatStatus::Ended {
            return Ok(());
        }
        let (reason, outcome) = match end.by {
            Participant::Customer => ("customer", "ended_by_customer"),
            _ => ("agent", "completed"),
        };
        self.finish_chat(at_ms, &end.chat_id, end.by.clone(), reason, outcome);
        self.route(at_ms);
        Ok(())
    }

    fn merge_survey(&mut self, at_ms: u64, survey: &SubmitSurvey) -> Result<(), Rejection> {
        match self.chats.get(&survey.chat_id) {
            Some(chat) if chat.survey.is_some() => Ok(()),
            _ => self.submit_survey(at_ms, survey).map(|_| ()),
        }
    }

    /// The events of `chat_id` a client holding `cursor` has not seen, oldest first, at most
    /// `limit`: every event after the island's fork except the island's own up to the cursor.
    /// `None` when the chat does not exist.
    pub fn events_after_island(
        &self,
        chat_id: &str,
        cursor: &IslandCursor,
        limit: usize,
    ) -> Option<Vec<&ChatEvent>> {
        let chat = self.chats.get(chat_id)?;
        let start = usize::try_from(cursor.fork)
            .unwrap_or(usize::MAX)
            .min(chat.events.len());
        let seen = |event: &ChatEvent| {
            event
                .island
                .is_some_and(|mark| covered(&mark, cursor.origin, cursor.epoch, cursor.seq))
        };
        Some(
            chat.events
                .from(start)
                .filter(|event| !seen(event))
                .take(limit.min(crate::limits::EVENTS_PAGE_MAX))
                .collect(),
        )
    }

    /// A page of `chat_id`'s events for a client at `cursor`: at most `limit` events it has
    /// not seen, oldest first, each with the cursor that stands after it (see the module
    /// docs). `None` when the chat does not exist.
    pub fn events_page(
        &self,
        chat_id: &str,
        cursor: &EventCursor,
        limit: usize,
    ) -> Option<Vec<(&ChatEvent, EventCursor)>> {
        let chat = self.chats.get(chat_id)?;
        let events: Vec<&ChatEvent> = match cursor {
            EventCursor::After(after) => self.chat_events(chat_id, *after, limit)?,
            EventCursor::Island(island) => self.events_after_island(chat_id, island, limit)?,
        };
        // On an island's own view: the island, and the last number of the chat that is
        // final (events after it are numbered provisionally).
        let own = self
            .island_view
            .as_ref()
            .and_then(|view| view.chats.get(chat_id).map(|fork| (view.origin, *fork)));
        let mut at = *cursor;
        let mut provisional = false;
        let mut page = Vec::with_capacity(events.len());
        for event in events {
            provisional = own.is_some_and(|(_, fork)| event.seq > fork);
            at = match (own, at) {
                (Some((origin, fork)), at) if provisional => {
                    // The client now holds this island's provisionally numbered events.
                    let (epoch, seq) = match (event.island, at) {
                        (Some(mark), _) => (mark.epoch, mark.seq),
                        (None, EventCursor::Island(c)) if c.origin == origin => (c.epoch, c.seq),
                        (None, _) => (0, 0),
                    };
                    EventCursor::Island(IslandCursor {
                        origin,
                        epoch,
                        fork,
                        seq,
                    })
                }
                (_, EventCursor::Island(c)) => EventCursor::Island(IslandCursor {
                    fork: event.seq,
                    ..c
                }),
                (_, EventCursor::After(_)) => EventCursor::After(event.seq),
            };
            page.push((event, at));
        }
        // The last cursor is plain again once no island event it covers lies ahead.
        if let (Some((_, last)), false) = (page.last_mut(), provisional) {
            if let EventCursor::Island(c) = *last {
                let start = usize::try_from(c.fork)
                    .unwrap_or(usize::MAX)
                    .min(chat.events.len());
                let ahead = chat.events.from(start).any(|event| {
                    event
                        .island
                        .is_some_and(|mark| covered(&mark, c.origin, c.epoch, c.seq))
                });
                if !ahead {
                    *last = EventCursor::After(c.fork);
                }
            }
        }
        Some(page)
    }
    /// Where a client holding `cursor` resumes `agent_id`'s feed: the plain sequence number
    /// after which every event is new to it, or may be (see [`State::feed_page`]).
    pub fn feed_resume(&self, agent_id: &str, cursor: &EventCursor) -> u64 {
        let own = self.island_feed_fork(agent_id);
        match (cursor, own) {
            (EventCursor::After(after), Some((_, _, fork))) => (*after).min(fork),
            (EventCursor::After(after), None) => *after,
            (EventCursor::Island(c), Some((origin, epoch, fork)))
                if (c.origin, c.epoch, c.fork) == (origin, epoch, fork) =>
            {
                c.seq
            }
            (EventCursor::Island(c), Some((_, _, fork))) => c.fork.min(fork),
            (EventCursor::Island(c), None) => c.fork,
        }
    }

    /// A page of `agent_id`'s feed for a client at `cursor`: at most `limit` events, oldest
    /// first, each with the cursor that stands after it; `Err(first kept)` when the events
    /// after the cursor are no longer kept; `None` for an unknown agent.
    ///
    /// On an island's view, the agent's feed events after the fork are numbered
    /// provisionally, and their cursors name the island (`i.<origin>.<epoch>.<fork>.<seq>`).
    /// Such a cursor resumes exactly on the same view; anywhere else (the cluster after the
    /// merge, another island) it resumes at the fork, so the client sees again, as merged,
    /// what it saw on the island: an agent's feed tells them of changes to their work, and a
    /// console takes an event it has seen twice as it took it once. A plain cursor past the
    /// fork on a view resumes at the fork the same way.
    pub fn feed_page(
        &self,
        agent_id: &str,
        cursor: &EventCursor,
        limit: usize,
    ) -> Option<Result<Vec<(AgentEvent, EventCursor)>, u64>> {
        let agent = self.agents.get(agent_id)?;
        let after = self.feed_resume(agent_id, cursor);
        let own = self.island_feed_fork(agent_id);
        Some(agent.feed_after(after, limit).map(|events| {
            events
                .into_iter()
                .map(|event| {
                    let at = match own {
                        Some((origin, epoch, fork)) if event.seq > fork => {
                            EventCursor::Island(IslandCursor {
                                origin,
                                epoch,
                                fork,
                                seq: event.seq,
                            })
                        }
                        _ => EventCursor::After(event.seq),
                    };
                    (event, at)
                })
                .collect()
        }))
    }

    /// The cursor after `agent_id`'s last feed event (see [`State::feed_page`]).
    pub fn feed_cursor(&self, agent_id: &str) -> EventCursor {
        let last = self.agents.get(agent_id).map_or(0, |a| a.feed_last_seq());
        match self.island_feed_fork(agent_id) {
            Some((origin, epoch, fork)) if last > fork => EventCursor::Island(IslandCursor {
                origin,
                epoch,
                fork,
                seq: last,
            }),
            _ => EventCursor::After(last),
        }
    }

    /// On an island's view: the island, and the agent's last feed number when it forked.
    fn island_feed_fork(&self, agent_id: &str) -> Option<(NodeId, u64, u64)> {
        let view = self.island_view.as_ref()?;
        let fork = view.feeds.get(agent_id).copied()?;
        Some((view.origin, view.epoch, fork))
    }
}
