//! What an agent's feed records, as the API shows it.

use std::collections::BTreeMap;

use parley_raft::state;
use serde::Serialize;
use utoipa::ToSchema;

use super::directory::Channel;

/// What an agent feed event records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
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
        activity_id: String,
        /// Its channel.
        channel: Channel,
        /// Its queue.
        queue_id: String,
        /// When the offer expires, ms since the Unix epoch.
        until_ms: u64,
    },
    /// An offer was taken back (`timeout`, `ended`).
    OfferWithdrawn {
        /// The activity.
        activity_id: String,
        /// Why.
        reason: String,
    },
    /// The agent accepted an activity and now works it.
    Assigned {
        /// The activity.
        activity_id: String,
    },
    /// An activity left the agent (`completed`, `transferred`, `ended_by_customer`,
    /// `inactivity`).
    Released {
        /// The activity.
        activity_id: String,
        /// Why.
        reason: String,
    },
    /// An event in one of the agent's chats; the item carries the chat event itself.
    ChatEvent {
        /// The chat.
        chat_id: String,
        /// The chat event's sequence number.
        chat_seq: u64,
    },
    /// A message of the case of one of the agent's email activities arrived, or a reply's
    /// delivery changed (`GET /api/v1/emails/{activity_id}` shows it).
    CaseUpdated {
        /// The email activity.
        activity_id: String,
        /// Its case.
        case_id: String,
        /// The case message concerned.
        message_seq: u64,
    },
}

impl From<&state::AgentEventBody> for AgentEventBody {
    fn from(body: &state::AgentEventBody) -> Self {
        use state::AgentEventBody as S;
        match body {
            S::LoggedIn { session_id } => AgentEventBody::LoggedIn {
                session_id: session_id.clone(),
            },
            S::LoggedOut { session_id } => AgentEventBody::LoggedOut {
                session_id: session_id.clone(),
            },
            S::Availability { ready, reason } => AgentEventBody::Availability {
                ready: ready.iter().map(|(c, r)| ((*c).into(), *r)).collect(),
                reason: reason.clone(),
            },
            S::Offered {
                activity_id,
                channel,
                queue_id,
                until_ms,
            } => AgentEventBody::Offered {
                activity_id: activity_id.clone(),
                channel: (*channel).into(),
                queue_id: queue_id.clone(),
                until_ms: *until_ms,
            },
            S::OfferWithdrawn {
                activity_id,
                reason,
            } => AgentEventBody::OfferWithdrawn {
                activity_id: activity_id.clone(),
                reason: reason.clone(),
            },
            S::Assigned { activity_id } => AgentEventBody::Assigned {
                activity_id: activity_id.clone(),
            },
            S::Released {
                activity_id,
                reason,
            } => AgentEventBody::Released {
                activity_id: activity_id.clone(),
                reason: reason.clone(),
            },
            S::ChatEvent { chat_id, chat_seq } => AgentEventBody::ChatEvent {
                chat_id: chat_id.clone(),
                chat_seq: *chat_seq,
            },
            S::CaseUpdated {
                activity_id,
                case_id,
                message_seq,
            } => AgentEventBody::CaseUpdated {
                activity_id: activity_id.clone(),
                case_id: case_id.clone(),
                message_seq: *message_seq,
            },
        }
    }
}
