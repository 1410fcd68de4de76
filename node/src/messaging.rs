//! The messaging actor: wakes the clients connected to this node when events they wait for have
//! been applied here.
//!
//! It follows the locally applied index (a `watch` channel from the state machine), so it
//! delivers whatever this node applied, whoever proposed it. Waiters say which chat and which
//! sequence number they have seen; a waiter is woken once the chat has an event after it.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Message, StreamHandler};
use parley_raft::command::ChatId;
use parley_raft::{NodeId, Replica};
use parley_storage::AppliedState;
use tokio::sync::oneshot;
use tokio_stream::wrappers::WatchStream;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Most clients waiting for events on one node at once.
pub const WAITERS_MAX: usize = 10_000;
/// How many requests may wait in the messaging actor's mailbox.
const MAILBOX_CAPACITY: usize = 4096;

struct Waiter {
    after: u64,
    wake: oneshot::Sender<()>,
}

/// The messaging actor.
pub struct MessagingActor {
    /// Read access to the applied state and its applied-index stream.
    replica: Replica,
    /// Waiters by chat.
    waiters: HashMap<ChatId, Vec<Waiter>>,
    /// Total number of waiters, bounded by [`WAITERS_MAX`].
    waiters_total: usize,
    /// For the waiter gauge.
    metrics: Arc<Metrics>,
}

impl MessagingActor {
    /// An actor delivering what `replica` applies.
    pub fn new(replica: Replica, metrics: Arc<Metrics>) -> Self {
        Self {
            replica,
            waiters: HashMap::new(),
            waiters_total: 0,
            metrics,
        }
    }

    fn wake_ready(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let waiters = &mut self.waiters;
        self.replica.read(|state, _| {
            waiters.retain(|chat_id, list| {
                let last_seq = state.chats.get(chat_id).map_or(0, |chat| chat.last_seq());
                list.retain(|w| !w.wake.is_closed());
                let (ready, waiting): (Vec<Waiter>, Vec<Waiter>) =
                    list.drain(..).partition(|w| w.after < last_seq);
                for waiter in ready {
                    let _ = waiter.wake.send(());
                }
                *list = waiting;
                !list.is_empty()
            });
        });
        self.waiters_total = self.waiters.values().map(Vec::len).sum();
        self.metrics.set_long_poll_waiters(self.waiters_total);
    }
}

impl Actor for MessagingActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.add_stream(WatchStream::new(self.replica.subscribe_applied()));
    }
}

impl StreamHandler<AppliedState<NodeId>> for MessagingActor {
    fn handle(&mut self, _applied: AppliedState<NodeId>, _ctx: &mut Self::Context) {
        self.wake_ready();
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The state machine is gone (shutdown): release everyone.
        self.waiters.clear();
        self.waiters_total = 0;
    }
}

/// Wait until `chat_id` has an event with `seq > after`. The receiver fires then (or is dropped
/// at shutdown); the caller bounds the wait with its own timeout.
#[derive(Debug, Message)]
#[rtype(result = "Result<oneshot::Receiver<()>, ApiError>")]
pub struct WaitForEvents {
    /// The chat.
    pub chat_id: ChatId,
    /// The last sequence number the client has.
    pub after: u64,
}

impl Handler<WaitForEvents> for MessagingActor {
    type Result = Result<oneshot::Receiver<()>, ApiError>;

    fn handle(&mut self, msg: WaitForEvents, _ctx: &mut Self::Context) -> Self::Result {
        let (wake, rx) = oneshot::channel();
        let last_seq = self
            .replica
            .read(|state, _| state.chats.get(&msg.chat_id).map(|c| c.last_seq()));
        if last_seq.is_some_and(|seq| seq > msg.after) {
            let _ = wake.send(());
            return Ok(rx);
        }
        if self.waiters_total >= WAITERS_MAX {
            // Drop waiters whose clients left before refusing a new one.
            self.wake_ready();
            if self.waiters_total >= WAITERS_MAX {
                return Err(ApiError::unavailable(
                    "too_many_waiters",
                    "too many clients are waiting for events on this node",
                ));
            }
        }
        self.waiters.entry(msg.chat_id).or_default().push(Waiter {
            after: msg.after,
            wake,
        });
        self.waiters_total += 1;
        self.metrics.set_long_poll_waiters(self.waiters_total);
        Ok(rx)
    }
}
