//! Activities' status and history as the API shows them.

use parley_raft::state;
use serde::Serialize;
use utoipa::ToSchema;

/// Where an activity is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ActivityStatus {
    /// A callback waiting for its requested time.
    Scheduled,
    /// Waiting in its queue for an agent.
    Queued,
    /// Offered to an agent until a time.
    Offered {
        /// The agent.
        agent_id: String,
        /// When the offer expires, ms since the Unix epoch.
        until_ms: u64,
    },
    /// Worked by an agent.
    Assigned {
        /// The agent.
        agent_id: String,
    },
    /// Done.
    Completed {
        /// The result, if one was given.
        outcome: Option<String>,
    },
    /// The customer left before an agent took it.
    Abandoned,
}

impl From<&state::ActivityStatus> for ActivityStatus {
    fn from(status: &state::ActivityStatus) -> Self {
        use state::ActivityStatus as S;
        match status {
            S::Scheduled => ActivityStatus::Scheduled,
            S::Queued => ActivityStatus::Queued,
            S::Offered { agent_id, until_ms } => ActivityStatus::Offered {
                agent_id: agent_id.clone(),
                until_ms: *until_ms,
            },
            S::Assigned { agent_id } => ActivityStatus::Assigned {
                agent_id: agent_id.clone(),
            },
            S::Completed { outcome } => ActivityStatus::Completed {
                outcome: outcome.clone(),
            },
            S::Abandoned => ActivityStatus::Abandoned,
        }
    }
}

/// One status change of an activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Transition {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The new status.
    pub status: ActivityStatus,
    /// The queue at that point.
    pub queue_id: String,
    /// Why (`created`, `routed`, `offer_timeout`, `transferred`, ...).
    pub reason: String,
}

impl From<&state::Transition> for Transition {
    fn from(transition: &state::Transition) -> Self {
        Self {
            at_ms: transition.at_ms,
            status: (&transition.status).into(),
            queue_id: transition.queue_id.clone(),
            reason: transition.reason.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_status_keeps_its_wire_form() {
        let cases = [
            (state::ActivityStatus::Queued, r#"{"state":"queued"}"#),
            (
                state::ActivityStatus::Offered {
                    agent_id: "bob".into(),
                    until_ms: 9,
                },
                r#"{"state":"offered","agent_id":"bob","until_ms":9}"#,
            ),
            (
                state::ActivityStatus::Completed {
                    outcome: Some("reached".into()),
                },
                r#"{"state":"completed","outcome":"reached"}"#,
            ),
        ];
        for (status, wire) in cases {
            let json = serde_json::to_string(&ActivityStatus::from(&status)).ok();
            assert_eq!(json.as_deref(), Some(wire));
        }
    }
}
