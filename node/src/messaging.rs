//! The messaging actor: tells the clients connected to this node that events they follow have
//! been applied here, and carries ephemeral events (typing) between them and across nodes.
//!
//! It follows the locally applied index (a `watch` channel from the state machine), so it
//! delivers whatever this node applied, whoever proposed it. A client follows a [`Feed`]: one
//! chat's events, one agent's feed, or the supervisor view. On every applied change the actor
//! compares each feed's head with what the client was last told about and wakes those behind;
//! the client's own task then reads the missed events from the state (so delivery after a
//! reconnect and live delivery are the same code path, and nothing depends on this actor
//! having seen every change).

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Message, StreamHandler};
use parley_proto::v1 as pb;
use parley_raft::command::{AgentId, ChatId, Participant};

use crate::api;
use parley_raft::{NodeId, Replica, State};
use parley_storage::AppliedState;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_stream::wrappers::{ReceiverStream, WatchStream};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Most clients waiting for events (long polls and streams together) on one node at once.
pub const FOLLOWERS_MAX: usize = 20_000;
/// Ephemeral events queued per stream before further ones are dropped.
pub const EPHEMERAL_QUEUE: usize = 16;
/// How many requests may wait in the messaging actor's mailbox.
const MAILBOX_CAPACITY: usize = 4096;

/// What a client follows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Feed {
    /// One chat's events.
    Chat(ChatId),
    /// One agent's feed (offers, assignments, their chats' events).
    Agent(AgentId),
    /// Any change (supervisor views).
    Supervisor,
}

impl Feed {
    /// The feed's current head: the last sequence number (or applied index for supervisors).
    pub fn head(&self, state: &State, applied: Option<u64>) -> u64 {
        match self {
            Feed::Chat(id) => state.chats.get(id).map_or(0, |c| c.last_seq()),
            Feed::Agent(id) => state.agents.get(id).map_or(0, |a| a.feed_last_seq()),
            Feed::Supervisor => applied.unwrap_or(0),
        }
    }
}

/// An ephemeral event ready to send: the chat it concerns and the JSON frame.
#[derive(Clone, Debug)]
pub struct Ephemeral {
    /// The chat.
    pub chat_id: ChatId,
    /// Who it comes from.
    pub from: Participant,
    /// The frame to send as is.
    pub frame: Arc<str>,
}

/// A typing indicator as clients receive it and peers relay it.
#[derive(Serialize, serde::Deserialize)]
struct TypingFrame {
    #[serde(rename = "type")]
    kind: String,
    chat_id: ChatId,
    from: api::Participant,
}

struct Waiter {
    feed: Feed,
    after: u64,
    wake: oneshot::Sender<()>,
}

struct Subscription {
    feed: Feed,
    /// The head the client was last woken for.
    head: u64,
    notify: Arc<Notify>,
    ephemeral: mpsc::Sender<Ephemeral>,
}

/// The messaging actor.
pub struct MessagingActor {
    replica: Replica,
    waiters: Vec<Waiter>,
    subscriptions: HashMap<u64, Subscription>,
    next_id: u64,
    relayed: Option<mpsc::Receiver<pb::Ephemeral>>,
    metrics: Arc<Metrics>,
}

impl MessagingActor {
    /// An actor delivering what `replica` applies, and the ephemeral events peers relay into
    /// `relayed`.
    pub fn new(
        replica: Replica,
        metrics: Arc<Metrics>,
        relayed: mpsc::Receiver<pb::Ephemeral>,
    ) -> Self {
        Self {
            replica,
            waiters: Vec::new(),
            subscriptions: HashMap::new(),
            next_id: 1,
            relayed: Some(relayed),
            metrics,
        }
    }

    fn followers(&self) -> usize {
        self.waiters.len() + self.subscriptions.len()
    }

    fn update_gauge(&self) {
        self.metrics.set_long_poll_waiters(self.waiters.len());
        self.metrics.set_streams(self.subscriptions.len());
    }

    fn wake_ready(&mut self) {
        if self.waiters.is_empty() && self.subscriptions.is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut self.waiters);
        let subscriptions = &mut self.subscriptions;
        let kept = self.replica.read(|state, applied| {
            let applied = applied.map(|id| id.index);
            for sub in subscriptions.values_mut() {
                let head = sub.feed.head(state, applied);
                if head > sub.head {
                    sub.head = head;
                    sub.notify.notify_one();
                }
            }
            let mut kept = Vec::with_capacity(waiters.len());
            for waiter in waiters {
                if waiter.wake.is_closed() {
                    continue;
                }
                if waiter.feed.head(state, applied) > waiter.after {
                    let _ = waiter.wake.send(());
                } else {
                    kept.push(waiter);
                }
            }
            kept
        });
        self.waiters = kept;
        self.update_gauge();
    }

    fn make_room(&mut self) -> Result<(), ApiError> {
        if self.followers() >= FOLLOWERS_MAX {
            // Drop waiters whose clients left before refusing a new one.
            self.waiters.retain(|w| !w.wake.is_closed());
            if self.followers() >= FOLLOWERS_MAX {
                return Err(ApiError::unavailable(
                    "too_many_followers",
                    format!(
                        "this node already serves {FOLLOWERS_MAX} streams and long polls; \
                         connect to another node"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Hands an ephemeral event to the local streams it concerns: typing from the customer
    /// goes to the chat's agent, typing from an agent to the chat's customer.
    fn deliver(&mut self, event: &Ephemeral) {
        let agent = self.replica.read(|state, _| {
            state
                .chats
                .get(&event.chat_id)
                .and_then(|c| c.agent_id.clone())
        });
        for sub in self.subscriptions.values() {
            let wanted = match (&sub.feed, &event.from) {
                (Feed::Chat(id), Participant::Agent { .. }) => *id == event.chat_id,
                (Feed::Agent(id), Participant::Customer) => agent.as_ref() == Some(id),
                _ => false,
            };
            if wanted {
                // Best effort: a slow client misses a typing indicator.
                let _ = sub.ephemeral.try_send(event.clone());
            }
        }
    }
}

impl Actor for MessagingActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.add_stream(WatchStream::new(self.replica.subscribe_applied()));
        if let Some(relayed) = self.relayed.take() {
            ctx.add_stream(ReceiverStream::new(relayed));
        }
    }
}

impl StreamHandler<AppliedState<NodeId>> for MessagingActor {
    fn handle(&mut self, _applied: AppliedState<NodeId>, _ctx: &mut Self::Context) {
        self.wake_ready();
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The state machine is gone (shutdown): release everyone.
        self.waiters.clear();
        self.subscriptions.clear();
        self.update_gauge();
    }
}

impl StreamHandler<pb::Ephemeral> for MessagingActor {
    fn handle(&mut self, relayed: pb::Ephemeral, _ctx: &mut Self::Context) {
        let Ok(frame) = std::str::from_utf8(&relayed.json) else {
            return;
        };
        let Ok(typing) = serde_json::from_str::<TypingFrame>(frame) else {
            return;
        };
        if typing.kind != "typing" || typing.chat_id != relayed.chat_id {
            return;
        }
        self.deliver(&Ephemeral {
            chat_id: typing.chat_id,
            from: typing.from.into(),
            frame: Arc::from(frame),
        });
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

/// Wait until `feed` has an event with a sequence number above `after`. The receiver fires
/// then (or is dropped at shutdown); the caller bounds the wait with its own timeout.
#[derive(Debug, Message)]
#[rtype(result = "Result<oneshot::Receiver<()>, ApiError>")]
pub struct WaitForEvents {
    /// What to wait on.
    pub feed: Feed,
    /// The last sequence number the client has.
    pub after: u64,
}

impl Handler<WaitForEvents> for MessagingActor {
    type Result = Result<oneshot::Receiver<()>, ApiError>;

    fn handle(&mut self, msg: WaitForEvents, _ctx: &mut Self::Context) -> Self::Result {
        let (wake, rx) = oneshot::channel();
        let head = self
            .replica
            .read(|state, applied| msg.feed.head(state, applied.map(|id| id.index)));
        if head > msg.after {
            let _ = wake.send(());
            return Ok(rx);
        }
        self.make_room()?;
        self.waiters.push(Waiter {
            feed: msg.feed,
            after: msg.after,
            wake,
        });
        self.update_gauge();
        Ok(rx)
    }
}

/// A stream's registration: woken through `notify` when its feed moves past what it was last
/// told about, and handed ephemeral events through `ephemeral`.
#[derive(Debug, Message)]
#[rtype(result = "Result<u64, ApiError>")]
pub struct Subscribe {
    /// What it follows.
    pub feed: Feed,
    /// The head it has already delivered.
    pub head: u64,
    /// Woken on news.
    pub notify: Arc<Notify>,
    /// Ephemeral events for it.
    pub ephemeral: mpsc::Sender<Ephemeral>,
}

impl Handler<Subscribe> for MessagingActor {
    type Result = Result<u64, ApiError>;

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Self::Context) -> Self::Result {
        self.make_room()?;
        let id = self.next_id;
        self.next_id += 1;
        self.subscriptions.insert(
            id,
            Subscription {
                feed: msg.feed,
                head: msg.head,
                notify: msg.notify,
                ephemeral: msg.ephemeral,
            },
        );
        // Anything applied between the client's read and this registration wakes it now.
        self.wake_ready();
        Ok(id)
    }
}

/// Removes a stream's registration.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Unsubscribe(pub u64);

impl Handler<Unsubscribe> for MessagingActor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _ctx: &mut Self::Context) {
        self.subscriptions.remove(&msg.0);
        self.update_gauge();
    }
}

/// A client on this node is typing in a chat: tell the other side here and on every peer.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Typing {
    /// The chat.
    pub chat_id: ChatId,
    /// Who types.
    pub from: Participant,
}

impl Handler<Typing> for MessagingActor {
    type Result = ();

    fn handle(&mut self, msg: Typing, _ctx: &mut Self::Context) {
        let frame = TypingFrame {
            kind: "typing".to_owned(),
            chat_id: msg.chat_id.clone(),
            from: api::Participant::from(&msg.from),
        };
        let Ok(json) = serde_json::to_string(&frame) else {
            return;
        };
        self.replica.relay(&msg.chat_id, json.clone().into_bytes());
        self.deliver(&Ephemeral {
            chat_id: msg.chat_id,
            from: msg.from,
            frame: Arc::from(json),
        });
    }
}
