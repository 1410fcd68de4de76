//! Chats as the API shows them: participants, events, surveys; and what a customer sends.

use parley_raft::command as cmd;
use parley_raft::state;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a chat is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChatStatus {
    /// Open: messages may be posted.
    Open,
    /// Ended: read only, may be rated.
    Ended,
}

impl From<state::ChatStatus> for ChatStatus {
    fn from(status: state::ChatStatus) -> Self {
        match status {
            state::ChatStatus::Open => ChatStatus::Open,
            state::ChatStatus::Ended => ChatStatus::Ended,
        }
    }
}

/// Who takes part in a chat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Participant {
    /// The chat's customer.
    Customer,
    /// An agent, by id.
    Agent {
        /// The agent's id.
        agent_id: String,
    },
    /// The contact center itself (notices, timeouts).
    System,
}

impl From<&cmd::Participant> for Participant {
    fn from(participant: &cmd::Participant) -> Self {
        match participant {
            cmd::Participant::Customer => Participant::Customer,
            cmd::Participant::Agent { agent_id } => Participant::Agent {
                agent_id: agent_id.clone(),
            },
            cmd::Participant::System => Participant::System,
        }
    }
}

impl From<Participant> for cmd::Participant {
    fn from(participant: Participant) -> Self {
        match participant {
            Participant::Customer => cmd::Participant::Customer,
            Participant::Agent { agent_id } => cmd::Participant::Agent { agent_id },
            Participant::System => cmd::Participant::System,
        }
    }
}

/// A customer's pre-chat details.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    /// Display name, 1..=200 bytes.
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$"
    )]
    #[serde(deserialize_with = "crate::web::chars_at_most::<_, 50>")]
    pub name: String,
    /// Contact address (one `@`, no spaces, at most 254 bytes); never logged.
    #[schema(
        max_length = 63,
        pattern = r"^[^\s@\u0000-\u001f\u007f-\u009f]+@[^\s@\u0000-\u001f\u007f-\u009f]+$"
    )]
    #[serde(deserialize_with = "crate::web::chars_at_most::<_, 63>")]
    pub email: String,
}

impl From<Customer> for cmd::Customer {
    fn from(customer: Customer) -> Self {
        Self {
            name: customer.name,
            email: customer.email,
        }
    }
}

/// A customer's rating.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Survey {
    /// 1 to 5.
    pub rating: u8,
    /// Free text.
    pub comment: String,
    /// When it was given, ms since the Unix epoch.
    pub at_ms: u64,
}

impl From<&state::Survey> for Survey {
    fn from(survey: &state::Survey) -> Self {
        Self {
            rating: survey.rating,
            comment: survey.comment.clone(),
            at_ms: survey.at_ms,
        }
    }
}

/// Where a transfer sends an activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum TransferTarget {
    /// Offer it to this agent.
    Agent {
        /// The receiving agent.
        agent_id: String,
    },
    /// Put it at the back of this queue.
    Queue {
        /// The receiving queue (same channel).
        queue_id: String,
    },
}

impl From<&cmd::TransferTarget> for TransferTarget {
    fn from(target: &cmd::TransferTarget) -> Self {
        match target {
            cmd::TransferTarget::Agent { agent_id } => TransferTarget::Agent {
                agent_id: agent_id.clone(),
            },
            cmd::TransferTarget::Queue { queue_id } => TransferTarget::Queue {
                queue_id: queue_id.clone(),
            },
        }
    }
}

/// One event in a chat, numbered from 1 without gaps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct ChatEvent {
    /// Position in the chat, starting at 1.
    pub seq: u64,
    /// When it happened, ms since the Unix epoch (the clock of the node that took it).
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub body: EventBody,
    /// Present when the event was taken in island mode: which island took it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub island: Option<IslandOrigin>,
}

/// Which island took an event while its site was cut off from the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct IslandOrigin {
    /// The node that took it.
    pub node_id: u64,
    /// That node's island epoch then.
    pub epoch: u64,
    /// The sequence number the island's clients saw the event under (the event's `seq` may
    /// differ once merged: the cluster's own events of the time come first).
    pub seq: u64,
}

impl From<&state::ChatEvent> for ChatEvent {
    fn from(event: &state::ChatEvent) -> Self {
        Self {
            seq: event.seq,
            at_ms: event.at_ms,
            body: EventBody::from(&event.body),
            island: event.island.map(|mark| IslandOrigin {
                node_id: mark.origin,
                epoch: mark.epoch,
                seq: mark.seq,
            }),
        }
    }
}

/// What a chat event records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// The chat started.
    Started {
        /// The queue it entered.
        queue_id: String,
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
        agent_id: String,
        /// The name shown to the customer.
        agent_name: String,
    },
    /// The agent left the chat (it was transferred).
    AgentLeft {
        /// The agent.
        agent_id: String,
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

impl From<&state::EventBody> for EventBody {
    fn from(body: &state::EventBody) -> Self {
        use state::EventBody as S;
        match body {
            S::Started {
                queue_id,
                customer_name,
                question,
            } => EventBody::Started {
                queue_id: queue_id.clone(),
                customer_name: customer_name.clone(),
                question: question.clone(),
            },
            S::Message {
                from,
                client_msg_id,
                text,
            } => EventBody::Message {
                from: from.into(),
                client_msg_id: client_msg_id.clone(),
                text: text.clone(),
            },
            S::AgentJoined {
                agent_id,
                agent_name,
            } => EventBody::AgentJoined {
                agent_id: agent_id.clone(),
                agent_name: agent_name.clone(),
            },
            S::AgentLeft { agent_id, reason } => EventBody::AgentLeft {
                agent_id: agent_id.clone(),
                reason: reason.clone(),
            },
            S::Transferred { target } => EventBody::Transferred {
                target: target.into(),
            },
            S::Ended { by, reason } => EventBody::Ended {
                by: by.into(),
                reason: reason.clone(),
            },
            S::Rated { rating } => EventBody::Rated { rating: *rating },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire form of every event kind, written out: a change to the state's types must not
    /// change what clients receive without a change here.
    #[test]
    fn chat_events_keep_their_wire_form() {
        let cases = [
            (
                state::EventBody::Started {
                    queue_id: "sales".into(),
                    customer_name: "Ada".into(),
                    question: "Hi".into(),
                },
                r#"{"seq":1,"at_ms":7,"type":"started","queue_id":"sales","customer_name":"Ada","question":"Hi"}"#,
            ),
            (
                state::EventBody::Message {
                    from: cmd::Participant::Agent {
                        agent_id: "alice".into(),
                    },
                    client_msg_id: "m1".into(),
                    text: "Hello".into(),
                },
                r#"{"seq":1,"at_ms":7,"type":"message","from":{"role":"agent","agent_id":"alice"},"client_msg_id":"m1","text":"Hello"}"#,
            ),
            (
                state::EventBody::Transferred {
                    target: cmd::TransferTarget::Queue {
                        queue_id: "support".into(),
                    },
                },
                r#"{"seq":1,"at_ms":7,"type":"transferred","to":"queue","queue_id":"support"}"#,
            ),
            (
                state::EventBody::Ended {
                    by: cmd::Participant::Customer,
                    reason: "customer".into(),
                },
                r#"{"seq":1,"at_ms":7,"type":"ended","by":{"role":"customer"},"reason":"customer"}"#,
            ),
            (
                state::EventBody::Rated { rating: 5 },
                r#"{"seq":1,"at_ms":7,"type":"rated","rating":5}"#,
            ),
        ];
        for (body, wire) in cases {
            let event = state::ChatEvent {
                seq: 1,
                at_ms: 7,
                body,
                island: None,
            };
            let json = serde_json::to_string(&ChatEvent::from(&event)).ok();
            assert_eq!(json.as_deref(), Some(wire));
        }
    }
}
