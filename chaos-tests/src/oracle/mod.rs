//! The oracle: what clients saw acknowledged during a run ([`record`]), what each node holds
//! after healing ([`observe`]), and the checks of one against the other ([`check`]).
//!
//! The checks are plain functions of a record and observations, so they run the same on a
//! simulated cluster, on live processes (fewer observations: no agents there) and on
//! constructed inputs (the planted-bug tests in `tests.rs`):
//!
//! - G1: every acknowledged chat exists and every acknowledged message is at its seq; a
//!   message an island took is there once, with the island's mark (its node and the island
//!   seq its client saw) unless the cluster had it from another node first;
//! - G2: no client message id twice in a chat;
//! - G3: every chat's events numbered 1, 2, 3, … without gaps;
//! - G4/G6, agent actions: an acknowledged login shows in the agent's feed; an acknowledged
//!   availability change too; an acknowledged accept, transfer or completion is a transition of
//!   the activity's history by that agent, stamped between the first send and the answer;
//! - G6, holders: an activity's history never moves it from one agent to another except by a
//!   transfer, and never assigns it to an agent it was not offered to; replaying each agent's
//!   feed, the agent never holds more than their limit; at the end each activity's holder lists
//!   it as work and nobody else does, and no agent is over a limit;
//! - the node's own `State::validate`;
//! - G7: at one applied index, one digest;
//! - islands ([`islands`]): epochs only go up, across restarts too; each island starts the next
//!   epoch; the island clock never goes back (in every chat, one island node's stamps grow
//!   with the order it took its writes in);
//! - leases, over a lease's applied history ([`lease_history`]: the log replayed, every take,
//!   renewal, release and fenced command with what `apply` answered): one holder at a time and
//!   the token up by one with each take ([`lease_tokens`]); every accepted fenced command
//!   carried the token in force, came from the holder of record, was stamped before the expiry,
//!   and follows no other node's take under a higher token; one writer per token
//!   ([`fencing`]); what holders were answered is in the log ([`lease_acks`]); after the heal,
//!   fenced commands are accepted again within a bound ([`lease_liveness`]).

pub mod check;
pub mod fencing;
pub mod islands;
pub mod lease_acks;
pub mod lease_history;
pub mod lease_liveness;
pub mod lease_tokens;
pub mod observe;
pub mod record;
#[cfg(test)]
mod tests;

pub use check::{check_all, check_cluster};
pub use observe::Observation;
pub use record::{AgentAction, Oracle, Window};

/// A broken guarantee, described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
