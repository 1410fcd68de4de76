//! Routing: queues, offers, acceptance, transfers, completion, callbacks and timers.
//!
//! Routing is deterministic: whenever work enters a queue or capacity frees up, every waiting
//! activity, oldest first, is offered to the eligible agent (logged in, ready for the channel,
//! holding every skill the queue needs, below their limit) who has been idle longest, ties
//! broken by agent id.

use super::{
    check_reason, Activity, ActivityDetail, ActivityStatus, AgentEventBody, ChatStatus, EventBody,
    State, Timer, Transition,
};
use crate::command::{
    ActivityAction, ActivityId, AgentId, AgentSession, Channel, Complete, Outcome, Participant,
    Rejection, RequestCallback, Transfer, TransferTarget,
};
use crate::limits;
use std::collections::HashMap;
use std::sync::Arc;

/// Outcomes an agent may record when completing a callback.
pub const CALLBACK_OUTCOMES: [&str; 5] =
    ["reached", "no_answer", "busy", "voicemail", "wrong_number"];

/// Handling time assumed for a queue with no history yet, for the estimated wait.
const DEFAULT_HANDLE_MS: u64 = 300_000;

/// Where a waiting activity stands in its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuePosition {
    /// 1 for the next to be routed.
    pub position: u64,
    /// Estimated wait, from recent handling times and the agents ready for the queue.
    pub estimated_wait_ms: u64,
}

pub(super) fn check_phone(phone: &str) -> Result<(), Rejection> {
    let digits = phone.strip_prefix('+').unwrap_or("");
    if !(7..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::invalid(
            "phone",
            "must be an E.164 number: '+' and 7 to 15 digits",
        ));
    }
    Ok(())
}

impl State {
    /// Checks that `session` is the agent's current session.
    pub(super) fn check_session(&self, session: &AgentSession) -> Result<(), Rejection> {
        let agent = self
            .agents
            .get(&session.agent_id)
            .ok_or_else(|| Rejection::UnknownAgent {
                agent_id: session.agent_id.clone(),
            })?;
        // A merged island write counts by the agent: their island session may have lost to a
        // later sign-in on the cluster side, and what they did on the island is kept.
        if !agent.has_session(&session.session_id) && !self.island_write.merging() {
            return Err(Rejection::SessionEnded);
        }
        Ok(())
    }

    /// Whether `agent_id` may be offered work of `activity` right now.
    fn eligible(&self, agent_id: &str, activity: &Activity, needs_skills: bool) -> bool {
        let Some(agent) = self.agents.get(agent_id) else {
            return false;
        };
        let Some(queue) = self.queues.get(&activity.queue_id) else {
            return false;
        };
        let limit = agent
            .spec
            .limits
            .get(&activity.channel)
            .copied()
            .unwrap_or(0);
        agent.session.is_some()
            && self.routable(agent)
            && agent.ready.get(&activity.channel).copied().unwrap_or(false)
            && (!needs_skills
                || queue
                    .spec
                    .skills
                    .iter()
                    .all(|s| agent.spec.skills.contains(s)))
            && self.load(agent, activity.channel) < limit as usize
    }

    /// Offers waiting activities to free agents until no more match.
    pub(super) fn route(&mut self, at_ms: u64) {
        if self.waiting.is_empty() || !self.agents.values().any(|a| self.has_room(a)) {
            return;
        }
        let waiting: Vec<(u64, ActivityId)> = self.waiting.iter().cloned().collect();
        for (_, activity_id) in waiting {
            if self.on_island_view && !self.island_owns(&activity_id) {
                // Work from before the split waits for the merge (ISLAND.md rule 6).
                continue;
            }
            let Some(activity) = self.activities.get(&activity_id) else {
                continue;
            };
            let best = self
                .agents
                .values()
                .filter(|agent| self.eligible(&agent.spec.id, activity, true))
                .min_by(|a, b| (a.idle_since_ms, &a.spec.id).cmp(&(b.idle_since_ms, &b.spec.id)))
                .map(|agent| agent.spec.id.clone());
            if let Some(agent_id) = best {
                self.offer(at_ms, &activity_id, &agent_id, "routed");
            }
        }
    }

    /// Whether the agent could take any work now (logged in, ready for a channel with room).
    fn has_room(&self, agent: &super::Agent) -> bool {
        agent.session.is_some()
            && self.routable(agent)
            && agent.ready.iter().any(|(channel, ready)| {
                *ready
                    && self.load(agent, *channel)
                        < agent.spec.limits.get(channel).copied().unwrap_or(0) as usize
            })
    }

    /// Offers an activity to an agent: out of the waiting list, into the agent's work, with
    /// an offer timer.
    pub(super) fn offer(&mut self, at_ms: u64, activity_id: &str, agent_id: &str, reason: &str) {
        let Some(activity) = self.activities.get_mut(activity_id).map(Arc::make_mut) else {
            return;
        };
        let timeout = self
            .queues
            .get(&activity.queue_id)
            .map_or(limits::OFFER_TIMEOUT_MS_MIN, |q| q.spec.offer_timeout_ms);
        let until_ms = at_ms.saturating_add(timeout);
        self.waiting
            .remove(&(activity.enqueued_at_ms, activity_id.to_owned()));
        set_status(
            activity,
            at_ms,
            ActivityStatus::Offered {
                agent_id: agent_id.to_owned(),
                until_ms,
            },
            reason,
        );
        let (channel, queue_id) = (activity.channel, activity.queue_id.clone());
        self.timers
            .insert((until_ms, Timer::Offer(activity_id.to_owned())));
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.work.insert(activity_id.to_owned());
            agent.push_feed(
                &mut self.touched,
                at_ms,
                AgentEventBody::Offered {
                    activity_id: activity_id.to_owned(),
                    channel,
                    queue_id,
                    until_ms,
                },
            );
        }
    }

    /// Takes an activity away from the agent holding it (offer or assignment), telling them
    /// why. Returns the agent's id.
    pub(super) fn release(
        &mut self,
        at_ms: u64,
        activity_id: &str,
        reason: &str,
    ) -> Option<AgentId> {
        let activity = self.activities.get(activity_id)?;
        let was_offer = matches!(activity.status, ActivityStatus::Offered { .. });
        let agent_id = activity.status.holder()?.clone();
        if let ActivityStatus::Offered { until_ms, .. } = activity.status {
            self.timers
                .remove(&(until_ms, Timer::Offer(activity_id.to_owned())));
        }
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.work.remove(activity_id);
            let body = if was_offer {
                AgentEventBody::OfferWithdrawn {
                    activity_id: activity_id.to_owned(),
                    reason: reason.to_owned(),
                }
            } else {
                agent.idle_since_ms = at_ms;
                AgentEventBody::Released {
                    activity_id: activity_id.to_owned(),
                    reason: reason.to_owned(),
                }
            };
            agent.push_feed(&mut self.touched, at_ms, body);
        }
        Some(agent_id)
    }

    /// Puts an activity (back) into its queue. `enqueued_at_ms` is kept when it returns after a
    /// missed offer, so it keeps its place; a transfer puts it at the back.
    pub(super) fn enqueue(
        &mut self,
        at_ms: u64,
        activity_id: &str,
        enqueued_at_ms: u64,
        reason: &str,
    ) {
        if let Some(activity) = self.activities.get_mut(activity_id).map(Arc::make_mut) {
            activity.enqueued_at_ms = enqueued_at_ms;
            activity.assigned_at_ms = None;
            set_status(activity, at_ms, ActivityStatus::Queued, reason);
            self.waiting
                .insert((enqueued_at_ms, activity_id.to_owned()));
        }
    }

    /// Closes a live activity: abandoned if nobody had accepted it, completed otherwise.
    pub(super) fn close_activity(&mut self, at_ms: u64, activity_id: &str, outcome: &str) {
        let Some(activity) = self.activities.get(activity_id) else {
            return;
        };
        let assigned_at = activity.assigned_at_ms;
        let was_assigned = matches!(activity.status, ActivityStatus::Assigned { .. });
        let queue_id = activity.queue_id.clone();
        self.waiting
            .remove(&(activity.enqueued_at_ms, activity_id.to_owned()));
        self.release(at_ms, activity_id, outcome);
        if let (true, Some(assigned_at), Some(queue)) =
            (was_assigned, assigned_at, self.queues.get_mut(&queue_id))
        {
            queue
                .recent_handle_ms
                .push_back(at_ms.saturating_sub(assigned_at));
            while queue.recent_handle_ms.len() > limits::HANDLE_TIMES_KEPT {
                queue.recent_handle_ms.pop_front();
            }
        }
        if let Some(activity) = self.activities.get_mut(activity_id).map(Arc::make_mut) {
            let status = if was_assigned {
                ActivityStatus::Completed {
                    outcome: Some(outcome.to_owned()),
                }
            } else {
                ActivityStatus::Abandoned
            };
            set_status(activity, at_ms, status, outcome);
            self.schedule_retire(at_ms, activity_id);
        }
    }

    pub(super) fn request_callback(
        &mut self,
        at_ms: u64,
        request: &RequestCallback,
    ) -> Result<Outcome, Rejection> {
        let request_key = format!("callback:{}", request.request_id);
        if let Some(existing) = self.requests.get(&request_key) {
            let activity =
                self.activities
                    .get(existing)
                    .ok_or_else(|| Rejection::UnknownActivity {
                        activity_id: existing.clone(),
                    })?;
            return match &activity.detail {
                ActivityDetail::Callback {
                    phone, due_at_ms, ..
                } if *phone == request.phone && activity.queue_id == request.queue_id => {
                    Ok(Outcome::CallbackRequested {
                        activity_id: existing.clone(),
                        due_at_ms: *due_at_ms,
                        replayed: true,
                    })
                }
                _ => Err(Rejection::IdempotencyConflict {
                    what: "request_id".to_owned(),
                }),
            };
        }
        let queue = self
            .queues
            .get(&request.queue_id)
            .ok_or_else(|| Rejection::UnknownQueue {
                queue_id: request.queue_id.clone(),
            })?;
        if queue.spec.channel != Channel::Callback {
            return Err(Rejection::conflict(format!(
                "queue {} takes {} work, not callbacks",
                request.queue_id,
                queue.spec.channel.as_str()
            )));
        }
        if request.requested_at_ms > at_ms.saturating_add(limits::CALLBACK_AHEAD_MS_MAX) {
            return Err(Rejection::invalid(
                "requested_at",
                "is more than 30 days ahead",
            ));
        }
        if self.activities.contains_key(&request.activity_id) {
            return Err(Rejection::invalid("activity_id", "already in use"));
        }
        let due_at_ms = request.requested_at_ms.max(at_ms);
        let scheduled = due_at_ms > at_ms;
        let status = if scheduled {
            ActivityStatus::Scheduled
        } else {
            ActivityStatus::Queued
        };
        self.activities.insert(
            request.activity_id.clone(),
            Arc::new(Activity {
                id: request.activity_id.clone(),
                channel: Channel::Callback,
                queue_id: request.queue_id.clone(),
                status: status.clone(),
                created_at_ms: at_ms,
                enqueued_at_ms: due_at_ms,
                assigned_at_ms: None,
                history: vec![Transition {
                    at_ms,
                    status,
                    queue_id: request.queue_id.clone(),
                    reason: "created".to_owned(),
                }],
                detail: ActivityDetail::Callback {
                    name: request.name.clone(),
                    phone: request.phone.clone(),
                    due_at_ms,
                },
                request_key: Some(request_key.clone()),
                island_conflicts: Vec::new(),
            }),
        );
        self.requests
            .insert(request_key, request.activity_id.clone());
        if scheduled {
            self.timers
                .insert((due_at_ms, Timer::Callback(request.activity_id.clone())));
        } else {
            self.waiting
                .insert((due_at_ms, request.activity_id.clone()));
            self.route(at_ms);
        }
        Ok(Outcome::CallbackRequested {
            activity_id: request.activity_id.clone(),
            due_at_ms,
            replayed: false,
        })
    }

    /// The activity held by the session's agent in the given way, or why not.
    fn held_activity(
        &self,
        action: &ActivityAction,
        offered: bool,
    ) -> Result<&Activity, Rejection> {
        self.check_session(&action.session)?;
        let activity =
            self.activities
                .get(&action.activity_id)
                .ok_or_else(|| Rejection::UnknownActivity {
                    activity_id: action.activity_id.clone(),
                })?;
        let me = &action.session.agent_id;
        let ok = match &activity.status {
            ActivityStatus::Offered { agent_id, .. } => offered && agent_id == me,
            ActivityStatus::Assigned { agent_id } => !offered && agent_id == me,
            _ => false,
        };
        if !ok {
            let what = if offered { "offered to" } else { "assigned to" };
            return Err(Rejection::conflict(format!(
                "activity {} is not {what} agent {me}",
                activity.id
            )));
        }
        Ok(activity)
    }

    pub(super) fn accept(
        &mut self,
        at_ms: u64,
        action: &ActivityAction,
    ) -> Result<Outcome, Rejection> {
        let me = &action.session.agent_id;
        if let Some(activity) = self.activities.get(&action.activity_id) {
            if activity.status
                == (ActivityStatus::Assigned {
                    agent_id: me.clone(),
                })
            {
                // A retried accept.
                self.check_session(&action.session)?;
                return Ok(Outcome::Done);
            }
        }
        let activity = self.held_activity(action, true)?;
        let id = activity.id.clone();
        let is_chat = matches!(activity.detail, ActivityDetail::Chat);
        if let ActivityStatus::Offered { until_ms, .. } = activity.status {
            self.timers.remove(&(until_ms, Timer::Offer(id.clone())));
        }
        if let Some(activity) = self.activities.get_mut(&id).map(Arc::make_mut) {
            activity.assigned_at_ms = Some(at_ms);
            set_status(
                activity,
                at_ms,
                ActivityStatus::Assigned {
                    agent_id: me.clone(),
                },
                "accepted",
            );
        }
        let agent_name = match self.agents.get_mut(me) {
            Some(agent) => {
                agent.idle_since_ms = at_ms;
                agent.push_feed(
                    &mut self.touched,
                    at_ms,
                    AgentEventBody::Assigned {
                        activity_id: id.clone(),
                    },
                );
                agent.spec.name.clone()
            }
            None => me.clone(),
        };
        if is_chat {
            if let Some(chat) = self.chats.get_mut(&id).map(Arc::make_mut) {
                chat.agent_id = Some(me.clone());
            }
            self.push_chat_event(
                &id,
                at_ms,
                EventBody::AgentJoined {
                    agent_id: me.clone(),
                    agent_name,
                },
            );
            self.arm_inactivity(&id, at_ms);
        }
        Ok(Outcome::Done)
    }

    pub(super) fn transfer(
        &mut self,
        at_ms: u64,
        transfer: &Transfer,
    ) -> Result<Outcome, Rejection> {
        if self.transfer_already_applied(transfer) {
            // A retry of a transfer that did commit (its answer was lost, or the client sent it
            // twice): answer as the first time.
            self.check_session(&transfer.action.session)?;
            return Ok(Outcome::Done);
        }
        let activity = self.held_activity(&transfer.action, false)?;
        let id = activity.id.clone();
        let me = transfer.action.session.agent_id.clone();
        match &transfer.target {
            TransferTarget::Agent { agent_id } => {
                if *agent_id == me {
                    return Err(Rejection::invalid("agent_id", "is the transferring agent"));
                }
                if !self.agents.contains_key(agent_id) {
                    return Err(Rejection::UnknownAgent {
                        agent_id: agent_id.clone(),
                    });
                }
                // A merged transfer was checked by the island that took it.
                if !self.island_write.merging() && !self.eligible(agent_id, activity, false) {
                    return Err(Rejection::conflict(format!(
                        "agent {agent_id} is not logged in, not ready for {} or at their limit",
                        activity.channel.as_str()
                    )));
                }
            }
            TransferTarget::Queue { queue_id } => {
                let queue = self
                    .queues
                    .get(queue_id)
                    .ok_or_else(|| Rejection::UnknownQueue {
                        queue_id: queue_id.clone(),
                    })?;
                if queue.spec.channel != activity.channel {
                    return Err(Rejection::invalid(
                        "queue_id",
                        format!("is not a {} queue", activity.channel.as_str()),
                    ));
                }
            }
        }
        let is_chat = matches!(activity.detail, ActivityDetail::Chat);
        if is_chat {
            // The departing agent sees the chat's last events in their feed first.
            self.push_chat_event(
                &id,
                at_ms,
                EventBody::AgentLeft {
                    agent_id: me.clone(),
                    reason: "transferred".to_owned(),
                },
            );
            self.disarm_inactivity(&id);
            if let Some(chat) = self.chats.get_mut(&id).map(Arc::make_mut) {
                chat.agent_id = None;
            }
            self.push_chat_event(
                &id,
                at_ms,
                EventBody::Transferred {
                    target: transfer.target.clone(),
                },
            );
        }
        self.release(at_ms, &id, "transferred");
        match &transfer.target {
            TransferTarget::Agent { agent_id } => {
                // Offered directly; if it times out it returns to its queue.
                if let Some(activity) = self.activities.get_mut(&id).map(Arc::make_mut) {
                    activity.assigned_at_ms = None;
                }
                self.offer(at_ms, &id, agent_id, "transferred");
            }
            TransferTarget::Queue { queue_id } => {
                if let Some(activity) = self.activities.get_mut(&id).map(Arc::make_mut) {
                    activity.queue_id = queue_id.clone();
                }
                self.enqueue(at_ms, &id, at_ms, "transferred");
            }
        }
        self.route(at_ms);
        Ok(Outcome::Done)
    }

    /// Whether the activity's last transfer was this one: made by this agent (who held it just
    /// before) to this target, and the agent does not hold it again since.
    fn transfer_already_applied(&self, transfer: &Transfer) -> bool {
        let Some(activity) = self.activities.get(&transfer.action.activity_id) else {
            return false;
        };
        let me = &transfer.action.session.agent_id;
        if activity.status
            == (ActivityStatus::Assigned {
                agent_id: me.clone(),
            })
        {
            return false;
        }
        let Some(at) = activity
            .history
            .iter()
            .rposition(|t| t.reason == "transferred")
        else {
            return false;
        };
        let by_me = at
            .checked_sub(1)
            .and_then(|before| activity.history.get(before))
            .is_some_and(|before| {
                before.status
                    == ActivityStatus::Assigned {
                        agent_id: me.clone(),
                    }
            });
        let to = &activity.history[at];
        let same_target = match &transfer.target {
            TransferTarget::Agent { agent_id } => {
                matches!(&to.status, ActivityStatus::Offered { agent_id: a, .. } if a == agent_id)
            }
            TransferTarget::Queue { queue_id } => {
                to.status == ActivityStatus::Queued && to.queue_id == *queue_id
            }
        };
        by_me && same_target
    }

    pub(super) fn complete(
        &mut self,
        at_ms: u64,
        complete: &Complete,
    ) -> Result<Outcome, Rejection> {
        let me = &complete.action.session.agent_id;
        if let Some(activity) = self.activities.get(&complete.action.activity_id) {
            let done_by_me = matches!(activity.status, ActivityStatus::Completed { .. })
                && activity.history.iter().rev().nth(1).is_some_and(|t| {
                    t.status
                        == ActivityStatus::Assigned {
                            agent_id: me.clone(),
                        }
                });
            if done_by_me {
                // A retried completion.
                return Ok(Outcome::Done);
            }
        }
        let activity = self.held_activity(&complete.action, false)?;
        let id = activity.id.clone();
        let outcome = match (&activity.detail, &complete.outcome) {
            (ActivityDetail::Callback { .. }, None) => {
                return Err(Rejection::invalid(
                    "outcome",
                    format!("a callback needs one of {}", CALLBACK_OUTCOMES.join(", ")),
                ));
            }
            (ActivityDetail::Callback { .. }, Some(outcome)) => {
                if !CALLBACK_OUTCOMES.contains(&outcome.as_str()) {
                    return Err(Rejection::invalid(
                        "outcome",
                        format!("must be one of {}", CALLBACK_OUTCOMES.join(", ")),
                    ));
                }
                outcome.clone()
            }
            (ActivityDetail::Chat | ActivityDetail::Email { .. }, Some(outcome)) => {
                check_reason("outcome", outcome)?;
                outcome.clone()
            }
            (ActivityDetail::Chat | ActivityDetail::Email { .. }, None) => "completed".to_owned(),
        };
        let chat_open = self
            .chats
            .get(&id)
            .is_some_and(|c| c.status == ChatStatus::Open);
        if chat_open {
            self.finish_chat(
                at_ms,
                &id,
                Participant::Agent {
                    agent_id: me.clone(),
                },
                "agent",
                &outcome,
            );
        } else {
            self.close_activity(at_ms, &id, &outcome);
        }
        self.route(at_ms);
        Ok(Outcome::Done)
    }

    /// Fires every timer due at `at_ms`.
    pub(super) fn tick(&mut self, at_ms: u64) -> Outcome {
        let mut fired = 0;
        while let Some((due, timer)) = self.timers.first().cloned() {
            if due > at_ms {
                break;
            }
            self.timers.remove(&(due, timer.clone()));
            fired += 1;
            match timer {
                Timer::Offer(id) => self.offer_timed_out(at_ms, &id),
                Timer::Callback(id) => {
                    let scheduled = self
                        .activities
                        .get(&id)
                        .is_some_and(|a| a.status == ActivityStatus::Scheduled);
                    if scheduled {
                        self.enqueue(at_ms, &id, due, "due");
                    }
                }
                Timer::Retire(id) => self.retire(at_ms, &id),
                Timer::PurgeArchive => self.purge_archive(at_ms),
                Timer::Inactivity(chat_id) => {
                    let Some(chat) = self.chats.get_mut(&chat_id).map(Arc::make_mut) else {
                        continue;
                    };
                    chat.inactivity_at_ms = None;
                    if chat.status != ChatStatus::Open {
                        continue;
                    }
                    self.finish_chat(
                        at_ms,
                        &chat_id,
                        Participant::System,
                        "inactivity",
                        "inactivity",
                    );
                }
            }
        }
        if fired > 0 {
            self.route(at_ms);
        }
        Outcome::Ticked { fired }
    }

    /// Takes an offer back and returns the activity to its queue, keeping its place. Returns
    /// the agent it was offered to.
    pub(super) fn return_offer(
        &mut self,
        at_ms: u64,
        activity_id: &str,
        reason: &str,
    ) -> Option<AgentId> {
        let activity = self.activities.get(activity_id)?;
        let enqueued_at = activity.enqueued_at_ms;
        let agent_id = self.release(at_ms, activity_id, reason)?;
        self.enqueue(at_ms, activity_id, enqueued_at, reason);
        Some(agent_id)
    }

    fn offer_timed_out(&mut self, at_ms: u64, activity_id: &str) {
        let Some(activity) = self.activities.get(activity_id) else {
            return;
        };
        let channel = activity.channel;
        let queue_id = activity.queue_id.clone();
        let Some(agent_id) = self.return_offer(at_ms, activity_id, "offer_timeout") else {
            return;
        };
        let not_ready = self
            .queues
            .get(&queue_id)
            .is_some_and(|q| q.spec.not_ready_on_missed_offer);
        if not_ready {
            if let Some(agent) = self.agents.get_mut(&agent_id) {
                agent.ready.insert(channel, false);
                agent.not_ready_reason = Some("missed_offer".to_owned());
                let body = AgentEventBody::Availability {
                    ready: agent.ready.clone(),
                    reason: agent.not_ready_reason.clone(),
                };
                agent.push_feed(&mut self.touched, at_ms, body);
            }
        }
    }

    /// The earliest pending timer, for the services that propose ticks.
    pub fn next_timer_ms(&self) -> Option<u64> {
        self.timers.first().map(|(due, _)| *due)
    }

    /// Where a queued activity stands, or `None` if it is not waiting.
    pub fn queue_position(&self, activity_id: &str) -> Option<QueuePosition> {
        let activity = self.activities.get(activity_id)?;
        if activity.status != ActivityStatus::Queued {
            return None;
        }
        let key = (activity.enqueued_at_ms, activity.id.clone());
        let ahead = self
            .waiting
            .range(..key)
            .filter(|(_, id)| {
                self.activities
                    .get(id)
                    .is_some_and(|a| a.queue_id == activity.queue_id)
            })
            .count() as u64;
        let position = ahead + 1;
        Some(QueuePosition {
            position,
            estimated_wait_ms: self.estimated_wait_ms(&activity.queue_id, position),
        })
    }

    /// Where every waiting activity stands, in one pass over the waiting line (what
    /// [`State::queue_position`] answers for one activity, for all of them at once: streams of
    /// thousands of waiting customers share one computation instead of each scanning the line).
    pub fn queue_positions(&self) -> HashMap<ActivityId, QueuePosition> {
        let mut ahead: HashMap<&str, u64> = HashMap::new();
        let mut waits: HashMap<&str, (u64, u64)> = HashMap::new();
        let mut positions = HashMap::with_capacity(self.waiting.len());
        for (_, id) in &self.waiting {
            let Some(activity) = self.activities.get(id) else {
                continue;
            };
            let queue_id = activity.queue_id.as_str();
            let count = ahead.entry(queue_id).or_insert(0);
            *count += 1;
            let position = *count;
            if activity.status != ActivityStatus::Queued {
                continue;
            }
            let (mean_handle, capacity) = *waits
                .entry(queue_id)
                .or_insert_with(|| self.wait_model(queue_id));
            positions.insert(
                id.clone(),
                QueuePosition {
                    position,
                    estimated_wait_ms: position.div_ceil(capacity.max(1)) * mean_handle,
                },
            );
        }
        positions
    }

    /// Estimated wait for the `position`-th waiting activity of a queue: the mean of recent
    /// handling times, times the rounds of work ahead of it given the capacity of the agents
    /// currently ready for the queue.
    pub fn estimated_wait_ms(&self, queue_id: &str, position: u64) -> u64 {
        let (mean_handle, capacity) = self.wait_model(queue_id);
        position.div_ceil(capacity.max(1)) * mean_handle
    }

    /// A queue's mean recent handling time and the chat capacity of the agents serving it
    /// now (0 and 0 for an unknown queue).
    fn wait_model(&self, queue_id: &str) -> (u64, u64) {
        let Some(queue) = self.queues.get(queue_id) else {
            return (0, 0);
        };
        let handled = queue.recent_handle_ms.len() as u64;
        let mean_handle = queue
            .recent_handle_ms
            .iter()
            .sum::<u64>()
            .checked_div(handled)
            .unwrap_or(DEFAULT_HANDLE_MS);
        let capacity: u64 = self
            .agents
            .values()
            .filter(|a| queue.serves(a))
            .map(|a| u64::from(a.spec.limits.get(&queue.spec.channel).copied().unwrap_or(0)))
            .sum();
        (mean_handle, capacity)
    }
}

/// Moves an activity to `status`, recording the transition.
fn set_status(activity: &mut Activity, at_ms: u64, status: ActivityStatus, reason: &str) {
    activity.history.push(Transition {
        at_ms,
        status: status.clone(),
        queue_id: activity.queue_id.clone(),
        reason: reason.to_owned(),
    });
    activity.status = status;
}

#[cfg(test)]
mod tests {
    use super::check_phone;

    #[test]
    fn phone_numbers_must_be_e164() {
        assert!(check_phone("+33123456789").is_ok());
        for bad in [
            "33123456789",
            "+33 1 23",
            "+12",
            "+1234567890123456",
            "+33abc4567",
        ] {
            assert!(check_phone(bad).is_err(), "{bad} accepted");
        }
    }
}
