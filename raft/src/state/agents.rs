//! Agents: login sessions, presence and availability.
//!
//! A session lives in the replicated state, not on the node the agent used: any node checks a
//! token against it, and losing the agent's node loses nothing (G4).

use super::{ActivityStatus, AgentEventBody, Session, State};
use crate::command::{AgentSession, Login, Outcome, Rejection, SetAvailability};

impl State {
    pub(super) fn login(
        &mut self,
        at_ms: u64,
        origin: u64,
        login: &Login,
    ) -> Result<Outcome, Rejection> {
        let stamp = self.own_stamp(at_ms, origin);
        let agent =
            self.agents
                .get_mut(&login.agent_id)
                .ok_or_else(|| Rejection::UnknownAgent {
                    agent_id: login.agent_id.clone(),
                })?;
        if agent.has_session(&login.session_id) {
            return Ok(Outcome::Done);
        }
        // A new login replaces the old session; the agent keeps their work.
        if let Some(old) = agent.session.take() {
            agent.push_feed(
                &mut self.touched,
                at_ms,
                AgentEventBody::LoggedOut {
                    session_id: old.session_id,
                },
            );
        }
        agent.session = Some(Session {
            session_id: login.session_id.clone(),
            since_ms: at_ms,
            node: origin,
        });
        if stamp.is_some() {
            agent.own_stamp = stamp;
        }
        agent.push_feed(
            &mut self.touched,
            at_ms,
            AgentEventBody::LoggedIn {
                session_id: login.session_id.clone(),
            },
        );
        Ok(Outcome::Done)
    }

    pub(super) fn presence(
        &mut self,
        at_ms: u64,
        origin: u64,
        session: &AgentSession,
    ) -> Result<Outcome, Rejection> {
        self.check_session(session)?;
        let was_unreachable = self
            .agents
            .get(&session.agent_id)
            .is_some_and(|a| self.agent_unreachable(a));
        if let Some(current) = self
            .agents
            .get_mut(&session.agent_id)
            .and_then(|a| a.session.as_mut())
        {
            current.node = origin;
        }
        // Reconnected through a member the leader reaches: routable again at once.
        if was_unreachable && !self.unreachable_nodes.contains(&origin) {
            self.route(at_ms);
        }
        Ok(Outcome::Done)
    }

    pub(super) fn logout(
        &mut self,
        at_ms: u64,
        origin: u64,
        session: &AgentSession,
    ) -> Result<Outcome, Rejection> {
        let Some(agent) = self.agents.get(&session.agent_id) else {
            return Err(Rejection::UnknownAgent {
                agent_id: session.agent_id.clone(),
            });
        };
        if agent.session.is_none() {
            // A retried logout.
            return Ok(Outcome::Done);
        }
        self.check_session(session)?;
        let mut offers = Vec::new();
        let mut assigned = 0;
        for id in &agent.work {
            match self.activities.get(id).map(|a| &a.status) {
                Some(ActivityStatus::Assigned { .. }) => assigned += 1,
                Some(ActivityStatus::Offered { .. }) => offers.push(id.clone()),
                _ => {}
            }
        }
        if assigned > 0 {
            return Err(Rejection::conflict(format!(
                "complete or transfer your {assigned} assigned activities before logging out"
            )));
        }
        for id in offers {
            self.return_offer(at_ms, &id, "logged_out");
        }
        let stamp = self.own_stamp(at_ms, origin);
        if let Some(agent) = self.agents.get_mut(&session.agent_id) {
            agent.session = None;
            if stamp.is_some() {
                agent.own_stamp = stamp;
            }
            agent.ready.clear();
            agent.not_ready_reason = None;
            agent.push_feed(
                &mut self.touched,
                at_ms,
                AgentEventBody::LoggedOut {
                    session_id: session.session_id.clone(),
                },
            );
        }
        self.route(at_ms);
        Ok(Outcome::Done)
    }

    pub(super) fn set_availability(
        &mut self,
        at_ms: u64,
        origin: u64,
        set: &SetAvailability,
    ) -> Result<Outcome, Rejection> {
        self.check_session(&set.session)?;
        let stamp = self.own_stamp(at_ms, origin);
        let Some(agent) = self.agents.get_mut(&set.session.agent_id) else {
            return Err(Rejection::UnknownAgent {
                agent_id: set.session.agent_id.clone(),
            });
        };
        if stamp.is_some() {
            agent.own_stamp = stamp;
        }
        let was_ready = agent.ready.values().any(|r| *r);
        for (channel, ready) in &set.channels {
            agent.ready.insert(*channel, *ready);
        }
        let now_ready = agent.ready.values().any(|r| *r);
        agent.not_ready_reason = if agent.ready.values().all(|r| *r) {
            None
        } else {
            set.reason.clone()
        };
        if now_ready && !was_ready {
            agent.idle_since_ms = at_ms;
        }
        let body = AgentEventBody::Availability {
            ready: agent.ready.clone(),
            reason: agent.not_ready_reason.clone(),
        };
        agent.push_feed(&mut self.touched, at_ms, body);
        self.route(at_ms);
        Ok(Outcome::Done)
    }
}
