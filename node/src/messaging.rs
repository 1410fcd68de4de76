//! The messaging actor: tells the clients connected to this node that events they follow have
//! been applied here, and carries ephemeral events (typing) between them and across nodes.
//!
//! It follows the locally applied index (a `watch` channel from the state machine), so it
//! delivers whatever this node applied, whoever proposed it. A client follows a [`Feed`]: one
//! chat's events, one agent's feed, or the supervisor view. On every applied change the actor
//! asks the state's touch journal ([`parley_raft::state::touched`]) which chats and agent feeds
//! the entries since its last look appended to, and compares only those feeds' heads (and the
//! supervisor view's) with what their clients were last told about, waking those behind; when
//! the journal cannot say (after a restart or a snapshot install, or when it overflowed), it
//! compares every feed. The client's own task then reads the missed events from the state (so
//! delivery after a reconnect and live delivery are the same code path, and nothing depends on
//! this actor having seen every change).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Message, StreamHandler};
use parley_proto::v1 as pb;
use parley_raft::command::{AgentId, ChatId, Participant};

use crate::api;
use parley_raft::state::touched::Touch;
use parley_raft::{Replica, State, TypeConfig};
use parley_storage::AppliedState;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_stream::wrappers::{ReceiverStream, WatchStream};
use tokio_stream::StreamExt as _;

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

impl From<&Touch> for Feed {
    fn from(touch: &Touch) -> Self {
        match touch {
            Touch::Chat(id) => Feed::Chat(id.clone()),
            Touch::Agent(id) => Feed::Agent(id.clone()),
        }
    }
}

struct Waiter {
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
    /// Long polls by the feed they wait on.
    waiters: HashMap<Feed, Vec<Waiter>>,
    /// How many long polls `waiters` holds.
    waiter_count: usize,
    subscriptions: HashMap<u64, Subscription>,
    /// Stream ids by the feed they follow.
    by_feed: HashMap<Feed, Vec<u64>>,
    /// The applied index the last wake-up looked at.
    delivered_index: u64,
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
            waiters: HashMap::new(),
            waiter_count: 0,
            subscriptions: HashMap::new(),
            by_feed: HashMap::new(),
            delivered_index: 0,
            next_id: 1,
            relayed: Some(relayed),
            metrics,
        }
    }

    fn followers(&self) -> usize {
        self.waiter_count + self.subscriptions.len()
    }

    fn update_gauge(&self) {
        self.metrics.set_long_poll_waiters(self.waiter_count);
        self.metrics.set_streams(self.subscriptions.len());
    }

    /// Wakes every client whose feed moved past what it was last told about, looking only at
    /// the feeds the entries applied since the last call touched when the journal can say
    /// and `every_feed` is false.
    fn wake_ready(&mut self, every_feed: bool) {
        let (subscriptions, by_feed, waiters) =
            (&mut self.subscriptions, &self.by_feed, &mut self.waiters);
        let delivered = self.delivered_index;
        let mut answered = 0;
        let (applied, full_scan, checked) = self.replica.read(|state, applied| {
            let applied = applied.map_or(0, |id| id.index);
            let touched: Option<HashSet<Feed>> = if every_feed {
                None
            } else {
                state
                    .touched
                    .after(delivered)
                    .map(|touches| touches.map(Feed::from).collect())
            };
            let full_scan = touched.is_none();
            let feeds: Vec<Feed> = match touched {
                Some(mut feeds) => {
                    feeds.insert(Feed::Supervisor);
                    feeds.into_iter().collect()
                }
                None => by_feed.keys().chain(waiters.keys()).cloned().collect(),
            };
            let mut checked = 0;
            for feed in feeds {
                let followed = by_feed.get(&feed).is_some_and(|ids| !ids.is_empty());
                if !followed && !waiters.contains_key(&feed) {
                    continue;
                }
                checked += 1;
                let head = feed.head(state, Some(applied));
                answered += wake_feed(&feed, head, subscriptions, by_feed, waiters);
            }
            (applied, full_scan, checked)
        });
        self.waiter_count -= answered.min(self.waiter_count);
        self.delivered_index = self.delivered_index.max(applied);
        self.metrics.count_delivery(full_scan, checked);
        if full_scan {
            // Long polls whose clients left are dropped here too.
            self.drop_departed_waiters();
        }
        self.update_gauge();
    }

    /// Drops the long polls whose clients left.
    fn drop_departed_waiters(&mut self) {
        self.waiters.retain(|_, list| {
            list.retain(|w| !w.wake.is_closed());
            !list.is_empty()
        });
        self.waiter_count = self.waiters.values().map(Vec::len).sum();
    }

    fn make_room(&mut self) -> Result<(), ApiError> {
        if self.followers() >= FOLLOWERS_MAX {
            // Drop waiters whose clients left before refusing a new one.
            self.drop_departed_waiters();
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

/// Wakes the streams following `feed` that were told about less than `head`, and answers the
/// long polls on it waiting for more than they have; long polls whose clients left go. Returns
/// how many long polls it removed.
fn wake_feed(
    feed: &Feed,
    head: u64,
    subscriptions: &mut HashMap<u64, Subscription>,
    by_feed: &HashMap<Feed, Vec<u64>>,
    waiters: &mut HashMap<Feed, Vec<Waiter>>,
) -> usize {
    for id in by_feed.get(feed).into_iter().flatten() {
        if let Some(sub) = subscriptions.get_mut(id) {
            if head > sub.head {
                sub.head = head;
                sub.notify.notify_one();
            }
        }
    }
    let Some(list) = waiters.get_mut(feed) else {
        return 0;
    };
    let before = list.len();
    let mut kept = Vec::with_capacity(before);
    for waiter in list.drain(..) {
        if waiter.wake.is_closed() {
            continue;
        }
        if head > waiter.after {
            let _ = waiter.wake.send(());
        } else {
            kept.push(waiter);
        }
    }
    let removed = before - kept.len();
    if kept.is_empty() {
        waiters.remove(feed);
    } else {
        *list = kept;
    }
    removed
}

impl Actor for MessagingActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.add_stream(WatchStream::new(self.replica.subscribe_applied()));
        // Island writes change what reads see without an applied entry: every feed is
        // compared (the touch journal follows applied entries only).
        ctx.add_stream(WatchStream::new(self.replica.subscribe_island_view()).map(|_| IslandView));
        if let Some(relayed) = self.relayed.take() {
            ctx.add_stream(ReceiverStream::new(relayed));
        }
    }
}

impl StreamHandler<AppliedState<TypeConfig>> for MessagingActor {
    fn handle(&mut self, _applied: AppliedState<TypeConfig>, _ctx: &mut Self::Context) {
        self.wake_ready(false);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The state machine is gone (shutdown): release everyone.
        self.waiters.clear();
        self.waiter_count = 0;
        self.subscriptions.clear();
        self.by_feed.clear();
        self.update_gauge();
    }
}

/// A change of the island's view (see [`Replica::subscribe_island_view`]).
struct IslandView;

impl StreamHandler<IslandView> for MessagingActor {
    fn handle(&mut self, _change: IslandView, _ctx: &mut Self::Context) {
        self.wake_ready(true);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
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
        self.waiters.entry(msg.feed).or_default().push(Waiter {
            after: msg.after,
            wake,
        });
        self.waiter_count += 1;
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
        // Anything applied between the client's read and this registration wakes it now: the
        // journal only names what changes after the last wake-up.
        let head = self
            .replica
            .read(|state, applied| msg.feed.head(state, applied.map(|id| id.index)));
        if head > msg.head {
            msg.notify.notify_one();
        }
        self.by_feed.entry(msg.feed.clone()).or_default().push(id);
        self.subscriptions.insert(
            id,
            Subscription {
                feed: msg.feed,
                head: head.max(msg.head),
                notify: msg.notify,
                ephemeral: msg.ephemeral,
            },
        );
        self.update_gauge();
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
        if let Some(sub) = self.subscriptions.remove(&msg.0) {
            if let Some(ids) = self.by_feed.get_mut(&sub.feed) {
                ids.retain(|id| *id != msg.0);
                if ids.is_empty() {
                    self.by_feed.remove(&sub.feed);
                }
            }
        }
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
