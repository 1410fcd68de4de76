//! Chat sessions: start, messages, end, survey.

use std::sync::Arc;

use super::touched::Touch;
use super::{
    check_text, hours, Activity, ActivityDetail, ActivityStatus, AgentEventBody, Chat, ChatEvent,
    ChatStatus, ClientMsgIds, EventBody, State, Survey, Transition,
};
use crate::command::{
    Channel, EndChat, Outcome, Participant, PostMessage, Rejection, StartChat, SubmitSurvey,
};
use crate::limits;

/// The key of a customer for the open-chats bound.
fn customer_key(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

pub(super) fn check_email(email: &str) -> Result<(), Rejection> {
    check_text("customer.email", email, 3, limits::EMAIL_BYTES_MAX)?;
    let valid = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !domain.contains('@')
    }) && !email.chars().any(char::is_whitespace);
    if !valid {
        return Err(Rejection::invalid(
            "customer.email",
            "is not an email address",
        ));
    }
    Ok(())
}

impl State {
    /// Appends an event to a chat and mirrors it into the assigned agent's feed. Returns the
    /// event's seq.
    pub(super) fn push_chat_event(&mut self, chat_id: &str, at_ms: u64, body: EventBody) -> u64 {
        let Some(chat) = self.chats.get_mut(chat_id).map(Arc::make_mut) else {
            return 0;
        };
        let seq = chat.last_seq() + 1;
        let island = self.island_write.take_mark(seq);
        chat.events.push(ChatEvent {
            seq,
            at_ms,
            body,
            island,
        });
        self.touched.record(Touch::Chat(chat_id.to_owned()));
        if let Some(agent) = chat.agent_id.as_ref().and_then(|a| self.agents.get_mut(a)) {
            agent.push_feed(
                &mut self.touched,
                at_ms,
                AgentEventBody::ChatEvent {
                    chat_id: chat_id.to_owned(),
                    chat_seq: seq,
                },
            );
        }
        seq
    }

    pub(super) fn start_chat(
        &mut self,
        at_ms: u64,
        start: &StartChat,
    ) -> Result<Outcome, Rejection> {
        let request_key = format!("chat:{}", start.request_id);
        if let Some(existing) = self.requests.get(&request_key) {
            let chat = self
                .chats
                .get(existing)
                .ok_or_else(|| Rejection::UnknownChat {
                    chat_id: existing.clone(),
                })?;
            let same_queue = chat.events.first().is_some_and(|e| {
                matches!(&e.body, EventBody::Started { queue_id, .. } if *queue_id == start.queue_id)
            });
            if !same_queue || chat.customer != start.customer {
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
        let queue = self
            .queues
            .get(&start.queue_id)
            .ok_or_else(|| Rejection::UnknownQueue {
                queue_id: start.queue_id.clone(),
            })?;
        if queue.spec.channel != Channel::Chat {
            // A well-formed request naming a queue of another kind: it conflicts with the
            // directory, it is not malformed.
            return Err(Rejection::conflict(format!(
                "queue {} takes {} work, not chats",
                start.queue_id,
                queue.spec.channel.as_str()
            )));
        }
        if let Some(business_hours) = &queue.spec.business_hours {
            if !hours::is_open(business_hours, at_ms) {
                return Err(Rejection::OffHours {
                    message: queue.spec.off_hours_message.clone(),
                });
            }
        }
        if self.activities.contains_key(&start.chat_id) {
            return Err(Rejection::invalid("chat_id", "already in use"));
        }
        let customer = customer_key(&start.customer.email);
        let open = self
            .open_chats_by_customer
            .get(&customer)
            .map_or(0, |chats| chats.len());
        if open >= limits::OPEN_CHATS_PER_CUSTOMER_MAX {
            return Err(Rejection::LimitReached {
                what: "open chats for this customer".to_owned(),
                limit: limits::OPEN_CHATS_PER_CUSTOMER_MAX as u64,
            });
        }

        self.insert_chat(at_ms, start);
        self.route(at_ms);
        Ok(Outcome::ChatStarted {
            chat_id: start.chat_id.clone(),
            seq: 1,
            replayed: false,
        })
    }

    /// Creates the chat `start` asks for, queued at `at_ms`, with its activity and request
    /// key; the checks were made.
    pub(super) fn insert_chat(&mut self, at_ms: u64, start: &StartChat) {
        let request_key = format!("chat:{}", start.request_id);
        let customer = customer_key(&start.customer.email);
        let chat_id = start.chat_id.clone();
        self.chats.insert(
            chat_id.clone(),
            Arc::new(Chat {
                id: chat_id.clone(),
                customer: start.customer.clone(),
                status: ChatStatus::Open,
                created_at_ms: at_ms,
                agent_id: None,
                inactivity_at_ms: None,
                survey: None,
                events: std::iter::once(ChatEvent {
                    seq: 1,
                    at_ms,
                    body: EventBody::Started {
                        queue_id: start.queue_id.clone(),
                        customer_name: start.customer.name.clone(),
                        question: start.question.clone(),
                    },
                    island: self.island_write.take_mark(1),
                })
                .collect(),
                client_msg_ids: ClientMsgIds::default(),
            }),
        );
        self.activities.insert(
            chat_id.clone(),
            Arc::new(Activity {
                id: chat_id.clone(),
                channel: Channel::Chat,
                queue_id: start.queue_id.clone(),
                status: ActivityStatus::Queued,
                created_at_ms: at_ms,
                enqueued_at_ms: at_ms,
                assigned_at_ms: None,
                history: vec![Transition {
                    at_ms,
                    status: ActivityStatus::Queued,
                    queue_id: start.queue_id.clone(),
                    reason: "created".to_owned(),
                }],
                detail: ActivityDetail::Chat,
                request_key: Some(request_key.clone()),
                island_conflicts: Vec::new(),
            }),
        );
        self.waiting.insert((at_ms, chat_id.clone()));
        self.open_chats_by_customer
            .entry(customer)
            .or_default()
            .insert(chat_id.clone());
        self.requests.insert(request_key, chat_id);
    }

    /// The chat `chat_id`, or the rejection for an unknown one.
    pub(super) fn known_chat(&self, chat_id: &str) -> Result<&Chat, Rejection> {
        self.chats
            .get(chat_id)
            .map(|chat| &**chat)
            .ok_or_else(|| Rejection::UnknownChat {
                chat_id: chat_id.to_owned(),
            })
    }

    pub(super) fn post_message(
        &mut self,
        at_ms: u64,
        post: &PostMessage,
    ) -> Result<Outcome, Rejection> {
        let chat = self.known_chat(&post.chat_id)?;
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
        match &post.sender {
            Participant::Customer => {}
            Participant::Agent { agent_id } => {
                if chat.agent_id.as_ref() != Some(agent_id) {
                    return Err(Rejection::conflict(format!(
                        "agent {agent_id} is not working chat {}",
                        chat.id
                    )));
                }
            }
            Participant::System => {
                return Err(Rejection::invalid(
                    "sender",
                    "clients cannot post as system",
                ));
            }
        }
        if chat.status == ChatStatus::Ended {
            return Err(Rejection::ChatEnded {
                chat_id: chat.id.clone(),
            });
        }
        if chat.events.len() >= limits::CHAT_EVENTS_MAX {
            return Err(Rejection::LimitReached {
                what: "events in this chat".to_owned(),
                limit: limits::CHAT_EVENTS_MAX as u64,
            });
        }
        let chat_id = chat.id.clone();
        let seq = self.push_chat_event(
            &chat_id,
            at_ms,
            EventBody::Message {
                from: post.sender.clone(),
                client_msg_id: post.client_msg_id.clone(),
                text: post.text.clone(),
            },
        );
        if post.sender == Participant::Customer {
            self.arm_inactivity(&chat_id, at_ms);
        }
        if let Some(chat) = self.chats.get_mut(&chat_id).map(Arc::make_mut) {
            chat.client_msg_ids.insert(key, seq);
        }
        debug_assert!(
            self.chats
                .get(&chat_id)
                .is_some_and(|chat| chat.validate().is_ok()),
            "chat {chat_id} broke its sequence invariants with message {seq}"
        );
        if post.sender == Participant::Customer {
            self.reroute_from_unreachable(at_ms, &chat_id);
        }
        Ok(Outcome::MessagePosted {
            chat_id,
            seq,
            replayed: false,
        })
    }

    /// (Re)arms the customer-inactivity timer of an assigned chat from `from_ms`.
    pub(super) fn arm_inactivity(&mut self, chat_id: &str, from_ms: u64) {
        self.disarm_inactivity(chat_id);
        let Some(chat) = self.chats.get(chat_id) else {
            return;
        };
        if chat.agent_id.is_none() || chat.status != ChatStatus::Open {
            return;
        }
        let timeout = self
            .activities
            .get(chat_id)
            .and_then(|a| self.queues.get(&a.queue_id))
            .map_or(0, |q| q.spec.inactivity_timeout_ms);
        if timeout == 0 {
            return;
        }
        let due = from_ms.saturating_add(timeout);
        if let Some(chat) = self.chats.get_mut(chat_id).map(Arc::make_mut) {
            chat.inactivity_at_ms = Some(due);
        }
        self.timers
            .insert((due, super::Timer::Inactivity(chat_id.to_owned())));
    }

    pub(super) fn disarm_inactivity(&mut self, chat_id: &str) {
        if let Some(due) = self
            .chats
            .get_mut(chat_id)
            // Only a chat with a timer armed is changed (and copied, if a snapshot shares it).
            .filter(|c| c.inactivity_at_ms.is_some())
            .and_then(|c| Arc::make_mut(c).inactivity_at_ms.take())
        {
            self.timers
                .remove(&(due, super::Timer::Inactivity(chat_id.to_owned())));
        }
    }

    pub(super) fn end_chat(&mut self, at_ms: u64, end: &EndChat) -> Result<Outcome, Rejection> {
        let chat = self.known_chat(&end.chat_id)?;
        if chat.status == ChatStatus::Ended {
            let seq = chat
                .events
                .iter()
                .find(|e| matches!(e.body, EventBody::Ended { .. }))
                .map_or(chat.last_seq(), |e| e.seq);
            return Ok(Outcome::ChatEnded {
                chat_id: chat.id.clone(),
                seq,
            });
        }
        let reason = match &end.by {
            Participant::Customer => "customer",
            Participant::Agent { agent_id } => {
                if chat.agent_id.as_ref() != Some(agent_id) {
                    return Err(Rejection::conflict(format!(
                        "agent {agent_id} is not working chat {}",
                        chat.id
                    )));
                }
                "agent"
            }
            Participant::System => {
                return Err(Rejection::invalid("by", "clients cannot end as system"));
            }
        };
        let chat_id = chat.id.clone();
        let outcome = match end.by {
            Participant::Customer => "ended_by_customer",
            _ => "completed",
        };
        let seq = self.finish_chat(at_ms, &chat_id, end.by.clone(), reason, outcome);
        self.route(at_ms);
        Ok(Outcome::ChatEnded { chat_id, seq })
    }

    /// Ends an open chat and closes its activity: abandoned if no agent had it yet, completed
    /// with `outcome` otherwise. Returns the end event's seq.
    pub(super) fn finish_chat(
        &mut self,
        at_ms: u64,
        chat_id: &str,
        by: Participant,
        reason: &str,
        outcome: &str,
    ) -> u64 {
        self.disarm_inactivity(chat_id);
        // The end event goes to the agent's feed too, before they are released.
        let seq = self.push_chat_event(
            chat_id,
            at_ms,
            EventBody::Ended {
                by,
                reason: reason.to_owned(),
            },
        );
        if let Some(chat) = self.chats.get_mut(chat_id).map(Arc::make_mut) {
            chat.status = ChatStatus::Ended;
            chat.agent_id = None;
            let customer = customer_key(&chat.customer.email);
            if let Some(open) = self.open_chats_by_customer.get_mut(&customer) {
                open.remove(chat_id);
                if open.is_empty() {
                    self.open_chats_by_customer.remove(&customer);
                }
            }
        }
        self.close_activity(at_ms, chat_id, outcome);
        seq
    }

    pub(super) fn submit_survey(
        &mut self,
        at_ms: u64,
        survey: &SubmitSurvey,
    ) -> Result<Outcome, Rejection> {
        let chat = self.known_chat(&survey.chat_id)?;
        if chat.status != ChatStatus::Ended {
            return Err(Rejection::conflict(
                "a chat can be rated once it has ended".to_owned(),
            ));
        }
        if let Some(existing) = &chat.survey {
            if existing.rating == survey.rating && existing.comment == survey.comment {
                return Ok(Outcome::Done);
            }
            return Err(Rejection::conflict("this chat is already rated".to_owned()));
        }
        let chat_id = chat.id.clone();
        self.push_chat_event(
            &chat_id,
            at_ms,
            EventBody::Rated {
                rating: survey.rating,
            },
        );
        if let Some(chat) = self.chats.get_mut(&chat_id).map(Arc::make_mut) {
            chat.survey = Some(Survey {
                rating: survey.rating,
                comment: survey.comment.clone(),
                at_ms,
            });
        }
        Ok(Outcome::Done)
    }
}
