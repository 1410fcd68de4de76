//! The services actor: fires the replicated state's timers (offer timeouts and auto-pushback,
//! due callbacks, customer inactivity). It runs on every node (active-active).
//!
//! Timers live in the replicated state; firing them is a [`Op::Tick`] command that applies
//! every timer due at the command's time, so two nodes firing the same timer is harmless (the
//! second tick finds nothing due). To avoid that duplicate work in the common case, nodes take
//! turns by rank: the node ranked `r` among the current members (by id) waits
//! `r × takeover_step` past the due time before proposing; a node that is not (or not yet) a
//! member does not fire timers. If the first node is down, the next takes over a step later; no
//! lease has to expire and no node is special.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context};
use parley_raft::command::Op;
use parley_raft::proposer::Clock;
use parley_raft::{Outcome, Replica};

/// How often the actor looks for due timers.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(200);
/// How much later than the previous rank each node steps in.
pub const TAKEOVER_STEP: Duration = Duration::from_millis(400);

/// The services actor.
pub struct ServicesActor {
    replica: Replica,
    /// The same clock the proposer stamps commands with.
    clock: Arc<dyn Clock>,
    /// A tick this node proposed is still in flight.
    ticking: bool,
}

impl ServicesActor {
    /// Services for `replica`.
    pub fn new(replica: Replica, clock: Arc<dyn Clock>) -> Self {
        Self {
            replica,
            clock,
            ticking: false,
        }
    }

    fn scan(&mut self, ctx: &mut Context<Self>) {
        // An island fires no timers: they wait for the cluster (see `island_takes`).
        if self.ticking || self.replica.island().island() {
            return;
        }
        let Some(due) = self.replica.read(|state, _| state.next_timer_ms()) else {
            return;
        };
        let Some(rank) = self.replica.rank() else {
            return;
        };
        let step = u64::try_from(TAKEOVER_STEP.as_millis()).unwrap_or(u64::MAX);
        let delay_ms = step.saturating_mul(u64::try_from(rank).unwrap_or(u64::MAX));
        let now = self.clock.now_ms();
        if now < due.saturating_add(delay_ms) {
            return;
        }
        self.ticking = true;
        let replica = self.replica.clone();
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(async move {
                match replica.propose(Op::Tick).await {
                    Ok(Outcome::Ticked { fired }) if fired > 0 => {
                        tracing::debug!(fired, "timers fired");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::debug!(%error, "firing timers; will retry"),
                }
            })
            .map(|(), actor, _ctx| actor.ticking = false),
        );
    }
}

impl Actor for ServicesActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SCAN_INTERVAL, |actor, ctx| actor.scan(ctx));
    }
}
