//! The replicated contact-center state and its pure `apply`.
//!
//! Architecture invariant: [`State::apply`] is a function of the state and the command only. It
//! reads no clock, draws no randomness and does no I/O, so every replica that applies the same
//! log reaches the same state, which [`State::digest`] lets anyone check.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::{
    AgentId, ChatId, Command, Customer, Directory, Op, Outcome, Participant, PostMessage, QueueId,
    Rejection, Request, Response, StartChat,
};
use crate::limits;

/// Everything the cluster agrees on. Ordered maps only, so serialization (and the digest) is
/// the same on every replica.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Queues by id.
    pub queues: BTreeMap<QueueId, Queue>,
    /// Agents by id.
    pub agents: BTreeMap<AgentId, Agent>,
    /// Chats by id.
    pub chats: BTreeMap<ChatId, Chat>,
    /// Start-chat idempotency keys to the chat they created, so a retried start returns the
    /// same chat instead of a second one.
    pub chat_requests: BTreeMap<String, ChatId>,
    /// Directory ids (`queue:ID`, `agent:ID`) ever seeded from config, so a node restarting
    /// with its config never re-creates what an operator later removed.
    pub seeded: BTreeSet<String>,
}

/// A queue that chats enter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    /// Stable id.
    pub id: QueueId,
    /// Display name.
    pub name: String,
    /// Skills an agent needs for this queue's work.
    pub skills: Vec<String>,
}

/// An agent of the contact center.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Stable id (login name).
    pub id: AgentId,
    /// Display name.
    pub name: String,
    /// Skills for routing.
    pub skills: Vec<String>,
    /// Most chats worked at once.
    pub chat_limit: u32,
}

/// Where a chat is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatStatus {
    /// Open: messages may be posted.
    Open,
    /// Ended: read only.
    Ended,
}

/// One chat session with its gap-free event sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    /// Stable id.
    pub id: ChatId,
    /// The queue it entered.
    pub queue_id: QueueId,
    /// The customer's pre-chat details.
    pub customer: Customer,
    /// Lifecycle status.
    pub status: ChatStatus,
    /// When the chat started (proposer's clock, ms since the Unix epoch).
    pub created_at_ms: u64,
    /// The chat's events; `events[i].seq == i + 1` always.
    pub events: Vec<ChatEvent>,
    /// `sender key/client message id` to the seq it was given, so a retried post is not
    /// applied twice.
    pub client_msg_ids: BTreeMap<String, u64>,
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

    /// Applies one command. A rejected command changes nothing.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        let outcome = match &command.op {
            Op::SeedDirectory(directory) => Ok(self.seed(directory)),
            Op::StartChat(start) => self.start_chat(command.at_ms, start),
            Op::PostMessage(post) => self.post_message(command.at_ms, post),
        };
        outcome.unwrap_or_else(Outcome::Rejected)
    }

    fn seed(&mut self, directory: &Directory) -> Outcome {
        let mut queues_added = 0;
        let mut agents_added = 0;
        for spec in &directory.queues {
            if check_directory_id("queue id", &spec.id).is_err()
                || !self.seeded.insert(format!("queue:{}", spec.id))
            {
                continue;
            }
            self.queues.insert(
                spec.id.clone(),
                Queue {
                    id: spec.id.clone(),
                    name: spec.name.clone(),
                    skills: spec.skills.clone(),
                },
            );
            queues_added += 1;
        }
        for spec in &directory.agents {
            if check_directory_id("agent id", &spec.id).is_err()
                || !self.seeded.insert(format!("agent:{}", spec.id))
            {
                continue;
            }
            self.agents.insert(
                spec.id.clone(),
                Agent {
                    id: spec.id.clone(),
                    name: spec.name.clone(),
                    skills: spec.skills.clone(),
                    chat_limit: spec.chat_limit,
                },
            );
            agents_added += 1;
        }
        Outcome::Seeded {
            queues_added,
            agents_added,
        }
    }

    fn start_chat(&mut self, at_ms: u64, start: &StartChat) -> Result<Outcome, Rejection> {
        check_client_id("request_id", &start.request_id)?;
        if let Some(existing) = self.chat_requests.get(&start.request_id) {
            let chat = self
                .chats
                .get(existing)
                .ok_or_else(|| Rejection::UnknownChat {
                    chat_id: existing.clone(),
                })?;
            if chat.queue_id != start.queue_id || chat.customer != start.customer {
                return Err(Rejection::IdempotencyConflict {
                    what: "request_id".to_owned(),
                });
            }
            return Ok(Outcome::ChatStarted {
                chat_id: existing.clone(),
                seq: 1,
                replayed: true,
            });
        }
        check_text(
            "customer.name",
            &start.customer.name,
            1,
            limits::NAME_BYTES_MAX,
        )?;
        check_text(
            "customer.email",
            &start.customer.email,
            0,
            limits::EMAIL_BYTES_MAX,
        )?;
        check_text("question", &start.question, 0, limits::QUESTION_BYTES_MAX)?;
        check_client_id("chat_id", &start.chat_id)?;
        if !self.queues.contains_key(&start.queue_id) {
            return Err(Rejection::UnknownQueue {
                queue_id: start.queue_id.clone(),
            });
        }
        if self.chats.contains_key(&start.chat_id) {
            return Err(Rejection::Invalid {
                field: "chat_id".to_owned(),
                problem: "already in use".to_owned(),
            });
        }
        let chat = Chat {
            id: start.chat_id.clone(),
            queue_id: start.queue_id.clone(),
            customer: start.customer.clone(),
            status: ChatStatus::Open,
            created_at_ms: at_ms,
            events: vec![ChatEvent {
                seq: 1,
                at_ms,
                body: EventBody::Started {
                    queue_id: start.queue_id.clone(),
                    customer_name: start.customer.name.clone(),
                    question: start.question.clone(),
                },
            }],
            client_msg_ids: BTreeMap::new(),
        };
        self.chats.insert(chat.id.clone(), chat);
        self.chat_requests
            .insert(start.request_id.clone(), start.chat_id.clone());
        Ok(Outcome::ChatStarted {
            chat_id: start.chat_id.clone(),
            seq: 1,
            replayed: false,
        })
    }

    fn post_message(&mut self, at_ms: u64, post: &PostMessage) -> Result<Outcome, Rejection> {
        check_client_id("client_msg_id", &post.client_msg_id)?;
        check_text("text", &post.text, 1, limits::MESSAGE_TEXT_BYTES_MAX)?;
        let chat = self
            .chats
            .get_mut(&post.chat_id)
            .ok_or_else(|| Rejection::UnknownChat {
                chat_id: post.chat_id.clone(),
            })?;
        if let Participant::Agent { agent_id } = &post.sender {
            if !self.agents.contains_key(agent_id) {
                return Err(Rejection::Invalid {
                    field: "sender".to_owned(),
                    problem: format!("unknown agent {agent_id}"),
                });
            }
        }
        let key = format!("{}/{}", post.sender.key(), post.client_msg_id);
        if let Some(&seq) = chat.client_msg_ids.get(&key) {
            let same = chat.event(seq).is_some_and(|event| {
                matches!(&event.body, EventBody::Message { text, .. } if *text == post.text)
            });
            if !same {
                return Err(Rejection::IdempotencyConflict {
                    what: "client_msg_id".to_owned(),
                });
            }
            return Ok(Outcome::MessagePosted {
                chat_id: chat.id.clone(),
                seq,
                replayed: true,
            });
        }
        if chat.status == ChatStatus::Ended {
            return Err(Rejection::ChatEnded {
                chat_id: chat.id.clone(),
            });
        }
        let seq = chat.push(
            at_ms,
            EventBody::Message {
                from: post.sender.clone(),
                client_msg_id: post.client_msg_id.clone(),
                text: post.text.clone(),
            },
        );
        chat.client_msg_ids.insert(key, seq);
        debug_assert!(chat.validate().is_ok(), "{:?}", chat.validate());
        Ok(Outcome::MessagePosted {
            chat_id: chat.id.clone(),
            seq,
            replayed: false,
        })
    }

    /// The events of `chat_id` with `seq > after`, at most `limit` (capped at
    /// [`limits::EVENTS_PAGE_MAX`]). `None` when the chat does not exist.
    pub fn chat_events(&self, chat_id: &str, after: u64, limit: usize) -> Option<&[ChatEvent]> {
        let chat = self.chats.get(chat_id)?;
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(chat.events.len());
        let end = start
            .saturating_add(limit.min(limits::EVENTS_PAGE_MAX))
            .min(chat.events.len());
        Some(&chat.events[start..end])
    }

    /// Checks every state invariant; used by tests, the chaos oracle and debug assertions.
    pub fn validate(&self) -> Result<(), InvariantViolation> {
        for (id, chat) in &self.chats {
            if *id != chat.id {
                return Err(InvariantViolation(format!(
                    "chat {id} stored under another id"
                )));
            }
            if !self.queues.contains_key(&chat.queue_id) {
                return Err(InvariantViolation(format!(
                    "chat {id} is in unknown queue {}",
                    chat.queue_id
                )));
            }
            chat.validate()?;
        }
        for (request_id, chat_id) in &self.chat_requests {
            if !self.chats.contains_key(chat_id) {
                return Err(InvariantViolation(format!(
                    "start request {request_id} points at missing chat {chat_id}"
                )));
            }
        }
        for id in self.queues.keys() {
            if !self.seeded.contains(&format!("queue:{id}")) {
                return Err(InvariantViolation(format!("queue {id} was never seeded")));
            }
        }
        for id in self.agents.keys() {
            if !self.seeded.contains(&format!("agent:{id}")) {
                return Err(InvariantViolation(format!("agent {id} was never seeded")));
            }
        }
        Ok(())
    }

    /// A stable hash of the whole state (BLAKE3 of its canonical JSON), hex encoded. Replicas at
    /// the same applied index must report the same digest.
    pub fn digest(&self) -> Result<String, serde_json::Error> {
        let bytes = serde_json::to_vec(self)?;
        Ok(blake3::hash(&bytes).to_hex().to_string())
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

    fn push(&mut self, at_ms: u64, body: EventBody) -> u64 {
        let seq = self.last_seq() + 1;
        self.events.push(ChatEvent { seq, at_ms, body });
        seq
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

fn check_text(
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
    Err(Rejection::Invalid {
        field: field.to_owned(),
        problem,
    })
}

/// Client ids: 1..=128 bytes of printable ASCII without spaces.
pub fn check_client_id(field: &str, value: &str) -> Result<(), Rejection> {
    check_id(field, value, limits::CLIENT_ID_BYTES_MAX)
}

/// Directory ids: 1..=64 bytes of printable ASCII without spaces.
pub fn check_directory_id(field: &str, value: &str) -> Result<(), Rejection> {
    check_id(field, value, limits::DIRECTORY_ID_BYTES_MAX)
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
    Err(Rejection::Invalid {
        field: field.to_owned(),
        problem,
    })
}

impl parley_storage::Machine for State {
    type Request = Request;
    type Response = Response;

    fn apply(&mut self, _log_index: u64, request: &Self::Request) -> Self::Response {
        self.apply_request(request)
    }

    fn empty_response() -> Self::Response {
        Response::default()
    }
}

#[cfg(test)]
mod tests;
