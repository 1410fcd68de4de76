//! Fencing: a command a holder proposed as holder takes effect only as the current holder's.
//!
//! Walking a lease's applied history ([`super::lease_history`]) in log order, with the lease
//! of record as the grants before each command left it, every fenced command `apply` accepted:
//!
//! - carried the token in force at its log position;
//! - came from the holder of record (the command's origin);
//! - was stamped before the lease's expiry (at the command's own time);
//! - and no node's acquisition under a higher token precedes it in the log (a holder that lost
//!   its lease never commits as holder after its successor took over);
//!
//! and no token has accepted fenced commands of two nodes.

use std::collections::{BTreeMap, BTreeSet};

use parley_raft::NodeId;

use super::lease_history::{FencedResult, LeaseEntry, LeaseOp};
use super::lease_tokens::{describe, Granted};
use super::Violation;

/// Checks the fenced commands of lease `name` in `history`, as node `node` applied them.
pub fn fenced_writes(node: NodeId, name: &str, history: &[LeaseEntry]) -> Vec<Violation> {
    let mut broken = Vec::new();
    let mut lease: Option<Granted> = None;
    // Each token taken: by whom, at which index.
    let mut taken: BTreeMap<u64, (NodeId, u64)> = BTreeMap::new();
    // The nodes whose fenced commands were accepted under each token.
    let mut writers: BTreeMap<u64, BTreeSet<NodeId>> = BTreeMap::new();
    for entry in history {
        match &entry.op {
            LeaseOp::Acquire {
                granted: true,
                holder,
                token,
                expires_at_ms,
                ..
            } => {
                let renewal = lease.is_some_and(|l| l.token == *token && l.holder == *holder);
                let taken_at_index = match lease {
                    Some(previous) if renewal => previous.taken_at_index,
                    _ => {
                        taken.entry(*token).or_insert((*holder, entry.index));
                        entry.index
                    }
                };
                lease = Some(Granted {
                    holder: *holder,
                    token: *token,
                    expires_at_ms: *expires_at_ms,
                    taken_at_index,
                });
            }
            LeaseOp::Acquire { granted: false, .. } => {}
            LeaseOp::Release { token } => {
                if let Some(lease) = lease.as_mut() {
                    lease.release(entry, *token);
                }
            }
            LeaseOp::Fenced {
                id,
                token,
                result: FencedResult::Applied,
            } => {
                let what = format!(
                    "lease {name} on node {node}: node {}'s fenced command {id} (token {token}, \
                     stamped {}) was accepted at index {}",
                    entry.origin, entry.at_ms, entry.index
                );
                let mut report = |why: String| broken.push(Violation(format!("{what} {why}")));
                match lease {
                    None => report("although the lease was never taken".to_owned()),
                    Some(current) => {
                        if current.token != *token {
                            report(format!(
                                "with a stale token: the lease's token was {} (taken at index \
                                 {})",
                                current.token, current.taken_at_index
                            ));
                        }
                        if current.holder != entry.origin {
                            report(format!(
                                "though the holder of record was node {}",
                                current.holder
                            ));
                        }
                        if entry.at_ms >= current.expires_at_ms {
                            report(format!(
                                "after the lease expired at its own time ({})",
                                describe(lease)
                            ));
                        }
                    }
                }
                for (later, (holder, index)) in taken.range(token.saturating_add(1)..) {
                    if *holder != entry.origin {
                        report(format!(
                            "after node {holder} took the lease under token {later} at index \
                             {index}"
                        ));
                    }
                }
                let nodes = writers.entry(*token).or_default();
                nodes.insert(entry.origin);
                if nodes.len() == 2 {
                    report(format!(
                        "while nodes {nodes:?} both had fenced commands accepted under token \
                         {token}"
                    ));
                }
            }
            LeaseOp::Fenced { .. } => {}
        }
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::lease_tokens::tests::acquire;

    fn fenced(
        index: u64,
        at_ms: u64,
        origin: NodeId,
        token: u64,
        result: FencedResult,
    ) -> LeaseEntry {
        LeaseEntry {
            index,
            at_ms,
            origin,
            op: LeaseOp::Fenced {
                id: format!("w{index}"),
                token,
                result,
            },
        }
    }

    /// Node 1 holds token 1 (until 5,000) and writes; it is cut off, its lease lapses, node 2
    /// takes token 2 at 6,000 and writes; node 1's write stamped at 3,000 arrives after that
    /// and is refused.
    fn healthy() -> Vec<LeaseEntry> {
        vec![
            acquire(1, 1_000, 1, None, (true, 1, 1, 4_000)),
            fenced(2, 1_100, 1, 1, FencedResult::Applied),
            acquire(3, 2_000, 1, Some(1), (true, 1, 1, 5_000)),
            fenced(4, 2_100, 1, 1, FencedResult::Applied),
            acquire(5, 6_000, 2, None, (true, 2, 2, 9_000)),
            fenced(6, 6_100, 2, 2, FencedResult::Applied),
            fenced(7, 3_000, 1, 1, FencedResult::LeaseLost),
            fenced(8, 6_200, 2, 2, FencedResult::Applied),
        ]
    }

    fn reports(history: &[LeaseEntry], what: &str) {
        let broken = fenced_writes(1, "fetch:m", history);
        assert!(
            broken.iter().any(|v| v.0.contains(what)),
            "expected a report containing {what:?}, got {broken:?}"
        );
    }

    #[test]
    fn healthy_fenced_writes_pass() {
        assert_eq!(
            fenced_writes(1, "fetch:m", &healthy()),
            Vec::<Violation>::new()
        );
    }

    #[test]
    fn a_stale_token_write_accepted_after_the_successor_took_over_is_reported() {
        let mut history = healthy();
        // The cut-off holder's write arrives after node 2's take, and is accepted.
        history[6] = fenced(7, 3_000, 1, 1, FencedResult::Applied);
        reports(&history, "with a stale token: the lease's token was 2");
        reports(
            &history,
            "after node 2 took the lease under token 2 at index 5",
        );
        reports(&history, "though the holder of record was node 2");
    }

    #[test]
    fn a_write_with_the_current_token_from_another_node_is_reported() {
        let mut history = healthy();
        history[7] = fenced(8, 6_200, 3, 2, FencedResult::Applied);
        reports(&history, "though the holder of record was node 2");
        reports(&history, "both had fenced commands accepted under token 2");
    }

    #[test]
    fn a_write_after_expiry_at_its_own_time_is_reported() {
        let mut history = healthy();
        // Node 2's lease runs to 9,000; a write it stamped at 9,500 is too late.
        history[7] = fenced(8, 9_500, 2, 2, FencedResult::Applied);
        reports(&history, "after the lease expired at its own time");
    }

    #[test]
    fn a_write_after_the_holder_released_is_reported() {
        let mut history = healthy();
        history.insert(
            7,
            LeaseEntry {
                index: 8,
                at_ms: 6_150,
                origin: 2,
                op: LeaseOp::Release { token: 2 },
            },
        );
        reports(&history, "after the lease expired at its own time");
    }

    #[test]
    fn a_write_before_any_take_is_reported() {
        let history = vec![fenced(1, 500, 1, 1, FencedResult::Applied)];
        reports(&history, "although the lease was never taken");
    }

    #[test]
    fn refused_writes_are_not_reported() {
        let mut history = healthy();
        history.push(fenced(9, 9_500, 1, 1, FencedResult::LeaseLost));
        history.push(fenced(
            10,
            9_600,
            3,
            7,
            FencedResult::Refused("invalid".into()),
        ));
        assert_eq!(
            fenced_writes(1, "fetch:m", &history),
            Vec::<Violation>::new()
        );
    }
}
